"""FC -> CONV conversion: the notes' "converting FC layers to CONV layers".

An FC layer that looks at a whole C x H x W volume is a CONV layer with F = H (= W), no padding and one
filter per output (the notes' example: FC over 7x7x512 -> CONV F=7, K=4096, giving 1x1x4096); every later
FC is a 1x1 CONV. The weights are the same numbers reshaped, (K, C*H*W) -> (K, C, H, W), because the
flatten before the first FC is C, H, W in that order. ``gap`` (global average pooling) becomes an
average pool over the training-size window with stride 1, and a BN after an FC becomes a 2d BN.

At the training size the converted net returns the same scores as a 1x1xK volume. On a larger image it
slides the whole net in one pass and returns a score map: entry (i, j) is the original net's scores for
the training-size crop whose top-left corner is (i*S, j*S), S the net's total stride (the product of its
conv and pool strides). That equality is exact when no conv pads with zeros (``-p0``); with "same" padding
the crop's border pixels see their neighbours in the larger image instead of the zeros they saw alone.
"""

from __future__ import annotations

import torch
from torch import nn

from babysit.errors import BabysitError
from babysit.models.build import build
from babysit.models.shapes import infer_shapes
from babysit.models.spec import FC, Branch, Conv, GlobalAvgPool, Layer, Pool, Repeat, Residual, Spec, _flatten, parse


def fully_conv_spec(spec: Spec | str, input_shape: tuple[int, int, int], num_classes: int) -> Spec:
    """The spec with every FC layer written as the equivalent CONV (layer numbers unchanged)."""
    spec = parse(spec)
    infos = infer_shapes(spec, input_shape, num_classes)
    layers = spec.layers()
    first_fc = next((i for i, layer in enumerate(layers) if isinstance(layer, FC)), len(layers))
    nodes: list[Layer | Repeat] = []
    index = 0  # flat number of the node's first layer
    for node in spec.nodes:
        size = len(_flatten((node,)))
        if index + size > first_fc:  # the node holding the first fc, and all after it: written flat
            nodes += [_converted(info.layer, info.in_shape, info.out_shape) for info in infos[index:]]
            break
        if isinstance(node, GlobalAvgPool):
            nodes.append(_converted(node, infos[index].in_shape, infos[index].out_shape))
        elif any(isinstance(layer, GlobalAvgPool) for layer in _flatten((node,))):
            raise BabysitError(f"the gap inside the group {node} cannot be converted on its own; write the group's "
                               "layers out without the [ ]*N around the gap.")
        else:
            nodes.append(node)
        index += size
    return Spec(tuple(nodes))


def _converted(layer: Layer, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Layer:
    """One layer of the fully convolutional net."""
    if isinstance(layer, FC):
        if len(in_shape) == 1:  # after an earlier fc, now a 1x1xN volume
            return Conv(1, out_shape[0], padding=0)
        _square(in_shape, str(layer))
        return Conv(in_shape[1], out_shape[0], padding=0)
    if isinstance(layer, GlobalAvgPool):
        _square(in_shape, "gap")
        return Pool(in_shape[1], stride=1, mode="avg")
    return layer  # bn, dropout, activations and maxout act per channel: the same on a volume


def _square(in_shape: tuple[int, ...], what: str) -> None:
    if in_shape[1] != in_shape[2]:
        raise BabysitError(f"{what} sees a {in_shape[1]}x{in_shape[2]} volume, and a conv filter is square; "
                           "train on square images (--data.size) to convert this net.")


def _stride(layers: tuple[Layer, ...]) -> int:
    """The product of the conv and pool strides along a chain; a res[ ] group counts its body's, a cat[ ]
    its first branch's (every branch gives the same H x W)."""
    total = 1
    for layer in layers:
        if isinstance(layer, Conv):
            total *= layer.stride
        elif isinstance(layer, Pool):
            total *= layer.s
        elif isinstance(layer, Residual):
            total *= _stride(layer.layers())
        elif isinstance(layer, Branch):
            total *= _stride(layer.branch_layers()[0])
    return total


def total_stride(spec: Spec | str) -> int:
    """S, the product of the conv and pool strides: one step of the score map is S input pixels."""
    return _stride(parse(spec).layers())


def convert_state(state: dict[str, torch.Tensor], spec: Spec | str, input_shape: tuple[int, int, int],
                  num_classes: int) -> dict[str, torch.Tensor]:
    """A state dict of the original net as the converted net's: each fc weight (K, C*H*W) -> (K, C, H, W)."""
    out = dict(state)
    for info in infer_shapes(spec, input_shape, num_classes):
        key = f"{info.index}.weight"
        if isinstance(info.layer, FC) and key in out:
            shape = info.in_shape if len(info.in_shape) == 3 else (info.in_shape[0], 1, 1)
            out[key] = out[key].reshape(out[key].shape[0], *shape).contiguous()
    return out


def fully_conv(model: nn.Module, *, keep_flatten: bool = False) -> nn.Sequential:
    """The converted copy of a built model (``babysit.build``): (N, C, H', W') -> score map (N, K, h, w), with
    h = (H' - H)/S + 1; at the training size (H, W) that is (N, K, 1, 1) holding the same scores. With
    ``keep_flatten`` the last flatten stays, so the training size gives (N, K) as before."""
    spec, shape, k = (getattr(model, name, None) for name in ("spec", "input_shape", "num_classes"))
    if spec is None or shape is None or k is None:
        raise BabysitError("fully_conv converts a network made by babysit.build (it reads the model's spec, "
                           "input_shape and num_classes); build the model from its spec first.")
    new_spec = fully_conv_spec(spec, shape, k)
    device = next(model.parameters()).device
    converted = build(new_spec, shape, k).to(device)
    converted.load_state_dict(convert_state(model.state_dict(), spec, shape, k))
    if not keep_flatten and isinstance(converted[-1], nn.Flatten):
        del converted[-1]
    converted.train(model.training)
    setattr(converted, "total_stride", total_stride(new_spec))  # noqa: B010
    return converted


def is_converted(spec: Spec | str) -> bool:
    """True when the spec has no fc and no gap left (already fully convolutional)."""
    return not any(isinstance(layer, FC | GlobalAvgPool) for layer in parse(spec).layers())

