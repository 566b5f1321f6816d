"""The recipe's time budget: split across its steps up front, re-split as each step finishes.

Each step has a weight; the time a step gets when it starts is its share of what is left,

    allotted(step) = (budget - spent) * w(step) / sum(w(s) for the steps still to run),

so a step that finishes early leaves its time to the ones after it, and one that overruns takes from
them. A step sizes its work from its allotment (trials, epochs) and stops starting new work when its
deadline passes: the recipe ends within the step in flight of its budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

STEPS: tuple[str, ...] = ("data", "checks", "lr", "coarse", "fine", "final", "ensemble", "baselines", "test")
"""The recipe's steps in order; "widen" is inserted after "coarse" when the best value lay on a border."""

WEIGHTS: dict[str, float] = {"data": 0.02, "checks": 0.03, "lr": 0.05, "coarse": 0.22, "widen": 0.10, "fine": 0.15,
                             "final": 0.36, "ensemble": 0.06, "baselines": 0.05, "test": 0.03}
"""Shares of the budget. The final training gets the most: the notes' search finds the settings, the long run
uses them."""

TITLES: dict[str, str] = {
    "data": "data: summary, balance, split, preprocessing, warnings",
    "checks": "sanity checks on the chosen architecture",
    "lr": "learning rate: the range test",
    "coarse": "coarse search: lr and regularisation, few epochs",
    "widen": "coarse search again over a widened range",
    "fine": "fine search on the narrowed ranges",
    "final": "final training of the best configuration, babysat",
    "ensemble": "ensemble and test-time augmentation, kept if val gains",
    "baselines": "baselines for context: kNN and a linear classifier",
    "test": "the test set, scored once on the chosen model",
}


def allot(budget_s: float, spent_s: float, remaining: Sequence[str]) -> dict[str, float]:
    """Seconds for each step still to run: what is left of the budget, shared by weight."""
    left = max(0.0, budget_s - spent_s)
    total = sum(WEIGHTS[s] for s in remaining) or 1.0
    return {s: left * WEIGHTS[s] / total for s in remaining}


def format_seconds(s: float) -> str:
    """12 s, 3 m 05 s, 1 h 02 m."""
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} m {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} m"


def format_plan(budget_s: float, spent_s: float, remaining: Sequence[str], done: Iterable[tuple[str, float]] = ()
                ) -> str:
    """The plan table printed at the start and after each step: done steps with their time, then the allotments."""
    lines = [f"budget {format_seconds(budget_s)}: {format_seconds(spent_s)} spent, "
             f"{format_seconds(budget_s - spent_s)} left"]
    lines += [f"  done  {name:<9} {format_seconds(sec):>9}" for name, sec in done]
    lines += [f"  plan  {name:<9} {format_seconds(sec):>9}  {TITLES[name]}"
              for name, sec in allot(budget_s, spent_s, remaining).items()]
    return "\n".join(lines)
