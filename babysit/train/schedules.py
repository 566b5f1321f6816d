"""Learning-rate schedules as pure functions of the step.

``step`` counts optimisation steps from 0 and ``T`` is the number of steps of the run. ``t`` is the
time in ``schedule.unit``: epochs (fractional: step / steps_per_epoch) or steps. ``lr`` (a0) is
``optim.lr``. Names users type (``--schedule.name``):

| name       | lr at t                                       | notes' example                          |
|------------|-----------------------------------------------|-----------------------------------------|
| constant   | a0                                            |                                         |
| step       | a0 * gamma^floor(t / step_size)               | x0.1 every 20 epochs, x0.5 every 5, x0.97 every epoch |
| exp        | a0 * e^(-k t)                                 | exponential decay                       |
| inv-time   | a0 / (1 + k t)                                | 1/t decay                               |
| inv-sqrt   | a0 / sqrt(1 + k t)                            | a0/sqrt(t) with t counted from 1 (k = 1) |
| linear     | a0 * (1 - step/T)                             |                                         |
| sqrt       | a0 * sqrt(1 - step/T)                         | BVLC's GoogLeNet                        |
| cosine     | a0/2 * (1 + cos(pi step/T))                   |                                         |
| cosine-restarts | a0/2 * (1 + cos(pi (step mod L)/L)), L = T/cycles | SGDR; a snapshot at each cycle end |
| cyclical   | triangular CLR between min_lr and a0, half cycle ``half_cycle`` units | Smith 2015 |
| onecycle   | cosine up from min_lr to a0 over pct_start*T, then down to min_lr/1e4 | Smith 2018 |
| plateau    | a0 * factor^(times the val loss stopped improving for ``patience`` epochs) |     |

A linear warm-up over ``warmup_epochs`` multiplies any of them by min(1, (step + 1) / warmup_steps).
``min_lr`` 0 means a0/25 (torch's OneCycleLR ``div_factor``). Reduce-on-plateau is the one schedule
with state (:class:`Plateau`); :class:`LRSchedule` puts the pieces together for the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from babysit.config import READ_BY, RunConfig, ScheduleConfig
from babysit.registry import Registry


def step_decay(t: float, lr: float, gamma: float, step_size: float) -> float:
    """a0 * gamma ** floor(t / step_size)."""
    return lr * gamma ** math.floor(t / step_size + 1e-9)


def exponential(t: float, lr: float, k: float) -> float:
    """a0 * e^(-k t)."""
    return lr * math.exp(-k * t)


def inverse_time(t: float, lr: float, k: float) -> float:
    """1/t decay: a0 / (1 + k t)."""
    return lr / (1 + k * t)


def inverse_sqrt(t: float, lr: float, k: float) -> float:
    """a0 / sqrt(1 + k t): the notes' a0/sqrt(t) with t counted from 1 when k = 1."""
    return lr / math.sqrt(1 + k * t)


def linear(progress: float, lr: float) -> float:
    """a0 * (1 - t/T), ``progress`` = t/T in [0, 1]."""
    return lr * (1 - progress)


def sqrt_decay(progress: float, lr: float) -> float:
    """a0 * sqrt(1 - t/T)."""
    return lr * math.sqrt(max(0.0, 1 - progress))


def cosine(progress: float, lr: float) -> float:
    """a0/2 * (1 + cos(pi t/T))."""
    return 0.5 * lr * (1 + math.cos(math.pi * progress))


def cosine_restarts(step: int, total_steps: int, cycles: int, lr: float) -> float:
    """SGDR with equal cycles (Loshchilov & Hutter; the snapshot ensembles of Huang et al.):
    a0/2 * (1 + cos(pi * (step mod L) / L)) with cycle length L = T / cycles steps."""
    length = total_steps / cycles
    return 0.5 * lr * (1 + math.cos(math.pi * (step % length) / length))


def triangular(t: float, low: float, high: float, half_cycle: float) -> float:
    """Smith's triangular CLR: cycle = floor(1 + t/(2h)), x = |t/h - 2 cycle + 1|,
    lr = low + (high - low) * max(0, 1 - x)."""
    cycle = math.floor(1 + t / (2 * half_cycle))
    x = abs(t / half_cycle - 2 * cycle + 1)
    return low + (high - low) * max(0.0, 1 - x)


def one_cycle(step: int, total_steps: int, low: float, high: float, pct_start: float = 0.3,
              final_div: float = 1e4) -> float:
    """One cycle (torch's OneCycleLR, cosine annealing, momentum not cycled): from ``low`` up to
    ``high`` by step pct_start*T - 1, then down to low/final_div at step T - 1; each half is
    end + (start - end)/2 * (1 + cos(pi * pct)), pct the share of that half already done."""
    peak = float(pct_start * total_steps) - 1
    if step <= peak:
        start, end, pct = low, high, step / peak if peak > 0 else 1.0
    else:
        start, end, pct = high, low / final_div, min(1.0, (step - peak) / (total_steps - 1 - peak))
    return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))


def one_cycle_momentum(step: int, total_steps: int, low: float, high: float, pct_start: float = 0.3) -> float:
    """One cycle's momentum, the mirror of its lr (torch's OneCycleLR with cycle_momentum): from ``high``
    down to ``low`` by step pct_start*T - 1 while the lr rises, then back up to ``high`` at step T - 1."""
    peak = float(pct_start * total_steps) - 1
    if step <= peak:
        start, end, pct = high, low, step / peak if peak > 0 else 1.0
    else:
        start, end, pct = low, high, min(1.0, (step - peak) / (total_steps - 1 - peak))
    return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up: min(1, (step + 1) / warmup_steps); 1 without warm-up."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


@dataclass(frozen=True)
class Clock:
    """Where the run is: what a schedule needs to know besides its own settings."""

    step: int
    steps_per_epoch: int
    total_steps: int
    lr: float  # a0
    cfg: ScheduleConfig

    @property
    def t(self) -> float:
        """Time in ``cfg.unit``: epochs (fractional) or steps."""
        return self.step / self.steps_per_epoch if self.cfg.unit == "epoch" else float(self.step)

    @property
    def progress(self) -> float:
        """step / T, clipped to [0, 1]."""
        return min(self.step, self.total_steps) / self.total_steps

    @property
    def low(self) -> float:
        """The lower bound of cyclical and onecycle."""
        return self.cfg.min_lr or self.lr / 25


SCHEDULES: Registry[Callable[[Clock], float]] = Registry("schedule.name")
"""The schedules by the name users type in ``--schedule.name``: ``fn(clock) -> lr`` before warm-up."""


def list_schedules() -> list[str]:
    """The names ``--schedule.name`` accepts."""
    return SCHEDULES.names()


SCHEDULES.add("constant", lambda c: c.lr)
SCHEDULES.add("step", lambda c: step_decay(c.t, c.lr, c.cfg.gamma, c.cfg.step_size))
SCHEDULES.add("exp", lambda c: exponential(c.t, c.lr, c.cfg.k))
SCHEDULES.add("inv-time", lambda c: inverse_time(c.t, c.lr, c.cfg.k))
SCHEDULES.add("inv-sqrt", lambda c: inverse_sqrt(c.t, c.lr, c.cfg.k))
SCHEDULES.add("linear", lambda c: linear(c.progress, c.lr))
SCHEDULES.add("sqrt", lambda c: sqrt_decay(c.progress, c.lr))
SCHEDULES.add("cosine", lambda c: cosine(c.progress, c.lr))
SCHEDULES.add("cosine-restarts", lambda c: cosine_restarts(c.step, c.total_steps, c.cfg.cycles, c.lr))
SCHEDULES.add("cyclical", lambda c: triangular(c.t, c.low, c.lr, c.cfg.half_cycle))
SCHEDULES.add("onecycle", lambda c: one_cycle(c.step, c.total_steps, c.low, c.lr, c.cfg.pct_start))
SCHEDULES.add("plateau", lambda c: c.lr)  # times Plateau.scale, which LRSchedule applies


def lr_at(step: int, base_lr: float, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> float:
    """The learning rate for optimisation step ``step``: the named schedule times the warm-up.

    (For ``plateau`` this is the lr before any reduction; :class:`LRSchedule` applies those.)
    """
    lr = SCHEDULES.get(cfg.name)(Clock(step, steps_per_epoch, total_steps, base_lr, cfg))
    return lr * warmup_factor(step, int(cfg.warmup_epochs * steps_per_epoch))


class Plateau:
    """Reduce-on-plateau: scale *= factor once the val loss has not improved for more than
    ``patience`` epochs (improved: below best * (1 - threshold), as torch's ReduceLROnPlateau)."""

    def __init__(self, factor: float = 0.5, patience: int = 2, threshold: float = 1e-4) -> None:
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.scale, self.best, self.bad_epochs = 1.0, math.inf, 0

    def step(self, metric: float) -> None:
        """Record one epoch's val loss."""
        if metric < self.best * (1 - self.threshold):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.scale *= self.factor
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "best": self.best if math.isfinite(self.best) else None,
                "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale, self.bad_epochs = state["scale"], state["bad_epochs"]
        self.best = math.inf if state["best"] is None else state["best"]


class LRSchedule:
    """The run's schedule: ``lr(step)`` for every step, ``epoch_end(val_loss)`` after every epoch.

    ``hold_lr`` > 0 replaces the schedule by that constant from step ``hold_from`` on (SWA's constant
    learning rate over the epochs it averages). ``momentum``: the update rule's own momentum (or beta1; 0 for
    none), which one-cycle replaces by its momentum cycle when the rule has one."""

    def __init__(self, base_lr: float, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int,
                 hold_lr: float = 0.0, hold_from: int = 0, momentum: float = 0.0) -> None:
        SCHEDULES.get(cfg.name)  # an unknown name fails here, before the first step
        self.base_lr, self.cfg = base_lr, cfg
        # one-cycle's momentum runs between momentum_high and momentum_low, for a rule that has a momentum
        # (vanilla SGD, momentum 0, stays vanilla)
        self.cycles_momentum = cfg.name == "onecycle" and cfg.momentum_low > 0 and momentum > 0
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.hold_lr, self.hold_from = hold_lr, hold_from
        self.plateau = Plateau(cfg.factor, cfg.patience) if cfg.name == "plateau" else None

    @classmethod
    def from_config(cls, cfg: RunConfig, steps_per_epoch: int) -> LRSchedule:
        """The schedule of a run: optim.lr, schedule.*, train.epochs, and train.swa_lr over the SWA epochs."""
        t, o = cfg.train, cfg.optim
        if t.epochs == 0:
            raise ValueError("train.epochs=0 (auto) is made concrete for the data first: loop.resolve_length")
        hold = t.swa_lr if t.swa_epochs > 0 else 0.0
        return cls(o.lr, cfg.schedule, steps_per_epoch, t.epochs * steps_per_epoch, hold,
                   (t.epochs - t.swa_epochs) * steps_per_epoch, rule_momentum(cfg))

    def lr(self, step: int) -> float:
        if self.hold_lr > 0 and step >= self.hold_from:
            return self.hold_lr
        scale = self.plateau.scale if self.plateau is not None else 1.0
        return lr_at(step, self.base_lr, self.cfg, self.steps_per_epoch, self.total_steps) * scale

    def momentum(self, step: int) -> float | None:
        """The momentum (or Adam's beta1) for step ``step`` when one-cycle cycles it, else None (left as set)."""
        if not self.cycles_momentum or (self.hold_lr > 0 and step >= self.hold_from):
            return None
        return one_cycle_momentum(step, self.total_steps, self.cfg.momentum_low, self.cfg.momentum_high,
                                  self.cfg.pct_start)

    def cycle_end(self, epochs_done: int) -> int:
        """cosine-restarts: the number of the cycle that ends with epoch ``epochs_done`` (1, 2, ...), else 0."""
        if self.cfg.name != "cosine-restarts":
            return 0
        per_cycle = self.total_steps // self.steps_per_epoch // self.cfg.cycles  # config checks it divides
        return epochs_done // per_cycle if per_cycle and epochs_done % per_cycle == 0 else 0

    def epoch_end(self, val_loss: float) -> None:
        if self.plateau is not None:
            self.plateau.step(val_loss)

    def state_dict(self) -> dict[str, Any]:
        return {"plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])


def rule_momentum(cfg: RunConfig) -> float:
    """The momentum the update rule was given: sgd's optim.momentum, the Adam family's beta1, else 0."""
    o = cfg.optim
    if o.name == "sgd":
        return o.momentum
    return o.betas[0] if o.name in READ_BY["betas"] else 0.0


def lr_curve(cfg: ScheduleConfig, base_lr: float, epochs: int, steps_per_epoch: int) -> list[float]:
    """The lr of every step of a run (plateau drawn without reductions: they depend on the val loss)."""
    total = epochs * steps_per_epoch
    return [lr_at(s, base_lr, cfg, steps_per_epoch, total) for s in range(total)]
