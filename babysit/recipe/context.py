"""What every recipe step reads and returns: the recipe folder, the base config, the finished steps."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from babysit import config as C
from babysit.rundir import RecipeDir
from babysit.start import Plan, plan_run


@dataclass
class Ctx:
    """The recipe as a step sees it: ``cfg`` is the user's config with the test split kept unseen."""

    rdir: RecipeDir
    cfg: C.RunConfig
    state: dict[str, Any]
    _plan: Plan | None = field(default=None, repr=False)

    def plan(self) -> Plan:
        """The base config checked against its data: loaded and split once per recipe process (the data,
        checks and lr steps share it; a resumed recipe loads it again)."""
        if self._plan is None:
            self._plan = plan_run(self.cfg)
        return self._plan

    def outputs(self, step: str) -> dict[str, Any]:
        """What a finished step left for the later ones (empty when it did not run)."""
        return self.state["steps"].get(step, {}).get("outputs", {})


@dataclass
class StepResult:
    """A finished step: what it saw (evidence), what it decided and why (decision), and what it leaves for the
    later steps (outputs: plain JSON values)."""

    evidence: list[str]
    decision: str
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Window:
    """A step's time: its allotment in seconds and the clock (time.time()) at which it should be done."""

    seconds: float
    deadline: float

    @classmethod
    def starting_now(cls, seconds: float) -> Window:
        return cls(seconds, time.time() + seconds)

    def left(self) -> float:
        return self.deadline - time.time()


class Deadline:
    """A training callback: stop the run at the next step once the clock passes ``deadline`` (a safety net; the
    epochs are sized to end before it)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.hit = False

    def on_batch_end(self, state: Any) -> None:
        if time.time() > self.deadline:
            self.hit = state.stop = True
