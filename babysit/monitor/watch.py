"""Live watching during fit(): stop on an exploding loss, print severe findings as they appear.

- :class:`DivergenceGuard`: the notes' "if loss > 3 * original loss, quit early (learning rate too
  high)". It raises :class:`~babysit.train.loop.Diverged` from ``on_batch_end``, so the loop stops
  before the next update and before an epoch end could save the bad weights as "best": the last
  good checkpoint stays. (NaN/Inf losses are already caught by the loop itself.)
- :class:`LiveDiagnosis`: at every epoch end, the severe layer rules over the statistics so far;
  each new finding is printed once.
"""

from __future__ import annotations

import math
from typing import Any

from babysit.monitor.diagnose import EXPLODE_FACTOR, LIVE_RULES, diagnose
from babysit.monitor.findings import Evidence
from babysit.monitor.probes import LayerProbes
from babysit.rundir import RunDir
from babysit.train.checkpoint import checkpoint_step
from babysit.train.loop import Diverged, LoopState


def divergence_record(step: int, loss: float | str, lr: float, run: RunDir | None, message: str) -> dict[str, Any]:
    """The history record that marks where a run diverged (read back by the diagnosis)."""
    saved = checkpoint_step(run.last) if run is not None and run.last.exists() else None
    return {"kind": "diverged", "step": step, "loss": str(loss) if isinstance(loss, float) and not math.isfinite(loss)
            else loss, "lr": lr, "checkpoint": f"{run.last} (step {saved})" if run is not None and saved is not None
            else None, "message": message}


class DivergenceGuard:
    """Callback: raise Diverged once the loss exceeds ``factor`` x the first step's loss."""

    def __init__(self, run: RunDir | None = None, factor: float = EXPLODE_FACTOR) -> None:
        self.run, self.factor = run, factor
        self.initial: float | None = None

    def on_batch_end(self, state: LoopState) -> None:
        if self.initial is None:
            self.initial = state.loss
            return
        if state.loss <= self.factor * self.initial:
            return
        saved = checkpoint_step(self.run.last) if self.run is not None and self.run.last.exists() else None
        kept = (f"the last good checkpoint, step {saved}, is kept in {self.run.last}"
                if self.run is not None and saved is not None else "no checkpoint was saved before it")
        message = (f"the loss {state.loss:.4g} at step {state.step} is more than {self.factor:g}x the initial "
                   f"{self.initial:.4g} (lr {state.lr:.3g}); the learning rate is too high: start a new run with "
                   f"--optim.lr ten times smaller ({kept}).")
        if self.run is not None:
            self.run.append_history(divergence_record(state.step, state.loss, state.lr, self.run, message))
        raise Diverged(message, state.step, state.loss, state.lr)

    def state_dict(self) -> dict[str, Any]:
        return {"initial": self.initial}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.initial = sd.get("initial")


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
                print(f"  ! {f.title}: {f.observation} -> {f.action}", flush=True)
