"""Gradient check: the analytic gradient against the centred difference, the way the notes do it.

    numerical gradient   n = (f(x + h) - f(x - h)) / 2h        in float64, a few entries per tensor
    relative error       |a - n| / max(|a|, |n|)

The notes' bands for the relative error:

    > 1e-2          the gradient is probably wrong
    1e-2 .. 1e-4    uncomfortable
    1e-4 .. 1e-7    OK for an objective with kinks (ReLU, max, hinge); too high for a smooth one
    < 1e-7          happy

It works on any ``nn.Module``, any ``torch.autograd.Function`` subclass (called through ``.apply``)
and any plain function of tensors, which is the point: a custom layer with a hand-written
``backward`` is checked against its own forward. The output is reduced to a scalar with a fixed
random projection ``f = sum(out * R)`` so every output element takes part. Dropout modules are put
in eval mode and the random generator is reseeded before every evaluation, so stochastic layers
see the same mask each time. A kink crossed between ``x - h`` and ``x + h`` is detected from the two
one-sided slopes disagreeing; such entries are reported but not judged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

BAND_WRONG = 1e-2
"""Relative error above this: the gradient is probably wrong."""
BAND_UNCOMFORTABLE = 1e-4
"""Relative error between this and BAND_WRONG: uncomfortable."""
BAND_HAPPY = 1e-7
"""Relative error below this: happy. Between it and BAND_UNCOMFORTABLE: OK only with kinks."""
DEFAULT_H = 1e-5
"""Step of the centred difference (the notes' h); float64 keeps rounding error near 1e-11."""
DEFAULT_ENTRIES = 10
"""Entries checked per tensor, drawn at random (all of them when the tensor is smaller)."""
KINK_SLOPE_JUMP = 1e-3
"""A kink is flagged when the one-sided slopes (f(x+h)-f(x))/h and (f(x)-f(x-h))/h differ by more
than this fraction of the larger one: enough to move the centred difference by ~5e-4 relative."""
ZERO_GRADIENT = 1e-10
"""When both gradients are smaller than this the relative error is taken as 0 (both are zero)."""
ROUNDING_ULPS = 2
"""Round-off of the centred difference is about ROUNDING_ULPS * eps * |f| / h (float64 eps). Entries whose
gradient is so small that round-off alone would exceed BAND_HAPPY are measured against that scale instead:
the denominator is max(|a|, |n|, round-off / BAND_HAPPY), like an absolute tolerance."""

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def band(rel_error: float) -> str:
    """The notes' verdict for one relative error."""
    if not math.isfinite(rel_error) or rel_error > BAND_WRONG:
        return "probably wrong"
    if rel_error > BAND_UNCOMFORTABLE:
        return "uncomfortable"
    if rel_error > BAND_HAPPY:
        return "ok with kinks"
    return "happy"


def relative_error(a: float, n: float, floor: float = 0.0) -> float:
    """|a - n| / max(|a|, |n|, floor); 0 when both are below ZERO_GRADIENT."""
    scale = max(abs(a), abs(n))
    return 0.0 if scale < ZERO_GRADIENT else abs(a - n) / max(scale, floor)


@dataclass
class TensorCheck:
    """The check of one parameter or input tensor."""

    name: str
    shape: tuple[int, ...]
    checked: int  # entries compared
    max_rel_error: float  # over entries where no kink was crossed (over all when every entry crossed one)
    worst_index: tuple[int, ...]
    analytic: float  # at worst_index
    numerical: float
    kinks: int  # entries whose +-h interval crossed a kink

    @property
    def band(self) -> str:
        return band(self.max_rel_error)


@dataclass
class GradcheckResult:
    """Per-tensor results; ``passed`` when no tensor is in the "probably wrong" band."""

    tensors: list[TensorCheck]
    h: float
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(t.band != "probably wrong" for t in self.tensors)

    @property
    def max_rel_error(self) -> float:
        return max((t.max_rel_error for t in self.tensors), default=0.0)

    def format(self) -> str:
        """A table, one row per tensor, then the warnings and the verdict."""
        width = max([len("tensor")] + [len(t.name) for t in self.tensors])
        lines = [f"{'tensor'.ljust(width)}  {'shape':>14}  {'checked':>7}  {'max rel err':>11}  {'kinks':>5}  verdict"]
        for t in self.tensors:
            shape = "x".join(map(str, t.shape)) or "scalar"
            lines.append(f"{t.name.ljust(width)}  {shape:>14}  {t.checked:>7}  {t.max_rel_error:>11.2e}  "
                         f"{t.kinks:>5}  {t.band}")
        lines += [f"warning: {w}" for w in self.warnings]
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{verdict}: worst relative error {self.max_rel_error:.2e} (h={self.h:g}, float64; "
                     f">{BAND_WRONG:g} probably wrong, <{BAND_UNCOMFORTABLE:g} ok with kinks, <{BAND_HAPPY:g} happy)")
        return "\n".join(lines)


Checkable = nn.Module | type[torch.autograd.Function] | Callable[..., object]


def _prepare(fn: Checkable) -> tuple[Callable[..., object], list[tuple[str, torch.Tensor]]]:
    """A float64 copy of ``fn`` and its parameters (name, tensor)."""
    if isinstance(fn, nn.Module):
        module = copy.deepcopy(fn).double()
        for m in module.modules():
            if isinstance(m, _DROPOUT):
                m.eval()
        return module, [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if isinstance(fn, type) and issubclass(fn, torch.autograd.Function):
        return fn.apply, []
    if callable(fn):
        return fn, []
    raise TypeError(f"gradcheck needs an nn.Module, an autograd.Function or a function, not {type(fn).__name__}")


def _scalar(out: object, projections: list[torch.Tensor]) -> torch.Tensor:
    """f = sum_k sum(out_k * R_k) over the floating outputs (R_k fixed random); a scalar output as is."""
    outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,))
            if isinstance(o, torch.Tensor) and o.is_floating_point()]
    if not outs:
        raise TypeError("gradcheck: the function returned no floating-point tensor")
    if not projections:
        g = torch.Generator().manual_seed(1234)
        projections.extend(torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device) for o in outs)
    if len(outs) == 1 and outs[0].numel() == 1:
        return outs[0].reshape(())
    return sum(((o.double() * r).sum() for o, r in zip(outs, projections)), torch.zeros((), dtype=torch.float64))


def gradcheck(fn: Checkable, inputs: torch.Tensor | Sequence[object], *, h: float = DEFAULT_H,
              entries: int = DEFAULT_ENTRIES, check_inputs: bool = True, seed: int = 0) -> GradcheckResult:
    """Compare ``fn``'s analytic gradient with the centred difference, per parameter and input tensor.

    ``fn`` is an ``nn.Module`` (its float64 copy is checked; the original is untouched), a
    ``torch.autograd.Function`` subclass or a function; ``inputs`` one tensor or a sequence of
    arguments (floating tensors are checked when ``check_inputs``; anything else, such as labels,
    is passed through). Use a few data points: the cost is two evaluations per checked entry.
    """
    call, params = _prepare(fn)
    args = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    checked: list[tuple[str, torch.Tensor]] = list(params)
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            t = a.detach().double().clone().contiguous().requires_grad_(check_inputs)
            args[i] = t
            if check_inputs:
                checked.append((f"input{i}" if len(args) > 1 else "input", t))
    if not checked:
        raise TypeError("gradcheck: nothing to check (no parameters and no floating-point inputs)")
    projections: list[torch.Tensor] = []
    cuda = sorted({t.device.index or 0 for _, t in checked if t.is_cuda})

    def f() -> torch.Tensor:
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            return _scalar(call(*args), projections)

    grads = torch.autograd.grad(f(), [t for _, t in checked], allow_unused=True)
    result = GradcheckResult([], h)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        f0 = float(f())
        for (name, t), grad in zip(checked, grads):
            analytic = torch.zeros_like(t) if grad is None else grad
            result.tensors.append(_check_tensor(name, t, analytic, f, f0, h, entries, g))
    kinked = [t for t in result.tensors if t.kinks]
    if kinked:
        result.warnings.append(
            f"a kink (ReLU/max at 0) was crossed within +-h at {sum(t.kinks for t in kinked)} entries of "
            f"{', '.join(t.name for t in kinked)}; the numerical gradient is unreliable there, so those entries "
            "are not judged (use fewer data points or a smaller h)")
    if any(t.band == "ok with kinks" and not t.kinks for t in result.tensors):
        result.warnings.append(f"errors between {BAND_HAPPY:g} and {BAND_UNCOMFORTABLE:g} are fine for an objective "
                               "with kinks but too high for a smooth one (tanh, softmax)")
    return result


def _check_tensor(name: str, t: torch.Tensor, analytic: torch.Tensor, f: Callable[[], torch.Tensor],
                  f0: float, h: float, entries: int, g: torch.Generator) -> TensorCheck:
    flat = t.data.view(-1)
    n = flat.numel()
    picks = range(n) if n <= entries else torch.randperm(n, generator=g)[:entries].tolist()
    a_flat = analytic.reshape(-1)
    errors: list[tuple[float, int, float, float, bool]] = []
    for i in picks:
        old = float(flat[i])
        flat[i] = old + h
        fp = float(f())
        flat[i] = old - h
        fm = float(f())
        flat[i] = old
        num = (fp - fm) / (2 * h)
        a = float(a_flat[i])
        d_plus, d_minus = (fp - f0) / h, (f0 - fm) / h
        jump = abs(d_plus - d_minus)
        rounding = ROUNDING_ULPS * 2.2e-16 * max(abs(f0), 1.0) / h
        kink = jump > KINK_SLOPE_JUMP * max(abs(d_plus), abs(d_minus)) and jump > 100 * rounding
        errors.append((relative_error(a, num, rounding / BAND_HAPPY), i, a, num, kink))
    judged = [e for e in errors if not e[4]] or errors
    worst = max(judged, key=lambda e: e[0] if math.isfinite(e[0]) else math.inf)
    index = tuple(int(v) for v in torch.unravel_index(torch.tensor(worst[1]), t.shape)) if t.dim() else ()
    return TensorCheck(name, tuple(t.shape), len(errors), worst[0], index, worst[2], worst[3],
                       sum(e[4] for e in errors))
