"""Averages of the weights kept beside the trained ones: an exponential moving average of every step's
weights (Polyak averaging, ``train.ema``) and stochastic weight averaging of the last epochs
(``train.swa_epochs``). The notes: "a running average of the parameters ... almost always achieves
better validation error".

EMA, after every optimisation step t = 1, 2, ... (TensorFlow's ExponentialMovingAverage with num_updates)::

    d_t   = min(decay, (1 + t) / (10 + t))
    ema_t = d_t * ema_{t-1} + (1 - d_t) * w_t,        ema_0 = w_0 (the initial weights)

The warm-up of d_t keeps the initial weights from dominating a short run: with a fixed 0.999, 61 % of
the average after 500 steps would still be the random initialisation. Batch-norm running statistics
are averaged the same way (float buffers; the batch count is copied), as torch's
``AveragedModel(use_buffers=True)`` and timm's ModelEmaV2 do: they then describe the same stretch of
training as the averaged weights, where the raw model's statistics describe only its latest weights.
(A recompute would be exact but costs a pass over the training set at every evaluation.)

SWA (Izmailov et al. 2018): the equal average of the weights at the end of each of the last
``swa_epochs`` epochs, ``torch.optim.swa_utils.AveragedModel``; the loop may hold the learning rate at
``train.swa_lr`` over those epochs. Averaged weights produce activations that no running statistic has
seen, so once the average is final the batch-norm statistics are recomputed with one pass over the
(unaugmented) training images, ``swa_utils.update_bn``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from babysit.config import RunConfig
from babysit.log import get_logger
from babysit.train.early import better_epoch

_log = get_logger(__name__)

Kept = tuple[str, dict[str, torch.Tensor], dict[str, Any]]
"""(kind, weights, meta) for the recorder: kind "ema" (checkpoints/ema) or "swa" (checkpoints/swa)."""


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a model's state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class EMAWeights:
    """The exponential moving average of a model's weights (module docstring), held in a copy of the model."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(model).requires_grad_(False)  # evaluated and saved like any model
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))  # same keys, same order
        self._avg = [a for a, _ in pairs if a.is_floating_point()]
        self._now = [w for a, w in pairs if a.is_floating_point()]
        self._counts = [(a, w) for a, w in pairs if not a.is_floating_point()]  # BN's num_batches_tracked

    def decay_at(self, step: int) -> float:
        """d_t = min(decay, (1 + t) / (10 + t)); the plain decay without warm-up."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        """ema = d_t * ema + (1 - d_t) * w for every parameter and float buffer, after step ``step`` (1, 2, ...)."""
        torch._foreach_lerp_(self._avg, self._now, 1 - self.decay_at(step))  # ema + (1 - d)(w - ema)
        for a, w in self._counts:
            a.copy_(w)


class SWAWeights:
    """The equal average of the weights at the end of epochs ``first_epoch`` .. the last (module docstring)."""

    def __init__(self, model: nn.Module, first_epoch: int) -> None:
        self.first_epoch = first_epoch
        self.averaged = AveragedModel(model)  # a copy; swa = swa + (w - swa) / (n + 1)
        self.averaged.requires_grad_(False)

    @property
    def count(self) -> int:
        return int(self.averaged.n_averaged)

    def epoch_end(self, model: nn.Module, epoch: int) -> None:
        if epoch >= self.first_epoch:
            self.averaged.update_parameters(model)

    def finish(self, x_train: torch.Tensor, batch_size: int) -> nn.Module:
        """Recompute the batch-norm statistics of the average (one pass over ``x_train``); returns the model.
        Dropout's random numbers come from a forked RNG, so training's RNG state is untouched."""
        with torch.random.fork_rng(devices=[x_train.device] if x_train.device.type == "cuda" else []):
            update_bn(x_train.split(batch_size), self.averaged)
        return self.averaged.module


class Averages:
    """The averages one run keeps (none, EMA, SWA or both) behind the few calls fit() makes."""

    def __init__(self, model: nn.Module, cfg: RunConfig) -> None:
        t = cfg.train
        self.monitor, self.min_delta = t.monitor, t.min_delta
        self.ema = EMAWeights(model, t.ema) if t.ema > 0 else None
        self.swa = SWAWeights(model, t.epochs - t.swa_epochs + 1) if t.swa_epochs > 0 else None
        self.best_ema: dict[str, float] | None = None  # EMA val_acc, val_loss at its best so far
        self.best_ema_epoch = 0

    def after_step(self, step: int) -> None:
        if self.ema is not None:
            self.ema.update(step)

    def score(self, evaluate: Any, x_val: torch.Tensor, y_val: torch.Tensor) -> dict[str, float]:
        """The EMA weights' val loss and accuracy for the epoch record (empty without EMA);
        ``evaluate(model, x, y) -> (loss, acc)``."""
        if self.ema is None:
            return {}
        loss, acc = evaluate(self.ema.model, x_val, y_val)
        return {"ema_val_loss": loss, "ema_val_acc": acc}

    def epoch_end(self, model: nn.Module, record: dict[str, Any]) -> list[Kept]:
        """Add this epoch's weights to SWA; the EMA weights to keep when their score improved."""
        if self.swa is not None:
            self.swa.epoch_end(model, record["epoch"])
        if self.ema is None:
            return []
        scores = {"val_acc": record["ema_val_acc"], "val_loss": record["ema_val_loss"]}
        if not better_epoch(self.monitor, scores, self.best_ema, self.min_delta):  # the run's own rule, ties included
            return []
        self.best_ema, self.best_ema_epoch = scores, record["epoch"]
        meta = {"epoch": record["epoch"], "step": record["step"], "val_acc": record["ema_val_acc"],
                "val_loss": record["ema_val_loss"], "decay": self.ema.decay}
        return [("ema", weights_of(self.ema.model), meta)]

    def finish(self, x_train: torch.Tensor, batch_size: int, evaluate: Any, x_val: torch.Tensor,
               y_val: torch.Tensor) -> list[Kept]:
        """SWA's final weights (batch-norm recomputed) with their val scores; nothing when no epoch was averaged."""
        if self.swa is None or self.swa.count == 0:
            return []
        model = self.swa.finish(x_train, batch_size)
        loss, acc = evaluate(model, x_val, y_val)
        first = self.swa.first_epoch
        meta = {"epochs": [first, first + self.swa.count - 1], "averaged": self.swa.count, "val_acc": acc,
                "val_loss": loss}
        _log.info(f"SWA over epochs {first}-{first + self.swa.count - 1} ({self.swa.count} epoch ends, batch-norm "
                  f"statistics recomputed): val {acc:.6f}")
        return [("swa", weights_of(model), meta)]

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema.model.state_dict() if self.ema is not None else None,
                "swa": self.swa.averaged.state_dict() if self.swa is not None else None,
                "best_ema": self.best_ema, "best_ema_epoch": self.best_ema_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.ema is not None:
            self.ema.model.load_state_dict(state["ema"])
        if self.swa is not None:
            self.swa.averaged.load_state_dict(state["swa"])
        best = state["best_ema"]
        if isinstance(best, (int, float)):  # a checkpoint from before the tie-break kept the monitor's score alone
            best = {"val_acc": -1.0, "val_loss": 0.0, self.monitor: best}  # its loss unknown: it breaks no tie
        self.best_ema, self.best_ema_epoch = best, state["best_ema_epoch"]
