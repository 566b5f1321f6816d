"""The learning-rate range test (Smith 2015, step 1 of cyclical learning rates).

Train from the model's current weights for ``steps`` mini-batches while the learning rate grows
exponentially from ``start_lr`` to ``end_lr``: lr_i = start * (end/start)^(i/(steps-1)). The loss
is smoothed by a bias-corrected exponential moving average (avg = b*avg + (1-b)*loss, smoothed =
avg / (1 - b^(i+1))) and a repeat stops once the smoothed loss exceeds ``diverge`` times its best.
Repeated over ``seeds`` batch orders (one by default: 150 mini-batches cost a fraction of a digits run;
``lr_find.seeds=3`` shows the spread). The smoothing's beta 0.96 lags ~25 mini-batches, the same share of
the ramp (1.3 decades of lr over 1e-7..10) as 0.98 did over the earlier 300. Reported:

- the suggestion: the lr where the smoothed loss falls fastest against log(lr) ("look for the
  strongest downward slope"), before its minimum;
- the lr of the smoothed minimum, and that lr / 10 (a safe top speed);
- bounds for cyclical / one-cycle (see :attr:`LRFindResult.bounds`): upper = the min-loss lr, where
  the loss stops falling (Smith's maximum; the smoothed curve lags, so the raw loss is already turning
  up there, the stop points lie about 2-3x higher), lower = upper / 10 (Smith 2018).

Afterwards the model (weights, buffers, gradients, train/eval mode), the optimiser and every RNG are
exactly as they were.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from babysit.config import RunConfig, validate
from babysit.ema import EMA, ema
from babysit.errors import BabysitError
from babysit.log import get_logger
from babysit.start import fresh_start, plan_run
from babysit.train.checkpoint import rng_state, set_rng_state
from babysit.train.loop import (
    AugmentFn,
    NonFinite,
    TensorData,
    Update,
    check_batch_size,
    epoch_permutation,
    next_batch,
    train_step,
)
from babysit.train.optim import make_optimizer

_log = get_logger(__name__)


@dataclass(frozen=True)
class LRFindResult:
    """What the range test measured; one entry per seed in the per-seed lists."""

    lrs: list[float]  # the ramp: the lr of mini-batch i
    losses: list[list[float]]  # raw mini-batch losses per seed (shorter when a repeat stopped early)
    smoothed: list[list[float]]  # their smoothed curves
    steepest: list[float]  # per seed: lr of the steepest descent of the smoothed loss
    min_loss: list[float]  # per seed: lr of the smoothed loss's minimum

    @property
    def suggestion(self) -> float:
        """The median over seeds of the steepest-descent lr."""
        return float(np.median(self.steepest))

    @property
    def min_loss_lr(self) -> float:
        """The median over seeds of the lr at the smallest smoothed loss."""
        return float(np.median(self.min_loss))

    @property
    def bounds(self) -> tuple[float, float]:
        """(lower, upper) for cyclical / onecycle: upper = min-loss lr, lower = upper / 10."""
        upper = self.min_loss_lr
        return upper / 10, upper


def smooth(losses: list[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average: avg_i = b*avg_{i-1} + (1-b)*loss_i, out_i = avg_i/(1-b^(i+1))."""
    return ema(losses, beta)


def steepest_lr(lrs: list[float], smoothed: list[float], skip: int | None = None) -> float:
    """The lr where d(smoothed)/d(log lr) is most negative, looking only before the minimum and
    after the first ``skip`` points (default a tenth of the ramp: the average is still settling there)."""
    skip = len(lrs) // 10 if skip is None else skip
    stop = int(np.argmin(smoothed)) + 1
    start = min(skip, max(0, stop - 3))
    if stop - start < 3:
        return lrs[max(0, stop - 1)]
    slope = np.gradient(np.asarray(smoothed[start:stop]), np.log(np.asarray(lrs[start:stop])))
    return lrs[start + int(np.argmin(slope))]


class _Snapshot:
    """Model weights, buffers, gradients and mode, the optimiser's state and all RNG states."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
        self.training = model.training
        self.optimizer = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
        self.rng_tensors: dict[str, torch.Tensor] = {}
        self.rng_meta = rng_state(self.rng_tensors)

    @torch.no_grad()
    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, rng: bool = True) -> None:
        model.load_state_dict(self.weights)
        for p, g in zip(model.parameters(), self.grads):
            p.grad = None if g is None else g.clone()
        model.train(self.training)
        if optimizer is not None and self.optimizer is not None:
            optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        if rng:
            set_rng_state(self.rng_meta, self.rng_tensors)


def _ramp(model: nn.Module, optimizer: torch.optim.Optimizer, data: TensorData, cfg: RunConfig,
          lrs: list[float], seed: int, augment: AugmentFn | None = None) -> list[float]:
    """One repeat: a mini-batch per lr, in the training loop's order for ``seed``; returns the raw losses."""
    f, bs = cfg.lr_find, cfg.train.batch_size
    update = Update.from_config(model, cfg, optimizer)
    n = len(data.x_train)
    per_epoch = math.ceil(n / bs)
    torch.manual_seed(seed)  # dropout masks
    model.train()
    losses: list[float] = []
    smoothed, best = EMA(f.smoothing), math.inf
    perm = epoch_permutation(n, seed, 0, data.x_train.device)
    for i, lr in enumerate(lrs):
        epoch, b = divmod(i, per_epoch)
        if b == 0 and epoch > 0:
            perm = epoch_permutation(n, seed, epoch, data.x_train.device)
        # the batches training would see; each repeat draws its own augmentation steps
        xb, yb = next_batch(data, perm[b * bs : (b + 1) * bs], seed * 1_000_000 + i, augment)
        try:
            value = train_step(update, xb, yb, lr, check_finite=True).item()
        except NonFinite:
            break
        losses.append(value)
        current = smoothed.update(value)
        best = min(best, current)
        if current > f.diverge * best:
            break
    return losses


def lr_range_test(model: nn.Module, data: TensorData, cfg: RunConfig,
                  optimizer: torch.optim.Optimizer | None = None, augment: AugmentFn | None = None,
                  progress: bool = False) -> LRFindResult:
    """Run the LR range test of ``cfg.lr_find`` with the run's update rule, loss and regularisation, on
    batches made as training makes them (``augment``, from ``data.x_raw``, when the run augments).

    Every repeat starts from the model's current weights (and ``optimizer``'s state, when given;
    otherwise a fresh optimiser from ``cfg.optim``). Everything is restored afterwards. With ``progress``
    a line per repeat as it starts and ends (a repeat takes minutes on a loaded CPU).
    """
    f = cfg.lr_find
    check_batch_size(cfg.train.batch_size, len(data.x_train))
    lrs = [float(v) for v in np.geomspace(f.start_lr, f.end_lr, f.steps)]
    snapshot = _Snapshot(model, optimizer)
    losses, smoothed, steepest, min_loss = [], [], [], []
    try:
        for r in range(f.seeds):
            snapshot.restore(model, optimizer, rng=False)
            opt = optimizer if optimizer is not None else make_optimizer(model, cfg)
            if progress:
                _log.info(f"lr-find repeat {r + 1}/{f.seeds} (seed {cfg.train.seed + r}): up to {f.steps} "
                          f"mini-batches, lr {f.start_lr:g} -> {f.end_lr:g} ...", extra={"end": ""})
            started = time.perf_counter()
            raw = _ramp(model, opt, data, cfg, lrs, cfg.train.seed + r, augment)
            if progress:
                _log.info(f" {len(raw)} mini-batches, {time.perf_counter() - started:.1f} s")
            if len(raw) < 2:
                raise BabysitError(f"the loss was not finite from the first steps at lr {f.start_lr:g}; "
                                   "lower --lr_find.start_lr or check the data and the model.")
            curve = smooth(raw, f.smoothing)
            losses.append(raw)
            smoothed.append(curve)
            steepest.append(steepest_lr(lrs, curve))
            min_loss.append(lrs[int(np.argmin(curve))])
    finally:
        snapshot.restore(model, optimizer)
    return LRFindResult(lrs, losses, smoothed, steepest, min_loss)


def apply_bounds(cfg: RunConfig, result: LRFindResult, schedule: str = "onecycle") -> RunConfig:
    """``cfg`` with the range test's bounds for a cyclical or one-cycle run (no separate warm-up)."""
    if schedule not in ("onecycle", "cyclical"):
        raise BabysitError(f"lr-find bounds feed the onecycle and cyclical schedules, not {schedule!r}.")
    lower, upper = result.bounds
    out = replace(cfg, optim=replace(cfg.optim, lr=upper),
                  schedule=replace(cfg.schedule, name=schedule, min_lr=lower, warmup_epochs=0.0))
    validate(out)
    return out


def format_result(result: LRFindResult, lr: float | None = None, default: bool = False) -> str:
    """What the CLI prints: per seed, the summary with the options to use and, given the config's ``lr``
    (``default``: it is babysit's default), how that lr relates to the suggestion."""
    lines = []
    for i, (raw, st, ml) in enumerate(zip(result.losses, result.steepest, result.min_loss)):
        end = f"stopped at lr {result.lrs[len(raw) - 1]:.3g}" if len(raw) < len(result.lrs) else "ran the whole ramp"
        lines.append(f"seed {i}: {len(raw)} mini-batches ({end}); steepest descent at lr {st:.3g}, "
                     f"smoothed minimum at lr {ml:.3g}")
    lower, upper = result.bounds
    lines += [f"suggested lr (steepest descent, median over seeds): {result.suggestion:.3g} "
              f"[{min(result.steepest):.3g} .. {max(result.steepest):.3g}]",
              f"min-loss lr / 10: {result.min_loss_lr / 10:.3g}",
              f"cyclical / onecycle bounds: --optim.lr={upper:.3g} --schedule.min_lr={lower:.3g}"]
    if lr is not None:
        lines.append(relate_to_lr(result, lr, default))
    return "\n".join(lines)


def relate_to_lr(result: LRFindResult, lr: float, default: bool = False) -> str:
    """The config's lr against the test: inside [suggestion, min-loss lr] it is where the short test's loss
    still fell, so a sound start; above the min-loss lr the loss was already rising there."""
    which = f"optim.lr={lr:g}" + (" (babysit's default)" if default else "")
    low, high = result.suggestion, result.min_loss_lr
    if lr > high:
        verdict = (f"above the min-loss lr {high:.3g}, where the test's loss was already rising: expect it to be "
                   f"unstable without warm-up or batch norm; --optim.lr={high / 10:.3g} (min-loss / 10) is safer")
    elif lr >= low:
        verdict = (f"between the steepest descent {low:.3g} and the min-loss lr {high:.3g}: the loss still fell fast "
                   "there, a sound learning rate for this model and data")
    else:
        verdict = (f"{low / lr:.2g}x below the steepest descent {low:.3g}: it should train, but slowly; try "
                   f"--optim.lr={low:.3g} or a one-cycle run with the bounds above")
    spread = ("; one repeat only: on digits the min-loss lr of single repeats spread ~5x, --lr_find.seeds=3 "
              "shows it" if len(result.losses) == 1 else "")
    return (f"your {which} is {verdict}. (The test trains from the initial weights for {len(result.lrs)} "
            "mini-batches; a whole run at a constant lr is usually best a little below the min-loss lr, and a "
            f"schedule that decays the lr tolerates a higher start{spread}.)")


def run_lr_find(cfg: RunConfig, plot: str | Path | None = None) -> LRFindResult:
    """The whole range test as ``babysit lr-find`` runs it: data, preprocessing, model, test, plot."""
    from babysit.figures import plot_lr_find

    if cfg.distill.teacher:
        raise BabysitError("the LR range test trains on the labels, not on a teacher's soft targets; drop "
                           "--distill.teacher (the student's config without it finds the same range).")
    plan = plan_run(cfg)
    model, data, augment = fresh_start(plan)
    result = lr_range_test(model, data, plan.cfg, augment=augment, progress=True)
    if plot is not None:
        plot_lr_find(result, plot)
    return result


def result_json(result: LRFindResult) -> dict[str, Any]:
    """The result as JSON-able data (written next to the plot)."""
    return {"lrs": result.lrs, "losses": result.losses, "smoothed": result.smoothed, "steepest": result.steepest,
            "min_loss": result.min_loss, "suggestion": result.suggestion, "min_loss_lr": result.min_loss_lr,
            "bounds": list(result.bounds)}
