"""Diagnoses: rules over a run's history and layer statistics -> findings in words.

Each rule reads an :class:`~babysit.review.findings.Evidence` and returns findings stated as
observation -> likely cause -> next action, with the numbers that triggered them. The rules follow
the notes' "babysitting the learning process": the loss curve (flat, linear, exploding, noisy), the
train/val accuracy gap, the update/weight ratio per layer, dead ReLUs, saturated tanh/sigmoid units,
vanishing or exploding gradients across depth, and best values on the border of a searched range.
Every threshold is a named constant (here for the curves, in layer_rules.py for the layer statistics).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from babysit.divergence import EXPLODE_FACTOR, first_divergence
from babysit.limits import read_small_text
from babysit.review.findings import Evidence, Finding, format_findings, mean, smooth, sort_findings
from babysit.review.layer_rules import (
    DEAD_RELU_MAX,
    EXPLODING_RATIO,
    MIN_PROBES,
    SATURATION_MAX,
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_LOW,
    VANISHING_RATIO,
    dead_relu,
    gradients_across_depth,
    saturation,
    update_ratio,
)
from babysit.rundir import RunDir, atomic_write_text

MIN_STEPS = 20
"""Loss-curve rules need at least this many recorded steps."""
LOSS_FLAT_DROP = 0.02
"""A loss whose least-squares trend ends less than 2% below its start "barely changes" (the notes:
2.302576 -> 2.302420)."""
RISE_SIGNIFICANCE = 3.0
"""A rising trend counts only when it exceeds this many standard errors (batch noise is not a rise)."""
REG_HIGH = 1e-2
"""weight_decay at or above this is named first as the cause of a flat loss."""
LINEAR_SLOWDOWN = 0.7
"""Loss decreasing linearly: the drop over the last third of the full-LR steps is at least this
fraction of the drop over the middle third (an exponential-looking curve slows down far more)."""
LINEAR_MAX_DROP = 0.5
"""... and the loss lost less than half its value over those steps ("linearly and slowly") ..."""
LINEAR_MIN_LEFT = 0.5
"""... and it still held at least half its initial value when those steps began. A one-cycle run falls fast in its
warm-up, then creeps down at the peak lr, where the steps are large (MNIST: 2.30 -> 0.12 -> 0.08): that is the
fast-then-slow curve of a good rate, with its fast part before the full-lr steps."""
NOISY_RATIO = 0.1
"""Curve too noisy: the std of the loss around its moving average (second half of the run) exceeds
this fraction of the loss's overall drop. The width of the curve comes from the batch size; on the
digits a small ConvNet measures 0.11 at batch 4, 0.04 at 16, 0.014 at 64."""
OVERFIT_GAP = 0.10
"""Train accuracy more than 10 points above val accuracy at the end: overfitting."""
UNDERFIT_GAP = 0.03
"""Train and val within 3 points ("no gap") ..."""
UNDERFIT_ACCURACY = 0.90
"""... and train accuracy below 90%: underfitting."""
CHANCE_FACTOR = 1.5
"""Train accuracy at most this times 1/classes is "at chance": the model is not learning at all."""
STILL_RISING_EPOCHS = 3
"""Val accuracy is looked at over the last this-many epochs ..."""
STILL_RISING_GAIN = 0.005
"""... and "still rising" when the last is the best, above the one before, and more than half a point
above the first of them."""
BORDER_FRACTION = 0.1
"""A searched value within the outer 10% of its range (log scale for log ranges) is "on the border"."""

Rule = Callable[[Evidence, set[str]], list[Finding]]


def lr_too_high(ev: Evidence, found: set[str]) -> list[Finding]:
    """NaN/Inf loss, or a blow-up by babysit.divergence's rule (sustained above EXPLODE_FACTOR x the initial)."""
    losses = ev.losses()
    initial = losses[0] if losses else next((float(c["numbers"]["loss"]) for c in ev.checks
                                             if c.get("name") == "initial_loss_check"), math.nan)
    if ev.diverged is not None:
        d = ev.diverged
        loss, step, lr = d.get("loss"), d.get("step"), d.get("lr", ev.lr())
    else:
        hit = first_divergence(float(r["loss"]) for r in ev.steps)  # the live guard's rule, over the trend
        if hit is None:
            return []
        bad = ev.steps[hit[0]]
        loss, step, lr = bad["loss"], bad["step"], bad.get("lr", 0)
    try:
        value = float(loss) if isinstance(loss, (int, float, str)) else math.nan
    except ValueError:
        value = math.nan
    if ev.diverged is not None and ev.diverged.get("what"):  # the guard's or the loop's own words
        what = f"{ev.diverged['what']} at step {step}"
        what += "" if "initial" in what else f" (initial loss {initial:.4g})"
    elif math.isfinite(value):
        what = (f"the loss reached {value:.4g} at step {step}, {value / initial:.3g}x the initial loss {initial:.4g} "
                f"(the notes quit above {EXPLODE_FACTOR:g}x)")
    else:
        what = f"the loss became {loss} at step {step} (initial loss {initial:.4g})"
    kept = ev.diverged.get("checkpoint") if ev.diverged else None
    keep = f"the last good checkpoint is {kept}" if kept else "no checkpoint was saved before it"
    lr = float(lr or ev.lr())
    failed = [c.get("title", c.get("name", "?")) for c in ev.checks if not c.get("passed", True)]
    if failed:  # the checks saw the network broken before any step: the lr is not the first suspect
        return [Finding("lr_too_high", "error", "loss exploded — after failed sanity checks", f"{what}; lr {lr:.3g}",
                        f"the sanity checks failed before training ({', '.join(failed)}): a bad initialisation or "
                        "broken data is the likelier cause than the learning rate",
                        f"fix what the failed checks point at first (e.g. --model.init=auto), rerun `babysit check`; "
                        f"if they pass and it still explodes, lower the lr (--optim.lr={ev.lr() / 10:g})",
                        {"step": step, "initial_loss": initial, "lr": lr, "failed_checks": failed})]
    return [Finding("lr_too_high", "error", "loss exploded — LR too high", f"{what}; lr {lr:.3g}",
                    "the learning rate is too high (or the initialisation is bad)",
                    f"stop the run ({keep}); start again with --optim.lr={ev.lr() / 10:g} (ten times smaller)",
                    {"step": step, "initial_loss": initial, "lr": lr})]


def _ends(losses: list[float]) -> tuple[float, float]:
    k = max(1, min(10, len(losses) // 10))
    return mean(losses[:k]), mean(losses[-max(k, len(losses) // 10):])


def trend(losses: list[float]) -> tuple[float, float, float]:
    """Least-squares line through the losses: (start value, change over the run, standard error of the change)."""
    n = len(losses)
    xbar, ybar = (n - 1) / 2, mean(losses)
    sxx = sum((i - xbar) ** 2 for i in range(n))
    slope = sum((i - xbar) * (v - ybar) for i, v in enumerate(losses)) / sxx
    resid = sum((v - ybar - slope * (i - xbar)) ** 2 for i, v in enumerate(losses))
    se = math.sqrt(resid / max(n - 2, 1) / sxx)
    return ybar - slope * xbar, slope * (n - 1), se * (n - 1)


def loss_flat(ev: Evidence, found: set[str]) -> list[Finding]:
    """The loss barely changes (LR too low, or regularisation too high), or rises (LR too high).

    Judged on the least-squares trend of the per-step losses, so batch-to-batch noise does not count.
    """
    losses = ev.losses()
    if "lr_too_high" in found or len(losses) < MIN_STEPS:
        return []
    start, change, se = trend(losses)
    rel = change / abs(start) if start else 0.0
    lr, wd = ev.lr(), float(ev.cfg("optim", "weight_decay", 0.0) or 0.0)
    seen = (f"along its fitted trend the loss goes {start:.6f} -> {start + change:.6f} ({rel:+.2%}) over "
            f"{len(losses)} steps at lr {ev.lr_text()}")
    numbers = {"loss_start": start, "loss_end": start + change, "change": rel, "steps": len(losses), "lr": lr,
               "weight_decay": wd}
    if rel > LOSS_FLAT_DROP and change > RISE_SIGNIFICANCE * se:
        return [Finding("loss_rising", "warning", "loss rises — LR too high", seen,
                        "the learning rate is too high: the steps overshoot",
                        f"lower the learning rate: --optim.lr={lr / 10:g}", numbers)]
    if rel <= -LOSS_FLAT_DROP:
        return []
    if wd >= REG_HIGH:
        title, cause = "loss barely changes — regularisation too high", f"regularisation too high (weight_decay {wd:g})"
        action = f"lower --optim.weight_decay to {wd / 100:g}; if the loss still does not move, raise --optim.lr"
    else:
        title, cause = "loss barely changes — LR too low", f"the learning rate is too low (lr {lr:.3g})"
        if wd:
            cause += f", or regularisation too high (weight_decay {wd:g})"
        action = (f"raise the learning rate ten-fold (--optim.lr={lr * 10:g}) until the loss drops within ~100 "
                  "steps; `babysit lr-find` scans the range")
    return [Finding("loss_flat", "warning", title, seen, cause, action, numbers)]


def loss_linear(ev: Evidence, found: set[str]) -> list[Finding]:
    """The loss decreases linearly: no slow-down over the full-LR steps (LR too low)."""
    losses = [float(r["loss"]) for r in ev.full_lr_steps()]
    if found & {"lr_too_high", "loss_flat", "loss_rising"} or len(losses) < 3 * 10:
        return []
    n = len(losses) // 3
    m1, m2, m3 = mean(losses[:n]), mean(losses[n : 2 * n]), mean(losses[2 * n :])
    d1, d2 = m1 - m2, m2 - m3
    initial = _ends(ev.losses())[0]
    if not (d1 > 0 and d2 > 0 and d2 / d1 > LINEAR_SLOWDOWN and (m1 - m3) / m1 < LINEAR_MAX_DROP
            and m1 >= LINEAR_MIN_LEFT * initial):
        return []
    lr = ev.lr()
    return [Finding("loss_linear", "warning", "loss decreases linearly — LR too low",
                    f"the loss fell by {d1:.4f} then {d2:.4f} over successive thirds of the run "
                    f"({m1:.4f} -> {m3:.4f}): "
                    "a straight line, not the fast-then-slow curve of a good rate",
                    "the learning rate is too low (or regularisation too high)",
                    f"raise the learning rate (try --optim.lr={lr * 3:g} to {lr * 10:g})",
                    {"drop_middle": d1, "drop_last": d2, "lr": lr})]


def noisy(ev: Evidence, found: set[str]) -> list[Finding]:
    """The loss curve is too wide around its trend (increase the batch size)."""
    losses = ev.losses()
    if found & {"lr_too_high", "loss_flat", "loss_rising"} or len(losses) < 2 * MIN_STEPS:
        return []
    start, end = _ends(losses)
    trend = smooth(losses, max(5, len(losses) // 20))
    half = len(losses) // 2
    resid = [a - b for a, b in zip(losses[half:], trend[half:])]
    width = math.sqrt(mean([r * r for r in resid]))
    drop = start - end
    if drop <= 0 or width <= NOISY_RATIO * drop:
        return []
    batch = int(ev.cfg("train", "batch_size", 0) or 0)
    action = f"increase the batch size (--train.batch_size={batch * 4})" if batch else "increase the batch size"
    return [Finding("noisy", "warning", "loss curve too noisy — batch too small",
                    f"the loss wanders by {width:.3f} (std around its moving average) against an overall drop of "
                    f"{drop:.3f}: ratio {width / drop:.2f} > {NOISY_RATIO}",
                    "each step's loss averages too few examples", action + ", or lower the learning rate a little",
                    {"width": width, "drop": drop, "batch_size": batch})]


def _last_epoch(ev: Evidence) -> dict[str, Any] | None:
    good = [e for e in ev.epochs if e.get("train_acc") is not None and e.get("val_acc") is not None]
    return good[-1] if good else None


def overfitting(ev: Evidence, found: set[str]) -> list[Finding]:
    """Big train/val gap."""
    last = _last_epoch(ev)
    if last is None or last["train_acc"] - last["val_acc"] <= OVERFIT_GAP:
        return []
    wd = float(ev.cfg("optim", "weight_decay", 0.0) or 0.0)
    gap = last["train_acc"] - last["val_acc"]
    return [Finding("overfitting", "warning", "big train/val gap — overfitting",
                    f"train accuracy {last['train_acc']:.3f} vs val {last['val_acc']:.3f} at epoch {last['epoch']}: "
                    f"a gap of {gap:.1%}", "the model fits the training set's noise (overfitting)",
                    f"more regularisation (--optim.weight_decay={max(wd * 10, 1e-4):g}, dropout), "
                    f"{_augment_advice(ev)}, "
                    "or more training data", {"train_acc": last["train_acc"], "val_acc": last["val_acc"], "gap": gap})]


def _augment_advice(ev: Evidence) -> str:
    """The notes: augmentation almost always helps; cutout, mixup and label smoothing especially on small sets."""
    pipeline = list(ev.cfg("augment", "pipeline", []) or [])
    if not pipeline:
        return ("data augmentation (--augment.pipeline=translate-2,cutout-8, with flip-h where a mirrored image "
                "keeps its class; `babysit augment preview` shows what it does)")
    stronger = [t for t in ("cutout-8", "mixup-0.2") if not any(p.startswith(t.split("-")[0]) for p in pipeline)]
    more = f"add {' or '.join(stronger)} to" if stronger else "strengthen"
    return f"stronger augmentation ({more} augment.pipeline={','.join(pipeline)}; or --loss.label_smoothing=0.1)"


def underfitting(ev: Evidence, found: set[str]) -> list[Finding]:
    """No gap and low accuracy; at chance level it is "not learning" instead. Skipped when the loss curve or
    the layer statistics already explain it."""
    last = _last_epoch(ev)
    explained = {"lr_too_high", "loss_flat", "loss_linear", "loss_rising", "vanishing_gradients",
                 "exploding_gradients", "saturation", "dead_relu", "update_ratio_low"}
    if last is None or found & explained:
        return []
    gap = last["train_acc"] - last["val_acc"]
    if abs(gap) > UNDERFIT_GAP or last["train_acc"] >= UNDERFIT_ACCURACY:
        return []
    numbers = {"train_acc": last["train_acc"], "val_acc": last["val_acc"], "gap": gap}
    seen = f"train accuracy {last['train_acc']:.3f}, val {last['val_acc']:.3f}: no gap ({gap:+.1%})"
    if ev.num_classes and last["train_acc"] <= CHANCE_FACTOR / ev.num_classes:
        return [Finding("not_learning", "warning", "accuracy at chance — not learning",
                        f"{seen}, at the chance level of {1 / ev.num_classes:.3f} for {ev.num_classes} classes",
                        "the optimisation is not working: learning rate, initialisation, or labels that do not "
                        "match the images", "run `babysit check` (overfit 20 images), then tune the learning rate "
                        "(`babysit lr-find`)", numbers)]
    wd = float(ev.cfg("optim", "weight_decay", 0.0) or 0.0)
    less_reg = f", less regularisation (--optim.weight_decay={wd / 10:g})" if wd else ""
    return [Finding("underfitting", "warning", "no gap and low accuracy — underfitting",
                    f"{seen} and training accuracy below {UNDERFIT_ACCURACY:.0%}",
                    "the model lacks capacity (underfitting)",
                    f"a bigger model (more filters, more layers){less_reg}, or train longer", numbers)]


def still_improving(ev: Evidence, found: set[str]) -> list[Finding]:
    """Val accuracy still rising at the end: train longer."""
    vals = [float(e["val_acc"]) for e in ev.epochs if e.get("val_acc") is not None]
    if ev.diverged is not None or len(vals) < STILL_RISING_EPOCHS:
        return []
    tail = vals[-STILL_RISING_EPOCHS:]
    if tail[-1] < max(vals) or tail[-1] <= tail[-2] or tail[-1] - tail[0] <= STILL_RISING_GAIN:
        return []
    epochs = int(ev.cfg("train", "epochs", len(vals)) or len(vals))
    return [Finding("still_improving", "info", "val accuracy still rising — train longer",
                    f"val accuracy rose {tail[0]:.3f} -> {tail[-1]:.3f} over the last {STILL_RISING_EPOCHS} epochs "
                    "and the last epoch was the best", "the run stopped before converging",
                    f"train longer (--train.epochs={epochs * 2})", {"first": tail[0], "last": tail[-1]})]


def failed_checks(ev: Evidence, found: set[str]) -> list[Finding]:
    """Each failed sanity check is a finding of its own, an error: whatever the curves show comes after it."""
    return [Finding(f"check_{c['name']}", "error", f"sanity check failed: {c['title']}", c["summary"],
                    c.get("advice") or "see the check", "fix this before trusting the run; `babysit check` reruns "
                    "the checks", dict(c.get("numbers", {}))) for c in ev.checks if not c.get("passed", True)]


RULES: list[Rule] = [failed_checks, lr_too_high, loss_flat, loss_linear, noisy, update_ratio, dead_relu, saturation,
                     gradients_across_depth, overfitting, underfitting, still_improving]
"""Run in this order; a rule may stay quiet when an earlier one already explains the run."""
LIVE_RULES: list[Rule] = [dead_relu, saturation, gradients_across_depth]
"""Severe enough to be printed while training (the loss explosion stops the run by itself)."""


def diagnose(ev: Evidence, rules: list[Rule] | None = None) -> list[Finding]:
    """Apply ``rules`` (default: all) to the evidence; findings sorted by severity."""
    findings: list[Finding] = []
    found: set[str] = set()
    for rule in RULES if rules is None else rules:
        for f in rule(ev, found):
            findings.append(f)
            found.add(f.rule)
    return sort_findings(findings)


def diagnose_run(path: RunDir | str | Path, write: bool = True) -> list[Finding]:
    """Diagnose a run directory; with ``write`` the findings go to RUN/findings.json."""
    run = RunDir.of(path)
    findings = diagnose(Evidence.from_run(run))
    if write:
        atomic_write_text(run.findings, json.dumps(
            {"created": datetime.now().isoformat(timespec="seconds"),
             "findings": [f.to_dict() for f in findings]}, indent=2) + "\n")
    return findings


def read_findings(path: RunDir | str | Path) -> list[Finding]:
    """The findings a run recorded ([] when it has none yet)."""
    p = RunDir.of(path).findings
    return [Finding.from_dict(d) for d in json.loads(read_small_text(p))["findings"]] if p.exists() else []


def best_on_border(name: str, best: float, low: float, high: float, log: bool = True) -> Finding | None:
    """The notes' "careful with best values on border": a finding when ``best`` lies in the outer
    BORDER_FRACTION of the searched range [low, high] (measured in log space when ``log``)."""
    f = (lambda v: math.log(v)) if log else (lambda v: v)
    span = f(high) - f(low)
    if span <= 0:
        return None
    pos = (f(best) - f(low)) / span
    if BORDER_FRACTION <= pos <= 1 - BORDER_FRACTION:
        return None
    edge, towards, grow = ("lower", "smaller", (low / 10 if log else low - (high - low) / 2, high)) \
        if pos < BORDER_FRACTION else ("upper", "larger", (low, high * 10 if log else high + (high - low) / 2))
    return Finding("best_on_border", "warning", f"best {name} on the border of the searched range",
                   f"the best {name} = {best:.3g} lies at the {edge} edge of [{low:.3g}, {high:.3g}] "
                   f"({pos:.0%} of the way{' in log scale' if log else ''})",
                   "the range may exclude better values beyond that edge",
                   f"widen the range towards {towards} values: search again over [{grow[0]:.3g}, {grow[1]:.3g}]",
                   {"name": name, "best": best, "low": low, "high": high, "position": pos})


__all__ = ["DEAD_RELU_MAX", "EXPLODING_RATIO", "LIVE_RULES", "MIN_PROBES", "RULES", "SATURATION_MAX",
           "UPDATE_RATIO_HIGH", "UPDATE_RATIO_LOW", "VANISHING_RATIO", "Evidence", "Finding", "best_on_border",
           "diagnose", "diagnose_run", "format_findings", "read_findings"]
