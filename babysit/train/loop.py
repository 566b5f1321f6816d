"""fit() and evaluate(): THE training loop, readable top to bottom.

    for each epoch:
        shuffle (a permutation seeded by (seed, epoch), so a resumed run sees the same batches)
        for each mini-batch:  forward -> loss (+ L2) -> backward -> step -> schedule -> callbacks
        score train subset and val, print the epoch line, keep the best-val weights, checkpoint

Batches are drawn from tensors already on the device: no per-sample Python work.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from babysit.config import RunConfig
from babysit.errors import BabysitError
from babysit.rundir import RunDir
from babysit.train.checkpoint import (
    all_finite,
    checkpoint_step,
    config_changes,
    flatten_state,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unflatten_state,
)
from babysit.train.losses import LossFn, make_loss
from babysit.train.optim import clip_gradients, describe_groups, make_optimizer
from babysit.train.regularize import Regularizer
from babysit.train.schedules import LRSchedule

AugmentFn = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
"""(raw uint8 batch, labels, step) -> (network inputs, targets): babysit.data.augment.Augment."""


@dataclass
class TensorData:
    """Preprocessed splits as float tensors (N, C, H, W) and int64 labels, on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_raw: torch.Tensor | None = None  # the training images as uint8 pixels, what augmentation starts from


@dataclass
class LoopState:
    """Everything the loop knows; callbacks read it and may set ``stop``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    cfg: RunConfig
    steps_per_epoch: int
    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # index of the next mini-batch inside the epoch
    step: int = 0  # optimisation steps taken so far
    lr: float = 0.0
    loss: float = float("nan")  # last mini-batch loss (data + L2)
    loss_sum: float = 0.0  # sum of this epoch's mini-batch losses so far
    best_val_acc: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)  # epoch records
    best_state: dict[str, torch.Tensor] | None = None  # best-val weights, kept here when there is no run dir
    stop: bool = False
    schedule: LRSchedule | None = None  # lr of each step; holds reduce-on-plateau's state (checkpointed)


class Callback(Protocol):
    """Hooks into :func:`fit`. Stateful callbacks also offer ``state_dict``/``load_state_dict``."""

    def on_fit_start(self, state: LoopState) -> None: ...
    def on_epoch_start(self, state: LoopState) -> None: ...
    def on_batch_end(self, state: LoopState) -> None: ...
    def on_epoch_end(self, state: LoopState) -> None: ...
    def on_fit_end(self, state: LoopState) -> None: ...


class Interrupted(BabysitError):
    """Ctrl-C or SIGTERM: a checkpoint was saved and the run can be resumed (exit 130 / 143)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class Diverged(BabysitError):
    """The loss became NaN or infinite."""

    exit_code = 3


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
    for i in range(0, len(x), batch_size):
        scores = model(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        total += (F.cross_entropy(scores, yb, reduction="sum").item() if loss_fn is None
                  else loss_fn(scores, yb).item() * len(yb))
        preds.append(scores.argmax(1))
    model.train(was_training)
    pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
    n = max(len(x), 1)
    return total / n, (pred == y).float().mean().item() if len(x) else 0.0, pred


def check_batch_size(batch_size: int, n: int) -> None:
    """A mini-batch cannot be larger than the training split."""
    if batch_size > n:
        raise BabysitError(f"train.batch_size={batch_size} is larger than the {n} training images; "
                           f"use --train.batch_size={min(64, n)} or fewer.")


def fit(model: nn.Module, data: TensorData, cfg: RunConfig, run: RunDir | None = None,
        callbacks: list[Any] | None = None, resume: bool = False,
        augment: AugmentFn | None = None) -> LoopState:
    """Train ``model`` on ``data`` with mini-batch SGD; returns the final loop state.

    ``augment(raw_pixels, labels, step) -> (inputs, targets)`` (babysit.data.augment.Augment) makes each
    training batch from ``data.x_raw``; it is seeded by step, so a resumed run sees the same batches.

    The model ends holding the weights of the epoch with the best validation accuracy.
    With ``resume`` the state saved in ``run``'s last checkpoint is restored exactly.
    """
    callbacks = list(callbacks or [])
    t = cfg.train
    n = len(data.x_train)
    check_batch_size(t.batch_size, n)
    if augment is not None and data.x_raw is None:
        raise ValueError("fit(augment=...) needs the raw training pixels in data.x_raw")
    criterion, reg = make_loss(cfg.loss), Regularizer.from_config(model, cfg)
    steps_per_epoch = math.ceil(n / t.batch_size)
    schedule = LRSchedule(cfg.optim.lr, cfg.schedule, steps_per_epoch, t.epochs * steps_per_epoch)
    state = LoopState(model, make_optimizer(model, cfg), cfg, steps_per_epoch, schedule=schedule)
    print(describe_groups(state.optimizer, cfg), flush=True)
    if resume:
        _restore(state, run, callbacks)
    train_eval = slice(0, min(t.train_eval_size, n))
    stopper = _SignalFlag()
    _call(callbacks, "on_fit_start", state)
    with stopper:
        while state.epoch < t.epochs and not state.stop:
            perm = epoch_permutation(n, t.seed, state.epoch, data.x_train.device)
            _call(callbacks, "on_epoch_start", state)
            model.train()
            started = time.perf_counter()
            bar = tqdm(total=state.steps_per_epoch, initial=state.batch, leave=False, unit="batch",
                       desc=f"epoch {state.epoch + 1}/{t.epochs}", disable=not (t.progress and sys.stdout.isatty()))
            while state.batch < state.steps_per_epoch and not state.stop:
                idx = perm[state.batch * t.batch_size : (state.batch + 1) * t.batch_size]
                if augment is None:
                    xb, yb = data.x_train[idx], data.y_train[idx]
                else:  # warp / noise / cutout / mix the raw pixels, then preprocess; yb is (B, K) soft when mixed
                    xb, yb = augment(data.x_raw[idx], data.y_train[idx], state.step)
                state.lr = schedule.lr(state.step)
                for group in state.optimizer.param_groups:
                    group["lr"] = state.lr
                scores = model(xb)  # (B, classes)
                loss = criterion(scores, yb) + reg.penalty()  # data loss + L2 / L1 terms
                state.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                state.loss = loss.item()
                _check_finite(state, run)  # before the step, so NaN never reaches the weights
                clip_gradients(model.parameters(), cfg.optim.clip_norm)  # no-op when clip_norm is 0
                state.optimizer.step()
                reg.project()  # max-norm constraint, when set
                state.step += 1
                state.batch += 1
                state.loss_sum += state.loss
                if run is not None:
                    run.append_history({"kind": "step", "step": state.step, "epoch": state.epoch + 1,
                                        "loss": state.loss, "lr": state.lr})
                _call(callbacks, "on_batch_end", state)
                bar.update(1)
                bar.set_postfix(loss=f"{state.loss:.4f}", refresh=False)
                if stopper.signum is not None:
                    _save(state, run, callbacks)
                    raise Interrupted(_interrupt_message(stopper.signum, run), stopper.signum)
                if run is not None and state.step % cfg.checkpoint.every == 0 and state.batch < state.steps_per_epoch:
                    _save(state, run, callbacks)
            bar.close()
            _end_epoch(state, data, train_eval, time.perf_counter() - started, run)
            schedule.epoch_end(state.history[-1]["val_loss"])  # reduce-on-plateau looks at the val loss
            _call(callbacks, "on_epoch_end", state)
            state.epoch, state.batch, state.loss_sum = state.epoch + 1, 0, 0.0
            if run is not None:
                _save(state, run, callbacks)
            if stopper.signum is not None:  # a signal during the epoch-end evaluation; just saved
                raise Interrupted(_interrupt_message(stopper.signum, run), stopper.signum)
    _call(callbacks, "on_fit_end", state)
    if run is not None and run.best.exists():
        best, _ = load_checkpoint(run.best)
        model.load_state_dict({k[len("model."):]: v for k, v in best.items()})
    elif state.best_state is not None:
        model.load_state_dict(state.best_state)
    return state


def _end_epoch(state: LoopState, data: TensorData, train_eval: slice, seconds: float, run: RunDir | None) -> None:
    """Score, print the lecture's epoch line, record it, keep the best weights."""
    t = state.cfg.train
    _, train_acc, _ = evaluate(state.model, data.x_train[train_eval], data.y_train[train_eval], t.eval_batch_size)
    val_loss, val_acc, _ = evaluate(state.model, data.x_val, data.y_val, t.eval_batch_size,
                                    make_loss(state.cfg.loss, train=False))
    cost = state.loss_sum / max(state.batch, 1)
    print(f"Finished epoch {state.epoch + 1} / {t.epochs}: cost {cost:.6f}, train: {train_acc:.6f}, "
          f"val {val_acc:.6f}, lr {state.lr:.6e}", flush=True)
    record = {"kind": "epoch", "step": state.step, "epoch": state.epoch + 1, "cost": cost, "train_acc": train_acc,
              "val_loss": val_loss, "val_acc": val_acc, "lr": state.lr, "seconds": seconds}
    state.history.append(record)
    if run is not None:
        run.append_history(record)
    if val_acc > state.best_val_acc:
        state.best_val_acc, state.best_epoch = val_acc, state.epoch + 1
        weights = {f"model.{k}": v for k, v in state.model.state_dict().items()}
        if run is not None:
            save_checkpoint(run.best, weights, {"epoch": state.epoch + 1, "step": state.step, "val_acc": val_acc})
        else:
            state.best_state = {k[len("model."):]: v.clone() for k, v in weights.items()}


def _save(state: LoopState, run: RunDir | None, callbacks: list[Any]) -> None:
    """Write checkpoints/last.safetensors: weights, optimiser, RNG and the position in the run."""
    if run is None:
        return
    tensors = {f"model.{k}": v for k, v in state.model.state_dict().items()}
    if not all_finite(tensors):  # never replace the last good checkpoint with NaN weights
        raise Diverged(_diverged_message("the weights became NaN or Inf", state.step, state, run))
    meta: dict[str, Any] = {
        "epoch": state.epoch, "batch": state.batch, "step": state.step, "loss_sum": state.loss_sum,
        "lr": state.lr, "best_val_acc": state.best_val_acc, "best_epoch": state.best_epoch,
        "history": state.history, "spec": state.cfg.model.spec, "config": asdict(state.cfg),
        "optimizer": flatten_state("optim", state.optimizer.state_dict(), tensors),
        "schedule": state.schedule.state_dict() if state.schedule is not None else None,
        "callbacks": [flatten_state(f"cb{i}", cb.state_dict(), tensors) if hasattr(cb, "state_dict") else None
                      for i, cb in enumerate(callbacks)],
    }
    meta["rng"] = rng_state(tensors)
    save_checkpoint(run.last, tensors, meta)


# Options a resumed run may change in config.toml: none of them alters the weights (epochs stretches the schedule).
RESUME_FREE_KEYS = ("train.epochs", "train.progress", "train.device", "train.eval_batch_size",
                    "train.train_eval_size", "checkpoint.every", "monitor")


def _restore(state: LoopState, run: RunDir | None, callbacks: list[Any]) -> None:
    """Inverse of :func:`_save`; errors in words when the checkpoint does not fit this model or config."""
    if run is None:
        raise BabysitError("resume needs a run directory.")
    if not run.last.exists():  # killed before its first checkpoint: start over in the same directory
        print(f"{run.path} has no checkpoint yet; training it from the start.", flush=True)
        run.append_history({"kind": "resume", "step": 0, "epoch": 1})
        return
    tensors, meta = load_checkpoint(run.last)
    if not {"optimizer", "rng", "step"} <= meta.keys():
        raise BabysitError(f"{run.last} holds weights only (no optimiser state or position), so the run cannot "
                           "resume from it; put back this run's own last checkpoint or start the run afresh.")
    saved = meta.get("config")
    changes = config_changes(saved, asdict(state.cfg), RESUME_FREE_KEYS) if isinstance(saved, dict) else []
    if not changes and meta.get("spec") != state.cfg.model.spec:
        changes = [f"model.spec: {meta.get('spec')!r} -> {state.cfg.model.spec!r}"]
    if changes:
        raise BabysitError(f"checkpoint {run.last} was saved with another config than {run.config} "
                           f"({'; '.join(changes)}); undo the edit (or put back this run's own checkpoint) to "
                           "resume, or start a new run with the new config.")
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        state.model.load_state_dict(weights)
        state.optimizer.load_state_dict(unflatten_state(meta["optimizer"], tensors))
        for cb, cb_state in zip(callbacks, meta.get("callbacks", [])):
            if cb_state is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(unflatten_state(cb_state, tensors))
        for key in ("epoch", "batch", "step", "loss_sum", "lr", "best_val_acc", "best_epoch", "history"):
            setattr(state, key, meta[key])
        if state.schedule is not None and meta.get("schedule") is not None:
            state.schedule.load_state_dict(meta["schedule"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise BabysitError(f"checkpoint {run.last} does not match this model ({str(e).splitlines()[0]}); "
                           "put back this run's own checkpoint or start the run afresh.") from None
    set_rng_state(meta["rng"] if isinstance(meta.get("rng"), dict) else {}, tensors)
    run.append_history({"kind": "resume", "step": state.step, "epoch": state.epoch + 1})


def _check_finite(state: LoopState, run: RunDir | None) -> None:
    """Stop with :class:`Diverged` when the loss or the gradient is NaN or Inf, before the update."""
    grads = [p.grad for p in state.model.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm(grads).item() if grads else 0.0
    if math.isfinite(state.loss) and math.isfinite(grad_norm):
        return
    what = (f"the loss became {state.loss}" if not math.isfinite(state.loss)
            else f"the gradient norm became {grad_norm} (loss {state.loss:.4g})")
    raise Diverged(_diverged_message(what, state.step + 1, state, run))


def _diverged_message(what: str, step: int, state: LoopState, run: RunDir | None) -> str:
    saved = checkpoint_step(run.last) if run is not None else None
    kept = (f"the last good checkpoint, step {saved}, is kept in {run.last}" if run is not None and saved is not None
            else "no checkpoint was saved before it")
    return (f"{what} at step {step} (lr {state.lr:.3g}); the learning rate is probably too high: start a new run "
            f"with --optim.lr ten times smaller ({kept}).")


def _interrupt_message(signum: int, run: RunDir | None) -> str:
    name = signal.Signals(signum).name
    if run is None:
        return f"stopped by {name}; without a run directory nothing was saved."
    return f"stopped by {name} after saving a checkpoint; resume with `babysit train --resume {run.path}`."


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
