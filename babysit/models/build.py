"""Spec -> ``nn.Sequential`` of standard torch layers.

Module names follow the flat layer list: layer ``i`` of ``spec.layers()`` is the child named
``str(i)`` (so its parameters are ``"{i}.weight"`` / ``"{i}.bias"``). The implicit flatten before
the first fc is the child named ``"flatten"``; because of it, positional indexing ``model[j]``
can be one off after the first fc: use :func:`layer_module` or ``model.get_submodule(str(i))``.

A ``res[...]`` layer i is a :class:`ResidualBlock` with children ``body`` (layer j of the body is
``"i.body.j"``) and ``shortcut`` (``nn.Identity``, or the 1x1 conv ``"i.shortcut.0"`` and its bn
``"i.shortcut.1"``); a ``cat[...]`` layer i is a :class:`DepthConcat` whose branch b holds layer j as
``"i.b.j"``. ``LayerInfo.name`` (shapes.walk) gives every layer's path.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from babysit.models.shapes import LayerInfo, infer_shapes
from babysit.models.spec import (
    FC,
    Activation,
    BatchNorm,
    Branch,
    Conv,
    Dropout,
    GlobalAvgPool,
    LeakyReLU,
    Maxout,
    Pool,
    Residual,
    Spec,
    parse,
)

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "elu": nn.ELU}


class MaxoutUnit(nn.Module):
    """Maxout over groups of ``k`` consecutive channels (dim 1): y_j = max(x_{jk}, ..., x_{jk+k-1})."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, ...) -> (N, C/k, ...)
        n, c = x.shape[:2]
        return x.reshape(n, c // self.k, self.k, *x.shape[2:]).amax(dim=2)

    def extra_repr(self) -> str:
        return f"k={self.k}"


class ResidualBlock(nn.Module):
    """A residual block (He et al. 2015): out = body(x) + shortcut(x); the activation after the sum is the
    spec's next layer (``res[...] relu``)."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut  # nn.Identity, or a 1x1 conv (+ bn) when the body changes the volume

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class DepthConcat(nn.ModuleList):
    """Branches on the same input, outputs stacked along depth (dim 1): the Inception module's filter concat."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self], dim=1)


def _sequential(infos: list[LayerInfo]) -> nn.Sequential:
    """The chain of ``infos`` as an nn.Sequential whose children are named by their last path part (j)."""
    return nn.Sequential(OrderedDict((info.name.rsplit(".", 1)[1], _module(info)) for info in infos))


def _group(info: LayerInfo) -> nn.Module:
    name = info.name
    if isinstance(info.layer, Residual):
        body = [i for i in info.inner if i.name.startswith(f"{name}.body.")]
        shortcut = [i for i in info.inner if i.name.startswith(f"{name}.shortcut.")]
        return ResidualBlock(_sequential(body), _sequential(shortcut) if shortcut else nn.Identity())
    count = len(info.layer.branches) if isinstance(info.layer, Branch) else 0
    return DepthConcat(_sequential([i for i in info.inner if i.name.startswith(f"{name}.{b}.")]) for b in range(count))


def _module(info: LayerInfo) -> nn.Module:
    layer, shape = info.layer, info.in_shape
    if isinstance(layer, Residual | Branch):
        return _group(info)
    if isinstance(layer, Conv):
        return nn.Conv2d(shape[0], layer.k, layer.f, stride=layer.stride, padding=layer.pad,
                         dilation=layer.dilation, groups=layer.groups)
    if isinstance(layer, Pool):
        return (nn.MaxPool2d if layer.mode == "max" else nn.AvgPool2d)(layer.f, stride=layer.s, padding=layer.padding)
    if isinstance(layer, GlobalAvgPool):
        return nn.AdaptiveAvgPool2d(1)
    if isinstance(layer, FC):
        return nn.Linear(math.prod(shape), info.out_shape[0])
    if isinstance(layer, BatchNorm):
        return nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.p)
    if isinstance(layer, Activation):
        return _ACTIVATIONS[layer.name]()
    if isinstance(layer, LeakyReLU):
        return nn.LeakyReLU(layer.slope)
    if isinstance(layer, Maxout):
        return MaxoutUnit(layer.k)
    raise TypeError(f"no module for layer {layer!r}")


def build(spec: Spec | str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Build the network: images (N, C, H, W) -> class scores (N, num_classes).

    Layers get torch's default initialisation; call ``init_weights(model)`` for the notes' schemes.
    The model carries ``spec`` (canonical text), ``input_shape`` and ``num_classes`` attributes.
    Construct under ``with torch.device("meta"):`` to size a big network without allocating it.
    """
    spec = parse(spec)
    infos = infer_shapes(spec, input_shape, num_classes)
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for info in infos:
        if isinstance(info.layer, FC) and len(info.in_shape) == 3:
            modules["flatten"] = nn.Flatten()  # (N, C, H, W) -> (N, C*H*W)
        modules[str(info.index)] = _module(info)
    if len(infos[-1].out_shape) == 3:  # an all-conv net ending in a 1x1xK volume
        modules["flatten"] = nn.Flatten()
    model = nn.Sequential(modules)
    # plain attributes (not parameters or buffers): what later stages need to read the model back
    setattr(model, "spec", str(spec))  # noqa: B010 - nn.Module's typed __setattr__ only takes tensors/modules
    setattr(model, "input_shape", tuple(input_shape))  # noqa: B010
    setattr(model, "num_classes", num_classes)  # noqa: B010
    return model


def layer_module(model: nn.Module, index: int | str) -> nn.Module:
    """The module that implements flat layer ``index`` of the model's spec (a path such as "5.body.2": that one)."""
    return model.get_submodule(str(index))
