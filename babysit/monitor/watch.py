"""Live watching during fit(): stop on an exploding loss, print severe findings as they appear.

- :class:`DivergenceGuard`: the notes' "if loss > 3 * original loss, quit early (learning rate too
  high)", read over the trend (babysit.divergence), so a warm-up spike that recovers is no divergence.
  It raises :class:`~babysit.errors.Diverged` as fit() syncs the losses, before an epoch end could save
  bad weights as "best": the last good checkpoint stays.
- :class:`LiveDiagnosis`: at every epoch end, the severe layer rules over the statistics so far;
  each new finding is printed once.
"""

from __future__ import annotations

import math
from typing import Any

from babysit.ckptfile import checkpoint_step
from babysit.divergence import DivergenceRule
from babysit.errors import Diverged
from babysit.log import get_logger
from babysit.monitor.probes import LayerProbes
from babysit.review.diagnose import LIVE_RULES, diagnose
from babysit.review.findings import Evidence
from babysit.rundir import RunDir
from babysit.train.loop import LoopState
from babysit.train.record import MemoryRecorder, RunRecorder

_log = get_logger(__name__)


def divergence_record(step: int, loss: float | str, lr: float, run: RunDir | None, message: str,
                      what: str = "") -> dict[str, Any]:
    """The history record that marks where a run diverged (read back by the diagnosis)."""
    saved = checkpoint_step(run.last) if run is not None and run.last.exists() else None
    return {"kind": "diverged", "step": step, "loss": str(loss) if isinstance(loss, float) and not math.isfinite(loss)
            else loss, "lr": lr, "checkpoint": f"{run.last} (step {saved})" if run is not None and saved is not None
            else None, "message": message, "what": what}


class DivergenceGuard:
    """Callback: raise Diverged once the losses say the run has diverged (babysit.divergence: NaN/Inf, one
    loss far above the initial, or the smoothed loss above 3x the initial for a window of steps).

    It reads each block of losses fit() syncs from the device (``on_losses``); fit() then rolls the
    model back to the last synced state, so the bad weights never reach a checkpoint."""

    def __init__(self, run: RunDir | None = None, rule: DivergenceRule | None = None) -> None:
        self.run = run
        self.rule = rule if rule is not None else DivergenceRule()

    def on_losses(self, state: LoopState, records: list[dict[str, Any]]) -> None:
        for r in records:
            reason = self.rule.update(r["loss"])
            if reason is None:
                continue
            kept = (RunRecorder(self.run) if self.run is not None else MemoryRecorder()).kept()
            raise Diverged(f"{reason} at step {r['step']} (lr {r['lr']:.3g}); the learning rate is too high: start "
                           f"a new run with --optim.lr ten times smaller ({kept}).", r["step"], r["loss"], r["lr"],
                           reason)

    def state_dict(self) -> dict[str, Any]:
        return self.rule.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.rule.load_state_dict(sd)


class LiveDiagnosis:
    """Callback: print severe findings over the layer statistics as soon as they appear (once each)."""

    def __init__(self, probes: LayerProbes) -> None:
        self.probes = probes
        self.seen: set[str] = set()

    def on_epoch_end(self, state: LoopState) -> None:
        ev = Evidence(layers=list(self.probes.records.items))
        for f in diagnose(ev, LIVE_RULES):
            layers = sorted(k for v in f.numbers.values() if isinstance(v, dict) for k in v)
            key = f"{f.rule}:{','.join(layers)}"
            if key not in self.seen:
                self.seen.add(key)
                _log.info(f"  ! {f.title}: {f.observation} -> {f.action}")
