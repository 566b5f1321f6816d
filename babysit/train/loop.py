"""fit() and evaluate(): THE training loop, readable top to bottom.

    for each epoch:
        shuffle (a permutation seeded by (seed, epoch), so a resumed run sees the same batches)
        for each mini-batch:  forward -> loss (+ L2) -> backward -> step -> EMA -> schedule -> callbacks
                              (under torchrun: this process's rows of the global batch; DDP averages the gradients)
        score train subset and val (and the EMA), print the epoch line, keep the best-val weights (and the
        EMA's best, a cosine-restarts snapshot, the last epochs), checkpoint; stop early when patience is spent
    SWA: recompute the average's batch-norm statistics, score and keep it

Batches are drawn from tensors already on the device: no per-sample Python work.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from babysit.config import RunConfig
from babysit.errors import BabysitError, Interrupted
from babysit.log import get_logger, shows_progress
from babysit.rundir import RunDir
from babysit.train import distributed as ddp
from babysit.train.average import Averages, weights_of
from babysit.train.early import better_epoch, patience_spent, stop_reason, stop_record
from babysit.train.losses import LossFn, Targets, make_loss, make_train_loss, multitask_loss
from babysit.train.multitask import parse_heads, task_accuracies
from babysit.train.optim import clip_gradients, describe_groups, make_optimizer
from babysit.train.record import Recorder, StepLosses, recorder, sync_due
from babysit.train.regularize import Regularizer
from babysit.train.schedules import LRSchedule

_log = get_logger(__name__)

AugmentFn = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
"""(raw uint8 batch, labels, step) -> (network inputs, targets): babysit.data.augment.Augment."""


@dataclass
class TensorData:
    """Preprocessed splits as float tensors (N, C, H, W) and int64 labels, on the training device. When streaming,
    x_train / x_val / x_raw are babysit.data.stream.MappedImages: the same indexing reads the rows from a memory-mapped
    cache and preprocesses them as they are drawn (nothing here changes)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_raw: torch.Tensor | None = None  # the training images as uint8 pixels, what augmentation starts from
    soft_train: torch.Tensor | None = None  # distillation: the teacher's probabilities at T (N, K) per training image


@dataclass
class LoopState:
    """Everything the loop knows; callbacks read it and may set ``stop``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    cfg: RunConfig
    steps_per_epoch: int
    epoch: int = 0  # epochs finished: N in on_epoch_end right after "Finished epoch N" (like best_epoch); the one
    #                 in progress is epoch + 1 (history records and the progress bar count from 1 too)
    batch: int = 0  # index of the next mini-batch inside the epoch
    step: int = 0  # optimisation steps taken so far
    lr: float = 0.0
    loss: float = float("nan")  # mini-batch loss (data + L2) of the last step read back from the device
    loss_sum: float = 0.0  # sum of this epoch's mini-batch losses so far
    reg_sum: float = 0.0  # sum of this epoch's regularisation terms (loss_sum - reg_sum: the data loss)
    best_val_acc: float = -1.0  # val accuracy of the kept (best) epoch
    best_epoch: int = -1
    best_score: float | None = None  # train.monitor's value at the best epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # epoch records
    stop: bool = False
    schedule: LRSchedule | None = None  # lr of each step; holds reduce-on-plateau's state (checkpointed)
    averages: Averages | None = None  # EMA / SWA of the weights (train.ema, train.swa_epochs; checkpointed)


class Callback(Protocol):
    """Hooks into :func:`fit`. Stateful callbacks also offer ``state_dict``/``load_state_dict``.

    Epochs count from 1 everywhere: ``state.epoch`` is the number of epochs finished, so ``on_epoch_end`` sees
    1 right after "Finished epoch 1" (``state.history[-1]["epoch"]`` and ``state.best_epoch`` agree)."""

    def on_fit_start(self, state: LoopState) -> None: ...
    def on_epoch_start(self, state: LoopState) -> None: ...
    def on_batch_end(self, state: LoopState) -> None: ...
    def on_epoch_end(self, state: LoopState) -> None: ...
    def on_fit_end(self, state: LoopState) -> None: ...


def _call(callbacks: list[Any], hook: str, state: LoopState) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(state)


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The shuffled order of epoch ``epoch``: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000,
             loss_fn: LossFn | None = None) -> tuple[float, float, torch.Tensor]:
    """Mean loss (cross-entropy unless ``loss_fn``), accuracy and predicted labels of ``model`` on (x, y),
    in eval mode."""
    was_training = model.training
    model.eval()
    total, preds = 0.0, []
    main = getattr(loss_fn, "slices", [slice(None)])[0]  # multi-task: accuracy and predictions of the first task
    for i in range(0, len(x), batch_size):
        scores = model(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        total += (F.cross_entropy(scores, yb, reduction="sum").item() if loss_fn is None
                  else loss_fn(scores, yb).item() * len(yb))
        preds.append(scores[:, main].argmax(1))
    model.train(was_training)
    pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
    n = max(len(x), 1)
    y_main = y[:, 0] if y.dim() == 2 else y
    return total / n, (pred == y_main).float().mean().item() if len(x) else 0.0, pred


AUTO_BATCH = (32, 512)  # train.batch_size=0: n_train/400 rounded down to a power of two, within these bounds
AUTO_STEPS = 800  # train.epochs=0: enough epochs for about this many steps ...
AUTO_EPOCHS = (2, 30)  # ... within these bounds


def auto_batch_size(n_train: int) -> int:
    """``train.batch_size=0``: about 400 steps per epoch, as a power of two in 32..512 (never more than the
    training images). On a CPU an image costs about the same in a batch of 128 as in one of 512, so the smaller
    batch takes four times the steps for the same time: MNIST (54,000 images, batch 128) reaches 99 % test in 2
    epochs, where batch 512 needs 4 (bench/time_to_accuracy.py, README "Fast defaults")."""
    lo, hi = AUTO_BATCH
    target = max(lo, min(hi, n_train // 400))
    return min(1 << (target.bit_length() - 1), n_train)


def auto_epochs(steps_per_epoch: int, cycles: int = 1, at_least: int = 0) -> int:
    """``train.epochs=0``: enough epochs for about AUTO_STEPS steps, in AUTO_EPOCHS, rounded up to a multiple of
    ``cycles`` (cosine restarts end their cycles at epoch ends) and at least ``at_least`` (train.swa_epochs + 1).
    One-cycle reaches its best at its end, so the length of the run is its time to accuracy: 800 steps take
    MNIST to 99.2 % and the digits (45 steps an epoch) from 270 steps' 97.5 % to ~98.5 %."""
    lo, hi = AUTO_EPOCHS
    epochs = max(lo, min(hi, math.ceil(AUTO_STEPS / max(steps_per_epoch, 1))), at_least)
    return math.ceil(epochs / max(cycles, 1)) * max(cycles, 1)


def epochs_for(cfg: RunConfig, steps_per_epoch: int) -> int:
    """``train.epochs``, or for 0 (auto) :func:`auto_epochs` with the run's restart cycles and SWA epochs."""
    t = cfg.train
    if t.epochs:
        return t.epochs
    cycles = cfg.schedule.cycles if cfg.schedule.name == "cosine-restarts" else 1
    return auto_epochs(steps_per_epoch, cycles, t.swa_epochs + 1 if t.swa_epochs else 0)


def resolve_length(cfg: RunConfig, n_train: int) -> RunConfig:
    """``cfg`` with ``train.batch_size=0`` and ``train.epochs=0`` made concrete for ``n_train`` training images."""
    t = cfg.train
    if t.batch_size == 0:
        t = replace(t, batch_size=auto_batch_size(n_train))
    t = replace(t, epochs=epochs_for(cfg, math.ceil(n_train / t.batch_size)))
    return cfg if t == cfg.train else replace(cfg, train=t)


def check_batch_size(batch_size: int, n: int) -> None:
    """A mini-batch cannot be larger than the training split."""
    if batch_size > n:
        raise BabysitError(f"train.batch_size={batch_size} is larger than the {n} training images; "
                           f"use --train.batch_size={min(64, n)} or fewer.")


@dataclass
class Update:
    """What one SGD step needs: the model, its update rule, the loss, the regulariser and clipping."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: Callable[[torch.Tensor, Targets], torch.Tensor]  # a LossFn, or distillation's (labels, teacher)
    reg: Regularizer | None = None  # L2 / L1 terms added to the loss, max-norm after the step
    clip_norm: float = 0.0  # clip the gradient's global L2 norm to this; 0 = off
    autocast: torch.dtype | None = None  # forward and loss under autocast to this dtype (bf16 on CUDA)
    channels_last: bool = False  # image batches go in channels-last (NHWC) like the model's weights
    share: float = 1.0  # DDP: this process's weight of its rows in the global batch's mean loss (1 alone)

    @classmethod
    def from_config(cls, model: nn.Module, cfg: RunConfig, optimizer: torch.optim.Optimizer | None = None) -> Update:
        """The run's own step: ``cfg``'s update rule (or ``optimizer``), loss, regularisation, clipping and
        arithmetic (train.precision, train.channels_last: the model is converted here)."""
        if cfg.train.channels_last:
            model.to(memory_format=torch.channels_last)
        return cls(model, optimizer if optimizer is not None else make_optimizer(model, cfg), make_train_loss(cfg),
                   Regularizer.from_config(model, cfg), cfg.optim.clip_norm,
                   torch.bfloat16 if cfg.train.precision == "bf16" else None, cfg.train.channels_last)


@dataclass
class StepCost:
    """One step's cost J = data loss + R(W), still on the device, so that recording it costs no host sync.

    ``loss`` is what the step minimised (the data loss plus the penalty terms in the loss: L1, or L2 when the rule
    does not apply it), ``penalty`` those terms alone. When the update rule applies the L2 term (SGD's weight decay)
    its value lambda/2 ||W||^2 is kept as the weights' norms, one fused kernel, and summed into the cost only at the
    read-back (:meth:`~babysit.train.record.StepLosses.sync` does it for a whole block at once)."""

    loss: torch.Tensor
    penalty: torch.Tensor | None = None
    l2_norms: list[torch.Tensor] | None = None  # ||W_i|| before the update, of the tensors the rule decays
    reg: Regularizer | None = field(default=None, repr=False)  # turns l2_norms into the L2 term

    def l2(self) -> torch.Tensor | None:
        """The L2 term the update rule applied (0-d), or None."""
        if self.l2_norms is None or self.reg is None:
            return None
        return self.reg.l2_value(self.l2_norms)

    def regularization(self) -> torch.Tensor | None:
        """R(W): the penalty in the loss plus the L2 term the rule applied (0-d), or None without either."""
        terms = [t for t in (self.penalty, self.l2()) if t is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def total(self) -> torch.Tensor:
        """The cost J (0-d)."""
        l2 = self.l2()
        return self.loss if l2 is None else self.loss + l2

    def item(self) -> float:
        return self.total().item()


class NonFinite(Exception):
    """Raised by :func:`train_step` before the update when the loss or the gradient is NaN or Inf."""

    def __init__(self, loss: float, grad_norm: float) -> None:
        super().__init__(f"loss {loss}, gradient norm {grad_norm}")
        self.loss, self.grad_norm = loss, grad_norm


def next_batch(data: TensorData, idx: torch.Tensor, step: int,
               augment: AugmentFn | None = None) -> tuple[torch.Tensor, Targets]:
    """The training mini-batch ``idx`` as the network sees it at ``step``: the preprocessed images, or with
    ``augment`` the raw pixels warped / recoloured / cut / mixed, then preprocessed (targets (B, K) when mixed).
    With the teacher's soft targets (distillation) the targets are (labels, teacher probabilities)."""
    if data.soft_train is not None:
        if augment is not None:
            raise ValueError("distillation's soft targets belong to the unaugmented training images")
        return data.x_train[idx], (data.y_train[idx], data.soft_train[idx])
    if augment is None:
        return data.x_train[idx], data.y_train[idx]
    if data.x_raw is None:
        raise ValueError("augmented batches need the raw training pixels in data.x_raw")
    return augment(data.x_raw[idx], data.y_train[idx], step)


def train_step(u: Update, xb: torch.Tensor, yb: Targets, lr: float | None = None,
               check_finite: bool = False, momentum: float | None = None) -> StepCost:
    """One mini-batch step: forward -> loss (+ regularisation) -> backward -> clip -> update -> max-norm.

    ``lr`` (times the group's ``lr_scale``) and ``momentum`` (when given; Adam's beta1) are set on every parameter
    group first. With ``check_finite`` a NaN or Inf loss or gradient raises :class:`NonFinite` before the update,
    so it never reaches the weights. Returns the step's cost (data loss + regularisation, the L2 term included when
    the update rule applies it) as a :class:`StepCost` on the device: ``.item()`` reads it, and the loop reads a
    block of them with one host sync, the data loss and the regularisation apart."""
    if lr is not None:  # a group's lr_scale: discriminative learning rates (optim.layer_decay)
        for group in u.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
    if momentum is not None:  # one-cycle's momentum
        for group in u.optimizer.param_groups:
            if "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
            else:
                group["momentum"] = momentum
    if u.channels_last and xb.dim() == 4:
        xb = xb.contiguous(memory_format=torch.channels_last)
    with (torch.autocast(xb.device.type, dtype=u.autocast) if u.autocast is not None else contextlib.nullcontext()):
        loss = u.criterion(u.model(xb), yb)  # scores (B, classes) -> data loss
    if u.share != 1.0:  # DDP: rows_r * N / B, so the mean over the N processes is the global batch's mean loss
        loss = loss * u.share
    reg = u.reg.penalty() if u.reg is not None else None
    if reg is not None:
        loss = loss + reg
    u.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norms = u.reg.l2_norms() if u.reg is not None else None  # the cost includes the L2 term the rule applies
    if check_finite:
        value = loss.item()
        grads = [p.grad for p in u.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads).item() if grads else 0.0
        if not (math.isfinite(value) and math.isfinite(grad_norm)):
            raise NonFinite(value, grad_norm)
    clip_gradients(u.model.parameters(), u.clip_norm)  # no-op when clip_norm is 0
    u.optimizer.step()
    if u.reg is not None:
        u.reg.project()  # max-norm constraint, when set
    return StepCost(loss.detach(), None if reg is None else reg.detach(), norms, u.reg)


def fit(model: nn.Module, data: TensorData, cfg: RunConfig, run: RunDir | None = None,
        callbacks: list[Any] | None = None, resume: bool = False,
        augment: AugmentFn | None = None) -> LoopState:
    """Train ``model`` on ``data`` with mini-batch SGD; returns the final loop state.

    ``augment(raw_pixels, labels, step) -> (inputs, targets)`` (babysit.data.augment.Augment) makes each
    training batch from ``data.x_raw``; it is seeded by step, so a resumed run sees the same batches.

    The model ends holding the weights of the epoch with the best validation score (``train.monitor``);
    with ``train.patience`` the run stops once that many epochs have not improved on it. With a run
    directory everything is recorded there (and ``resume`` restores its last checkpoint exactly);
    without one, in memory. ``data.soft_train`` (a teacher's probabilities) makes it a distillation.
    """
    callbacks = list(callbacks or [])
    n = len(data.x_train)
    cfg = resolve_length(cfg, n)  # batch size and epochs 0 (auto), when start.plan_run has not made them concrete
    t = cfg.train
    check_batch_size(t.batch_size, n)
    if augment is not None and data.x_raw is None:
        raise ValueError("fit(augment=...) needs the raw training pixels in data.x_raw")
    if cfg.distill.teacher and data.soft_train is None:
        raise ValueError("a distillation run (distill.teacher) needs the teacher's probabilities in data.soft_train")
    ranks = ddp.joined()  # under torchrun (train): this process's place; rank 0 alone writes the run directory
    rec: Recorder = recorder(run, ranks.main)
    update = Update.from_config(model, cfg)
    averages = Averages(model, cfg)  # copies of the weights for EMA / SWA (none when both are off)
    if t.compile != "off":  # in place, so the state_dict keys (checkpoints) stay the model's own
        model.compile(mode=None if t.compile == "default" else t.compile)
    steps_per_epoch = math.ceil(n / t.batch_size)
    schedule = LRSchedule.from_config(cfg, steps_per_epoch)
    state = LoopState(model, update.optimizer, cfg, steps_per_epoch, schedule=schedule, averages=averages)
    _log.info(describe_groups(state.optimizer, cfg))
    ddp.seed_rank(t.seed, ranks)  # each process its own dropout stream
    update.model = ddp.wrap(model, data.x_train.device, t.sync_bn)  # forward/backward through DDP; the model alone
    if resume:
        rec.restore(state, callbacks)
    losses = StepLosses(model, update.optimizer, rec, callbacks)  # after the restore: it snapshots the start
    train_eval = slice(0, min(t.train_eval_size, n))
    stopper = _SignalFlag()
    _call(callbacks, "on_fit_start", state)
    eta = RunETA(state.step, t.epochs * steps_per_epoch)  # after the checks and the restore: training time only
    with _written(rec):  # checkpoints are written in the background; on disk when fit() returns or raises
        with stopper:
            while state.epoch < t.epochs and not state.stop and not patience_spent(state):
                perm = epoch_permutation(n, t.seed, state.epoch, data.x_train.device)
                _call(callbacks, "on_epoch_start", state)
                model.train()
                started = time.perf_counter()
                shown = t.progress and sys.stdout.isatty() and shows_progress()  # -q hides the bar
                bar = tqdm(total=state.steps_per_epoch, initial=state.batch, leave=False, unit="batch",
                           desc=f"epoch {state.epoch + 1}/{t.epochs}", disable=not shown)
                while state.batch < state.steps_per_epoch and not state.stop:
                    xb, yb = next_batch(data, perm[state.batch * t.batch_size : (state.batch + 1) * t.batch_size],
                                        state.step, augment)  # the global batch: augmentation draws per (seed, step)
                    xb, yb, update.share = ddp.shard(xb, yb, ranks)  # DDP: this process's rows (alone: all of them)
                    state.lr = schedule.lr(state.step)
                    # the loss stays on the device: no host sync per step
                    loss = train_step(update, xb, yb, state.lr, momentum=schedule.momentum(state.step))
                    state.step += 1
                    averages.after_step(state.step)  # ema = d*ema + (1-d)*w
                    state.batch += 1
                    losses.add({"kind": "step", "step": state.step, "epoch": state.epoch + 1, "loss": None,
                                "lr": state.lr}, loss)
                    synced = sync_due(state.step, t.sync_every)
                    if synced:  # read back, check (NaN, guard), record
                        losses.sync(state)
                        bar.set_postfix(loss=f"{state.loss:.4f}", run=eta.text(state.step), refresh=False)
                    _call(callbacks, "on_batch_end", state)
                    bar.update(1)
                    signum = ddp.agree(stopper.signum, synced)  # DDP: every process stops at the same sync step
                    due = state.step % cfg.checkpoint.every == 0 and state.batch < state.steps_per_epoch
                    if due or signum is not None:
                        losses.sync(state)
                        rec.save(state, callbacks)
                        signum = ddp.agree(stopper.signum, True)  # one that came during the save is covered by it
                    if signum is not None:  # Ctrl-C / SIGTERM: saved just now, between two steps
                        raise Interrupted(rec.stopped(signum), signum)
                bar.close()
                losses.sync(state)
                ddp.sync_buffers(model)  # DDP: rank 0's BN statistics everywhere, so every process scores the same
                _end_epoch(state, data, train_eval, time.perf_counter() - started, rec)
                schedule.epoch_end(state.history[-1]["val_loss"])  # reduce-on-plateau looks at the val loss
                state.epoch += 1  # before the callbacks: they see epoch N after "Finished epoch N"
                _call(callbacks, "on_epoch_end", state)
                state.batch, state.loss_sum, state.reg_sum = 0, 0.0, 0.0
                if patience_spent(state):  # the history says why the run stops here
                    rec.append(record := stop_record(state))
                    _log.info(f"{stop_reason(cfg, record)}.")
                rec.save(state, callbacks)
                signum = ddp.agree(stopper.signum, True)
                if signum is not None:  # a signal during the epoch-end evaluation; just saved
                    raise Interrupted(rec.stopped(signum), signum)
        _call(callbacks, "on_fit_end", state)
        for kind, weights, meta in averages.finish(data.x_train, t.batch_size, _scorer(cfg), data.x_val, data.y_val):
            rec.keep_weights(kind, weights, meta)  # SWA, batch-norm statistics recomputed
        best = rec.best_weights()
        if best is not None:
            model.load_state_dict(best)
    return state


def _scorer(cfg: RunConfig) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[float, float]]:
    """(model, x, y) -> (val loss without label smoothing, accuracy): how every set of weights is scored."""
    return lambda model, x, y: evaluate(model, x, y, cfg.train.eval_batch_size, eval_loss(cfg))[:2]


def eval_loss(cfg: RunConfig) -> LossFn:
    """The loss validation and test report: the data loss without label smoothing (per task, summed)."""
    loss_fn = make_loss(cfg.loss, train=False)
    return multitask_loss(loss_fn, cfg) if cfg.model.heads else loss_fn


@torch.no_grad()
def task_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: RunConfig) -> dict[str, float]:
    """Multi-task: each task's accuracy on (x, y), in eval mode ({} for one task)."""
    if not cfg.model.heads:
        return {}
    was_training = model.training
    model.eval()
    bs = cfg.train.eval_batch_size
    scores = torch.cat([model(x[i : i + bs]) for i in range(0, len(x), bs)])
    model.train(was_training)
    return task_accuracies(scores, y, parse_heads(cfg.model.heads))


def _end_epoch(state: LoopState, data: TensorData, train_eval: slice, seconds: float, rec: Recorder) -> None:
    """Score, print the lecture's epoch line, record it, keep the best weights (and the EMA's best, a
    cosine-restarts snapshot, the last epochs' weights)."""
    t, epoch, score = state.cfg.train, state.epoch + 1, _scorer(state.cfg)
    _, train_acc, _ = evaluate(state.model, data.x_train[train_eval], data.y_train[train_eval], t.eval_batch_size,
                               eval_loss(state.cfg) if state.cfg.model.heads else None)
    val_loss, val_acc = score(state.model, data.x_val, data.y_val)
    cost = state.loss_sum / max(state.batch, 1)  # the notes' cost: data loss + regularisation
    reg = state.reg_sum / max(state.batch, 1)
    record = {"kind": "epoch", "step": state.step, "epoch": epoch, "cost": cost, "data_loss": cost - reg, "reg": reg,
              "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc, "lr": state.lr, "seconds": seconds}
    if state.averages is not None:
        record |= state.averages.score(score, data.x_val, data.y_val)  # ema_val_loss, ema_val_acc
    tasks = task_scores(state.model, data.x_val, data.y_val, state.cfg)
    if tasks:  # multi-task: every head's val accuracy (val_acc is the first task's)
        record["val_acc_tasks"] = tasks
    ema = f", ema val {record['ema_val_acc']:.6f}" if "ema_val_acc" in record else ""
    # the data loss beside the cost: val loss has no regularisation term, so compare it with the data loss
    _log.info(f"Finished epoch {epoch} / {t.epochs}: cost {cost:.6f} (data loss {cost - reg:.6f}, reg {reg:.6f}), "
              f"train: {train_acc:.6f}, val {val_acc:.6f} (val loss {val_loss:.6f}){ema}, lr {state.lr:.6e}"
              + "".join(f", val {k} {v:.4f}" for k, v in tasks.items()))
    state.history.append(record)
    rec.append(record)
    best = next((r for r in state.history if r.get("epoch") == state.best_epoch and t.monitor in r), None)
    if better_epoch(t.monitor, record, best, t.min_delta):
        state.best_val_acc, state.best_epoch, state.best_score = val_acc, epoch, record[t.monitor]
        rec.keep_best(state, {"epoch": epoch, "step": state.step, "val_acc": val_acc, "val_loss": val_loss,
                              "monitor": t.monitor})
    for kind, weights, meta in state.averages.epoch_end(state.model, record) if state.averages else []:
        rec.keep_weights(kind, weights, meta)  # SWA's running mean; the EMA's best
    meta = {"epoch": epoch, "step": state.step, "val_acc": val_acc, "val_loss": val_loss}
    cycle = state.schedule.cycle_end(epoch) if state.schedule is not None else 0
    if cycle:  # snapshot ensembles: the weights at the end of each cosine-restarts cycle
        rec.keep_weights("snapshot", weights_of(state.model), {**meta, "cycle": cycle}, index=cycle)
    if state.cfg.checkpoint.keep_last:
        rec.keep_weights("epoch", weights_of(state.model), meta, index=epoch, keep_last=state.cfg.checkpoint.keep_last)


class RunETA:
    """The whole run's remaining time, shown beside the per-epoch bar: the seconds per step so far in this
    session (epoch-end scoring included, since it is averaged in from the second epoch on) times the steps left."""

    def __init__(self, start_step: int, total_steps: int) -> None:
        self.start_step, self.total = start_step, total_steps
        self.started = time.perf_counter()

    def seconds_left(self, step: int, now: float | None = None) -> float | None:
        done = step - self.start_step
        if done <= 0:
            return None
        elapsed = (time.perf_counter() if now is None else now) - self.started
        return elapsed / done * max(0, self.total - step)

    def text(self, step: int) -> str:
        left = self.seconds_left(step)
        return f"step {step}/{self.total}, ETA " + ("?" if left is None else format_duration(left))


def format_duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m: short enough for a progress bar."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@contextlib.contextmanager
def _written(rec: Recorder) -> Iterator[None]:
    """Wait for the checkpoints handed to the background writer at the end of the block, however it ends (a write
    error, e.g. a full disk, is raised then, over a signal's or a divergence's exception)."""
    try:
        yield
    finally:
        rec.flush()


class _SignalFlag:
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps, so a step is never torn."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __enter__(self) -> _SignalFlag:
        import threading
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
