"""Weight initialisation, as in the notes' "Weight Initialization" section.

Schemes (biases always start at zero; batch-norm layers keep gamma = 1, beta = 0):

- ``he``: ``W = randn(n) * sqrt(2.0 / n)``, n = fan-in (He et al. 2015, for ReLU networks);
  leaky ReLU with slope a uses ``sqrt(2 / ((1 + a^2) n))``.
- ``xavier``: ``W = randn(n) / sqrt(n)`` ("calibrating the variances with 1/sqrt(n)").
- ``normal-STD``: small random numbers ``W = STD * randn(...)``, e.g. ``normal-0.01``.
- ``auto``: per conv/fc layer, from the activation that follows it in the spec: He for relu,
  lrelu, elu and maxout; Xavier for tanh, sigmoid and no activation (the final fc that gives the
  scores, or a linear layer). A model without a ``spec`` attribute is treated as ReLU throughout
  with a Xavier last layer.
"""

from __future__ import annotations

import math

from torch import nn

from babysit.errors import BabysitError
from babysit.models.spec import Activation, Layer, LeakyReLU, Maxout, parse

SCHEMES = ("auto", "he", "xavier", "normal-STD")
_WEIGHTED = (nn.Conv2d, nn.Linear)


def _std_for(scheme: str) -> float | None:
    """The fixed std of a ``normal-STD`` scheme, None for the other known schemes."""
    if scheme in ("auto", "he", "xavier"):
        return None
    if scheme.startswith("normal-"):
        try:
            std = float(scheme[len("normal-"):])
        except ValueError:
            std = math.nan
        if math.isfinite(std) and std > 0:
            return std
        raise BabysitError(f"init scheme {scheme!r} needs a positive number after 'normal-', e.g. normal-0.01")
    raise BabysitError(f"unknown init scheme {scheme!r}; the known schemes are {', '.join(SCHEMES)} (e.g. normal-0.01)")


def _auto_rule(layers: tuple[Layer, ...], i: int) -> tuple[str, float]:
    """("he", slope) or ("xavier", 0) for weighted layer i, from the next activation before the next conv/fc."""
    for layer in layers[i + 1:]:
        if layer.has_weights:
            break
        if isinstance(layer, LeakyReLU):
            return "he", layer.slope
        if isinstance(layer, Maxout) or (isinstance(layer, Activation) and layer.name in ("relu", "elu")):
            return "he", 0.0
        if isinstance(layer, Activation):  # tanh, sigmoid
            return "xavier", 0.0
    return "xavier", 0.0


Weighted = nn.Conv2d | nn.Linear


def _weighted(module: nn.Module) -> Weighted:
    assert isinstance(module, _WEIGHTED), f"expected a conv or linear module, got {type(module).__name__}"
    return module


def _rules(model: nn.Module, scheme: str) -> list[tuple[Weighted, str, float]]:
    spec = getattr(model, "spec", None)
    if isinstance(spec, str):
        layers = parse(spec).layers()
        weighted = [(_weighted(model.get_submodule(str(i))), i) for i, layer in enumerate(layers) if layer.has_weights]
        if scheme == "auto":
            return [(module, *_auto_rule(layers, i)) for module, i in weighted]
        return [(module, scheme, 0.0) for module, _ in weighted]
    modules = [m for m in model.modules() if isinstance(m, _WEIGHTED)]
    if scheme == "auto":
        return [(m, "xavier" if j == len(modules) - 1 else "he", 0.0) for j, m in enumerate(modules)]
    return [(m, scheme, 0.0) for m in modules]


def init_weights(model: nn.Module, scheme: str = "auto") -> None:
    """Initialise every conv/fc weight of ``model`` in place by ``scheme``; biases to zero.

    ``he``: std = sqrt(2/n); ``xavier``: std = 1/sqrt(n) (n = fan-in); ``normal-STD``: std = STD;
    ``auto``: He or Xavier per layer from the activation that follows it (see the module doc).
    """
    std = _std_for(scheme)
    for module, rule, slope in _rules(model, scheme):
        weight, bias = module.weight, module.bias
        if std is not None:
            nn.init.normal_(weight, 0.0, std)
        elif rule == "he":
            nn.init.kaiming_normal_(weight, a=slope, mode="fan_in", nonlinearity="leaky_relu")
        else:
            nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="linear")  # std 1/sqrt(fan_in)
        if bias is not None:
            nn.init.zeros_(bias)
