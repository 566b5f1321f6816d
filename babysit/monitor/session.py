"""What ``babysit train`` adds around fit(): checks before, probes and guards during, findings after.

experiment.train() makes one :class:`RunMonitor` and calls, in order::

    monitor.before_fit(model, data, num_classes, resume)   # sanity checks -> checks.json (new runs)
    with monitor.watching():                                # Diverged -> "LR too high" finding, report
        fit(..., callbacks=monitor.callbacks())             # guard, layer probes, live findings, TensorBoard
    monitor.after_fit(model, data, raw_val_images, classes) # confusion, findings.json, report.html
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import torch
from torch import nn

from babysit.config import RunConfig
from babysit.errors import ChecksDiverged, ChecksFailed, Diverged
from babysit.limits import read_small_text
from babysit.log import get_logger
from babysit.monitor.probes import LayerProbes
from babysit.monitor.sanity import CheckResult, blocking, format_checks, run_checks
from babysit.monitor.tensorboard import TensorBoardLogger
from babysit.monitor.valstats import val_analysis, write_val_analysis
from babysit.monitor.watch import DivergenceGuard, LiveDiagnosis, divergence_record
from babysit.review.diagnose import diagnose_run
from babysit.review.findings import Finding, format_findings
from babysit.rundir import RunDir
from babysit.train.loop import TensorData
from babysit.writer import flush as flush_writes

_log = get_logger(__name__)


def write_checks(run: RunDir, results: list[CheckResult]) -> None:
    """RUN/checks.json: every check with its verdict and numbers."""
    run.write_json(run.checks, {"created": datetime.now().isoformat(timespec="seconds"),
                                "passed": all(r.passed for r in results),
                                "checks": [r.to_dict() for r in results]})


class RunMonitor:
    """The babysitting of one run, configured by ``cfg.monitor``."""

    def __init__(self, cfg: RunConfig, run: RunDir) -> None:
        self.cfg, self.run = cfg, run
        self.probes: LayerProbes | None = None
        self.tensorboard: TensorBoardLogger | None = None
        self.checks: list[CheckResult] = []

    def before_fit(self, model: nn.Module, data: TensorData, num_classes: int, resume: bool = False) -> None:
        """Run the sanity checks on a new run (a resumed run had them already). When one fails, the diagnosis
        (findings.json, the report) is written and :class:`ChecksFailed` stops the run before its first step,
        unless ``monitor.force``: a network that fails them wastes the whole training time."""
        if resume or not self.cfg.monitor.checks:
            return
        if self.cfg.model.heads:  # the checks' expectations (initial loss ln C, ...) are for one task
            _log.info("sanity checks skipped: they are written for one task, and this run has model.heads.")
            return
        self.checks = run_checks(model, data, self.cfg, num_classes, progress=True)
        _log.info(format_checks(self.checks))
        write_checks(self.run, self.checks)
        for r in self.checks:
            if not r.passed and r not in blocking(self.checks):
                _log.warning(f"warning: sanity check '{r.title}' failed ({r.advice or r.summary}); a heuristic, "
                             "so training goes on")
        failed = [r.title for r in blocking(self.checks)]
        if not failed:
            return
        if self.cfg.monitor.force:
            _log.warning(f"warning: {len(failed)} sanity check(s) failed; training anyway (--monitor.force=true).")
            return
        self._conclude()
        advice = next((r.advice.rstrip(".") for r in blocking(self.checks) if r.advice), "")
        blew_up = any(r.numbers.get("blew_up") for r in blocking(self.checks))  # training would diverge: exit 3
        error = ChecksDiverged if blew_up else ChecksFailed
        raise error(f"{len(failed)} of {len(self.checks)} sanity checks failed ({'; '.join(failed)}), so training "
                    f"did not start{': ' + advice if advice else ''}; see {self.run.checks}. "
                    "Fix that and train again, or pass --monitor.force=true to train anyway.")

    def callbacks(self) -> list[Any]:
        """The callbacks for fit(), always in the same order (resume restores their state by position)."""
        m = self.cfg.monitor
        cbs: list[Any] = [DivergenceGuard(self.run)]
        if m.tensorboard:
            self.tensorboard = TensorBoardLogger(self.run.events)
            cbs.append(self.tensorboard)
        if m.stats_every > 0:
            self.probes = LayerProbes(m.stats_every, self.run, self.tensorboard)
            cbs += [self.probes, LiveDiagnosis(self.probes)]
        return cbs

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Turn a divergence into the "LR too high" finding (findings.json, report) before it propagates."""
        try:
            yield
        except Diverged as e:
            self._diverged(e)
            raise

    def _diverged(self, e: Diverged) -> None:
        history = self.run.read_history()
        if not history or history[-1].get("kind") != "diverged":  # a NaN caught by the loop itself
            self.run.append_history(divergence_record(e.step, e.loss, e.lr, self.run, str(e), e.what))
        if self.probes is not None:
            self.probes.flush()
            flush_writes()  # stats/ on disk before the diagnosis reads it
        if self.tensorboard is not None:
            self.tensorboard.close()
        self._conclude()

    def after_fit(self, model: nn.Module, data: TensorData, raw_val: torch.Tensor, classes: list[str]) -> list[Finding]:
        """Confusion on val, the findings (printed and in findings.json), the report."""
        batch = self.cfg.train.eval_batch_size
        if self.cfg.model.heads:  # the confusion analysis reads one task's scores; the history has every task's
            return self._conclude()
        summary, examples = val_analysis(model, data.x_val, data.y_val, raw_val, classes, batch)
        write_val_analysis(self.run.path, summary, examples)
        return self._conclude()

    def _conclude(self) -> list[Finding]:
        findings = diagnose_run(self.run.path)
        _log.info(format_findings(findings))
        if self.cfg.monitor.report:
            from babysit.review.report import write_report

            _log.info(f"report: {write_report(self.run.path)}")
        return findings


def checks_json(run: RunDir) -> list[dict[str, Any]]:
    """The checks a run recorded ([] when none)."""
    p = run.checks
    return json.loads(read_small_text(p)).get("checks", []) if p.exists() else []
