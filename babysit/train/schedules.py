"""Learning-rate schedules as pure functions of the step.

``t`` counts optimisation steps from 0; ``T`` is the total number of steps of the run.
"""

from __future__ import annotations

import math

from babysit.config import ScheduleConfig
from babysit.errors import BabysitError

SCHEDULES = ("constant", "step", "cosine")


def lr_at(step: int, base_lr: float, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> float:
    """The learning rate for optimisation step ``step``.

    - constant: a0
    - step:     a0 * gamma ** floor(epoch / step_epochs)
    - cosine:   a0/2 * (1 + cos(pi * t / T))
    A linear warm-up over ``warmup_epochs`` multiplies any of them by (t + 1) / warmup_steps.
    """
    if cfg.name == "constant":
        lr = base_lr
    elif cfg.name == "step":
        lr = base_lr * cfg.gamma ** (step // (cfg.step_epochs * steps_per_epoch))
    elif cfg.name == "cosine":
        lr = 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    else:
        raise BabysitError(f"unknown schedule {cfg.name!r}; choose one of {', '.join(SCHEDULES)}.")
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup_steps:
        lr *= (step + 1) / warmup_steps
    return lr
