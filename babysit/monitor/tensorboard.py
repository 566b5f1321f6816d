"""TensorBoard events in RUN/events/: open them with ``tensorboard --logdir RUN/events``.

Scalars: the training cost and learning rate every step; per epoch the cost (data loss + regularisation),
the data loss and the regularisation term apart, the val loss (no regularisation: compare it with the data
loss, which the custom-scalars tab draws on one chart), train/val accuracy; per layer (tag
``<stat>/<NN>.<token>``, e.g. ``update_ratio/03.conv3-64``) the update/weight ratio, weight and gradient
norms, activation mean/std, dead and saturated fractions at every kept probe. Histograms: activations and
their gradients per layer. Images: the first layer's filters at every epoch end. Text: the run's config
(TOML). HParams: the config's numbers and names with the best val accuracy / loss as metrics.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from babysit.config import RunConfig, dumps_toml
from babysit.errors import BabysitError
from babysit.models.spec import layer_labels
from babysit.train.loop import LoopState

LAYER_SCALARS = ("update_ratio", "w_norm", "grad_norm", "act_mean", "act_std", "grad_rms", "dead", "saturated")
EPOCH_SCALARS = (("loss/train_cost", "cost"), ("loss/train_data", "data_loss"), ("loss/reg", "reg"),
                 ("loss/val", "val_loss"), ("accuracy/train", "train_acc"), ("accuracy/val", "val_acc"))
HPARAM_SECTIONS = ("model", "data", "augment", "loss", "optim", "schedule", "regularize", "train")
"""Config sections whose values go to the hparams view (monitoring, search and output options do not)."""
METRICS = ("hparam/best_val_acc", "hparam/best_val_loss")
LAYOUT = {"loss": {"train data loss vs val loss": ["Multiline", ["loss/train_data", "loss/val"]],
                   "cost = data loss + reg": ["Multiline", ["loss/train_cost", "loss/train_data", "loss/reg"]]},
          "accuracy": {"train vs val": ["Multiline", ["accuracy/train", "accuracy/val"]]}}


def layer_tags(spec: str, names: list[str]) -> dict[str, str]:
    """Layer name -> TensorBoard tag suffix: ``03.conv3-64`` (zero-padded so they sort; TensorBoard's allowed
    characters only). Layers the spec does not name (a user's own module) are ``layer<name>``."""
    labels = layer_labels(spec)
    width = len(str(max((int(n) for n in names if n.isdigit()), default=0)))
    out = {}
    for name in names:
        label = labels.get(name)
        text = f"{int(name):0{width}d}.{label.split(' ', 1)[1]}" if label and name.isdigit() else f"layer{name}"
        out[name] = re.sub(r"[^\w.\-/]", "_", text)
    return out


def hparams(cfg: RunConfig) -> dict[str, float | int | str | bool]:
    """The config's values for the hparams view: ``section.key`` -> number, bool or text (lists as text)."""
    out: dict[str, float | int | str | bool] = {}
    for section, values in asdict(cfg).items():
        if section in HPARAM_SECTIONS:
            for key, value in values.items():
                out[f"{section}.{key}"] = value if isinstance(value, int | float | str | bool) else str(value)
    return out


class TensorBoardLogger:
    """Callback and probe sink writing TensorBoard event files under ``logdir``."""

    def __init__(self, logdir: str | Path) -> None:
        self.logdir = Path(logdir)
        self.writer: Any = None
        self.spec = ""  # the run's spec, for layer tags (set at fit start)
        self.tags: dict[str, str] = {}

    def on_fit_start(self, state: LoopState) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise BabysitError("--monitor.tensorboard needs the tensorboard package; "
                               "install it with `pip install 'babysit[tensorboard]'`.") from None
        # after a resume, events past the checkpoint's step are dropped so the curves do not fork
        self.writer = SummaryWriter(str(self.logdir), purge_step=state.step if state.step else None)
        self.spec = state.cfg.model.spec
        if state.step == 0:  # a resumed run wrote these already
            self._describe_run(state.cfg)

    def _describe_run(self, cfg: RunConfig) -> None:
        """The config as text, the hparams view (metrics filled in at fit end) and the custom-scalars layout."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        toml = dumps_toml(cfg)
        self.writer.add_text("config", "    " + toml.replace("\n", "\n    "), 0)  # indented: markdown code block
        for summary in hparams_summary(hparams(cfg), {m: 0.0 for m in METRICS}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_custom_scalars(LAYOUT)

    def on_batch_end(self, state: LoopState) -> None:
        self.writer.add_scalar("loss/train_step", state.loss, state.step)
        self.writer.add_scalar("lr", state.lr, state.step)

    def on_epoch_end(self, state: LoopState) -> None:
        rec = state.history[-1]
        for tag, key in EPOCH_SCALARS:
            if rec.get(key) is not None:
                self.writer.add_scalar(tag, rec[key], state.step)
        self.writer.flush()

    def on_fit_end(self, state: LoopState) -> None:
        """The hparams view's metrics: the kept (best) epoch's val accuracy and loss."""
        best = next((r for r in state.history if r.get("epoch") == state.best_epoch), None)
        if best is not None:
            self.writer.add_scalar(METRICS[0], best["val_acc"], state.step)
            self.writer.add_scalar(METRICS[1], best["val_loss"], state.step)
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
        if not self.tags:
            self.tags = layer_tags(self.spec, list(record["layers"]))
        for name, stats in record["layers"].items():
            tag = self.tags.get(name, name)
            for key in LAYER_SCALARS:
                if stats.get(key) is not None:
                    self.writer.add_scalar(f"{key}/{tag}", stats[key], step)
        for name, parts in (hist or {}).get("layers", {}).items():
            for part, h in parts.items():
                self._histogram(f"{'activations' if part == 'act' else 'gradients'}/{self.tags.get(name, name)}",
                                h, step)

    def _histogram(self, tag: str, h: list[Any], step: int) -> None:
        """One histogram over its robust range (outliers counted in the edge bins; see probes.histogram)."""
        lo, hi, counts = h[:3]
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
