"""`babysit finetune FROM_RUN --data.name=NEW`: a new run that starts from a finished run's network.

The fine-tune run is an ordinary run (babysit.experiment.train: checks, checkpoints, exact resume, report) whose
config names its origin (``transfer.source``) and strategy; babysit.start.fresh_start loads the source's weights
below a new head and babysit.train.transfer freezes, unfreezes and scales the learning rates. So ``eval``,
``export``, ``predict`` and ``train --resume`` work on it as on any run. RUN/transfer.json records the source and,
for ``transfer.strategy=auto``, the cell of the notes' table chosen and the measurements behind it.

The config starts from the source run's (model, update rule, schedule, loss, regularisation, epochs) with the
data section's defaults, the images resized to the source's input size (``data.size``) and the mini-batch size
chosen for the new data; the user's overrides come last.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from babysit import config as C
from babysit.commands import report
from babysit.errors import BabysitError
from babysit.experiment import TrainResult, train
from babysit.log import get_logger
from babysit.rundir import RunDir
from babysit.transfer.auto import Choice, choose_strategy

_log = get_logger(__name__)

LR_FACTOR = 0.1  # fine-tuning starts at a tenth of the source run's learning rate (optim.lr overrides it)
DEFAULT_LAYER_DECAY = 0.5  # full / top: each weight layer further from the head trains at half the lr


@dataclass
class FinetuneResult:
    """The fine-tune run and, for ``auto``, the choice made."""

    result: TrainResult
    strategy: str
    choice: Choice | None

    @property
    def run(self) -> RunDir | None:
        return self.result.run

    @property
    def test_acc(self) -> float | None:
        return self.result.test_acc


def source_input(run: RunDir, cfg: C.RunConfig) -> tuple[int, int, int]:
    """(C, H, W) of the images the source run's network took: its data's shape after data.channels / data.size."""
    shape = run.read_json(run.meta).get("input_shape") if run.meta.exists() else None
    if not shape or len(shape) != 3:
        raise BabysitError(f"{run.meta} does not say what images the source run took; fine-tune from a run made by "
                           "`babysit train`.")
    c, h, w = (int(v) for v in shape)
    return cfg.data.channels or c, cfg.data.size or h, cfg.data.size or w


def finetune_config(source: str | Path, overrides: dict[str, Any] | None = None) -> tuple[C.RunConfig, RunDir]:
    """The fine-tune run's config: the source run's, with fresh data settings at the source's input size and
    ``overrides`` (dotted keys, as the command line gives them) applied last."""
    overrides = dict(overrides or {})
    try:
        run = RunDir.open(source)
    except BabysitError as e:
        raise BabysitError(f"cannot fine-tune from {str(source)!r}: {e}") from None
    src = C.load_toml(run.config)
    if src.transfer.source:  # a fine-tuned run can itself be a source; its own origin is not inherited
        src = replace(src, transfer=C.TransferConfig())
    if src.data.preprocess in ("pca", "pca-white"):
        raise BabysitError(f"the source run {run.path} feeds its net principal components (data.preprocess="
                           f"{src.data.preprocess}), which another data set cannot reuse; fine-tune from a run that "
                           "keeps the images.")
    _, h, _ = source_input(run, src)
    data = C.DataConfig(preprocess=src.data.preprocess, size=h)
    train_cfg = replace(src.train, batch_size=0, epochs=0)  # chosen for the new data
    base = replace(src, data=data, train=train_cfg, augment=C.AugmentConfig(), distill=C.DistillConfig(),
                   transfer=C.TransferConfig(source=str(run.path.resolve())))
    strategy = str(overrides.get("transfer.strategy", "full"))
    if "optim.lr" not in overrides:  # the notes: fine-tune with a smaller learning rate than training from scratch
        base = replace(base, optim=replace(base.optim, lr=base.optim.lr * LR_FACTOR))
    if "optim.layer_decay" not in overrides and strategy in ("full", "top", "auto"):
        base = replace(base, optim=replace(base.optim, layer_decay=DEFAULT_LAYER_DECAY))
    return C.apply_overrides(base, overrides), run


def finetune(source: str | Path, overrides: dict[str, Any] | None = None, out: str | Path = "runs",
             name: str = "") -> FinetuneResult:
    """Fine-tune the network of run ``source`` on new data (``overrides``, e.g. ``{"data.name": "digits",
    "transfer.strategy": "auto"}``); returns the new run. ``auto`` measures the data first (babysit.transfer.auto)
    and trains the strategy the notes' table gives."""
    cfg, src_run = finetune_config(source, overrides)
    choice = None
    if cfg.transfer.strategy == "auto":
        choice = choose_strategy(cfg)
        _log.info(f"transfer.strategy=auto: {choice.describe()}")
        t = replace(cfg.transfer, strategy=choice.strategy)
        optim = cfg.optim if choice.strategy != "linear-probe" else replace(cfg.optim, layer_decay=1.0)
        cfg = replace(cfg, transfer=t, optim=optim)
    _log.info(f"fine-tuning {src_run.path} ({_source_data(src_run)}) on {cfg.data.name}: strategy "
          f"{cfg.transfer.strategy}" + (f", top {cfg.transfer.layers} layers" if cfg.transfer.strategy == "top" else "")
          + (", gradual unfreezing" if cfg.transfer.unfreeze == "gradual" else "")
          + (f", lr x{cfg.optim.layer_decay:g} per layer below the head" if cfg.optim.layer_decay != 1 else ""))
    default = f"finetune-{Path(cfg.data.name).stem}-{cfg.transfer.strategy}-{datetime.now():%Y%m%d-%H%M%S}"
    result = train(cfg, out=out, name=name or default)
    if result.run is not None:
        info = {"source": cfg.transfer.source, "source_data": _source_data(src_run), "strategy": cfg.transfer.strategy,
                "layers": cfg.transfer.layers, "unfreeze": cfg.transfer.unfreeze,
                "layer_decay": cfg.optim.layer_decay, "auto": choice.to_json() if choice else None}
        result.run.write_json(result.run.transfer, info)
        if cfg.monitor.report:  # the report made at the run's end had no transfer.json yet
            report(result.run.path)
    return FinetuneResult(result, cfg.transfer.strategy, choice)


def _source_data(run: RunDir) -> str:
    meta = run.read_json(run.meta) if run.meta.exists() else {}
    return str(meta.get("data", "?"))
