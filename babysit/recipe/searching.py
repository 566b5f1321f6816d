"""The recipe's searches: coarse (few epochs, wide ranges), once more over a widened range when the best value lay
on a border, then fine (narrowed ranges, longer trials). Each is an ordinary `babysit search` folder."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from babysit import config as C
from babysit.recipe.context import Ctx, StepResult, Window
from babysit.recipe.rules import SMALL_VAL, WD_RANGE, StageSize, cv_folds, size_stage, widen
from babysit.rundir import SearchDir
from babysit.tune.narrow import narrow
from babysit.tune.search import search
from babysit.tune.space import Param, parse_space, show
from babysit.tune.table import TrialRow

KEYS = ("optim.lr", "optim.weight_decay")
"""What the recipe searches: the notes' two most important hyper-parameters, the learning rate and the L2 strength."""


def folds(ctx: Ctx) -> int:
    """The searches' K-fold cross-validation (0: one split); see rules.cv_folds."""
    return cv_folds(ctx.outputs("data").get("n_val", SMALL_VAL))


def overhead_s(ctx: Ctx) -> float:
    """Seconds a run spends besides its epochs: loading the data, building the model, the last scoring (the
    checks step timed a warm start)."""
    return ctx.outputs("checks").get("start_s", ctx.outputs("data")["load_s"]) + 0.5


def epoch_s(ctx: Ctx) -> float:
    """Seconds of one epoch on every training image: measured by the trials once there are some, else estimated
    from the range test's step time."""
    return ctx.state.get("epoch_s") or ctx.outputs("lr")["epoch_s"]


def _measure(ctx: Ctx, rows: list[TrialRow], size: StageSize) -> None:
    """Update the epoch time from finished trials: (seconds - overhead) / (epochs * share), the median."""
    k = max(1, folds(ctx))  # a cross-validated trial trains k runs
    per = [(r.seconds - k * overhead_s(ctx)) / (k * r.epochs * size.share) for r in rows
           if r.state == "COMPLETE" and r.epochs > 0 and r.seconds > k * overhead_s(ctx)]
    if per:
        ctx.state["epoch_s"] = statistics.median(per)


def _run(ctx: Ctx, window: Window, folder: Path, stage: str, space: list[Param], size: StageSize) -> list[TrialRow]:
    """Run one search stage into ``folder`` (or continue it there after a kill), within the window: no trial starts
    after the deadline, except the first (a search of no trial would leave the later steps nothing)."""
    def deadline(_: str) -> float:
        return max(window.deadline, time.time() + 1.0) if window.seconds > 0 else window.deadline

    if SearchDir(folder).config.is_file():
        result = search(resume=folder, deadline=deadline)
    else:
        cfg = C.apply_overrides(ctx.cfg, {"train.epochs": size.epochs, "monitor.checks": False,
                                          "train.progress": False})
        share = {"coarse_data": size.share, "coarse_epochs": 1.0} if stage == "coarse" else {"fine_data": size.share}
        cap = max(2 * size.trials, 10)  # an upper bound: the stage stops starting trials at its deadline
        cfg = replace(cfg, search=replace(cfg.search, stages=(stage,), trials=cap, fine_trials=cap, folds=folds(ctx),
                                          space=tuple(p.text() for p in space), name=folder.name, workers=1,
                                          pruner="median" if size.epochs >= 3 else "none", **share))
        result = search(cfg, out=folder.parent, deadline=deadline)
    rows = [replace(r, run_dir=str(folder / r.run_dir) if r.run_dir else "") for r in result.trials
            if r.stage == stage]  # absolute: the coarse pool mixes trials of two search folders
    _measure(ctx, rows, size)
    return rows


def done(rows: list[TrialRow]) -> list[TrialRow]:
    """The COMPLETE trials, best val first (ties: the earlier trial)."""
    return sorted((r for r in rows if r.state == "COMPLETE" and r.val_acc is not None),
                  key=lambda r: (-(r.val_acc or 0.0), r.number))


def _describe(rows: list[TrialRow], size: StageSize, n_train: int, space: list[Param]) -> list[str]:
    states = {s: sum(r.state == s for r in rows) for s in ("COMPLETE", "PRUNED", "KILLED", "FAIL")}
    counts = ", ".join(f"{n} {s.lower()}" for s, n in states.items() if n)
    lines = [f"{len(rows)} trials of {size.epochs} epoch(s) on {round(size.share * n_train):,} training images "
             f"({counts or 'none finished'}) over " + ", ".join(p.text() for p in space)]
    best = done(rows)
    if best:
        vals = [r.val_acc or 0.0 for r in best]
        lines.append(f"best val {vals[0]:.4f} (trial {best[0].number}: {_params(best[0])}); median val "
                     f"{statistics.median(vals):.4f}, worst {vals[-1]:.4f}")
    killed = [r for r in rows if r.state == "KILLED"]
    if killed:
        lines.append(f"killed early (the loss exploded): {len(killed)} trial(s), e.g. {_params(killed[0])}")
    return lines


def _params(r: TrialRow) -> str:
    return ", ".join(f"{k.split('.')[-1]}={show(v)}" for k, v in r.params.items())


def coarse_space(ctx: Ctx) -> list[Param]:
    lr = ctx.outputs("lr")
    return list(parse_space([f"optim.lr=loguniform({lr['lr_low']:.3g},{lr['lr_high']:.3g})",
                             f"optim.weight_decay=loguniform({WD_RANGE[0]:g},{WD_RANGE[1]:g})"], ctx.cfg))


def _size(ctx: Ctx, window: Window, target: int, min_epochs: int, max_epochs: int, min_share: float) -> StageSize:
    n = ctx.outputs("data")["n_train"]
    floor = min(1.0, max(min_share, 500 / n, 2 * ctx.outputs("data")["batch_size"] / n))
    k = max(1, folds(ctx))  # K-fold: a trial costs K runs
    return size_stage(window.left(), k * epoch_s(ctx), k * overhead_s(ctx), target=target, min_epochs=min_epochs,
                      max_epochs=max_epochs, min_share=floor)


def on_border(best: TrialRow, space: list[Param]) -> dict[str, list[float]]:
    """The searched keys whose best value lies on a border, with the widened range."""
    out = {}
    for p in space:
        wider = widen(float(p.low), float(p.high), float(best.params[p.key]))  # type: ignore[arg-type]
        if wider is not None:
            out[p.key] = list(wider)
    return out


def step_coarse(ctx: Ctx, window: Window) -> StepResult:
    space = coarse_space(ctx)
    size = _size(ctx, window, target=12, min_epochs=2, max_epochs=4, min_share=0.05)
    rows = _run(ctx, window, ctx.rdir.coarse, "coarse", space, size)
    evidence = _describe(rows, size, ctx.outputs("data")["n_train"], space)
    if folds(ctx):
        evidence.append(f"each trial scored by {folds(ctx)}-fold cross-validation of the non-test images (the mean of "
                        f"its folds' val accuracies): one split's {ctx.outputs('data')['n_val']} validation images "
                        "are too few to choose by")
    best = done(rows)
    if not best:
        return StepResult(evidence, "no coarse trial finished: the fine search keeps the coarse ranges",
                          {"border": {}, "space": [p.to_json() for p in space], "epochs": size.epochs,
                           "share": size.share})
    border = on_border(best[0], space)
    if border:
        decision = ("the best " + " and ".join(f"{k} = {show(best[0].params[k])}" for k in border) +
                    " lie(s) on the border of the searched range (the notes: careful with best values on the border): "
                    "search again once over " + ", ".join(f"{k} in [{lo:.3g}, {hi:.3g}]" for k, (lo, hi) in
                                                           border.items()))
    else:
        decision = "the best values lie inside their ranges: narrow the ranges around the best trials"
    return StepResult(evidence, decision, {"border": border, "space": [p.to_json() for p in space],
                                           "epochs": size.epochs, "share": size.share})


def step_widen(ctx: Ctx, window: Window) -> StepResult:
    coarse = ctx.outputs("coarse")
    space = [Param(p.key, p.kind, *coarse["border"].get(p.key, (p.low, p.high)))
             for p in map(Param.from_json, coarse["space"])]
    size = replace(_size(ctx, window, target=6, min_epochs=coarse["epochs"], max_epochs=coarse["epochs"],
                         min_share=coarse["share"]), epochs=coarse["epochs"])
    rows = _run(ctx, window, ctx.rdir.widened, "coarse", space, size)
    evidence = _describe(rows, size, ctx.outputs("data")["n_train"], space)
    pool = done(_rows(ctx.rdir.coarse) + rows)
    still = on_border(pool[0], space) if pool else {}
    decision = (f"the best of both coarse searches: val {pool[0].val_acc:.4f} ({_params(pool[0])})" if pool else
                "no widened trial finished") + ("; still on a border (" + ", ".join(still) + "): not widened again, "
                                               "the report says so" if still else "")
    return StepResult(evidence, decision, {"space": [p.to_json() for p in space], "still_on_border": list(still)})


def _rows(folder: Path) -> list[TrialRow]:
    """The trials of a finished search folder (trials.csv)."""
    import csv

    table = SearchDir(folder).trials
    if not table.is_file():
        return []
    out = []
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            params: dict[str, Any] = {k[len("params_"):]: float(v) for k, v in row.items()
                                      if k.startswith("params_") and v}
            val = float(row["val_acc"]) if row["val_acc"] else None
            out.append(TrialRow(int(row["number"]), row["stage"], row["state"], val, None, None, int(row["epochs"]),
                                float(row["seconds"]), str(folder / row["run_dir"]) if row["run_dir"] else "",
                                row["reason"], params))
    return out


def coarse_pool(ctx: Ctx) -> list[TrialRow]:
    """Every finished coarse trial, of the first search and of the widened one, best first."""
    return done(_rows(ctx.rdir.coarse) + _rows(ctx.rdir.widened))


def step_fine(ctx: Ctx, window: Window) -> StepResult:
    coarse = ctx.outputs("coarse")
    widened = ctx.outputs("widen")
    space = [Param.from_json(p) for p in (widened or coarse)["space"]]
    pool = coarse_pool(ctx)
    top = pool[: ctx.cfg.search.top_k]
    fine_space = list(narrow(tuple(space), [r.params for r in top])) if top else space
    size = _size(ctx, window, target=5, min_epochs=coarse["epochs"], max_epochs=2 * coarse["epochs"],
                 min_share=coarse["share"])
    rows = _run(ctx, window, ctx.rdir.fine, "fine", fine_space, size)
    evidence = [f"ranges narrowed around the top {len(top)} coarse trials: " + ", ".join(p.text() for p in fine_space)]
    if folds(ctx):
        evidence.append(f"each trial scored by {folds(ctx)}-fold cross-validation (mean val accuracy over the folds): "
                        f"{ctx.outputs('data')['n_val']} validation images are too few to choose by")
    evidence += _describe(rows, size, ctx.outputs("data")["n_train"], fine_space)
    best = done(rows)
    chosen = best[0] if best else (pool[0] if pool else None)
    if chosen is None:
        params = {"optim.lr": ctx.outputs("lr")["min_loss"] / 10 * 3, "optim.weight_decay": ctx.cfg.optim.weight_decay}
        decision = "no trial finished: the final run takes the range test's lr and the default L2 strength"
    else:
        params = dict(chosen.params)
        decision = f"the final run takes the best {'fine' if best else 'coarse'} trial's settings: {_params(chosen)}"
    return StepResult(evidence, decision, {
        "params": params, "epochs": size.epochs, "share": size.share, "best_run": chosen.run_dir if chosen else "",
        # a cross-validated trial's runs trained on other images than the final split's: no ensemble members
        "top_runs": [r.run_dir for r in best] if not folds(ctx) else [], "space": [p.to_json() for p in fine_space],
        "folds": folds(ctx)})
