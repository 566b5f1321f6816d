"""Update rules of the notes, parameter groups (no decay on biases and norm parameters) and clipping.

torch.optim implements the notes' rules exactly where it can (tests/train/test_optim.py runs each
next to the equation written out in numpy); only "almost Adam" is ours. Names users type:

- ``sgd``         vanilla ``x += -lr * dx`` (momentum 0); momentum ``v = mu*v - lr*dx; x += v``;
                  Nesterov ``x += -mu*v_prev + (1+mu)*v`` (``optim.nesterov``)
- ``adagrad``     ``cache += dx**2; x += -lr * dx / (sqrt(cache) + eps)``
- ``rmsprop``     ``cache = decay_rate*cache + (1-decay_rate)*dx**2; x += -lr * dx / (sqrt(cache) + eps)``
- ``almost-adam`` ``m = b1*m + (1-b1)*dx; v = b2*v + (1-b2)*dx**2; x += -lr * m / (sqrt(v) + eps)``
- ``adam``        the same with bias correction ``mt = m/(1-b1**t); vt = v/(1-b2**t)``
- ``adamw``       Adam plus decoupled weight decay ``x -= lr * weight_decay * x`` (Loshchilov & Hutter)

The cs231n notes put eps outside the square root (as torch does); the Aarhus slides write
``lr / sqrt(G + eps)``, which differs only while G is of the order of eps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from babysit.config import OptimConfig, RunConfig
from babysit.registry import Registry
from babysit.train.regularize import (
    decay_is_decoupled,
    decay_table,
    decoupled_weight_decay_,
    l2_in_step,
    l2_penalty,
)
from babysit.train.transfer import layer_lr_scales

__all__ = ["OPTIMIZERS", "AlmostAdam", "check_choices", "clip_gradients", "decayed_parameters", "describe_groups",
           "l2_penalty", "list_optimizers", "make_optimizer", "param_groups"]

Groups = list[dict[str, Any]]
OptimizerFn = Callable[[Groups, OptimConfig], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFn] = Registry("optim.name")
"""The update rules by the name users type in ``--optim.name``: ``fn(param_groups, cfg) -> optimizer``."""


def list_optimizers() -> list[str]:
    """The names ``--optim.name`` accepts."""
    return OPTIMIZERS.names()


@OPTIMIZERS.register("sgd")
def _sgd(groups: Groups, cfg: OptimConfig) -> torch.optim.Optimizer:
    # torch keeps v = mu*v + dx; x -= lr*v (the slides' v = gamma*v + grad J; w -= alpha*v). With a
    # constant lr that is the cs231n form v = mu*v - lr*dx; x += v with v scaled by -lr; when the
    # schedule changes lr, torch's form rescales the whole velocity at once, cs231n's keeps old steps.
    # Nesterov is the default look-ahead of momentum; with momentum 0 there is nothing to look ahead
    # with, so --optim.momentum=0 alone gives the notes' vanilla update.
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


@OPTIMIZERS.register("adagrad")
def _adagrad(groups: Groups, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps)


@OPTIMIZERS.register("rmsprop")
def _rmsprop(groups: Groups, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.decay_rate, eps=cfg.eps)


@OPTIMIZERS.register("adam")
def _adam(groups: Groups, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


@OPTIMIZERS.register("almost-adam")
def _almost_adam(groups: Groups, cfg: OptimConfig) -> torch.optim.Optimizer:
    return AlmostAdam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


@OPTIMIZERS.register("adamw")
def _adamw(groups: Groups, cfg: OptimConfig) -> torch.optim.Optimizer:
    # each group carries its own weight_decay (0 for biases and norm parameters)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


class AlmostAdam(torch.optim.Optimizer):
    """The notes' "almost Adam": Adam without bias correction.

    m = b1*m + (1-b1)*dx;  v = b2*v + (1-b2)*dx**2;  x += -lr * m / (sqrt(v) + eps)
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                m, v = state["m"], state["v"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-group["lr"])
        return loss


def decayed_parameters(model: nn.Module, decay_bias: bool = False) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into (decayed, not decayed): weights of conv/fc layers vs biases and norm scales."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 or decay_bias else no_decay).append(p)
    return decay, no_decay


def param_groups(model: nn.Module, cfg: RunConfig) -> Groups:
    """One group per weight-decay strength and learning-rate multiplier; biases and norm parameters go to a group
    with strength 0. ``lr_scale`` is optim.layer_decay^d for weight layer d below the top (train_step multiplies
    the schedule's lr by it: discriminative learning rates).

    ``decay`` is the group's lambda. torch's own ``weight_decay`` carries it for adamw (decoupled decay) and
    for the rules that add lambda*W to the gradient (regularize.l2_in_step); ``optim.decoupled`` with another
    rule decays in a step pre-hook, and otherwise (almost-adam) the L2 term lives in the loss.
    """
    in_rule = cfg.optim.name == "adamw" or l2_in_step(cfg)  # the rule's own weight_decay does the decay
    scales = layer_lr_scales(model, cfg.optim.layer_decay)  # all 1 unless discriminative learning rates
    by_key: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p, strength in decay_table(model, cfg.optim.weight_decay, cfg.optim.decay_bias,
                                         cfg.regularize.layer_weight_decay):
        by_key.setdefault((strength, scales.get(name, 1.0)), []).append(p)
    return [{"params": params, "weight_decay": strength if in_rule else 0.0, "decay": strength,
             "lr_scale": scale, "lr": cfg.optim.lr * scale}
            for (strength, scale), params in sorted(by_key.items(), key=lambda kv: (-kv[0][0], kv[0][1]))]


def _decoupled_hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Step pre-hook: w <- (1 - lr*lambda) * w before the rule's own update (SGDW / decoupled decay)."""
    for group in opt.param_groups:
        decoupled_weight_decay_(group["params"], group["lr"], group["decay"])


def make_optimizer(model: nn.Module, cfg: OptimConfig | RunConfig) -> torch.optim.Optimizer:
    """Build the configured update rule over :func:`param_groups` of ``model``.

    Weight decay is the notes' L2 term lambda/2*||W||^2. For sgd, adagrad, rmsprop and adam its gradient
    lambda*W is added by the rule's own ``weight_decay`` (the same maths as the term in the loss, without
    the extra autograd work); ``almost-adam`` keeps it in the loss (regularize.py); ``adamw`` and
    ``optim.decoupled`` decay the weights themselves (w -= lr*lambda*w).
    """
    run = cfg if isinstance(cfg, RunConfig) else RunConfig(optim=cfg)
    o = run.optim
    rule = OPTIMIZERS.get(o.name)
    opt = rule(param_groups(model, run), o)
    if o.decoupled and o.name != "adamw":
        opt.register_step_pre_hook(_decoupled_hook)
    return opt


def describe_groups(opt: torch.optim.Optimizer, cfg: RunConfig) -> str:
    """One line: the rule, and how many tensors / values are decayed and how."""
    how = ("decoupled, in the step" if decay_is_decoupled(cfg) else
           "L2, its gradient lambda*W added in the step" if l2_in_step(cfg) else "as L2 in the loss")
    parts = []
    for g in opt.param_groups:
        tensors, values = len(g["params"]), sum(p.numel() for p in g["params"])
        weights = sum(p.ndim > 1 for p in g["params"])  # conv/fc weights (a 0 strength leaves them undecayed)
        kinds = [f"{weights} weight tensors"] * bool(weights) + ["biases, norm parameters"] * (weights < tensors)
        what = f"weight decay {g['decay']:g}" if g["decay"] else f"no decay ({', '.join(kinds)})"
        what += f", lr x{g['lr_scale']:.3g}" if g.get("lr_scale", 1.0) != 1.0 else ""
        parts.append(f"{tensors} tensors ({values:,} values) {what}")
    return f"optimizer {cfg.optim.name}: " + "; ".join(parts) + f" [{how}]"


def clip_gradients(params: Iterable[nn.Parameter], clip_norm: float) -> float:
    """Clip by global norm: g <- g * min(1, c / ||g||_2) over all gradients; returns ||g||_2 before.

    ``clip_norm`` 0 leaves the gradients alone (and returns 0).
    """
    if clip_norm <= 0:
        return 0.0
    return float(torch.nn.utils.clip_grad_norm_(list(params), clip_norm))


def check_choices(cfg: RunConfig) -> None:
    """Fail early, in one sentence, on an unknown optimiser, schedule, loss or init scheme name."""
    from babysit.models.init import check_scheme
    from babysit.train.losses import LOSSES
    from babysit.train.schedules import SCHEDULES

    OPTIMIZERS.get(cfg.optim.name)
    SCHEDULES.get(cfg.schedule.name)
    LOSSES.get(cfg.loss.name)
    check_scheme(cfg.model.init)
