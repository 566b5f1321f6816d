"""The recipe's first steps: the data, the sanity checks, the learning-rate range test."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import replace

import torch

from babysit import config as C
from babysit.commands import ChecksFailed
from babysit.data.sources import ImageSet
from babysit.monitor.sanity import blocking, run_checks
from babysit.monitor.session import write_checks
from babysit.recipe.context import Ctx, StepResult, Window
from babysit.recipe.rules import lr_range
from babysit.rundir import RunDir, atomic_write_text
from babysit.start import fresh_start
from babysit.tune.lr_find import lr_range_test, result_json

TINY_CLASS = 10
"""A class with fewer training images than this (or under a fifth of the median class) is too small to learn
and to score reliably."""


def _hashes(s: ImageSet) -> list[bytes]:
    flat = s.x.reshape(len(s), -1).numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]


def duplicates(train: ImageSet, other: ImageSet) -> int:
    """Images of ``other`` whose pixels are exactly those of a training image: scored as seen, they flatter."""
    seen = set(_hashes(train))
    return sum(h in seen for h in _hashes(other))


def step_data(ctx: Ctx, window: Window) -> StepResult:
    """Load and split the data, fit the preprocessing on train, and warn about what would mislead later."""
    started = time.perf_counter()
    plan = ctx.plan()
    load_s = time.perf_counter() - started
    sp, ds = plan.splits, plan.dataset
    counts = sp.train.class_counts().tolist()
    median = sorted(counts)[len(counts) // 2]
    tiny = [f"{c} ({n})" for c, n in zip(sp.classes, counts) if n < TINY_CLASS or n < median / 5]
    dup_val, dup_test = duplicates(sp.train, sp.val), duplicates(sp.train, sp.test)
    c, h, w = plan.input_shape
    evidence = [f"{ds.name} from {ds.source}: {len(sp.train):,} / {len(sp.val):,} / {len(sp.test):,} train / val / "
                f"test images of {c}x{h}x{w}, {plan.num_classes} classes; "
                f"{'its official test split kept' if ds.test is not None else 'test held out per class'}",
                f"training images per class: {min(counts):,} .. {max(counts):,} (largest / smallest "
                f"{max(counts) / max(min(counts), 1):.2f})",
                f"preprocessing {ctx.cfg.data.preprocess}, fitted on the {len(sp.train):,} training images only"]
    warnings = []
    if tiny:
        warnings.append(f"tiny classes: {', '.join(tiny)} training images; their accuracy will be noisy: collect "
                        "more images of them, or merge them")
    if dup_val or dup_test:
        warnings.append(f"{dup_val} val and {dup_test} test images are exact copies of training images: their "
                        "scores flatter the model; remove the copies from the data")
    mirror = ds.traits.mirror_safe
    if mirror is False:
        warnings.append(f"left-right flips change the class here ({ds.traits.mirror_why}): no flip in "
                        "augmentation or test-time views")
    warnings += list(plan.warnings)
    decision = (f"model {plan.cfg.model.spec!r}, batch {plan.cfg.train.batch_size} ({plan.steps_per_epoch} steps per "
                f"epoch)" + ("; " + "; ".join(warnings) if warnings else "; no warnings"))
    return StepResult(evidence, decision, {
        "n_train": len(sp.train), "n_val": len(sp.val), "n_test": len(sp.test), "input_shape": [c, h, w],
        "classes": sp.classes, "counts": counts, "dup_val": dup_val, "dup_test": dup_test, "tiny": tiny,
        "mirror_safe": mirror, "load_s": load_s, "steps_per_epoch": plan.steps_per_epoch,
        "batch_size": plan.cfg.train.batch_size, "spec": plan.cfg.model.spec, "warnings": warnings})


def step_checks(ctx: Ctx, window: Window) -> StepResult:
    """The notes' four sanity checks on the chosen architecture; a failure stops the recipe with the fix."""
    folder = ctx.rdir.checks
    shutil.rmtree(folder, ignore_errors=True)  # a check killed half-way starts again
    plan = ctx.plan()
    started = time.perf_counter()
    run = RunDir.create(folder)
    atomic_write_text(run.config, C.dumps_toml(plan.cfg))
    model, data, _ = fresh_start(plan)
    # what every trial spends before its first step: loading the data (timed by the data step) and starting
    start_s = ctx.outputs("data").get("load_s", 0.0) + time.perf_counter() - started
    results = run_checks(model, data, plan.cfg, plan.num_classes, progress=True)
    write_checks(run, results)
    failed = blocking(results)
    if failed:
        advice = "; ".join(f"{r.title}: {r.advice or r.summary}" for r in failed)
        raise ChecksFailed(f"{len(failed)} of {len(results)} sanity checks failed ({advice}); the recipe stops "
                           f"here, before any search: fix the model or data and start a new recipe (the checks are in "
                           f"{run.checks}).")
    passed = sum(r.passed for r in results)
    decision = (f"all {len(results)} checks passed: the model and loss are wired correctly" if passed == len(results)
                else f"{passed} of {len(results)} checks passed; the failed one is a heuristic, so the recipe goes on")
    return StepResult([r.line() for r in results], decision + "; go on to the learning rate",
                      {"passed": True, "start_s": start_s})


def step_lr(ctx: Ctx, window: Window) -> StepResult:
    """The LR range test (one seed): the coarse lr range, and the time of one step, which sizes the search."""
    from babysit.figures import plot_lr_find

    steps = min(200, max(100, ctx.outputs("data")["steps_per_epoch"]))
    base = ctx.plan()  # the data loaded once; only the range test's own settings change
    plan = replace(base, cfg=replace(base.cfg, lr_find=replace(base.cfg.lr_find, seeds=1, steps=steps)))
    model, data, augment = fresh_start(plan)
    started = time.perf_counter()
    result = lr_range_test(model, data, plan.cfg, augment=augment)
    seconds = time.perf_counter() - started
    ran = len(result.losses[0])
    step_s = seconds / ran
    epoch_s = step_s * plan.steps_per_epoch * 1.1  # + the epoch-end scoring of train and val images
    ctx.rdir.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ctx.rdir.lr_find, json.dumps(result_json(result)) + "\n")
    plot_lr_find(result, ctx.rdir.lr_plot)
    low, high = lr_range(result.steepest[0], result.min_loss[0])
    evidence = [f"{ran} mini-batches of {plan.cfg.train.batch_size} with lr growing from "
                f"{plan.cfg.lr_find.start_lr:g} to {result.lrs[ran - 1]:.3g}: steepest descent at lr "
                f"{result.steepest[0]:.3g}, smoothed loss lowest at lr {result.min_loss[0]:.3g}",
                f"one step took {1000 * step_s:.1f} ms: an epoch ~{epoch_s:.1f} s on {torch.get_num_threads()} "
                f"thread(s)"]
    decision = (f"search lr in [{low:.3g}, {high:.3g}] (log-uniform): from a third of the lower of the steepest-"
                f"descent lr and the minimum's lr / 10, to three times the minimum's lr")
    return StepResult(evidence, decision, {"steepest": result.steepest[0], "min_loss": result.min_loss[0],
                                           "lr_low": low, "lr_high": high, "step_s": step_s, "epoch_s": epoch_s})
