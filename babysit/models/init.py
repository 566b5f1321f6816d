"""Weight initialisation, as in the notes' "Weight Initialization" section.

Schemes (biases start at the constant ``bias``, zero by default; batch-norm layers keep gamma = 1,
beta = 0):

- ``he``: ``W = randn(n) * sqrt(2.0 / n)``, n = fan-in (He et al. 2015, for ReLU networks);
  leaky ReLU with slope a uses ``sqrt(2 / ((1 + a^2) n))``.
- ``xavier``: ``W = randn(n) / sqrt(n)`` ("calibrating the variances with 1/sqrt(n)", Glorot).
- ``normal-STD``: small random numbers ``W = STD * randn(...)``, e.g. ``normal-0.01``, ``normal-0.001``.
- ``orthogonal``: each layer's weight, seen as a (fan-out, fan-in) matrix, is a random orthogonal
  matrix times the gain of its activation (sqrt(2) for ReLU, 1 otherwise) (Saxe et al. 2013).
- ``lsuv``: orthogonal, then layer by layer W /= sqrt(Var(layer output)) on a data batch until the
  output variance is within 0.1 of 1 (Mishkin & Matas 2015, "All you need is a good init").
- ``data``: He/Xavier Gaussian, then layer by layer each output unit k is normalised on a data
  batch: W_k /= std_k and its bias set so the unit's mean output is ``bias`` (Kraehenbuehl et al. 2015).
- ``auto``: per conv/fc layer, from the activation that follows it in the spec: He for relu,
  lrelu, elu and maxout; Xavier for tanh, sigmoid and no activation (the final fc that gives the
  scores, or a linear layer). A model without a ``spec`` attribute is treated as ReLU throughout
  with a Xavier last layer. ``orthogonal`` takes its gain from the same rule. The score layer is
  then scaled by SCORE_LAYER_GAIN (0.01) so that the initial loss is ln(C), as the notes check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from babysit.errors import BabysitError
from babysit.limits import check_memory
from babysit.models.auto import resolve_spec
from babysit.models.build import MaxoutUnit, build
from babysit.models.shapes import LayerInfo, infer_shapes, walk
from babysit.models.spec import Activation, Branch, LeakyReLU, Maxout, Residual
from babysit.registry import Registry

SCORE_LAYER_GAIN = 0.01
"""``auto`` scales the last conv/fc (the class scores) by this: the notes' sanity check expects the
initial softmax loss to be ln(C) (2.302 for 10 classes), which holds only when the scores start near 0."""



@dataclass(frozen=True)
class Scheme:
    """An init scheme: how it picks each layer's rule and whether it measures a data batch."""

    meaning: str  # one line for help texts
    by_activation: bool = False  # He or Xavier per layer from the activation that follows it (else the scheme's own)
    orthogonal: bool = False  # draw an orthogonal matrix times the activation's gain instead of a Gaussian
    needs_data: bool = False  # measures a batch of (preprocessed) training images after drawing the weights


SCHEMES: Registry[Scheme] = Registry("init scheme", hint=" (e.g. normal-0.01)")
SCHEMES.add("auto", Scheme("He or Xavier per layer from the next activation, score layer x0.01", by_activation=True))
SCHEMES.add("he", Scheme("W = randn * sqrt(2/n), n = fan-in (ReLU networks)"))
SCHEMES.add("xavier", Scheme("W = randn / sqrt(n), n = fan-in"))
SCHEMES.add("normal-STD", Scheme("W = STD * randn, e.g. normal-0.01"))  # NAME-STD: parse_scheme reads the number
SCHEMES.add("orthogonal", Scheme("random orthogonal W times the activation's gain", by_activation=True,
                                 orthogonal=True))
SCHEMES.add("lsuv", Scheme("orthogonal, then W /= sqrt(Var(output)) layer by layer on a batch", by_activation=True,
                           orthogonal=True, needs_data=True))
SCHEMES.add("data", Scheme("He/Xavier, then each unit normalised to mean `bias`, std 1 on a batch",
                           by_activation=True, needs_data=True))
DATA_SCHEMES = tuple(name for name, s in SCHEMES.items() if s.needs_data)  # ("lsuv", "data")
_WEIGHTED = (nn.Conv2d, nn.Linear)
_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.LeakyReLU, MaxoutUnit)


def parse_scheme(scheme: str) -> tuple[Scheme, float | None]:
    """``"normal-0.01"`` -> (the normal-STD entry, 0.01); ``"he"`` -> (the he entry, None).

    A name with a number is looked up as ``PREFIX-STD`` (the registered name); an unknown name or a bad
    number is the one-sentence :class:`BabysitError`.
    """
    prefix, sep, number = scheme.partition("-")
    if sep and f"{prefix}-STD" in SCHEMES:
        try:
            std = float(number)
        except ValueError:
            std = math.nan
        if math.isfinite(std) and std > 0:
            return SCHEMES.get(f"{prefix}-STD"), std
        raise BabysitError(f"init scheme {scheme!r} needs a positive number after '{prefix}-', e.g. {prefix}-0.01")
    return SCHEMES.get(scheme), None


def check_scheme(scheme: str) -> None:
    """Raise the one-sentence error for an unknown scheme name."""
    parse_scheme(scheme)


def needs_data(scheme: str) -> bool:
    """Whether ``scheme`` measures a data batch (lsuv, data)."""
    return scheme in SCHEMES and SCHEMES.get(scheme).needs_data


Rule = tuple[str, float]  # ("he", leaky slope) or ("xavier", 0.0)


def _auto_rules(infos: list[LayerInfo] | tuple[LayerInfo, ...], after: Rule, out: dict[str, Rule]) -> Rule:
    """He or Xavier for every conv/fc of a chain, from the next activation before the next conv/fc.

    Walks the chain backwards: ``after`` is what a weighted layer at the chain's end gets (the layers that
    follow the chain decide it). Inside a res/cat group the body, the shortcut and every branch end where
    the group ends. Fills ``out`` (module path -> rule) and returns what a weighted layer just before the
    chain gets (a group: its body's, or its first branch's, start).
    """
    state = after
    for info in reversed(infos):
        layer = info.layer
        if isinstance(layer, Residual):
            _auto_rules([i for i in info.inner if ".shortcut." in i.name], state, out)
            state = _auto_rules([i for i in info.inner if ".body." in i.name], state, out)
        elif isinstance(layer, Branch):
            starts = [_auto_rules([i for i in info.inner if i.name.startswith(f"{info.name}.{b}.")], state, out)
                      for b in range(len(layer.branches))]
            state = starts[0]
        elif layer.has_weights:
            out[info.name] = state
            state = ("xavier", 0.0)  # a weighted layer right before this one has no activation in between
        elif isinstance(layer, LeakyReLU):
            state = ("he", layer.slope)
        elif isinstance(layer, Maxout) or (isinstance(layer, Activation) and layer.name in ("relu", "elu")):
            state = ("he", 0.0)
        elif isinstance(layer, Activation):  # tanh, sigmoid
            state = ("xavier", 0.0)
    return state


Weighted = nn.Conv2d | nn.Linear


def _weighted(module: nn.Module) -> Weighted:
    assert isinstance(module, _WEIGHTED), f"expected a conv or linear module, got {type(module).__name__}"
    return module


def _rules(model: nn.Module, scheme: str, by_activation: bool) -> list[tuple[Weighted, str, float]]:
    """(module, "he" | "xavier" | scheme, leaky slope) per conv/fc layer, in forward order."""
    spec, shape, classes = (getattr(model, key, None) for key in ("spec", "input_shape", "num_classes"))
    if isinstance(spec, str) and shape is not None and isinstance(classes, int):
        infos = infer_shapes(spec, shape, classes)
        auto: dict[str, Rule] = {}
        _auto_rules(infos, ("xavier", 0.0), auto)
        weighted = [info.name for info in walk(infos) if info.layer.has_weights and not info.inner]
        if by_activation:
            return [(_weighted(model.get_submodule(name)), *auto[name]) for name in weighted]
        return [(_weighted(model.get_submodule(name)), scheme, 0.0) for name in weighted]
    modules = [m for m in model.modules() if isinstance(m, _WEIGHTED)]
    if by_activation:
        return [(m, "xavier" if j == len(modules) - 1 else "he", 0.0) for j, m in enumerate(modules)]
    return [(m, scheme, 0.0) for m in modules]


def init_weights(model: nn.Module, scheme: str = "auto", batch: torch.Tensor | None = None,
                 bias: float = 0.0) -> None:
    """Initialise every conv/fc weight of ``model`` in place by ``scheme``; biases to the constant ``bias``.

    ``he``: std = sqrt(2/n); ``xavier``: std = 1/sqrt(n) (n = fan-in); ``normal-STD``: std = STD;
    ``orthogonal``: gain * orthogonal; ``auto``: He or Xavier per layer from the activation that
    follows it; ``lsuv`` and ``data`` also need ``batch``, inputs (N, C, H, W) as the model sees them.
    """
    entry, std = parse_scheme(scheme)
    if entry.needs_data and batch is None:
        raise BabysitError(f"init scheme {scheme!r} measures a batch of training images; pass batch= to "
                           "init_weights (babysit train uses model.init_batch images).")
    rules = _rules(model, scheme, entry.by_activation)
    for module, rule, slope in rules:
        weight = module.weight
        if std is not None:
            nn.init.normal_(weight, 0.0, std)
        elif entry.orthogonal:
            nn.init.orthogonal_(weight, gain=math.sqrt(2 / (1 + slope**2)) if rule == "he" else 1.0)
        elif rule == "he":
            nn.init.kaiming_normal_(weight, a=slope, mode="fan_in", nonlinearity="leaky_relu")
        else:
            nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="linear")  # std 1/sqrt(fan_in)
        if module.bias is not None:
            nn.init.constant_(module.bias, bias)
    if scheme == "auto" and rules:
        with torch.no_grad():  # tiny score weights: every class starts equally likely, loss = ln(C)
            rules[-1][0].weight.mul_(SCORE_LAYER_GAIN)
    if scheme == "lsuv" and batch is not None:
        lsuv_(model, [m for m, _, _ in rules], batch)
    elif scheme == "data" and batch is not None:
        data_init_(model, [m for m, _, _ in rules], batch, mean=bias)


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the layer of interest has run."""


@torch.no_grad()
def _output_of(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output of ``module`` when ``model`` runs on ``x`` (the rest of the network is skipped)."""
    box: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        box.append(out)
        raise _Captured

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _Captured:
        pass
    finally:
        handle.remove()
    return box[0]


@torch.no_grad()
def lsuv_(model: nn.Module, modules: list[Weighted], batch: torch.Tensor, tol: float = 0.1,
          max_iter: int = 10) -> None:
    """Layer-sequential unit variance: per layer, W /= sqrt(Var(out)) until |Var(out) - 1| < tol."""
    was_training = model.training
    model.eval()  # dropout off: measure the network as it computes, not one thinned sample
    for module in modules:
        for _ in range(max_iter):
            var = _output_of(model, module, batch).var().item()
            if abs(var - 1) < tol or var == 0 or not math.isfinite(var):
                break
            module.weight.div_(math.sqrt(var))
    model.train(was_training)


@torch.no_grad()
def data_init_(model: nn.Module, modules: list[Weighted], batch: torch.Tensor, mean: float = 0.0) -> None:
    """Data-dependent init: per layer and output unit k, W_k /= std_k and b_k <- mean - (mu_k - b_k)/std_k,
    so that on ``batch`` every unit has output mean ``mean`` and std 1."""
    was_training = model.training
    model.eval()
    for module in modules:
        out = _output_of(model, module, batch)
        dims = [d for d in range(out.ndim) if d != 1]  # all but the unit (channel) axis
        mu, std = out.mean(dims), out.std(dims).clamp_min(1e-8)  # (K,)
        module.weight.div_(std.view(-1, *[1] * (module.weight.ndim - 1)))
        if module.bias is not None:
            module.bias.copy_(mean - (mu - module.bias) / std)
    model.train(was_training)


@dataclass(frozen=True)
class ActivationStat:
    """Mean and std of one layer's output over a batch."""

    layer: str  # module name ("3" is layer 3 of the spec)
    kind: str  # module type, e.g. ReLU
    mean: float
    std: float


@torch.no_grad()
def activation_stats(model: nn.Module, x: torch.Tensor) -> list[ActivationStat]:
    """Mean and std of each nonlinearity's output on ``x`` in eval mode (conv/fc outputs if there are none)."""
    named: list[tuple[str, nn.Module]] = [(n, m) for n, m in model.named_modules() if isinstance(m, _ACTIVATIONS)]
    if not named:
        named = [(n, m) for n, m in model.named_modules() if isinstance(m, _WEIGHTED)]
    stats: list[ActivationStat] = []
    hooks = [m.register_forward_hook(
        lambda mod, _inp, out, name=n: stats.append(
            ActivationStat(name, type(mod).__name__, out.mean().item(), out.std().item())))
        for n, m in named]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return stats


def init_check(spec: str, input_shape: tuple[int, int, int], schemes: tuple[str, ...] = ("normal-0.01", "he", "lsuv"),
               num_classes: int = 10, batch_size: int = 256, seed: int = 0) -> dict[str, list[ActivationStat]]:
    """The lecture's picture as numbers: per scheme, each activation layer's mean and std when the
    network ``spec``, freshly initialised, sees unit-Gaussian inputs. A network or input that cannot fit is refused
    from the summary table's numbers before anything is allocated."""
    from babysit.models.summary import memory_estimate, summary  # summary imports this module's neighbours only

    est = memory_estimate(summary(resolve_spec(spec, input_shape), input_shape, num_classes, batch_size), False)
    check_memory(est.total + batch_size * math.prod(input_shape) * 4, f"init-check of {spec!r} on {batch_size} "
                 f"inputs of {'x'.join(map(str, input_shape))} ({est.describe()})",
                 "use a smaller --input, --batch-size or network")
    x = torch.randn(batch_size, *input_shape, generator=torch.Generator().manual_seed(seed))
    results = {}
    for scheme in schemes:
        torch.manual_seed(seed)
        model = build(resolve_spec(spec, input_shape), input_shape, num_classes)
        init_weights(model, scheme, batch=x)
        results[scheme] = activation_stats(model, x)
    return results


def format_init_check(results: dict[str, list[ActivationStat]]) -> str:
    """A table: one row per activation layer, the output std under each scheme."""
    schemes = list(results)
    first = results[schemes[0]]
    width = max(12, *(len(s) + 2 for s in schemes))
    names = [f"{stat.layer} {stat.kind}" for stat in first]  # "5.body.2 ReLU": inside a group, the module path
    left = max(14, *(len(n) + 1 for n in names)) if names else 14
    lines = ["layer".ljust(left) + "".join(f"std {s}".rjust(width + 4) for s in schemes)]
    for i, name in enumerate(names):
        row = name.ljust(left)
        lines.append(row + "".join(f"{results[s][i].std:.3e}".rjust(width + 4) for s in schemes))
    return "\n".join(lines)
