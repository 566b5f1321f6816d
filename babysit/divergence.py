"""When has a run diverged? One rule, read over the trend of the mini-batch losses, for the live guard
(babysit.monitor.watch) and the diagnosis of a finished run alike.

The notes: "if the cost is ever > 3 * original cost, break out early" (the learning rate is too high).
Taken one step at a time that also stops healthy runs: a one-cycle or warm-up schedule often makes
a transient spike of 3-4x the initial loss that recovers within a few dozen steps. So a run has
diverged when

- a loss is NaN or Inf, or
- one loss exceeds ``BLOWUP_FACTOR`` x the initial (nothing healthy jumps that far; LR 1e6 does), or
- the smoothed loss (bias-corrected EMA, ``SMOOTHING``) stays above ``EXPLODE_FACTOR`` x the initial
  for ``WINDOW`` steps in a row: a sustained blow-up, not a spike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from babysit.ema import EMA

EXPLODE_FACTOR = 3.0
"""The notes' factor: a smoothed loss above 3x the initial one is exploding ..."""
WINDOW = 30
"""... when it stays there for this many steps in a row (a warm-up spike recovers sooner)."""
SMOOTHING = 0.9
"""beta of the moving average the window is read from."""
BLOWUP_FACTOR = 30.0
"""A single loss this many times the initial one stops the run at once."""


class DivergenceRule:
    """Feed losses in order with :meth:`update`; it returns the reason once the run has diverged."""

    def __init__(self, factor: float = EXPLODE_FACTOR, window: int = WINDOW, smoothing: float = SMOOTHING,
                 blowup: float = BLOWUP_FACTOR) -> None:
        self.factor, self.window, self.smoothing, self.blowup = factor, window, smoothing, blowup
        self.initial: float | None = None
        self.ema = EMA(smoothing)
        self.above = 0  # consecutive steps with the smoothed loss above factor x initial

    def update(self, loss: float) -> str | None:
        """None while the run is healthy; otherwise what happened, in words."""
        if not math.isfinite(loss):
            return f"the loss became {loss}"
        if self.initial is None:
            self.initial = loss
        smoothed = self.ema.update(loss)
        if loss > self.blowup * self.initial:
            return f"the loss {loss:.4g} is more than {self.blowup:g}x the initial {self.initial:.4g}"
        self.above = self.above + 1 if smoothed > self.factor * self.initial else 0
        if self.above >= self.window:
            return (f"the smoothed loss stayed above {self.factor:g}x the initial {self.initial:.4g} for "
                    f"{self.window} steps (now {smoothed:.4g})")
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"initial": self.initial, "avg": self.ema.avg, "count": self.ema.count, "above": self.above}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.initial = sd.get("initial")
        self.ema.avg, self.ema.count = float(sd.get("avg", 0.0)), int(sd.get("count", 0))
        self.above = int(sd.get("above", 0))


def first_divergence(losses: Iterable[float], rule: DivergenceRule | None = None) -> tuple[int, str] | None:
    """(index, reason) of the first loss at which the run had diverged, or None."""
    rule = rule if rule is not None else DivergenceRule()
    for i, loss in enumerate(losses):
        reason = rule.update(float(loss))
        if reason is not None:
            return i, reason
    return None
