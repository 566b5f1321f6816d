"""Shape arithmetic for a spec: each layer's output volume, in the lecture's formulas.

CONV maps W to (W - F + 2P)/S + 1 with F the effective filter size; POOL maps W to (W - F + 2P)/S + 1
(P = 0 unless given). A size that is not whole and positive is rejected in the lecture's words, unless
the layer says ``-floor`` (then it is rounded down, as torch does).

Groups: a ``res[...]`` body must keep H x W or divide it by its total stride S, and its output is
body(x) + shortcut(x) with the shortcut the identity (same volume) or a 1x1 conv with stride S (and a bn
when the body has one) whose size is floor((W - 1)/S) + 1. A ``cat[...]`` gives the branches' common
H x W and the sum of their depths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from babysit.errors import BabysitError
from babysit.models.spec import (
    FC,
    BatchNorm,
    Branch,
    Conv,
    GlobalAvgPool,
    Layer,
    Maxout,
    Pool,
    Residual,
    Shape,
    Spec,
    leaves,
    parse,
)


@dataclass(frozen=True)
class LayerInfo:
    """One layer with the volume it receives and the volume it produces (a res/cat group: with its insides)."""

    index: int  # position in Spec.layers() (for a layer inside a group: the group's)
    layer: Layer
    in_shape: Shape  # (C, H, W) or (N,)
    out_shape: Shape
    path: str = ""  # module path in the built model, "5.body.2", "5.shortcut.0", "7.1.0"; "" = str(index)
    inner: tuple[LayerInfo, ...] = ()  # a group's layers: res body then shortcut; cat branch by branch

    @property
    def token(self) -> str:
        return str(self.layer)

    @property
    def name(self) -> str:
        """The module path: ``model.get_submodule(info.name)`` is this layer's module."""
        return self.path or str(self.index)


def walk(infos: list[LayerInfo] | tuple[LayerInfo, ...]) -> list[LayerInfo]:
    """Every layer in forward order, each group followed by its insides (depth first)."""
    out: list[LayerInfo] = []
    for info in infos:
        out += [info, *walk(info.inner)]
    return out


def volume_str(shape: Shape) -> str:
    """The notes' way to write a volume: H x W x D, e.g. ``224x224x64``; a flat vector is 1x1xN."""
    if len(shape) == 3:
        return f"{shape[1]}x{shape[2]}x{shape[0]}"
    return f"1x1x{shape[0]}"


def _ratio(num: int, s: int) -> str:
    if num % s == 0:
        return str(num // s + 1)
    value = num / s + 1
    for digits in range(2, 9):
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
        if "." in text:
            return text
    return repr(value)


def _slide(where: str, what: str, hw: tuple[int, int], f: int, s: int, p: int, fix: str,
           floor: bool = False) -> tuple[int, int]:
    """(W - F + 2P)/S + 1 for both H and W, refusing sizes that are not whole (unless ``floor``) and positive."""
    out = []
    for n in hw:
        num = n - f + 2 * p
        if num < 0 or (num % s and not floor):
            pad = f"+2*{p}" if p else ""
            formula = f"({n}-{f}{pad})/{s}+1 = {_ratio(num, s)}"
            problem = "is not an integer" if num >= 0 else "is less than 1 (the filter is larger than the padded input)"
            also = "; or add -floor to round the size down, as torch does" if num >= 0 else ""
            raise BabysitError(f"{where}: {hw[0]}x{hw[1]} input, {what}, stride {s}: {formula} {problem}; {fix}{also}")
        out.append(num // s + 1)
    return out[0], out[1]


def _out_shape(path: str, layer: Layer, shape: Shape, num_classes: int) -> Shape:
    where = f"layer {path} '{layer}'"
    if isinstance(layer, Conv):
        c, h, w = shape
        if c % layer.groups:
            raise BabysitError(f"{where}: {c} input channels cannot be split into {layer.groups} groups; "
                               f"make the input depth a multiple of G or change G")
        what = f"{layer.f}x{layer.f} filter"
        if layer.dilation > 1:
            what += f" with dilation {layer.dilation} ({layer.f_eff}x{layer.f_eff} effective)"
        fix = "change the padding or stride of this layer, or the input size"
        return (layer.k, *_slide(where, what, (h, w), layer.f_eff, layer.stride, layer.pad, fix, layer.floor))
    if isinstance(layer, Pool):
        c, h, w = shape
        fix = "change the pool size or stride, or the input size or earlier padding so that it divides evenly"
        return (c, *_slide(where, f"{layer.f}x{layer.f} pool", (h, w), layer.f, layer.s, layer.padding, fix,
                           layer.floor))
    if isinstance(layer, GlobalAvgPool):
        return (shape[0], 1, 1)
    if isinstance(layer, FC):
        return (num_classes if layer.n is None else layer.n,)
    if isinstance(layer, Maxout):
        if shape[0] % layer.k:
            raise BabysitError(f"{where}: a depth of {shape[0]} is not divisible by {layer.k}; "
                               f"make the previous layer's width a multiple of {layer.k}")
        return (shape[0] // layer.k, *shape[1:])
    return shape  # bn, dropout and activations keep the volume


def _group_where(path: str, group: Residual | Branch) -> str:
    text = str(group)
    return f"layer {path} '{text if len(text) <= 60 else text[:57] + '...'}'"


def _stride(infos: list[LayerInfo] | tuple[LayerInfo, ...]) -> int:
    """The total stride S of a chain of layers: the product of its conv and pool strides (a cat: its first branch)."""
    total = 1
    for info in infos:
        layer = info.layer
        if isinstance(layer, Conv):
            total *= layer.stride
        elif isinstance(layer, Pool):
            total *= layer.s
        elif isinstance(layer, Residual):
            total *= _stride([i for i in info.inner if ".shortcut." not in i.name])
        elif isinstance(layer, Branch):
            total *= _stride([i for i in info.inner if i.name.startswith(f"{info.name}.0.")])
    return total


def _residual(i: int, path: str, layer: Residual, shape: Shape, num_classes: int) -> LayerInfo:
    body = _chain(i, f"{path}.body.", layer.layers(), shape, num_classes)
    out = body[-1].out_shape if body else shape
    if out == shape:  # identity shortcut: out = body(x) + x
        return LayerInfo(i, layer, shape, out, path, tuple(body))
    s = _stride(body)
    (_, h, w), (k, h2, w2) = shape, out
    short = ((h - 1) // s + 1, (w - 1) // s + 1)
    if short != (h2, w2):
        raise BabysitError(
            f"{_group_where(path, layer)}: the block maps {volume_str(shape)} to {volume_str(out)}, but its shortcut, "
            f"a 1x1 conv with the block's stride {s}, gives {short[0]}x{short[1]} ((W-1)/{s}+1, rounded down), and "
            f"body(x) + shortcut(x) needs one size; inside res[ ] keep H x W ('same' padding, conv's default) and "
            f"change it only by a stride")
    projection = Conv(1, k, stride=s, floor=(h - 1) % s != 0 or (w - 1) % s != 0)
    shortcut = [LayerInfo(i, projection, shape, out, f"{path}.shortcut.0")]
    if any(isinstance(leaf, BatchNorm) for leaf in leaves(layer.layers())):
        shortcut.append(LayerInfo(i, BatchNorm(), out, out, f"{path}.shortcut.1"))
    return LayerInfo(i, layer, shape, out, path, tuple(body + shortcut))


def _branch(i: int, path: str, layer: Branch, shape: Shape, num_classes: int) -> LayerInfo:
    inner: list[LayerInfo] = []
    outs: list[Shape] = []
    for b, branch in enumerate(layer.branch_layers()):
        chain = _chain(i, f"{path}.{b}.", branch, shape, num_classes)
        inner += chain
        outs.append(chain[-1].out_shape)
    for b, out in enumerate(outs[1:], start=1):
        if out[1:] != outs[0][1:]:
            raise BabysitError(
                f"{_group_where(path, layer)}: cat[ ] stacks its branches' volumes along depth, so every branch must "
                f"give the same H x W, but branch 0 gives {volume_str(outs[0])} and branch {b} gives "
                f"{volume_str(out)}; keep the size in every branch ('same' padding: conv's default, pool3-s1-p1 for "
                f"a 3x3 pool) or give the branches the same stride")
    return LayerInfo(i, layer, shape, (sum(out[0] for out in outs), *outs[0][1:]), path, tuple(inner))


def _chain(i: int | None, prefix: str, layers: tuple[Layer, ...], shape: Shape, num_classes: int) -> list[LayerInfo]:
    """The infos of a chain of layers from ``shape``; ``i`` None: the top level (each layer is its own index)."""
    infos = []
    for j, layer in enumerate(layers):
        index, path = (j, "") if i is None else (i, f"{prefix}{j}")
        where = path or str(j)
        if isinstance(layer, Residual | Branch) and len(shape) != 3:
            raise BabysitError(f"{_group_where(where, layer)} needs a volume (C, H, W), not a vector; put it before "
                               f"the first fc")
        if isinstance(layer, Residual):
            info = _residual(index, where, layer, shape, num_classes)
        elif isinstance(layer, Branch):
            info = _branch(index, where, layer, shape, num_classes)
        else:
            info = LayerInfo(index, layer, shape, _out_shape(where, layer, shape, num_classes), path)
        infos.append(info)
        shape = info.out_shape
    return infos


def infer_shapes(
    spec: Spec | str, input_shape: tuple[int, int, int], num_classes: int, *, require_scores: bool = True
) -> list[LayerInfo]:
    """Each layer's input and output volume for a (C, H, W) input and ``num_classes`` classes.

    CONV: W2 = (W1 - F + 2P)/S + 1 with F the effective size D*(F-1)+1, D2 = K; POOL: W2 =
    (W1 - F + 2P)/S + 1, D2 = D1; FC: N outputs; res/cat groups as in the module docstring (their
    insides in ``LayerInfo.inner``). Raises BabysitError for impossible geometry, and, with
    ``require_scores``, when the last volume is not one score per class.
    """
    spec = parse(spec)
    if not (len(input_shape) == 3 and all(isinstance(x, int) and x >= 1 for x in input_shape)):
        raise BabysitError(f"the input shape must be (C, H, W) with positive whole sizes, not {input_shape!r}; "
                           f"e.g. (3, 32, 32) for CIFAR-10")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise BabysitError(f"the number of classes must be a whole number >= 1, not {num_classes!r}")
    infos = _chain(None, "", spec.layers(), tuple(input_shape), num_classes)
    shape = infos[-1].out_shape
    if require_scores and (math.prod(shape) != num_classes or (len(shape) == 3 and shape[1:] != (1, 1))):
        raise BabysitError(f"the network ends with volume {volume_str(shape)} but there are {num_classes} "
                           f"classes; end the spec with a plain 'fc', which gets one output per class")
    return infos
