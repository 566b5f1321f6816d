"""Shape arithmetic for a spec: each layer's output volume, in the lecture's formulas.

CONV maps W to (W - F + 2P)/S + 1 with F the effective filter size; POOL maps W to (W - F)/S + 1.
A size that is not whole and positive is rejected in the lecture's words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from babysit.errors import BabysitError
from babysit.models.spec import FC, Conv, GlobalAvgPool, Layer, Maxout, Pool, Shape, Spec, parse


@dataclass(frozen=True)
class LayerInfo:
    """One flat layer with the volume it receives and the volume it produces."""

    index: int  # position in Spec.layers() and the module name in the built model
    layer: Layer
    in_shape: Shape  # (C, H, W) or (N,)
    out_shape: Shape

    @property
    def token(self) -> str:
        return str(self.layer)


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


def _slide(where: str, what: str, hw: tuple[int, int], f: int, s: int, p: int, fix: str) -> tuple[int, int]:
    """(W - F + 2P)/S + 1 for both H and W, refusing sizes that are not whole and positive."""
    out = []
    for n in hw:
        num = n - f + 2 * p
        if num < 0 or num % s:
            pad = f"+2*{p}" if p else ""
            formula = f"({n}-{f}{pad})/{s}+1 = {_ratio(num, s)}"
            problem = "is not an integer" if num >= 0 else "is less than 1 (the filter is larger than the padded input)"
            raise BabysitError(f"{where}: {hw[0]}x{hw[1]} input, {what}, stride {s}: {formula} {problem}; {fix}")
        out.append(num // s + 1)
    return out[0], out[1]


def _out_shape(i: int, layer: Layer, shape: Shape, num_classes: int) -> Shape:
    where = f"layer {i} '{layer}'"
    if isinstance(layer, Conv):
        c, h, w = shape
        if c % layer.groups:
            raise BabysitError(f"{where}: {c} input channels cannot be split into {layer.groups} groups; "
                               f"make the input depth a multiple of G or change G")
        what = f"{layer.f}x{layer.f} filter"
        if layer.dilation > 1:
            what += f" with dilation {layer.dilation} ({layer.f_eff}x{layer.f_eff} effective)"
        fix = "change the padding or stride of this layer, or the input size"
        return (layer.k, *_slide(where, what, (h, w), layer.f_eff, layer.stride, layer.pad, fix))
    if isinstance(layer, Pool):
        c, h, w = shape
        fix = "change the pool size or stride, or the input size or earlier padding so that it divides evenly"
        return (c, *_slide(where, f"{layer.f}x{layer.f} pool", (h, w), layer.f, layer.s, 0, fix))
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


def infer_shapes(
    spec: Spec | str, input_shape: tuple[int, int, int], num_classes: int, *, require_scores: bool = True
) -> list[LayerInfo]:
    """Each flat layer's input and output volume for a (C, H, W) input and ``num_classes`` classes.

    CONV: W2 = (W1 - F + 2P)/S + 1 with F the effective size D*(F-1)+1, D2 = K; POOL: W2 =
    (W1 - F)/S + 1, D2 = D1; FC: N outputs. Raises BabysitError for impossible geometry, and,
    with ``require_scores``, when the last volume is not one score per class.
    """
    spec = parse(spec)
    if not (len(input_shape) == 3 and all(isinstance(x, int) and x >= 1 for x in input_shape)):
        raise BabysitError(f"the input shape must be (C, H, W) with positive whole sizes, not {input_shape!r}; "
                           f"e.g. (3, 32, 32) for CIFAR-10")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise BabysitError(f"the number of classes must be a whole number >= 1, not {num_classes!r}")
    shape: Shape = tuple(input_shape)
    infos = []
    for i, layer in enumerate(spec.layers()):
        out = _out_shape(i, layer, shape, num_classes)
        infos.append(LayerInfo(i, layer, shape, out))
        shape = out
    if require_scores and (math.prod(shape) != num_classes or (len(shape) == 3 and shape[1:] != (1, 1))):
        raise BabysitError(f"the network ends with volume {volume_str(shape)} but there are {num_classes} "
                           f"classes; end the spec with a plain 'fc', which gets one output per class")
    return infos
