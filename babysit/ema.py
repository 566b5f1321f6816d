"""The bias-corrected exponential moving average, written once (LR range test, diagnoses, report curves).

    avg_i = beta * avg_{i-1} + (1 - beta) * x_i,   smoothed_i = avg_i / (1 - beta^i)   (i = 1, 2, ...)

Dividing by 1 - beta^i undoes the pull towards the zero the average starts from (Adam's bias correction).
"""

from __future__ import annotations

from collections.abc import Iterable


class EMA:
    """A running bias-corrected moving average: ``update(x)`` returns the smoothed value so far."""

    def __init__(self, beta: float) -> None:
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta, self.avg, self.count = beta, 0.0, 0

    def update(self, x: float) -> float:
        self.count += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * x
        return self.avg / (1 - self.beta**self.count)


def ema(xs: Iterable[float], beta: float = 0.9) -> list[float]:
    """Every value of the bias-corrected moving average of ``xs``."""
    e = EMA(beta)
    return [e.update(x) for x in xs]
