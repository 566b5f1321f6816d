"""Optimiser factory and parameter groups (no L2 on biases and norm parameters by default)."""

from __future__ import annotations

import torch
from torch import nn

from babysit.config import OptimConfig
from babysit.errors import BabysitError

OPTIMIZERS = ("sgd",)


def decayed_parameters(model: nn.Module, decay_bias: bool = False) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into (decayed, not decayed): weights of conv/fc layers vs biases and norm scales."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 or decay_bias else no_decay).append(p)
    return decay, no_decay


def l2_penalty(params: list[nn.Parameter], weight_decay: float) -> torch.Tensor:
    """The L2 regulariser lambda/2 * sum ||W||^2; its gradient is lambda * W."""
    if not params or weight_decay == 0:
        return torch.zeros(())
    return 0.5 * weight_decay * torch.stack([p.pow(2).sum() for p in params]).sum()


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Build the update rule. The L2 term is part of the loss (see :func:`l2_penalty`), not of the rule."""
    if cfg.name != "sgd":
        raise BabysitError(f"unknown optimizer {cfg.name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    params = [p for p in model.parameters() if p.requires_grad]
    # SGD with momentum in torch's form v = mu*v + g; w -= lr*v, which equals the lecture's
    # v = mu*v - lr*g; w += v while the learning rate is constant.
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
