"""The run-level entry points of checking and reviewing, one per command: ``babysit check``,
``gradcheck``, ``diagnose`` and ``report``. Each is a plain function a user can call from Python.

They prepare data and models the way ``babysit train`` does (babysit.start), then call babysit.monitor
(checks before training) or babysit.review (what a run directory shows afterwards).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from babysit import config as C
from babysit.errors import BabysitError
from babysit.errors import ChecksFailed as ChecksFailed  # re-exported: the CLI raises it for check and gradcheck
from babysit.log import get_logger
from babysit.monitor.gradcheck import GradcheckResult, gradcheck
from babysit.monitor.sanity import CheckResult, format_checks, run_checks
from babysit.monitor.session import write_checks
from babysit.monitor.valstats import val_analysis, write_val_analysis
from babysit.review.diagnose import diagnose_run
from babysit.review.findings import Finding
from babysit.review.report import write_report
from babysit.review.stats import read_val_analysis
from babysit.rundir import RunDir, atomic_write_text, named_dir
from babysit.start import Plan, fresh_start, plan_run
from babysit.train.loop import TensorData
from babysit.train.losses import LossFn, make_loss
from babysit.train.regularize import l2_penalty

_log = get_logger(__name__)

GRADCHECK_MAX_WEIGHT_DECAY = 1e-3
"""The gradient check keeps the run's L2 term but caps lambda here, so it cannot overwhelm the data
term (the notes: "don't let the regularization overwhelm the data")."""


def _prepared(cfg: C.RunConfig) -> tuple[nn.Module, TensorData, Plan]:
    """The run's fresh model and preprocessed splits, exactly as ``babysit train`` would start them."""
    plan = plan_run(cfg)
    model, data, _ = fresh_start(plan)  # the checks look at unaugmented images
    return model, data, plan


def check(cfg: C.RunConfig, out: str | Path = "runs", name: str = "") -> tuple[RunDir, list[CheckResult]]:
    """``babysit check``: the four sanity checks for ``cfg``; writes RUN/config.toml, spec.txt, checks.json.
    Config warnings (a flip that changes what a digit means) come first."""
    model, data, plan = _prepared(cfg)
    cfg = plan.cfg
    for warning in plan.warnings:
        _log.warning(f"warning: {warning}")
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    run = RunDir.create(named_dir(out, name or f"{cfg.data.name.replace('/', '_')}-check-{stamp}"))
    with run.removed_on_error():  # a full disk at the first write leaves no half-made run behind
        atomic_write_text(run.config, C.dumps_toml(cfg))
        atomic_write_text(run.spec, cfg.model.spec + "\n")
    results = run_checks(model, data, cfg, plan.num_classes, progress=True)
    _log.info(format_checks(results))
    write_checks(run, results)
    _log.info(f"recorded in {run.checks}")
    return run, results


class ModelLoss(nn.Module):
    """loss(model(x), y) + lambda/2 * ||W||^2 as one module, so gradcheck sees the model's parameters."""

    def __init__(self, model: nn.Module, loss: LossFn, weight_decay: float) -> None:
        super().__init__()
        self.model, self.loss, self.weight_decay = model, loss, weight_decay

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weights = [p for p in self.model.parameters() if p.ndim > 1]
        return self.loss(self.model(x), y) + l2_penalty(weights, self.weight_decay).to(x)


def gradcheck_config(cfg: C.RunConfig, points: int = 4, entries: int = 10) -> GradcheckResult:
    """``babysit gradcheck``: the run's model + loss + (small) L2 on ``points`` training images, float64."""
    if points < 1 or entries < 1:
        raise BabysitError(f"--points and --entries must be at least 1, got {points} and {entries}.")
    model, data, _ = _prepared(cfg)
    loss = make_loss(cfg.loss, train=True)
    wrapped = ModelLoss(model, loss, min(cfg.optim.weight_decay, GRADCHECK_MAX_WEIGHT_DECAY))
    result = gradcheck(wrapped, (data.x_train[:points], data.y_train[:points]), entries=entries, seed=cfg.train.seed)
    for t in result.tensors:
        t.name = t.name.removeprefix("model.")
    return result


def diagnose(run: RunDir | str | Path) -> list[Finding]:
    """``babysit diagnose RUN``: the findings of a run directory, also written to RUN/findings.json."""
    return diagnose_run(RunDir.open(run))


def report(run: RunDir | str | Path, device: str = "cpu") -> Path:
    """``babysit report RUN``: write RUN/report.html. A run that stopped before its validation analysis
    gets one now from its best (or last) checkpoint."""
    path = RunDir.open(run)
    summary, _ = read_val_analysis(path)
    if summary is None and (path.best.exists() or path.last.exists()):
        _analyse_val(path, device)
    diagnose_run(path)
    return write_report(path)


def _analyse_val(path: RunDir, device: str) -> None:
    from babysit.start import load_run

    try:
        _, cfg, model, pre, splits = load_run(path.path, device)
    except BabysitError:
        return  # the report says the analysis is missing
    if cfg.model.heads:
        return  # the confusion analysis reads one task's scores; the report's Tasks table has every task
    dev = next(model.parameters()).device
    summary, examples = val_analysis(model, pre(splits.val.x.to(dev)), splits.val.y.to(dev), splits.val.x,
                                     splits.classes, cfg.train.eval_batch_size)
    write_val_analysis(path, summary, examples)


def failed(results: list[Any]) -> list[str]:
    return [r.name for r in results if not r.passed]
