"""The search space: ``KEY=DIST`` text -> :class:`Param` -> an Optuna distribution.

    optim.lr=loguniform(1e-4,1)            uniform in log space (the notes: lr = 10 ** uniform(-4, 0))
    model.init_bias=uniform(0,0.1)          uniform in the value itself (dropout, a bias, ...)
    train.batch_size=int(16,128)            a whole number, uniform
    optim.name=choice('sgd','adam')         one of the listed values, drawn at random
    train.batch_size=grid(32,64,128)        the values of a grid (search.sampler=grid walks all combinations)

Any config key can be searched (not the [search] section itself). Every mistake is one sentence: an
unknown key (with the nearest one), an unknown distribution, bad bounds, a value the config refuses.
Parsing needs no Optuna; :meth:`Param.distribution` imports it.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from babysit import config as C
from babysit.errors import BabysitError

KINDS = ("loguniform", "uniform", "int", "choice", "grid")
EXAMPLES = ("optim.lr=loguniform(1e-4,1)", "model.init_bias=uniform(0,0.1)", "train.batch_size=int(16,128)",
            "optim.name=choice('sgd','adam')", "train.batch_size=grid(32,64,128)")
Value = bool | int | float | str


@dataclass(frozen=True)
class Param:
    """One searched config key and the range (or values) it is drawn from."""

    key: str  # dotted config key, e.g. optim.lr
    kind: str  # loguniform | uniform | int | choice | grid
    low: float | int | None = None  # numeric kinds: the range [low, high]
    high: float | int | None = None
    choices: tuple[Value, ...] = ()  # choice / grid: the values

    @property
    def log(self) -> bool:
        """Searched on a log scale (sampled uniformly in log(value))."""
        return self.kind == "loguniform"

    @property
    def numeric(self) -> bool:
        return self.kind in ("loguniform", "uniform", "int")

    def text(self) -> str:
        """The canonical ``KEY=DIST(...)`` form (what search.space would hold)."""
        args = (self.low, self.high) if self.numeric else self.choices
        return f"{self.key}={self.kind}({','.join(show(a) for a in args)})"

    def distribution(self) -> Any:
        """The Optuna distribution this parameter is sampled from."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))  # type: ignore[arg-type]
        if self.numeric:
            return FloatDistribution(float(self.low), float(self.high), log=self.log)  # type: ignore[arg-type]
        return CategoricalDistribution(list(self.choices))

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "low": self.low, "high": self.high, "log": self.log,
                "choices": list(self.choices)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Param:
        return cls(d["key"], d["kind"], d.get("low"), d.get("high"), tuple(d.get("choices") or ()))


Space = tuple[Param, ...]


def show(value: Any) -> str:
    """A value as the space's text writes it: 0.0001 -> 1e-04, 'sgd' -> 'sgd' (quoted), 32 -> 32."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value) if isinstance(value, str) else str(value)


def _fail(entry: str, why: str) -> BabysitError:
    return BabysitError(f"search.space entry {entry!r}: {why}; write KEY=DIST, e.g. {EXAMPLES[0]} or {EXAMPLES[3]}.")


def _literal(entry: str, node: ast.expr) -> Value:
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        raise _fail(entry, f"{ast.unparse(node)} is not a number or a quoted string") from None
    if not isinstance(value, (bool, int, float, str)):
        raise _fail(entry, f"{ast.unparse(node)} is not a number or a quoted string")
    return value


def _refused(base: C.RunConfig, key: str, value: Any) -> str | None:
    """Why the config refuses ``key = value`` (its own sentence), or None when it takes it."""
    try:
        C.apply_overrides(base, {key: value})
    except BabysitError as e:
        return str(e)
    return None


def parse_param(entry: str, base: C.RunConfig | None = None) -> Param:
    """One ``KEY=DIST(args)`` entry, checked against the config: the key exists, the distribution suits
    its type and every bound or value is one the config accepts."""
    base = base if base is not None else C.RunConfig()
    key, eq, dist = entry.partition("=")
    key, dist = key.strip(), dist.strip()
    if not eq or not key or not dist:
        raise _fail(entry, "there is no KEY=DIST")
    unknown = C.unknown_key_error(key)
    if unknown is not None:
        raise BabysitError(f"search.space entry {entry!r}: {unknown}")
    if key.startswith("search."):
        raise _fail(entry, "a search cannot search its own [search] settings")
    try:
        call = ast.parse(dist, mode="eval").body
    except SyntaxError:
        call = None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)) or call.keywords:
        raise _fail(entry, f"{dist!r} is not a distribution call such as loguniform(1e-4,1)")
    kind = call.func.id
    if kind not in KINDS:
        near = C.nearest(kind, KINDS)
        raise _fail(entry, f"unknown distribution {kind!r} (known: {', '.join(KINDS)})"
                           + (f"; did you mean {near}?" if near else ""))
    values = [_literal(entry, a) for a in call.args]
    sec, _, name = key.partition(".")
    default = getattr(getattr(base, sec), name)
    if kind in ("choice", "grid"):
        return _categorical(entry, base, key, kind, values)
    return _numeric(entry, base, key, kind, values, default)


def _categorical(entry: str, base: C.RunConfig, key: str, kind: str, values: list[Value]) -> Param:
    if len(values) < 1 or len(set(map(repr, values))) != len(values):
        raise _fail(entry, f"{kind}(...) needs one or more different values")
    for v in values:
        why = _refused(base, key, v)
        if why is not None:
            raise BabysitError(f"search.space entry {entry!r}: the value {v!r} is refused: {why}")
    return Param(key, kind, choices=tuple(values))


def _numeric(entry: str, base: C.RunConfig, key: str, kind: str, values: list[Value], default: Any) -> Param:
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise _fail(entry, f"{kind}(low,high) needs two numbers")
    low, high = values
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        raise _fail(entry, f"{key} is a {type(default).__name__}, not a number: search it with choice(...)")
    if kind == "int":
        if not (float(low).is_integer() and float(high).is_integer()):
            raise _fail(entry, "int(low,high) needs whole numbers")
        low, high = int(low), int(high)
    elif isinstance(default, int):
        raise _fail(entry, f"{key} is a whole number: search it with int({low:g},{high:g}) or grid(...)")
    else:
        low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise _fail(entry, f"the range needs low < high, got {low:g} and {high:g}")
    if kind == "loguniform" and low <= 0:
        raise _fail(entry, f"a log scale needs low > 0, got {low:g}; e.g. loguniform(1e-6,1e-2)")
    for v in (low, high):
        why = _refused(base, key, v)
        if why is not None:
            raise BabysitError(f"search.space entry {entry!r}: the bound {v:g} is refused: {why}")
    return Param(key, kind, low, high)


def parse_space(entries: Iterable[str], base: C.RunConfig | None = None) -> Space:
    """Every search.space entry as a :class:`Param`, in order; a key given twice is a mistake."""
    space = tuple(parse_param(e, base) for e in entries if e.strip())
    if not space:
        raise BabysitError("search.space is empty: say what to search, e.g. "
                           "--search.space='optim.lr=loguniform(1e-4,1)' (repeat --search.space for more keys).")
    keys = [p.key for p in space]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise BabysitError(f"search.space names {', '.join(twice)} more than once; give each key one range.")
    return space


def grid_size(space: Sequence[Param]) -> int:
    """How many combinations a grid over ``space`` has (every parameter a choice or grid)."""
    return math.prod(len(p.choices) for p in space)


def check_sampler(space: Sequence[Param], sampler: str) -> None:
    """search.sampler=grid walks a grid: every parameter must be a list of values."""
    if sampler != "grid":
        return
    ranged = [p for p in space if p.numeric]
    if ranged:
        p = ranged[0]
        raise BabysitError(f"search.sampler=grid walks lists of values, but {p.key} is {p.kind}({p.low:g},{p.high:g}); "
                           f"give it as grid(...) (e.g. {p.key}=grid(...)) or use --search.sampler=random, which the "
                           "notes prefer.")


def apply_params(cfg: C.RunConfig, params: dict[str, Any]) -> C.RunConfig:
    """``cfg`` with the sampled values set (a combination the config refuses is a BabysitError)."""
    return C.apply_overrides(cfg, dict(params))
