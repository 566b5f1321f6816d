"""Linear classifiers of the notes: scores f(x) = W x + b with the multiclass SVM or the softmax loss.

They are trained by babysit's own training loop (babysit.train.loop.fit: the same mini-batch SGD, update rule,
schedule and regulariser as any run) on a one-layer spec, ``fc``, over feature vectors: the total loss is
the data loss + lambda/2 ||W||^2 (``optim.weight_decay``; biases are not decayed). The L2 strength lambda is
chosen on the validation split from ``baseline.l2``: one model per lambda, the best validation accuracy wins.

Features are standardised first with the training split's mean and std per dimension (the notes'
"centre the data"; a dimension that never varies is only centred), so one learning rate suits every feature kind.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from babysit.config import RunConfig
from babysit.log import get_logger
from babysit.start import make_model, resolve_auto
from babysit.train.loop import TensorData, evaluate, fit
from babysit.train.losses import make_loss

_log = get_logger(__name__)

LINEAR_LOSSES = ("svm", "softmax")
"""The data losses ``--baseline.loss`` takes (babysit.train.losses names them the same)."""


@dataclass
class LinearResult:
    """The kept model, lambda and accuracies; ``val_acc[lambda]`` for every strength tried."""

    model: nn.Module
    l2: float
    val_acc: dict[float, float]
    test_acc: float

    @property
    def best_val_acc(self) -> float:
        return self.val_acc[self.l2]


def standardise(train: torch.Tensor, *others: torch.Tensor, floor: float = 0.1) -> list[torch.Tensor]:
    """(x - mean) / max(std, floor * mean std) per dimension with the statistics of ``train``. The floor keeps a
    nearly constant dimension (an MNIST border pixel, lit in a handful of images) from being blown up into a few
    huge values that a linear classifier would fit; a constant dimension is only centred."""
    mean, std = train.mean(0), train.std(0)
    std = std.clamp_min(floor * float(std.mean()))
    std = torch.where(std > 0, std, torch.ones_like(std))
    return [(x - mean) / std for x in (train, *others)]


def linear_config(cfg: RunConfig, l2: float) -> RunConfig:
    """The run config of one linear classifier: spec ``fc``, ``baseline.loss`` as the data loss, L2 = ``l2``."""
    return replace(cfg, model=replace(cfg.model, spec="fc"), loss=replace(cfg.loss, name=cfg.baseline.loss),
                   optim=replace(cfg.optim, weight_decay=l2))


def train_linear(cfg: RunConfig, x: list[torch.Tensor], y: list[torch.Tensor], num_classes: int) -> LinearResult:
    """Train one linear classifier per L2 strength in ``cfg.baseline.l2`` on features [train, val, test] (N, D)
    with labels [train, val, test]; keep the one with the best validation accuracy (the smaller lambda on a tie)."""
    x_train, x_val, x_test = (t.view(len(t), -1, 1, 1) for t in standardise(*x))  # (N, D, 1, 1) for the fc spec
    cfg = resolve_auto(cfg, tuple(x_train.shape[1:]), len(x_train))  # type: ignore[arg-type]  # batch_size=0: auto
    data = TensorData(x_train, y[0], x_val, y[1])
    best: LinearResult | None = None
    val_acc: dict[float, float] = {}
    for l2 in sorted(set(cfg.baseline.l2)):
        run_cfg = linear_config(cfg, l2)
        _log.info(f"linear {cfg.baseline.loss}, L2 strength lambda={l2:g}:")
        model = make_model(run_cfg, tuple(x_train.shape[1:]), num_classes).to(x_train.device)  # type: ignore[arg-type]
        state = fit(model, data, run_cfg)  # ends holding the best-validation epoch's weights
        val_acc[l2] = state.best_val_acc
        if best is None or state.best_val_acc > best.best_val_acc:
            best = LinearResult(model, l2, val_acc, 0.0)
    assert best is not None
    loss = make_loss(linear_config(cfg, best.l2).loss, train=False)
    _, best.test_acc, _ = evaluate(best.model, x_test, y[2], cfg.train.eval_batch_size, loss)
    return best
