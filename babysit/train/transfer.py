"""Transfer learning inside one run: a source network's weights, which layers train when, and at what rate.

The notes' three ways to reuse a ConvNet trained on a large set:

- ``linear-probe``: the network as a fixed feature extractor; only a new linear classifier on the features
  (the input of the last fc layer) trains. The features are computed once (:func:`probe_features`).
- ``top``: the top ``transfer.layers`` weight layers (the new head counted as one) fine-tune, the rest stay
  frozen.
- ``full``: every layer fine-tunes, usually with discriminative learning rates (``optim.layer_decay``: weight
  layer d below the top trains at lr * decay^d, so the generic first layers move least).

A *weight layer* is a conv / fc layer (or a group holding them: a residual block, an inception module) together
with the batch norm, activation, pooling and dropout that follow it (:func:`weight_blocks`). Frozen layers keep
their weights (``requires_grad`` off, so the update rule and its weight decay skip them) and run in eval mode
(batch norm uses its running statistics and does not update them; no dropout), so they do not change at all.
With ``transfer.unfreeze=gradual`` epoch 1 trains the head alone and every later epoch one more layer below it
(ULMFiT's gradual unfreezing), up to what the strategy allows. Which layers train is a pure function of the
epoch (:func:`trainable_layers`), so a resumed run freezes exactly as the uninterrupted one did.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from babysit.errors import BabysitError
from babysit.log import get_logger
from babysit.train.checkpoint import load_checkpoint

_log = get_logger(__name__)

__all__ = ["Freezer", "HeadOnly", "adapt_first_conv", "apply_freezing", "layer_lr_scales", "load_source",
           "probe_features", "trainable_layers", "weight_blocks"]


def _has_weights(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules())


def weight_blocks(model: nn.Module) -> list[list[str]]:
    """The model's top-level children grouped into weight layers, input first: each block starts at a child that
    holds a conv / fc weight and takes the children after it (batch norm, ReLU, pooling, flatten) along. Children
    before the first weighted one join the first block."""
    blocks: list[list[str]] = []
    for name, child in model.named_children():
        if _has_weights(child) or not blocks:
            blocks.append([name])
        else:
            blocks[-1].append(name)
    return blocks


def trainable_layers(strategy: str, layers: int, unfreeze: str, epoch: int, total: int) -> int:
    """How many weight layers, counted from the top, train in epoch ``epoch`` (1, 2, ...) of a net with ``total``
    weight layers: linear-probe 1 (the head), top ``layers``, full all; ``gradual`` starts from the head alone and
    adds one layer per epoch until that limit."""
    limit = {"linear-probe": 1, "top": min(layers, total), "full": total}.get(strategy)
    if limit is None:
        raise ValueError(f"unknown transfer strategy {strategy!r}")
    return min(limit, max(epoch, 1)) if unfreeze == "gradual" else limit


def _eval_hook(module: nn.Module, args: Any) -> None:
    module.eval()  # fit() calls model.train() each epoch; a frozen layer goes back to eval before its forward


def apply_freezing(model: nn.Module, top: int) -> list[str]:
    """Let the top ``top`` weight layers train and freeze the rest (no gradients, eval mode); returns the frozen
    children's names."""
    blocks = weight_blocks(model)
    frozen_blocks = blocks[: max(len(blocks) - top, 0)]
    frozen = {name for block in frozen_blocks for name in block}
    for name, child in model.named_children():
        for p in child.parameters():
            p.requires_grad_(name not in frozen)
        handle = getattr(child, "_babysit_freeze_hook", None)
        if name in frozen and handle is None:
            child._babysit_freeze_hook = child.register_forward_pre_hook(_eval_hook)  # type: ignore[assignment]
        elif name not in frozen and handle is not None:
            handle.remove()
            del child._babysit_freeze_hook
    return [name for block in frozen_blocks for name in block]


class Freezer:
    """fit() callback: at each epoch start the layers :func:`trainable_layers` names train, the rest are frozen
    (no state of its own: the epoch decides, so a resumed run freezes the same)."""

    def __init__(self, strategy: str, layers: int, unfreeze: str) -> None:
        self.strategy, self.layers, self.unfreeze = strategy, layers, unfreeze
        self.schedule: list[int] = []  # trainable layers per epoch, as applied (for tests and the report)

    def on_epoch_start(self, state: Any) -> None:
        total = len(weight_blocks(state.model))
        top = trainable_layers(self.strategy, self.layers, self.unfreeze, state.epoch + 1, total)
        frozen = apply_freezing(state.model, top)
        if not self.schedule or self.schedule[-1] != top:
            _log.info(f"transfer: epoch {state.epoch + 1} trains the top {top} of {total} weight layers"
                  + (f" (frozen: {', '.join(frozen)})" if frozen else ""))
        self.schedule.append(top)


def layer_lr_scales(model: nn.Module, decay: float) -> dict[str, float]:
    """Parameter name -> learning-rate multiplier decay^d, d = weight layers below the top (the head gets 1)."""
    if decay == 1:
        return {name: 1.0 for name, _ in model.named_parameters()}
    blocks = weight_blocks(model)
    depth = {name: len(blocks) - 1 - i for i, block in enumerate(blocks) for name in block}
    # a parameter of the module itself (no child) counts as the top's
    return {name: decay ** depth.get(name.partition(".")[0], 0) for name, _ in model.named_parameters()}


def adapt_first_conv(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """The first conv's weights (F, C, k, k) for images with ``channels`` channels: grey -> RGB repeats the
    filter over the three channels divided by 3, RGB -> grey sums them, so a grey image (or its grey copy in
    three channels) gives the same responses as before."""
    c = weight.shape[1]
    if c == channels:
        return weight
    if c == 1 and channels == 3:
        return weight.repeat(1, 3, 1, 1) / 3
    if c == 3 and channels == 1:
        return weight.sum(1, keepdim=True)
    raise BabysitError(f"the source network's first layer takes {c} channels and the new images have {channels}; "
                       f"only grey <-> RGB can be adapted, so convert the images with --data.channels={c}.")


def load_source(model: nn.Module, path: str | Path, source: str = "") -> tuple[list[str], list[str]]:
    """Copy a source run's weights (a best/last checkpoint file) into ``model`` except its last weight layer, the
    new head; the first conv is adapted to the input's channels (:func:`adapt_first_conv`). Returns (copied
    tensors, the head's parameter names). A layer whose shape differs otherwise is a BabysitError."""
    tensors, _ = load_checkpoint(Path(path))
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    head = set(weight_blocks(model)[-1])
    own = model.state_dict()
    first_conv = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    copied, head_params = [], []
    with torch.no_grad():
        for name, value in own.items():
            if name.partition(".")[0] in head:
                head_params.append(name)
                continue
            if name not in weights:
                raise BabysitError(f"the source run {source or path} has no tensor {name!r}; its network differs from "
                                   "this one's, so fine-tune from a run with the same model.spec.")
            src = weights[name]
            if first_conv is not None and name == f"{first_conv}.weight":
                src = adapt_first_conv(src, value.shape[1])
            if src.shape != value.shape:
                raise BabysitError(f"layer {name.rpartition('.')[0]} holds {tuple(src.shape)} weights in the source "
                                   f"run but needs {tuple(value.shape)} for these images; the fc layers fix the input "
                                   f"size, so resize the images to the source's with --data.size.")
            value.copy_(src)
            copied.append(name)
    return copied, head_params


class HeadOnly(nn.Sequential):
    """The whole network (its modules, so its state_dict and checkpoints are the run's own) whose forward applies
    only the head to 2-D feature rows; images (N, C, H, W) still go through every layer. The linear probe trains
    it on features computed once."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x.dim() == 2:
            for name in self._head:
                x = self._modules[name](x)  # type: ignore[misc]
            return x
        return super().forward(x)

    @classmethod
    def of(cls, model: nn.Sequential) -> HeadOnly:
        wrapped = cls(OrderedDict(model.named_children()))  # the same modules, no copies
        for attr in ("spec", "input_shape", "num_classes"):
            if hasattr(model, attr):
                setattr(wrapped, attr, getattr(model, attr))
        wrapped._head = weight_blocks(model)[-1]
        return wrapped


@torch.no_grad()
def probe_features(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The input of the head (N, D) for images ``x``: every layer below the last weight layer, in eval mode."""
    head = set(weight_blocks(model)[-1])
    trunk = [m for name, m in model.named_children() if name not in head]
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        h = x[i : i + batch_size]
        for m in trunk:
            h = m(h)
        out.append(h.flatten(1))
    model.train(was)
    return torch.cat(out)
