"""TensorBoard events in RUN/events/: open them with ``tensorboard --logdir RUN/events``.

Scalars: the training loss and learning rate every step; cost, train/val accuracy and val loss every
epoch; per layer (tag ``<stat>/layer<name>``) the update/weight ratio, weight and gradient norms,
activation mean/std, dead and saturated fractions at every kept probe. Histograms: activations and
their gradients per layer. Images: the first layer's filters at every epoch end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from babysit.errors import BabysitError
from babysit.train.loop import LoopState

LAYER_SCALARS = ("update_ratio", "w_norm", "grad_norm", "act_mean", "act_std", "grad_rms", "dead", "saturated")


class TensorBoardLogger:
    """Callback and probe sink writing TensorBoard event files under ``logdir``."""

    def __init__(self, logdir: str | Path) -> None:
        self.logdir = Path(logdir)
        self.writer: Any = None

    def on_fit_start(self, state: LoopState) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise BabysitError("--monitor.tensorboard needs the tensorboard package; "
                               "install it with `pip install tensorboard`.") from None
        # after a resume, events past the checkpoint's step are dropped so the curves do not fork
        self.writer = SummaryWriter(str(self.logdir), purge_step=state.step if state.step else None)

    def on_batch_end(self, state: LoopState) -> None:
        self.writer.add_scalar("loss/train_step", state.loss, state.step)
        self.writer.add_scalar("lr", state.lr, state.step)

    def on_epoch_end(self, state: LoopState) -> None:
        rec = state.history[-1]
        for tag, key in (("loss/train_epoch", "cost"), ("loss/val", "val_loss"), ("accuracy/train", "train_acc"),
                         ("accuracy/val", "val_acc")):
            if rec.get(key) is not None:
                self.writer.add_scalar(tag, rec[key], state.step)
        self.writer.flush()

    def on_fit_end(self, state: LoopState) -> None:
        self.close()

    def state_dict(self) -> dict[str, Any]:
        """Nothing to restore (purge_step handles a resume); called at every checkpoint, so flush then."""
        if self.writer is not None:
            self.writer.flush()
        return {}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def log_layers(self, record: dict[str, Any], hist: dict[str, Any] | None) -> None:
        if self.writer is None:
            return
        step = record["step"]
        for name, stats in record["layers"].items():
            for key in LAYER_SCALARS:
                if stats.get(key) is not None:
                    self.writer.add_scalar(f"{key}/layer{name}", stats[key], step)
        for name, parts in (hist or {}).get("layers", {}).items():
            for part, (lo, hi, counts) in parts.items():
                self._histogram(f"{'activations' if part == 'act' else 'gradients'}/layer{name}", lo, hi, counts, step)

    def _histogram(self, tag: str, lo: float, hi: float, counts: list[int], step: int) -> None:
        n = len(counts)
        limits = np.linspace(lo, hi, n + 1)[1:]
        centres = (np.linspace(lo, hi, n + 1)[:-1] + limits) / 2
        c = np.asarray(counts, dtype=np.float64)
        self.writer.add_histogram_raw(tag, min=lo, max=hi, num=int(c.sum()), sum=float((c * centres).sum()),
                                      sum_squares=float((c * centres**2).sum()), bucket_limits=limits.tolist(),
                                      bucket_counts=c.tolist(), global_step=step)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")
