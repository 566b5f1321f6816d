"""Batch norm folded into the layer before it, for inference.

In eval mode a BN layer is a fixed affine map per channel, y = gamma (x - mu) / sqrt(var + eps) + beta, with
the running mean mu and variance var. After a CONV (or FC) layer x = W a + b, so the two are one layer:

    W' = W * s,   b' = (b - mu) * s + beta,   s = gamma / sqrt(var + eps)   (s scales each output channel)

The folded network computes the same scores with one layer fewer per BN (one multiply-add less per
activation). Only a BN directly after a conv or fc is folded; a BN elsewhere (after a ReLU, first in the
net) stays as it is: it is still the same affine map in eval mode, so the output does not change.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

_PAIRS = ((nn.Conv2d, nn.BatchNorm2d), (nn.Linear, nn.BatchNorm1d))


@torch.no_grad()
def fold_pair(layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> nn.Conv2d | nn.Linear:
    """A copy of ``layer`` with ``bn`` (its eval-mode running statistics) folded in; ``layer`` is unchanged."""
    if bn.running_mean is None or bn.running_var is None:  # track_running_stats=False: no fixed map to fold
        raise ValueError("a batch norm without running statistics normalises by each batch; it cannot be folded")
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    folded = copy.deepcopy(layer)
    weight = layer.weight.detach().double()
    folded.weight.copy_((weight * scale.double().view(-1, *[1] * (weight.dim() - 1))).to(weight.dtype))
    bias = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(scale, dtype=torch.float64)
    new_bias = ((bias - bn.running_mean.double()) * scale.double() + shift.double()).to(layer.weight.dtype)
    folded.bias = nn.Parameter(new_bias)
    return folded


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BN that directly follows a conv or fc (inside any
    ``nn.Sequential``, at any depth) folded into it and replaced by ``nn.Identity`` (module names keep
    their numbers). ``model`` itself is left as it was. The count folded is the attribute ``folded_bn``."""
    out = copy.deepcopy(model).eval()
    count = _fold_inside(out)
    setattr(out, "folded_bn", count)  # noqa: B010 - a plain attribute, not a parameter
    return out


def _fold_inside(module: nn.Module) -> int:
    count = 0
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for prev, name in zip(names, names[1:]):
            layer, bn = module._modules[prev], module._modules[name]
            if any(isinstance(layer, a) and type(bn) is b for a, b in _PAIRS) and bn.track_running_stats:
                module._modules[prev] = fold_pair(layer, bn)
                module._modules[name] = nn.Identity()
                count += 1
    for child in module.children():
        count += _fold_inside(child)
    return count


def count_bn(model: nn.Module) -> int:
    """Batch-norm layers left in ``model``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
