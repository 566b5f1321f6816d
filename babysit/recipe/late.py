"""The recipe's last steps: the final training, the ensemble and test-time views, the baselines, the test."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from babysit import config as C
from babysit.baseline.run import run_baseline
from babysit.ensemble.make import EnsembleResult, MemberScore, score, write
from babysit.ensemble.members import Member, seed_configs
from babysit.ensemble.predict import Ensemble
from babysit.experiment import train
from babysit.log import get_logger
from babysit.recipe.context import Ctx, Deadline, StepResult, Window
from babysit.recipe.rules import MAX_SEEDS, augmentation_for_gap, final_epochs, greedy_ensemble, helps, scores
from babysit.recipe.searching import epoch_s, overhead_s
from babysit.review.diagnose import diagnose_run
from babysit.rundir import RunDir
from babysit.tune.space import show

_log = get_logger(__name__)


def _last_epoch(run: str) -> dict[str, Any] | None:
    if not run or not RunDir(run).history.is_file():
        return None
    epochs = [r for r in RunDir(run).read_history() if r.get("kind") == "epoch"]
    return epochs[-1] if epochs else None


def _epoch_s(ctx: Ctx, aug: tuple[str, ...]) -> float:
    """A final epoch: the trials' epoch time, plus the layer probes and the EMA (~10 %; MNIST: 19 s against the
    trials' 15), plus the batched augmentation (~15 %)."""
    return epoch_s(ctx) * 1.1 * (1.15 if aug else 1.0)


def patience(schedule: str, epochs: int) -> int:
    """Early stopping for the final run: after a third of the run without a better val score, except under
    one-cycle, whose val accuracy rises as the lr anneals in the last epochs (stopping on a plateau at the peak
    lr would cut that off); the best-val weights are kept either way."""
    return 0 if schedule == "onecycle" else max(3, epochs // 3)


def ema_decay(total_steps: int) -> float:
    """An EMA whose horizon 1/(1-decay) is a tenth of the run, within 0.9 .. 0.9999."""
    return min(0.9999, max(0.9, 1 - 10 / max(total_steps, 1)))


def step_final(ctx: Ctx, window: Window) -> StepResult:
    """Train the best configuration for as many epochs as the time holds, with early stopping and an EMA of the
    weights, babysat (layer statistics, findings, report); augmentation when the best trial overfit."""
    fine, data = ctx.outputs("fine"), ctx.outputs("data")
    run = RunDir(ctx.rdir.final)
    last = _last_epoch(fine["best_run"])
    evidence, why = [], ""
    aug: tuple[str, ...] = ctx.cfg.augment.pipeline
    if last is not None:
        tr, va = last["train_acc"], last["val_acc"]
        gap = 100 * (tr - va)
        evidence.append(f"the best trial ended epoch {last['epoch']} at train {tr:.4f}, val {va:.4f}: a gap of "
                        f"{gap:.1f} points")
        if not aug:
            aug = augmentation_for_gap(tr, va, min(data["input_shape"][1:]), data["mirror_safe"])
            why = (f"the gap of {gap:.1f} points at train accuracy {tr:.3f} means overfitting: the final run adds "
                   f"augmentation {','.join(aug)}" if aug else
                   f"train {tr:.3f} with a gap of {gap:.1f} points is no overfitting: no augmentation")
    if run.config.is_file():
        cfg = C.load_toml(run.config)
    else:
        # 85 % of the window: a deadline that cuts one-cycle before its lr has annealed costs more than an epoch less
        epochs = final_epochs(window.left() * 0.85, _epoch_s(ctx, aug), overhead_s(ctx) + 1.0,
                              at_least=fine["epochs"])
        cfg = C.apply_overrides(ctx.cfg, {**fine["params"], "train.epochs": epochs, "augment.pipeline": ",".join(aug),
                                          "train.patience": patience(ctx.cfg.schedule.name, epochs),
                                          "monitor.checks": False,
                                          "train.ema": ema_decay(epochs * data["steps_per_epoch"])})
    # the step's deadline, but never before the fine trials' length: a recipe out of time still ends with a model
    least = time.time() + 1.5 * (overhead_s(ctx) + fine["epochs"] * _epoch_s(ctx, aug))
    deadline = Deadline(max(window.deadline, least))
    if not run.result.is_file():
        _log.info(f"final run: {cfg.train.epochs} epochs, " + ", ".join(f"{k.split('.')[-1]}={show(v)}" for k, v in
                                                                     fine["params"].items())
                  + (f", augmentation {','.join(aug)}" if aug else ""))
        if run.config.is_file():
            train(cfg, resume=run.path, callbacks=[deadline])
        else:
            train(cfg, out=run.path.parent, name=run.path.name, callbacks=[deadline])
    result = run.read_json(run.result)
    findings = diagnose_run(run.path)
    evidence.append(f"{result['epochs']} of {cfg.train.epochs} epochs in {result['seconds']:.0f} s: best val "
                    f"{result['best_val_acc']:.4f} at epoch {result['best_epoch']}"
                    + (f"; {result['stopped_early']}" if result.get("stopped_early") else "")
                    + (" (stopped at the step's deadline)" if deadline.hit else ""))
    ema = result.get("ema")
    if ema:
        evidence.append(f"EMA of the weights (decay {cfg.train.ema:g}): best val {ema['val_acc']:.4f}")
    evidence += [f"finding [{f.severity}] {f.title}: {f.observation}" for f in findings[:4]] or ["findings: none"]
    if not cfg.train.patience:
        why += ("; " if why else "") + ("no early stopping under one-cycle (val accuracy rises as the lr anneals in "
                                       "the last epochs); the best-val weights are kept")
    seed_runs = _more_seeds(ctx, cfg, window, result["seconds"])
    if seed_runs:
        vals = [RunDir(r).read_json(RunDir(r).result)["best_val_acc"] for r in seed_runs]
        evidence.append(f"time was left for {len(seed_runs)} more run(s) of the final config with other seeds (the "
                        f"same split), ensemble candidates: best val " + ", ".join(f"{v:.4f}" for v in vals))
    weights = "ema" if ema and ema["val_acc"] > result["best_val_acc"] else "best"
    ended = _last_epoch(str(run.path)) or {}  # the final run's last epoch, read once
    decision = (why + "; " if why else "") + (
        f"the model is the final run's {'EMA' if weights == 'ema' else 'best-val'} weights (val "
        f"{max(result['best_val_acc'], ema['val_acc'] if ema else 0):.4f})")
    return StepResult(evidence, decision, {"run": str(run.path), "weights": weights, "augment": list(aug),
                                           "epochs_planned": cfg.train.epochs, "epochs": result["epochs"],
                                           "best_epoch": result["best_epoch"], "val_acc": result["best_val_acc"],
                                           "ema_val_acc": ema["val_acc"] if ema else None,
                                           "last_train_acc": ended.get("train_acc"),
                                           "last_val_acc": ended.get("val_acc"),
                                           "findings": [f.title for f in findings], "seed_runs": seed_runs})


def _more_seeds(ctx: Ctx, cfg: C.RunConfig, window: Window, run_s: float) -> list[str]:
    """The final config again with seeds +1, +2, ... (the split pinned to the first run's) while the step has time
    for one more run, up to MAX_SEEDS runs in all: the notes' independent models for an ensemble."""
    runs = []
    for member in seed_configs(cfg, MAX_SEEDS)[1:]:
        run = RunDir(ctx.rdir.seeds / f"seed-{member.train.seed}")
        if not run.result.is_file():
            if window.left() < 1.2 * run_s:
                break
            member = C.apply_overrides(member, {"monitor.report": False, "monitor.stats_every": 0})
            _log.info(f"final config, seed {member.train.seed} (time is left)")
            if run.config.is_file():
                train(member, resume=run.path)
            else:
                train(member, out=run.path.parent, name=run.path.name)
        runs.append(str(run.path))
    return runs


def candidates(ctx: Ctx) -> list[Member]:
    """The final model and its other seeds, then the best fine trials within CANDIDATE_POINTS of its val accuracy
    (one split: the seeds pin it, every trial has the recipe's seed; cross-validated trials are left out)."""
    final = ctx.outputs("final")
    out = [Member(Path(final["run"]), final["weights"])] + [Member(Path(r)) for r in final.get("seed_runs", [])]
    best = max(final["val_acc"], final.get("ema_val_acc") or 0.0)
    for run in ctx.outputs("fine").get("top_runs", [])[: ctx.cfg.recipe.ensemble_top]:
        if RunDir(run).result.is_file() and RunDir(run).read_json(RunDir(run).result)["best_val_acc"] >= \
                best - CANDIDATE_POINTS / 100:
            out.append(Member(Path(run)))
    return out


CANDIDATE_POINTS = 5.0
"""A trial more than this many points of val accuracy behind the final model is no ensemble candidate."""


def tta_options(ctx: Ctx) -> list[str]:
    """Test-time views to try: shifts of ~1/14 of the side, and flips where a mirror may keep the class."""
    shift = max(1, round(min(ctx.outputs("data")["input_shape"][1:]) / 14))
    views = [f"translate-{shift}"]
    if ctx.outputs("data")["mirror_safe"] is not False:
        views += ["flip", f"flip,translate-{shift}"]
    return views


def step_ensemble(ctx: Ctx, window: Window) -> StepResult:
    """Greedy forward selection of members on val, then test-time views on the chosen model; each kept only if
    validation gains (a higher accuracy, or the same with a lower loss)."""
    members = candidates(ctx)
    started = time.perf_counter()
    ens = Ensemble(members, minimum=1)
    x, y = ens.split("val")
    probs = ens.member_probabilities(x)
    plain_s = time.perf_counter() - started
    singles = [scores(p, y) for p in probs]
    first = max(range(len(members)), key=lambda i: (singles[i][0], -singles[i][1]))
    chosen = greedy_ensemble(probs, y, first)
    combined = sum(probs[i] for i in chosen) / len(chosen)
    best = scores(combined, y)
    evidence = [f"{m.label}: val {a:.4f} (loss {v:.4f})" for m, (a, v) in zip(members, singles)]
    evidence.append(f"greedy selection on val from {members[first].label}: " + " + ".join(members[i].label
                                                                                        for i in chosen)
                    + f" -> val {best[0]:.4f} (loss {best[1]:.4f})")
    tta = ""
    if ctx.cfg.recipe.tta:
        sub = Ensemble([members[i] for i in chosen], device="cpu", minimum=1)
        for views in tta_options(ctx):
            n_views = 5 if "translate" in views else 1
            n_views *= 2 if "flip" in views else 1
            if plain_s * n_views * len(chosen) / len(members) > window.left():
                evidence.append(f"test-time views {views}: skipped, the step's time is spent")
                continue
            p = sum(sub.member_probabilities(x, tta=views)) / len(chosen)
            got = scores(p, y)
            evidence.append(f"test-time views {views} ({n_views} views): val {got[0]:.4f} (loss {got[1]:.4f})")
            if helps(got, best):
                tta, best = views, got
    single = singles[0]
    decision = (f"{'an ensemble of ' + str(len(chosen)) + ' models' if len(chosen) > 1 else 'one model'}"
                f"{' with test-time views ' + tta if tta else ''}: val {best[0]:.4f} against the final model's "
                f"{single[0]:.4f} ({100 * (best[0] - single[0]):+.2f} points)")
    return StepResult(evidence, decision, {
        "members": [[str(members[i].run), members[i].weights] for i in chosen], "tta": tta, "val_acc": best[0],
        "val_loss": best[1], "final_val_acc": single[0]})


KNN_RATE = 8e9
"""Multiply-adds per second of kNN's distance products on one CPU thread (bench/knn.py: 60,000 x 10,000 MNIST
images, 4.7e11 multiply-adds, in ~57 s); faster hardware only makes the estimate cautious."""


def knn_settings(n_train: int, n_scored: int, dims: int, seconds: float) -> dict[str, Any]:
    """kNN options for the time: on large sets L2 only and a 3-fold search over k on 5,000 images, and the vote
    over a subset of the training images when all of them would take longer than ``seconds``."""
    if n_train <= 20000:
        return {}
    fits = int(seconds * KNN_RATE / (n_scored * dims))
    return {"baseline.distance": "l2", "baseline.k": "1,3,5", "baseline.folds": 3, "baseline.cv_size": 5000,
            **({"data.limit": max(1000, fits)} if fits < n_train else {})}


def step_baselines(ctx: Ctx, window: Window) -> StepResult:
    """kNN and a linear classifier on pixels: what the ConvNet must beat. Large sets get a cheaper kNN search."""
    data = ctx.outputs("data")
    n = data["n_train"]
    evidence, out = [], {}
    for name in ctx.cfg.recipe.baselines:
        if window.left() <= 0:
            evidence.append(f"{name}: skipped, the step's time is spent")
            continue
        extra: dict[str, Any] = {}
        if name == "knn":
            extra = knn_settings(n, data["n_val"] + data["n_test"], math.prod(data["input_shape"]), window.left() / 2)
        cfg = C.apply_overrides(ctx.cfg, {"train.progress": False, "monitor.checks": False, **extra})
        res = run_baseline(name, cfg, out=ctx.rdir.baselines, dir_name=name)
        subset = f" on {extra['data.limit']:,} of the {n:,} training images (the time allowed)" \
            if extra.get("data.limit") else ""
        evidence.append(f"{name} ({res.describe()}){subset}: val {res.val_acc:.4f}, test {res.test_acc:.4f}, "
                        f"{res.seconds:.1f} s")
        out[name] = {"val_acc": res.val_acc, "test_acc": res.test_acc, "chosen": res.chosen, "seconds": res.seconds}
    best = max(out.items(), key=lambda kv: kv[1]["val_acc"], default=None)
    model_val = ctx.outputs("ensemble").get("val_acc", ctx.outputs("final")["val_acc"])
    decision = ("no baseline ran" if best is None else f"the best baseline, {best[0]}, reaches val "
                f"{best[1]['val_acc']:.4f} against the ConvNet's {model_val:.4f}"
                + (": the ConvNet is no better than a classical baseline here; the final run's findings may say why "
                   "(underfitting, too short a run), and on tiny centred images pixel distances are hard to beat"
                   if best[1]["val_acc"] >= model_val else ""))
    return StepResult(evidence, decision, out)


def _name(m: Member, ctx: Ctx) -> str:
    """"final model", "final model (EMA)", "final config, seed 3" or "fine trial 0004"."""
    if m.run == Path(ctx.outputs("final")["run"]):
        return "final model" + (" (EMA)" if m.weights == "ema" else "")
    return f"final config, {m.run.name.replace('-', ' ')}" if m.run.parent == ctx.rdir.seeds else \
        f"fine trial {m.run.name}"


def step_test(ctx: Ctx, window: Window) -> StepResult:
    """The test split, scored once, on the chosen model; an ensemble is also written as an ensemble directory."""
    ens_out = ctx.outputs("ensemble") or {"members": [[ctx.outputs("final")["run"], ctx.outputs("final")["weights"]]],
                                         "tta": ""}
    members = [Member(Path(run), weights) for run, weights in ens_out["members"]]
    ens = Ensemble(members, minimum=1)
    x, y = ens.split("test")
    probs = sum(ens.member_probabilities(x, tta=ens_out["tta"])) / len(members)
    acc, loss = scores(probs, y)
    what = (f"{'ensemble of ' + str(len(members)) if len(members) > 1 else _name(members[0], ctx)}"
            f"{' with test-time views ' + ens_out['tta'] if ens_out['tta'] else ''}")
    outputs: dict[str, Any] = {"test_acc": acc, "test_loss": loss, "model": what, "n_test": len(y)}
    if len(members) > 1:
        accs, totals = score(ens)
        result = EnsembleResult(ctx.rdir.ensemble, "recipe", False, [
            MemberScore(m.label, os.path.relpath(m.run, ctx.rdir.ensemble), m.weights, share, val, test)
            for m, share, (val, test) in zip(members, ens.shares, accs)], classes=ens.classes, **totals)
        ctx.rdir.ensemble.mkdir(parents=True, exist_ok=True)
        write(result)
        outputs["ensemble_dir"] = str(ctx.rdir.ensemble)
    evidence = [f"{len(y):,} test images, never seen by any decision before: accuracy {acc:.4f} "
                f"({round(acc * len(y)):,}/{len(y):,}), loss {loss:.4f}"]
    return StepResult(evidence, f"the recipe's model ({what}) scores {acc:.4f} on test", outputs)

