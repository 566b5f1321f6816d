"""The architecture grammar: a ConvNet written the way the course notes write it.

A spec is a whitespace-separated list of tokens, read left to right from the input. Square
brackets repeat a group: ``[ ... ]*N`` (groups nest). The notes' most common pattern
``INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC`` becomes, for example::

    [conv3-32 relu]*2 pool2 [conv3-64 relu]*2 pool2 fc-256 relu dropout-0.5 fc

| token | layer | notes |
|---|---|---|
| `conv{F}-{K}` | CONV: K filters of FxF, stride 1, "same" padding | `conv3-32`, `conv5-6-p0` |
| ...`-s{S}` | stride S (default 1) | `conv7-64-s2` (padding 3 is "same") |
| ...`-p{P}` | zero padding P per side (default "same" = D*(F-1)//2) | `conv5-5-p0` |
| ...`-d{D}` | dilation D (default 1); effective filter D*(F-1)+1 | `conv3-64-d2` |
| ...`-g{G}` | groups G (default 1); G must divide both depths | `conv3-64-g2` |
| ...`-floor` | allow a size that is not whole: round it down, as torch does | `conv7-64-s2-p3-floor` |
| `pool{F}` / `pool{F}-s{S}` | max pooling FxF, stride F unless given | `pool2`, `pool3-s2` |
| ...`-p{P}` / `-floor` | pool padding P <= F/2 (default 0); round a size down | `pool3-s1-p1`, `pool3-s2-floor` |
| `avgpool{F}` / `avgpool{F}-s{S}` | average pooling (same suffixes) | `avgpool2` |
| `gap` | global average pooling to 1x1 | `conv1-10 gap` |
| `fc-{N}` | fully connected, N outputs (flatten is implicit) | `fc-4096` |
| `fc` | fully connected with one output per class (last conv/fc only) | `fc` |
| `bn` | batch norm (2d on volumes, 1d after fc) | `conv3-32 bn relu` |
| `dropout-{p}` | inverted dropout, drop probability 0 <= p < 1 | `dropout-0.5` |
| `relu` `sigmoid` `tanh` `elu` | activation functions | |
| `lrelu` / `lrelu-{a}` | leaky ReLU, slope a (default 0.01) | `lrelu-0.2` |
| `maxout-{k}` | max over groups of k channels/features: depth C -> C/k | `fc-512 maxout-2` |
| `[ ... ]*N` | the group repeated N >= 1 times; groups nest | `[[conv3-64 relu]*2 pool2]*3` |
| `res[ ... ]` | residual block: body(x) + x; a 1x1 conv (+ bn) shortcut if the volume changes | `res[conv3-8 bn]` |
| `cat[ ... ]` | branches (split by a bar) on the same input, outputs stacked along depth | see below |

Suffixes of `conv` come in the fixed order `-s -p -d -g -floor`, of pools `-s -p -floor`. Printing a spec
gives its canonical text (suffixes only where they differ from the default, single spaces, groups as `[a b]*N`), and
``str(parse(s)) == s`` for every canonical ``s``. Layers are numbered 0, 1, ... along the flat list
(groups expanded); the built ``nn.Sequential`` names its modules by the same numbers.

An Inception module: ``cat[conv1-64 | conv1-96 conv3-128 | conv1-16 conv5-32 | pool3-s1-p1 conv1-32]``.
A ``res[...]`` or ``cat[...]`` group is ONE layer of that list (it has one input and one output volume);
the layers inside it are numbered by module path: layer j of the residual body at layer i is ``i.body.j``,
its shortcut projection ``i.shortcut.0`` (conv) and ``i.shortcut.1`` (bn), and layer j of branch b of a
``cat`` at layer i is ``i.b.j``. ``[ ]*N`` groups repeat inside them as anywhere; they hold no fc.
The residual block adds its input to its body's output (He et al. 2015). When the body keeps the volume
the shortcut is the identity; when it changes the depth or the size, the shortcut is a 1x1 conv with the
body's total stride S (and a bn when the body has one): "option B" of the paper. A ``cat`` stacks the
branches' volumes along depth (the Inception module, Szegedy et al. 2014), so every branch must give the
same H x W.

Rules checked before any shape is known: at least one conv or fc layer; no conv, pool, gap or res/cat
group after the first fc (the volume is flattened there); no fc inside a group; a plain `fc` only as the
last conv/fc layer. With the
input shape: groups and maxout must divide the depth, and the network must end with one score per
class (a plain `fc` does that by itself).

Sizes follow the notes: a CONV layer maps W to (W - F + 2P)/S + 1 (F the effective filter size);
a POOL layer maps W to (W - F)/S + 1. Both must come out whole and positive, or the spec is
rejected in the lecture's words, e.g. "7x7 input, 3x3 filter, stride 3: (7-3)/3+1 = 2.33 is not
an integer" -- unless the layer says ``-floor``: the notes allow a library to "crop the input to make it
fit", which is what torch does (the published ImageNet nets at 224x224 rely on it, e.g. ResNet's
7x7 stride-2 stem: (224-7+2*3)/2+1 = 112.5 -> 112).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from babysit.errors import BabysitError

Shape = tuple[int, ...]  # (C, H, W) for a volume, (N,) once flattened

MAX_LAYERS = 10_000  # flat layers after expanding groups; guards against `[conv3-8]*999999999`
MAX_DEPTH = 32  # nesting of [ ] groups
MAX_DIGITS = 9  # whole numbers in a token stay below 10**9
KNOWN_TOKENS = (
    "conv{F}-{K}[-s{S}][-p{P}][-d{D}][-g{G}][-floor], pool{F}[-s{S}][-p{P}][-floor], avgpool{F}[...], gap, fc, "
    "fc-{N}, bn, dropout-{p}, relu, sigmoid, tanh, lrelu[-{a}], elu, maxout-{k}, groups [ ... ]*N, "
    "res[ ... ] and cat[ ... | ... ]"
)
ACTIVATIONS = ("relu", "sigmoid", "tanh", "elu")


def _num(x: float) -> str:
    """Shortest text that reads back as exactly ``x``: 0.5, 0, 1e-05."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def _positive(value: int, what: str, example: str) -> None:
    if value < 1:
        raise BabysitError(f"{what} must be at least 1, not {value}; write e.g. {example}")


@dataclass(frozen=True)
class Conv:
    """CONV layer: K filters of F x F x D_in, stride S, zero padding P, dilation D, groups G."""

    f: int  # filter size F (pixels)
    k: int  # number of filters K = output depth
    stride: int = 1  # S (pixels)
    padding: int | None = None  # P zeros per side; None = "same", D*(F-1)//2 (normalised to None)
    dilation: int = 1  # D: gaps between filter taps
    groups: int = 1  # G: input and output depth split into G independent groups
    floor: bool = False  # a size (W - F + 2P)/S + 1 that is not whole is rounded down (torch's rule)
    has_weights: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _positive(self.f, "the filter size F", "conv3-32")
        _positive(self.k, "the number of filters K", "conv3-32")
        _positive(self.stride, "the stride S", "conv3-32-s2")
        _positive(self.dilation, "the dilation D", "conv3-32-d2")
        _positive(self.groups, "the number of groups G", "conv3-32-g2")
        if self.padding is not None and self.padding < 0:
            raise BabysitError(f"the padding P must be 0 or more, not {self.padding}; write e.g. conv3-32-p0")
        if self.k % self.groups:
            raise BabysitError(
                f"{self.k} filters cannot be split into {self.groups} groups; make K a multiple of G, "
                f"e.g. conv{self.f}-{self.groups * max(1, self.k // self.groups)}-g{self.groups}"
            )
        if self.padding == self.same_padding:
            object.__setattr__(self, "padding", None)

    @property
    def same_padding(self) -> int:
        """The default padding D*(F-1)//2, which keeps W unchanged at stride 1 for odd F."""
        return self.dilation * (self.f - 1) // 2

    @property
    def pad(self) -> int:
        """The zero padding P actually used."""
        return self.same_padding if self.padding is None else self.padding

    @property
    def f_eff(self) -> int:
        """Effective filter size of a dilated filter: D*(F-1)+1."""
        return self.dilation * (self.f - 1) + 1

    def __str__(self) -> str:
        suffixes = (("s", self.stride, 1), ("p", self.padding, None), ("d", self.dilation, 1), ("g", self.groups, 1))
        text = f"conv{self.f}-{self.k}" + "".join(f"-{c}{v}" for c, v, default in suffixes if v != default)
        return text + ("-floor" if self.floor else "")


@dataclass(frozen=True)
class Pool:
    """POOL layer: max (or average) over F x F windows with stride S."""

    f: int  # window size F (pixels)
    stride: int | None = None  # S; None = F, non-overlapping windows (normalised to None)
    mode: str = "max"  # "max" or "avg"
    padding: int = 0  # P per side (max pooling pads with -inf, average pooling with zeros); at most F/2
    floor: bool = False  # a size (W - F + 2P)/S + 1 that is not whole is rounded down (torch's rule)
    has_weights: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.mode not in ("max", "avg"):
            raise ValueError(f"Pool.mode must be 'max' or 'avg', not {self.mode!r}")
        prefix = "pool" if self.mode == "max" else "avgpool"
        _positive(self.f, "the pool size F", f"{prefix}2")
        if self.stride is not None:
            _positive(self.stride, "the pool stride S", f"{prefix}3-s2")
        if self.stride == self.f:
            object.__setattr__(self, "stride", None)
        if not 0 <= self.padding <= self.f // 2:
            raise BabysitError(f"the pool padding P must be between 0 and F/2 = {self.f // 2} (a window must "
                               f"hold at least one real pixel), not {self.padding}; write e.g. {prefix}3-s1-p1")

    @property
    def s(self) -> int:
        """The stride S actually used."""
        return self.f if self.stride is None else self.stride

    def __str__(self) -> str:
        text = f"{'pool' if self.mode == 'max' else 'avgpool'}{self.f}"
        text += "" if self.stride is None else f"-s{self.stride}"
        text += f"-p{self.padding}" if self.padding else ""
        return text + ("-floor" if self.floor else "")


@dataclass(frozen=True)
class GlobalAvgPool:
    """Average of each channel over the whole H x W map: C x H x W -> C x 1 x 1."""

    has_weights: ClassVar[bool] = False

    def __str__(self) -> str:
        return "gap"


@dataclass(frozen=True)
class FC:
    """Fully connected layer; ``n=None`` means one output per class (the last layer)."""

    n: int | None = None  # outputs; None = the class count
    has_weights: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.n is not None:
            _positive(self.n, "the number of fc outputs N", "fc-256")

    def __str__(self) -> str:
        return "fc" if self.n is None else f"fc-{self.n}"


@dataclass(frozen=True)
class BatchNorm:
    """Batch normalisation: BatchNorm2d on a volume, BatchNorm1d after an fc."""

    has_weights: ClassVar[bool] = False  # "weights" here means conv/fc, the layers init cares about

    def __str__(self) -> str:
        return "bn"


@dataclass(frozen=True)
class Dropout:
    """Inverted dropout: drop each unit with probability p at train time, scale the rest by 1/(1-p)."""

    p: float  # drop probability, 0 <= p < 1
    has_weights: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", float(self.p) + 0.0)  # + 0.0 turns -0.0 into 0.0
        if not 0.0 <= self.p < 1.0:
            raise BabysitError(
                f"the dropout probability p must be in [0, 1), not {_num(self.p)}; write e.g. dropout-0.5"
            )

    def __str__(self) -> str:
        return f"dropout-{_num(self.p)}"


@dataclass(frozen=True)
class Activation:
    """An elementwise activation function: relu, sigmoid, tanh or elu."""

    name: str
    has_weights: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.name not in ACTIVATIONS:
            raise BabysitError(f"unknown activation {self.name!r}; use one of {', '.join(ACTIVATIONS)}")

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class LeakyReLU:
    """Leaky ReLU: f(x) = x if x > 0 else a*x."""

    slope: float = 0.01  # a
    has_weights: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "slope", float(self.slope) + 0.0)
        if not (math.isfinite(self.slope) and self.slope >= 0.0):
            raise BabysitError("the leaky ReLU slope must be a finite number >= 0; write e.g. lrelu-0.01")

    def __str__(self) -> str:
        return "lrelu" if self.slope == 0.01 else f"lrelu-{_num(self.slope)}"


@dataclass(frozen=True)
class Maxout:
    """Maxout: the max over each group of k consecutive channels (or features), depth C -> C/k."""

    k: int
    has_weights: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _positive(self.k, "the maxout group size k", "maxout-2")

    def __str__(self) -> str:
        return f"maxout-{self.k}"


Leaf = Conv | Pool | GlobalAvgPool | FC | BatchNorm | Dropout | Activation | LeakyReLU | Maxout


@dataclass(frozen=True)
class Repeat:
    """A group ``[ ... ]*times``."""

    body: tuple[Node, ...]
    times: int

    def __str__(self) -> str:
        return f"[{' '.join(map(str, self.body))}]*{self.times}"


@dataclass(frozen=True)
class Residual:
    """A residual block ``res[ ... ]``: out = body(x) + shortcut(x), the shortcut being the identity, or a
    1x1 conv (+ bn) when the body changes the volume (the shapes decide, see shapes.py)."""

    body: tuple[Node, ...]

    def __post_init__(self) -> None:
        if not self.body:
            raise BabysitError("a res[ ] group is empty; put the block's layers inside, e.g. res[conv3-64 bn relu "
                               "conv3-64 bn]")

    @property
    def has_weights(self) -> bool:
        return any(layer.has_weights for layer in self.layers())

    def layers(self) -> tuple[Layer, ...]:
        """The body's flat layers (its own groups expanded): layer j is the module ``body.j``."""
        return tuple(_flatten(self.body))

    def __str__(self) -> str:
        return f"res[{' '.join(map(str, self.body))}]"


@dataclass(frozen=True)
class Branch:
    """A branch group ``cat[ a | b | ... ]``: every branch sees the same input; their outputs are stacked
    along depth (the Inception module)."""

    branches: tuple[tuple[Node, ...], ...]

    def __post_init__(self) -> None:
        if len(self.branches) < 2 or not all(self.branches):
            raise BabysitError("a cat[ ] group needs two or more non-empty branches separated by |, e.g. "
                               "cat[conv1-64 | conv3-64]")

    @property
    def has_weights(self) -> bool:
        return any(layer.has_weights for branch in self.branch_layers() for layer in branch)

    def branch_layers(self) -> tuple[tuple[Layer, ...], ...]:
        """Each branch's flat layers: layer j of branch b is the module ``b.j``."""
        return tuple(tuple(_flatten(branch)) for branch in self.branches)

    def __str__(self) -> str:
        return "cat[" + " | ".join(" ".join(map(str, branch)) for branch in self.branches) + "]"


Layer = Leaf | Residual | Branch  # one entry of Spec.layers(): a group is one layer with one input and output
Node = Layer | Repeat
GROUPS = (Residual, Branch)


def _bodies(node: Residual | Branch) -> tuple[tuple[Node, ...], ...]:
    return (node.body,) if isinstance(node, Residual) else node.branches


def _count(nodes: tuple[Node, ...]) -> int:
    total = 0
    for node in nodes:
        if isinstance(node, Repeat):
            total += node.times * _count(node.body)
        elif isinstance(node, GROUPS):
            total += 1 + sum(_count(body) for body in _bodies(node))
        else:
            total += 1
    return total


def _depth(nodes: tuple[Node, ...]) -> int:
    inner = [node.body for node in nodes if isinstance(node, Repeat)]
    inner += [body for node in nodes if isinstance(node, GROUPS) for body in _bodies(node)]
    return max((1 + _depth(body) for body in inner), default=0)


def _flatten(nodes: tuple[Node, ...]) -> list[Layer]:
    flat: list[Layer] = []
    for node in nodes:
        flat.extend(_flatten(node.body) * node.times if isinstance(node, Repeat) else [node])
    return flat


def leaves(layers: tuple[Layer, ...]) -> list[Leaf]:
    """Every single layer, the insides of res/cat groups included (not the shortcut, which the shapes decide)."""
    out: list[Leaf] = []
    for layer in layers:
        if isinstance(layer, Residual):
            out += leaves(layer.layers())
        elif isinstance(layer, Branch):
            for branch in layer.branch_layers():
                out += leaves(branch)
        else:
            out.append(layer)
    return out


@dataclass(frozen=True)
class Spec:
    """A parsed architecture: the tree as written (``nodes``) and its flat list (``layers()``)."""

    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        if not self.nodes:
            raise BabysitError("the architecture spec is empty; give at least one layer, e.g. 'conv3-32 relu pool2 fc'")
        if _depth(self.nodes) > MAX_DEPTH:
            raise BabysitError(f"the spec nests [ ] groups more than {MAX_DEPTH} deep; flatten some of them")
        if _count(self.nodes) > MAX_LAYERS:
            raise BabysitError(f"the spec expands to more than {MAX_LAYERS:,} layers; lower the *N repeat counts")
        _check_order(self.layers())

    def layers(self) -> tuple[Layer, ...]:
        """The flat list of layers, [ ]*N groups expanded, a res/cat group one layer; index i is layer i."""
        return tuple(_flatten(self.nodes))

    def __str__(self) -> str:
        return " ".join(map(str, self.nodes))


def _check_inside(i: int, group: Residual | Branch) -> None:
    """No fc inside a res/cat group: a group works on volumes (its shortcut and concatenation need H x W)."""
    fc = next((layer for layer in leaves((group,)) if isinstance(layer, FC)), None)
    if fc is not None:
        raise BabysitError(f"layer {i} '{group}' holds the fc layer '{fc}', but res[ ] and cat[ ] groups work on "
                           f"volumes; put fc layers after the groups")


def _check_order(layers: tuple[Layer, ...]) -> None:
    """Rules that need no input shape: nothing spatial after an fc, plain fc last, some weights."""
    weighted = [i for i, layer in enumerate(layers) if layer.has_weights]
    if not weighted:
        raise BabysitError("the spec has no conv or fc layer, so nothing can learn; add one, e.g. end with 'fc'")
    for i, layer in enumerate(layers):
        if isinstance(layer, GROUPS):
            _check_inside(i, layer)
    first_fc = next((i for i, layer in enumerate(layers) if isinstance(layer, FC)), len(layers))
    for i, layer in enumerate(layers[first_fc:], start=first_fc):
        if isinstance(layer, Conv | Pool | GlobalAvgPool | Residual | Branch):
            raise BabysitError(
                f"layer {i} '{layer}' comes after the fc layer {first_fc}, where the volume is already flattened; "
                f"move conv, pool and res/cat layers before the first fc"
            )
    for i, layer in enumerate(layers):
        if isinstance(layer, FC) and layer.n is None and i != weighted[-1]:
            raise BabysitError(
                f"layer {i} is a plain 'fc' (one output per class) but it is not the last conv/fc layer; "
                f"give it a width, e.g. fc-256"
            )


# ---- parsing -------------------------------------------------------------------------------

_INT = "([0-9]+)"
_FLOAT = r"((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
_CONV_LOOSE = re.compile(r"conv[0-9]+-[0-9]+(?:-[spdg][0-9]+|-floor)+", re.ASCII)
_POOL_LOOSE = re.compile(r"(?:avg)?pool[0-9]+(?:-[sp][0-9]+|-floor)+", re.ASCII)
# an opening bracket (plain, res[ or cat[), a closing one with its *N, a branch bar, or a word
_SCAN = re.compile(r"(res\[|cat\[|\[)|(\])(\*[0-9]*)?|(\|)|([^\s\[\]|]+)", re.ASCII)


def _int(text: str) -> int:
    if len(text) > MAX_DIGITS:
        raise BabysitError(f"the number {text[:12]}... is too long; numbers in a spec have at most {MAX_DIGITS} digits")
    return int(text)


def _opt(text: str | None) -> int | None:
    return None if text is None else _int(text)


def _conv(m: re.Match[str]) -> Leaf:
    f, k, (s, p, d, g) = _int(m[1]), _int(m[2]), (_opt(x) for x in m.groups()[2:6])
    return Conv(f, k, stride=1 if s is None else s, padding=p, dilation=1 if d is None else d,
                groups=1 if g is None else g, floor=m[7] is not None)


def _pool(mode: str) -> Callable[[re.Match[str]], Leaf]:
    def make(m: re.Match[str]) -> Leaf:
        return Pool(_int(m[1]), _opt(m[2]), mode, padding=_opt(m[3]) or 0, floor=m[4] is not None)
    return make


# (kind, full pattern, constructor from the match, usage shown when a token of this kind is malformed)
_FLOOR = "(-floor)?"
_FORMS: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], Leaf], str]] = [
    ("conv", re.compile(rf"conv{_INT}-{_INT}(?:-s{_INT})?(?:-p{_INT})?(?:-d{_INT})?(?:-g{_INT})?{_FLOOR}", re.ASCII),
     _conv, "conv{F}-{K}[-s{S}][-p{P}][-d{D}][-g{G}][-floor] with whole numbers, e.g. conv3-32 or conv5-16-s2-p0"),
    ("avgpool", re.compile(rf"avgpool{_INT}(?:-s{_INT})?(?:-p{_INT})?{_FLOOR}", re.ASCII), _pool("avg"),
     "avgpool{F}[-s{S}][-p{P}][-floor] with whole numbers, e.g. avgpool2"),
    ("pool", re.compile(rf"pool{_INT}(?:-s{_INT})?(?:-p{_INT})?{_FLOOR}", re.ASCII), _pool("max"),
     "pool{F}[-s{S}][-p{P}][-floor] with whole numbers, e.g. pool2, pool3-s2 or pool3-s1-p1"),
    ("gap", re.compile("gap"), lambda m: GlobalAvgPool(), ""),
    ("fc", re.compile(rf"fc(?:-{_INT})?", re.ASCII), lambda m: FC(_opt(m[1])),
     "fc (one output per class) or fc-{N} with a whole number N, e.g. fc-256"),
    ("bn", re.compile("bn"), lambda m: BatchNorm(), ""),
    ("dropout", re.compile(rf"dropout-{_FLOAT}", re.ASCII),
     lambda m: Dropout(float(m[1])), "dropout-{p} with a number 0 <= p < 1, e.g. dropout-0.5"),
    ("lrelu", re.compile(rf"lrelu(?:-{_FLOAT})?", re.ASCII),
     lambda m: LeakyReLU(0.01 if m[1] is None else float(m[1])),
     "lrelu or lrelu-{a} with a number a >= 0, e.g. lrelu-0.2"),
    ("maxout", re.compile(rf"maxout-{_INT}", re.ASCII), lambda m: Maxout(_int(m[1])),
     "maxout-{k} with a whole number k, e.g. maxout-2"),
    *[(name, re.compile(name), lambda m: Activation(m[0]), "") for name in ACTIVATIONS],
]


def _show(word: str) -> str:
    return repr(word if len(word) <= 40 else word[:37] + "...")


def parse_token(word: str) -> Leaf:
    """One token -> one layer, e.g. ``parse_token("conv3-32") == Conv(3, 32)``."""
    for _, pattern, make, _ in _FORMS:
        m = pattern.fullmatch(word)
        if m:
            try:
                return make(m)
            except BabysitError as err:
                raise BabysitError(f"in {_show(word)}, {err}") from None
    if _CONV_LOOSE.fullmatch(word):
        raise BabysitError(f"{_show(word)}: conv suffixes go in the order -s -p -d -g -floor, each at most once")
    if _POOL_LOOSE.fullmatch(word):
        raise BabysitError(f"{_show(word)}: pool suffixes go in the order -s -p -floor, each at most once")
    for kind, _, _, usage in _FORMS:
        if usage and word.startswith(kind):
            raise BabysitError(f"{_show(word)} is not a valid {kind} token; write {usage}")
    hint = f" (tokens are lower case: {_show(word.lower())})" if word != word.lower() else ""
    raise BabysitError(f"unknown token {_show(word)}{hint}; the known tokens are {KNOWN_TOKENS}")


class _Open:
    """A group being read: its kind ("" for [ ]*N, "res", "cat"), its branches so far and the word that opened it."""

    def __init__(self, kind: str, word: int) -> None:
        self.kind, self.word = kind, word
        self.branches: list[list[Node]] = [[]]

    def close(self, n: int, count: str | None) -> Node:
        what = f"the {self.kind or ''}[ ] group opened at word {self.word}"
        if self.kind and count:
            raise BabysitError(f"word {n} ']{count}' repeats a {self.kind}[ ] group; a {self.kind}[ ] group is one "
                               f"layer, so to repeat it write [{self.kind}[ ... ]]{count}")
        if not self.kind and (not count or count == "*"):
            raise BabysitError(f"word {n} ']' must be followed by *N, the repeat count, e.g. [conv3-32 relu]*2")
        if not self.branches[-1]:
            where = f"branch {len(self.branches)} of {what}" if self.kind == "cat" else what
            raise BabysitError(f"{where} is empty; put layers inside it or remove it")
        if self.kind == "res":
            return Residual(tuple(self.branches[0]))
        if self.kind == "cat":
            if len(self.branches) < 2:
                raise BabysitError(f"{what} has one branch; a cat[ ] stacks two or more branches' volumes, "
                                   f"separated by |, e.g. cat[conv1-64 | conv3-64]")
            return Branch(tuple(map(tuple, self.branches)))
        times = _int(count[1:]) if count else 0
        if times < 1:
            raise BabysitError(f"word {n} repeats a group *{times} times; a repeat count must be at least 1")
        return Repeat(tuple(self.branches[0]), times)


def parse(text: str | Spec) -> Spec:
    """Parse a spec string (see the module docstring for the grammar); a Spec passes through.

    Raises BabysitError, naming the word and what to write instead, for any mistake.
    """
    if isinstance(text, Spec):
        return text
    top = _Open("", 0)
    stack: list[_Open] = [top]  # the open groups, innermost last
    for n, m in enumerate(_SCAN.finditer(text), start=1):
        opened, closed, count, bar, word = m.groups()
        if opened:
            if len(stack) > MAX_DEPTH:
                raise BabysitError(f"the spec nests [ ] groups more than {MAX_DEPTH} deep; flatten some of them")
            stack.append(_Open(opened[:-1], n))
        elif closed:
            if len(stack) == 1:
                raise BabysitError(f"word {n} ']' closes a group that was never opened; add its '[' or drop it")
            node = stack.pop().close(n, count)
            stack[-1].branches[-1].append(node)
        elif bar:
            group = stack[-1]
            if group.kind != "cat":
                raise BabysitError(f"word {n} '|' separates the branches of a cat[ ] group; use it only directly "
                                   f"inside cat[ ... ], e.g. cat[conv1-64 | conv3-64]")
            if not group.branches[-1]:
                raise BabysitError(f"branch {len(group.branches)} of the cat[ ] group opened at word {group.word} is "
                                   f"empty; put layers between the | bars")
            group.branches.append([])
        else:
            try:
                stack[-1].branches[-1].append(parse_token(word))
            except BabysitError as err:
                raise BabysitError(f"word {n}: {err}") from None
    if len(stack) > 1:
        opener = f"{stack[-1].kind}[" if stack[-1].kind else "["
        closing = "]" if stack[-1].kind else "]*N"
        raise BabysitError(f"the '{opener}' at word {stack[-1].word} is never closed; close the group with {closing}")
    return Spec(tuple(top.branches[0]))


def _labels(layers: tuple[Layer, ...], prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, layer in enumerate(layers):
        name = f"{prefix}{i}"
        if isinstance(layer, Residual):
            out[name] = f"{name} res[...]"
            out |= _labels(layer.layers(), f"{name}.body.")
        elif isinstance(layer, Branch):
            out[name] = f"{name} cat[...]"
            for b, branch in enumerate(layer.branch_layers()):
                out |= _labels(branch, f"{name}.{b}.")
        else:
            out[name] = f"{name} {layer}"
    return out


def layer_labels(text: str | Spec) -> dict[str, str]:
    """Layer name -> "NAME TOKEN" (``{"3": "3 conv3-64", "5.body.0": "5.body.0 conv3-64"}``): how charts and
    TensorBoard name a spec's layers (a residual shortcut, decided by the shapes, keeps its bare name).
    A spec that does not parse gives {} (callers fall back to the bare name)."""
    try:
        layers = parse(text).layers()
    except BabysitError:
        return {}
    return _labels(layers, "")
