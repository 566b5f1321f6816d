"""Which epoch is best, and early stopping: the notes' "keep the best-validation snapshot".

``train.monitor`` names the score (val_acc: higher is better; val_loss: lower is better). An epoch
improves on the best so far when it is better by more than ``train.min_delta``; the run keeps the
weights of its best epoch whatever happens after. With ``train.patience`` = P > 0 the run stops once
P epochs in a row have not improved (Keras' EarlyStopping with restore_best_weights).

Whether a run has stopped is a function of its position and best epoch, both in every checkpoint, so a
resumed run that had stopped stays stopped without any state of its own.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from babysit.config import RunConfig

if TYPE_CHECKING:
    from babysit.train.loop import LoopState


def improved(monitor: str, value: float, best: float | None, min_delta: float = 0.0) -> bool:
    """Is ``value`` of ``monitor`` better than ``best`` by more than ``min_delta``? (The first finite one is.)"""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if monitor == "val_acc" else value < best - min_delta


def better_epoch(monitor: str, record: dict[str, Any], best: dict[str, Any] | None, min_delta: float = 0.0) -> bool:
    """Is the epoch ``record`` better than the best one so far (``best``, its record)? By ``monitor``, as
    :func:`improved`; a val accuracy equal to the best one's is broken by the lower val loss. On a small val set
    accuracies tie often (the digits' 179 images: one image is 0.56 points), and the earlier epoch of a tie, at
    one-cycle's peak lr, is rarely the better model."""
    if improved(monitor, record[monitor], None if best is None else best[monitor], min_delta):
        return True
    return (best is not None and monitor == "val_acc" and min_delta == 0 and record["val_acc"] == best["val_acc"]
            and record["val_loss"] < best["val_loss"])


def patience_spent(state: LoopState) -> bool:
    """True once ``train.patience`` finished epochs in a row have not improved on the best one."""
    p = state.cfg.train.patience
    return p > 0 and state.epoch - max(state.best_epoch, 0) >= p


def stop_record(state: LoopState) -> dict[str, Any]:
    """The history record that says why the run stopped early (after the epoch that spent the patience)."""
    t = state.cfg.train
    return {"kind": "early_stop", "step": state.step, "epoch": state.epoch, "monitor": t.monitor,
            "patience": t.patience, "min_delta": t.min_delta, "best_epoch": state.best_epoch,
            "best": state.best_score, "epochs_saved": t.epochs - state.epoch}


def stop_reason(cfg: RunConfig, record: dict[str, Any]) -> str:
    """:func:`stop_record` in words."""
    better = f"by more than {record['min_delta']:g}" if record["min_delta"] else "at all"
    best = f"{record['best']:.4f}" if isinstance(record["best"], (int, float)) else "none"
    return (f"Early stopping after epoch {record['epoch']}: {record['monitor']} has not improved {better} for "
            f"{record['patience']} epochs (best {best} at epoch {record['best_epoch']}); the weights of epoch "
            f"{record['best_epoch']} are kept, {record['epochs_saved']} of {cfg.train.epochs} epochs saved")
