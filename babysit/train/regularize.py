"""Regularisation as the notes write it: loss terms, the max-norm constraint and decoupled decay.

- L2:           R = lambda/2 * ||W||^2        (gradient lambda * W: "weight decay")
- L1:           R = lambda * sum |W|          (encourages sparse weights)
- elastic net:  R = lambda1 * sum |W| + lambda2/2 * ||W||^2
- max norm:     after every step, each unit's incoming weight vector w is scaled so ||w||_2 <= c
- decoupled:    w <- w - lr * lambda * w inside the step, outside the adaptive rule (Loshchilov & Hutter)

Biases and normalisation parameters (every parameter with fewer than 2 dimensions) are left out
unless ``decay_bias`` is set ("biases are sometimes excluded from regularization"). Per-layer
strengths come as ``"LAYER=LAMBDA,..."`` where LAYER is the module name of the parameter (the
layer number of a spec model: ``"0=1e-3,9=0"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from babysit.config import RunConfig, weight_pairs
from babysit.errors import BabysitError


def l2_penalty(params: list[nn.Parameter] | list[torch.Tensor], weight_decay: float) -> torch.Tensor:
    """The L2 regulariser lambda/2 * sum ||W||^2; its gradient is lambda * W."""
    if not params or weight_decay == 0:
        return torch.zeros(())
    return 0.5 * weight_decay * torch.stack([p.pow(2).sum() for p in params]).sum()


def l1_penalty(params: list[nn.Parameter] | list[torch.Tensor], l1: float) -> torch.Tensor:
    """The L1 regulariser lambda * sum |W|; its (sub)gradient is lambda * sign(W)."""
    if not params or l1 == 0:
        return torch.zeros(())
    return l1 * torch.stack([p.abs().sum() for p in params]).sum()


def elastic_net_penalty(params: list[nn.Parameter] | list[torch.Tensor], l1: float, l2: float) -> torch.Tensor:
    """Elastic net lambda1 * sum |W| + lambda2/2 * ||W||^2.

    The notes write lambda2 * ||W||^2; with this module's L2 convention (lambda/2) their lambda2
    is half of ours.
    """
    return l1_penalty(params, l1) + l2_penalty(params, l2)


@torch.no_grad()
def max_norm_(params: list[nn.Parameter] | list[torch.Tensor], c: float) -> None:
    """Project each unit's incoming weights onto the ball ||w||_2 <= c, in place.

    A unit is one row of a linear weight (out, in) or one filter of a conv weight (out, in, kh, kw):
    w <- w * min(1, c / ||w||_2).
    """
    for p in params:
        if p.ndim > 1:
            p.copy_(torch.renorm(p, 2, 0, c))


@torch.no_grad()
def decoupled_weight_decay_(params: list[nn.Parameter] | list[torch.Tensor], lr: float, weight_decay: float) -> None:
    """Decoupled weight decay w <- w - lr * lambda * w = (1 - lr*lambda) * w, in place (AdamW's decay)."""
    if weight_decay:
        for p in params:
            p.mul_(1 - lr * weight_decay)


def parse_layer_strengths(text: str) -> dict[str, float]:
    """``"0=1e-3, 9=0"`` -> {"0": 0.001, "9": 0.0}."""
    out: dict[str, float] = {}
    for item, name, strength in weight_pairs(text):
        if strength is None:
            raise BabysitError(f"regularize.layer_weight_decay entry {item!r} must look like LAYER=LAMBDA with "
                               "LAMBDA >= 0, e.g. --regularize.layer_weight_decay=0=1e-3,9=0.")
        out[name] = strength
    return out


def decay_table(model: nn.Module, weight_decay: float, decay_bias: bool = False,
                layer_weight_decay: str = "") -> list[tuple[str, nn.Parameter, float]]:
    """(name, parameter, lambda) for every trainable parameter; lambda is 0 for biases and norm scales
    unless ``decay_bias``, and the per-layer strength where ``layer_weight_decay`` names its layer."""
    per_layer = parse_layer_strengths(layer_weight_decay)
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    layers = {name.rpartition(".")[0] for name, _ in named}
    unknown = sorted(set(per_layer) - layers)
    if unknown:
        raise BabysitError(f"regularize.layer_weight_decay names layer {unknown[0]!r}, which has no parameters; "
                           f"layers with parameters are {', '.join(sorted(layers, key=_natural))}.")
    table = []
    for name, p in named:
        strength = per_layer.get(name.rpartition(".")[0], weight_decay)
        table.append((name, p, strength if p.ndim > 1 or decay_bias else 0.0))
    return table


def _natural(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def decay_is_decoupled(cfg: RunConfig) -> bool:
    """True when weight_decay is applied inside the update (adamw, or optim.decoupled) instead of in the loss."""
    return cfg.optim.decoupled or cfg.optim.name == "adamw"


COUPLED_DECAY_RULES = ("sgd", "adagrad", "rmsprop", "adam")
"""Update rules whose torch ``weight_decay`` adds lambda*W to the gradient before the update: exactly the
gradient of the loss term lambda/2*||W||^2, so the L2 term can live in the step instead of the loss."""


def l2_in_step(cfg: RunConfig) -> bool:
    """True when the L2 term lambda/2*||W||^2 is applied by the update rule (gradient + lambda*W, the same
    maths, without an extra term in the autograd graph) rather than added to the loss."""
    return not decay_is_decoupled(cfg) and cfg.optim.name in COUPLED_DECAY_RULES


@dataclass
class Regularizer:
    """The run's regularisation, built once: ``penalty()`` goes into the loss, ``project()`` after each step.

    When the update rule applies the L2 term itself (:func:`l2_in_step`), ``penalty()`` holds only L1 and
    ``l2_norms()`` / ``l2_values()`` give the L2 term's value for the reported cost (data loss + regularisation)."""

    l2_groups: list[tuple[float, list[nn.Parameter]]]  # (lambda, weights) of the L2 term
    l1: float  # lambda1 of the L1 term
    l1_params: list[nn.Parameter]
    max_norm: float  # c of the max-norm constraint; 0 = off
    constrained: list[nn.Parameter]  # weights with one row (or filter) per unit
    l2_step: bool = False  # the update rule applies the L2 term (its gradient lambda*W); it is not in penalty()
    _l2_flat: tuple[list[nn.Parameter], torch.Tensor] | None = field(default=None, repr=False)  # see l2_value

    @classmethod
    def from_config(cls, model: nn.Module, cfg: RunConfig) -> Regularizer:
        o, r = cfg.optim, cfg.regularize
        table = decay_table(model, o.weight_decay, o.decay_bias, r.layer_weight_decay)
        groups: dict[float, list[nn.Parameter]] = {}
        if not decay_is_decoupled(cfg):
            for _, p, strength in table:
                if strength > 0:
                    groups.setdefault(strength, []).append(p)
        l1_params = [p for _, p, _ in table if p.ndim > 1 or o.decay_bias]
        constrained = [p for _, p, _ in table if p.ndim > 1]
        return cls(sorted(groups.items(), key=lambda kv: kv[0]), r.l1, l1_params, r.max_norm, constrained,
                   l2_in_step(cfg))

    def penalty(self) -> torch.Tensor | None:
        """R(W) = sum over layers of lambda_l/2 * ||W_l||^2  +  lambda1 * sum |W| (without the L2 part when
        the update rule applies it); None when that leaves nothing to add to the loss (no kernel per step for a 0)."""
        terms = [l1_penalty(self.l1_params, self.l1)] if self.l1 and self.l1_params else []
        if not self.l2_step:
            terms += [l2_penalty(params, strength) for strength, params in self.l2_groups]
        return sum(terms[1:], terms[0]) if terms else None

    @torch.no_grad()
    def l2_norms(self) -> list[torch.Tensor] | None:
        """||W_i|| of every tensor whose L2 term the update rule applies, in one fused call (one kernel per step
        where the cost is recorded; :meth:`l2_values` turns a block of them into the L2 terms at the read-back).
        None when the L2 term is in :meth:`penalty` or there is none."""
        if not self.l2_step or not self.l2_groups:
            return None
        params, _ = self._flat()
        return list(torch._foreach_norm(params))

    def l2_values(self, norms: torch.Tensor) -> torch.Tensor:
        """lambda_i/2 * ||W_i||^2 summed over i, for each row of ``norms`` (steps, tensors) from :meth:`l2_norms`."""
        _, halves = self._flat()
        return (norms.square() * halves.to(norms)).sum(1)  # row by row: the same sums however many rows

    def l2_value(self, norms: list[torch.Tensor] | None = None) -> torch.Tensor | None:
        """sum over layers of lambda_l/2 * ||W_l||^2 when the update rule applies it (no autograd graph), from
        ``norms`` (:meth:`l2_norms` taken earlier) or the weights now; None when the L2 term is in :meth:`penalty`
        or there is none."""
        norms = self.l2_norms() if norms is None else norms
        return None if norms is None else self.l2_values(torch.stack(norms)[None])[0]

    def _flat(self) -> tuple[list[nn.Parameter], torch.Tensor]:
        """Every L2 tensor and its lambda/2, gathered once."""
        if self._l2_flat is None:
            flat = [(p, 0.5 * strength) for strength, params in self.l2_groups for p in params]
            self._l2_flat = [p for p, _ in flat], torch.tensor([c for _, c in flat], device=flat[0][0].device)
        return self._l2_flat

    def project(self) -> None:
        """The max-norm constraint, applied after the parameter update (no-op when max_norm is 0)."""
        if self.max_norm > 0:
            max_norm_(self.constrained, self.max_norm)
