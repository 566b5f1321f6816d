"""`babysit recipe`: the notes' whole process on the user's data, within a time budget, with one report.

    result = babysit.recipe(cfg)                      # cfg.recipe.budget = "10m"
    result = babysit.recipe(resume="recipes/NAME")    # after Ctrl-C or kill -9

Steps (babysit.recipe.budget.STEPS): data, sanity checks, LR range test, coarse search (and once more over a
widened range when a best value lay on a border), fine search, final training, ensemble and test-time views,
baselines, the test set once. The budget is split across the steps up front and re-split after each; every step
is written to RECIPE/recipe.json when it ends, so a killed recipe resumes at the step in flight (whose searches
and training resume too).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from babysit import config as C
from babysit.errors import BabysitError, Interrupted
from babysit.limits import read_small_text
from babysit.log import get_logger
from babysit.recipe.budget import STEPS, TITLES, allot, format_plan, format_seconds
from babysit.recipe.context import Ctx, StepResult, Window
from babysit.recipe.early import step_checks, step_data, step_lr
from babysit.recipe.late import step_baselines, step_ensemble, step_final, step_test
from babysit.recipe.searching import step_coarse, step_fine, step_widen
from babysit.rundir import RecipeDir, atomic_write_text, named_dir, new_folder

_log = get_logger(__name__)

STEP_FUNCTIONS: dict[str, Callable[[Ctx, Window], StepResult]] = {
    "data": step_data, "checks": step_checks, "lr": step_lr, "coarse": step_coarse, "widen": step_widen,
    "fine": step_fine, "final": step_final, "ensemble": step_ensemble, "baselines": step_baselines, "test": step_test}


@dataclass
class RecipeResult:
    """A finished recipe: its folder, the test accuracy of the chosen model, the state (recipe.json) and report."""

    path: Path
    test_acc: float
    state: dict[str, Any]
    report: Path


def _save(ctx: Ctx) -> None:
    atomic_write_text(ctx.rdir.state, json.dumps(ctx.state, indent=2) + "\n")


def _spent(state: dict[str, Any]) -> float:
    """Seconds used so far: the finished steps, and the parts of steps interrupted by Ctrl-C (a step killed with
    kill -9 could not record its time)."""
    return sum(s.get("seconds", 0.0) for s in state["steps"].values()) + state.get("interrupted_s", 0.0)


def _new(cfg: C.RunConfig, out: str | Path) -> RecipeDir:
    name = cfg.recipe.name or f"{cfg.data.name.replace('/', '_')}-{datetime.now():%Y%m%d-%H%M%S}"
    rdir = RecipeDir(named_dir(out, name))
    if rdir.config.exists():
        raise BabysitError(f"{str(rdir.path)!r} already holds a recipe; continue it with `babysit recipe --resume "
                           f"{rdir.path}` or choose another --name.")
    with new_folder(rdir.path):  # a full disk leaves no half-made recipe folder behind
        atomic_write_text(rdir.config, C.dumps_toml(cfg))
    return rdir


def _base(cfg: C.RunConfig) -> C.RunConfig:
    """The runs' common config: the test split unseen until the last step, no progress bars inside steps."""
    return replace(cfg, train=replace(cfg.train, score_test=False, progress=False))


def recipe(cfg: C.RunConfig | None = None, out: str | Path = "recipes", resume: str | Path | None = None
           ) -> RecipeResult:
    """Run (or with ``resume``, continue) the recipe; see the module docstring."""
    if resume is not None:
        rdir = RecipeDir.open(resume)
        cfg = C.load_toml(rdir.config)
        state = json.loads(read_small_text(rdir.state)) if rdir.state.exists() else None
    else:
        cfg = cfg if cfg is not None else C.RunConfig()
        C.validate(cfg)
        from babysit.start import check_config

        check_config(cfg)  # the cheap mistakes before the folder is made
        rdir, state = _new(cfg, out), None
    budget_s = C.parse_duration(cfg.recipe.budget)
    state = state or {"budget_s": budget_s, "created": datetime.now().isoformat(timespec="seconds"),
                      "order": list(STEPS), "steps": {}, "plan": allot(budget_s, 0.0, STEPS)}
    ctx = Ctx(rdir, _base(cfg), state)
    _log.info(f"recipe {rdir.path}: {cfg.data.name}, budget {format_seconds(budget_s)}"
              + (" (resumed)" if resume is not None else ""))
    while (todo := [s for s in state["order"] if s not in state["steps"]]):
        _log.info(format_plan(budget_s, _spent(state), todo, [(s, state["steps"][s]["seconds"]) for s in state["order"]
                                                          if s in state["steps"]]))
        _run_step(ctx, todo[0], allot(budget_s, _spent(state), todo)[todo[0]])
    from babysit.review.recipereport import write_recipe_report

    report = write_recipe_report(rdir)
    test = ctx.outputs("test")
    _log.info(f"recipe done in {format_seconds(_spent(state))} of {format_seconds(budget_s)}: test accuracy "
              f"{test['test_acc']:.4f} ({test['model']}); report: {report}")
    return RecipeResult(rdir.path, test["test_acc"], state, report)


def _run_step(ctx: Ctx, name: str, seconds: float) -> None:
    """Run one step within its allotment and record it; Ctrl-C records the time spent and says how to resume."""
    index = ctx.state["order"].index(name) + 1
    _log.info(f"[{index}/{len(ctx.state['order'])}] {TITLES[name]} (allotted {format_seconds(seconds)})")
    started = time.perf_counter()
    window = Window.starting_now(seconds)
    try:
        result = STEP_FUNCTIONS[name](ctx, window)
    except (Interrupted, KeyboardInterrupt) as e:
        ctx.state["interrupted_s"] = ctx.state.get("interrupted_s", 0.0) + time.perf_counter() - started
        _save(ctx)
        signum = e.exit_code - 128 if isinstance(e, Interrupted) else 2
        raise Interrupted(f"recipe interrupted in step {name}; what finished is kept in {ctx.rdir.path}: continue "
                          f"with `babysit recipe --resume {ctx.rdir.path}`.", signum) from None
    took = time.perf_counter() - started
    ctx.state["steps"][name] = {"title": TITLES[name], "allotted": seconds, "seconds": took,
                                "planned": ctx.state["plan"].get(name, 0.0), "evidence": result.evidence,
                                "decision": result.decision, "outputs": result.outputs}
    if name == "coarse" and result.outputs.get("border"):
        order = ctx.state["order"]
        order.insert(order.index("coarse") + 1, "widen")
    _save(ctx)
    for line in result.evidence:
        _log.info(f"    {line}")
    _log.info(f"  -> {result.decision} ({format_seconds(took)} of {format_seconds(seconds)})")
