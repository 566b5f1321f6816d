"""One training run end to end: data -> split -> preprocess -> model -> fit -> test score.

This is what ``babysit train`` and ``babysit eval`` call; each piece is also usable on its own.
"""

from __future__ import annotations

import copy
import json
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from babysit import config as C
from babysit.data.augment import augment_warnings, parse_pipeline
from babysit.data.preprocess import Preprocessor
from babysit.data.preview import save_augment_picture
from babysit.data.sources import Dataset
from babysit.data.split import Splits, split_seed
from babysit.errors import BabysitError
from babysit.log import get_logger
from babysit.monitor.session import RunMonitor
from babysit.rundir import RunDir, atomic_write_text, named_dir
from babysit.start import (
    Plan,
    check_split,
    fresh_start,
    labels,
    load_preprocessor,
    load_run,
    module_needed,
    plan_run,
    preprocessed,
    user_module,
)
from babysit.train import distributed as ddp
from babysit.train.checkpoint import load_checkpoint, save_checkpoint
from babysit.train.early import stop_reason
from babysit.train.loop import LoopState, TensorData, eval_loss, evaluate, fit, task_scores
from babysit.train.transfer import Freezer
from babysit.train.tta import tta_probabilities, tta_views

_log = get_logger(__name__)


@dataclass
class TrainResult:
    run: RunDir | None
    model: nn.Module
    state: LoopState
    test_acc: float | None  # None when train.score_test is false
    seconds: float


@dataclass
class EvalResult:
    split: str
    loss: float
    accuracy: float
    confusion: torch.Tensor  # (K, K): rows true class, columns predicted
    classes: list[str]
    tta: str = ""  # the test-time views asked for ("" = none)
    tta_views: int = 0  # how many views each image's probabilities were averaged over
    tta_accuracy: float | None = None  # accuracy of the averaged prediction (the confusion matrix is this one's)
    warnings: tuple[str, ...] = ()  # test-time views that change the class on this data (a mirrored digit)
    top5: float | None = None  # share of images whose true class is among the 5 highest scores (more than 5 classes)
    tasks: dict[str, float] = field(default_factory=dict)  # multi-task: accuracy per task (accuracy: the first's)


def module_path(model: nn.Module) -> str:
    """``package.module.ClassName`` of a user's module: what meta.json records and the errors name."""
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_module(model: nn.Module, data: TensorData, num_classes: int) -> nn.Module:
    """A user's module must give one score per class for a batch of preprocessed training images."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(data.x_train[:2])
    except Exception as e:  # noqa: BLE001 - the user's own code: say where it failed, in one sentence
        raise BabysitError(f"your module {module_path(model)} failed on a batch of training images of shape "
                           f"{tuple(data.x_train[:2].shape)} ({type(e).__name__}: {str(e).splitlines()[0]}); make its "
                           "forward take (N, C, H, W).") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(data.x_train[:2]), num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BabysitError(f"your module {module_path(model)} gives {shape} for a batch of 2 images; it must give "
                           f"one score per class, (2, {num_classes}): end it with a Linear(..., {num_classes}).")
    return model


def _first_files(run: RunDir, plan: Plan, module: nn.Module | None = None) -> Preprocessor:
    """Write spec.txt, meta.json and the preprocessing statistics unless a killed start already did. A user's
    ``module`` is named in meta.json and spec.txt (which then holds no spec: the report's layers keep their names)."""
    if not run.spec.exists():
        atomic_write_text(run.spec, (f"module {module_path(module)}" if module is not None else str(plan.spec)) + "\n")
    if run.meta.exists():
        check_split(run, plan.splits)
    else:
        meta = _provenance(plan.cfg, plan.dataset, plan.splits)
        if module is not None:
            meta["module"] = module_path(module)
        run.write_json(run.meta, meta)
    if run.preprocess.exists():
        return load_preprocessor(run)
    pre = Preprocessor.from_config(plan.splits.train.x, plan.cfg.data)
    save_checkpoint(run.preprocess, pre.state_dict(), {"kind": pre.kind, "describe": pre.describe()})
    return pre


def _provenance(cfg: C.RunConfig, ds: Dataset, splits: Splits) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"seed": cfg.train.seed, "split_seed": split_seed(cfg), "data": ds.name, "source": ds.source,
            "classes": ds.train.classes,
            "input_shape": list(ds.train.x.shape[1:]),
            "split_sizes": [len(splits.train), len(splits.val), len(splits.test)],
            "torch": torch.__version__, "python": platform.python_version(),
            "git_commit": commit, "created": datetime.now().isoformat(timespec="seconds")}


def train(cfg: C.RunConfig, out: str | Path = "runs", name: str = "", resume: str | Path | None = None,
          callbacks: list[Any] | None = None, soft_targets: Callable[[Plan], torch.Tensor] | None = None,
          model: nn.Module | None = None) -> TrainResult:
    """Run (or resume) one training run; writes a run directory under ``out`` and returns the result.

    ``callbacks`` (see babysit.train.loop.Callback) run after babysit's own monitoring callbacks.
    ``soft_targets(plan)``: a teacher's probabilities (N, K) for the plan's training images, for a distillation
    run (``distill.teacher``; `babysit distill` passes it); computed once and kept in RUN/teacher.safetensors.
    ``model``: your own nn.Module instead of ``model.spec`` (initialised as you made it; it must map a batch of
    preprocessed images (N, C, H, W) to scores (N, classes)). It gets the sanity checks, layer probes, findings
    and report; meta.json records its import path, and eval / predict / resume take a fresh instance back
    (``evaluate_run(RUN, model=MyNet())``), since babysit never runs code from a run's files."""
    started = time.perf_counter()
    ranks = ddp.ranks()  # under torchrun: rank 0 writes the run directory, the other processes only read it
    if ranks.active and (cfg.distill.teacher or soft_targets is not None):
        raise BabysitError("distillation runs in one process; start `babysit distill` without torchrun.")
    if resume is not None:
        run = RunDir.open(resume)
        if ranks.main:
            run.take_lock()  # a second process resuming the same run is refused, naming this one's PID
            run.remove_orphans()
        cfg = C.load_toml(run.config)
        module = user_module(run)
        if module is not None and model is None:
            raise module_needed(run, module)
        if module is None and model is not None:
            raise BabysitError(f"{str(run.path)!r} was built from its spec; resume it without model=.")
    scaled = cfg.train.scale_lr and ranks.active
    plan = plan_run(cfg)  # every mistake is refused here, before anything is written
    cfg = plan.cfg  # the automatic values (spec name, batch size) made concrete for this data
    ds, splits = plan.dataset, plan.splits
    ddp.start(plan.device)  # join torchrun's process group (alone: nothing)
    if not ranks.main:  # once rank 0 has made the directory and its first files, read them
        run = RunDir.open(ddp.from_main(None))
        return _other_rank(run, plan, load_preprocessor(run), resume is not None, started)
    if resume is None:
        run = RunDir.create(named_dir(out, name or f"{ds.name.replace('/', '_')}-{datetime.now():%Y%m%d-%H%M%S}"))
        with run.removed_on_error():  # a failed start (disk full) leaves no half-made run behind
            run.take_lock()  # before config.toml exists, so no other process can resume it under us
            atomic_write_text(run.config, C.dumps_toml(cfg))
            pre = _first_files(run, plan, model)
    else:
        pre = _first_files(run, plan, model)
    ddp.from_main(str(run.path))  # the other processes wait for this
    built, data, augment = fresh_start(plan, pre)
    model = built if model is None else _check_module(model.to(plan.device), data, plan.num_classes)
    if cfg.distill.teacher:
        data.soft_train = _teacher(run, plan, soft_targets).to(plan.device)
    for warning in plan.warnings:
        _log.warning(f"warning: {warning}")
    if augment is not None:
        _log.info(f"augmentation, training batches only: {augment}")
        run.stats.mkdir(exist_ok=True)  # what the first batches look like, for the report
        save_augment_picture(augment, splits, run.augment, min(plan.num_classes, 10))
    _log.info(f"run {run.path}: {ds.name} {len(splits.train)}/{len(splits.val)}/{len(splits.test)} train/val/test, "
              f"{sum(p.numel() for p in model.parameters()):,} params, device {plan.device}")
    if ranks.active:
        _log.info(ddp.describe(ranks, cfg.train.batch_size, cfg.optim.lr, scaled))
    monitor = RunMonitor(cfg, run)  # sanity checks, layer probes, findings, report (cfg.monitor)
    monitor.before_fit(model, data, plan.num_classes, resume=resume is not None)
    own = monitor.callbacks() + ([Freezer(cfg.transfer.strategy, cfg.transfer.layers, cfg.transfer.unfreeze)]
                                 if cfg.transfer.source else [])  # fine-tuning: which layers train, by epoch
    with monitor.watching():  # a divergence becomes the "LR too high" finding before it propagates
        state = fit(model, data, cfg, run, callbacks=own + list(callbacks or []),
                    resume=resume is not None, augment=augment)
    test_acc: float | None = None
    x_test = y_test = None
    test_tasks: dict[str, float] = {}
    if cfg.train.score_test:
        x_test, y_test = preprocessed(pre, splits.test, plan.device), labels(cfg, splits.test).to(plan.device)
        _, test_acc, _ = evaluate(model, x_test, y_test, cfg.train.eval_batch_size,
                                  eval_loss(cfg) if cfg.model.heads else None)
        test_tasks = task_scores(model, x_test, y_test, cfg)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {"best_val_acc": state.best_val_acc, "best_epoch": state.best_epoch,
                              "test_acc": test_acc, "seconds": seconds, "epochs": state.epoch}
    stopped = next((r for r in reversed(run.read_history()) if r.get("kind") == "early_stop"), None)
    if stopped is not None:
        result["stopped_early"] = stop_reason(cfg, stopped)
    if test_tasks:  # multi-task: each head's test accuracy (test_acc is the first task's)
        result["test_acc_tasks"] = test_tasks
    result |= _averaged_scores(run, model, x_test, y_test, cfg.train.eval_batch_size)
    run.write_json(run.result, result)
    averaged = "".join(f", {k} test {v['test_acc']:.4f}" for k, v in result.items() if k in ("ema", "swa")
                       and "test_acc" in v)
    test = f"test {test_acc:.4f}{averaged}" if test_acc is not None else "test not scored (train.score_test=false)"
    test += "".join(f", test {k} {v:.4f}" for k, v in test_tasks.items())
    _log.info(f"best val {state.best_val_acc:.4f} (epoch {state.best_epoch}), {test}, "
              f"{seconds:.1f} s; run directory {run.path}")
    monitor.after_fit(model, data, splits.val.x, splits.classes)
    run.release_lock()  # (on an error the lock is kept until the process ends: a resume in it retakes it)
    ddp.stop()
    return TrainResult(run, model, state, test_acc, seconds)


def _other_rank(run: RunDir, plan: Plan, pre: Preprocessor, resume: bool, started: float) -> TrainResult:
    """A DDP process other than rank 0: the same model, data and steps, no monitoring, scoring or files."""
    model, data, augment = fresh_start(plan, pre)
    state = fit(model, data, plan.cfg, run, resume=resume, augment=augment)
    ddp.stop()
    return TrainResult(None, model, state, None, time.perf_counter() - started)


def _teacher(run: RunDir, plan: Plan, soft_targets: Callable[[Plan], torch.Tensor] | None) -> torch.Tensor:
    """A distillation run's soft targets: RUN/teacher.safetensors, made once by ``soft_targets`` (a resumed run
    reads the same numbers back, so it stays bit-identical)."""
    if not run.teacher.exists():
        if soft_targets is None:
            raise BabysitError(f"distill.teacher={plan.cfg.distill.teacher!r} needs the teacher's probabilities; "
                               "start a distillation with `babysit distill ENSEMBLE` instead of setting it.")
        probs = soft_targets(plan)
        save_checkpoint(run.teacher, {"soft": probs}, {"teacher": plan.cfg.distill.teacher,
                                                        "temperature": plan.cfg.distill.temperature})
    tensors, _ = load_checkpoint(run.teacher)
    soft = tensors.get("soft")
    if soft is None or soft.shape != (len(plan.splits.train), plan.num_classes):
        raise BabysitError(f"{run.teacher} does not hold soft targets for this run's {len(plan.splits.train)} "
                           "training images; start the distillation afresh.")
    return soft


def _averaged_scores(run: RunDir, model: nn.Module, x_test: torch.Tensor | None, y_test: torch.Tensor | None,
                     batch_size: int) -> dict[str, dict[str, Any]]:
    """The EMA's best and the SWA weights (when the run kept them) with their val scores and, unless the test
    images are kept unseen (None), scored on test, for result.json."""
    out = {}
    for kind, path in (("ema", run.best_ema), ("swa", run.swa)):
        if path.exists():
            tensors, meta = load_checkpoint(path)
            out[kind] = dict(meta)
            if x_test is not None and y_test is not None:
                averaged = copy.deepcopy(model)
                averaged.load_state_dict({k[len("model."):]: v for k, v in tensors.items()})
                out[kind]["test_acc"] = evaluate(averaged, x_test, y_test, batch_size)[1]
    return out


def tta_warnings(tta: str, data_name: str) -> list[str]:
    """The flips among test-time views that change the class on this data (a mirrored digit), as train warns."""
    tokens = {t.strip().lower() for t in tta.split(",")}
    flips = ["flip-h"] * bool(tokens & {"flip", "flip-h"}) + ["flip-v"] * ("flip-v" in tokens)
    return augment_warnings(parse_pipeline(flips), data_name) if flips else []


def evaluate_run(path: str | Path, split: str = "test", device: str = "cpu", tta: str = "",
                 weights: str = "best", model: nn.Module | None = None) -> EvalResult:
    """Accuracy and confusion matrix of a run's best weights (or ``weights``: last, ema, swa, snapshot-N,
    epoch-N) on one split; with ``tta`` (e.g. "flip,translate", see babysit.train.tta) also the accuracy of the
    probabilities averaged over those test-time views. ``model``: a fresh instance of your own module, for a run
    trained with one (``train(cfg, model=...)``)."""
    _, cfg, model, pre, splits = load_run(path, device, weights, model)
    part = splits.get(split)
    dev = next(model.parameters()).device
    if cfg.model.heads:
        if tta:
            raise BabysitError("test-time views average one task's probabilities; a multi-task run (model.heads) is "
                               "scored without --tta.")
        y_all = labels(cfg, part).to(dev)
        tasks = task_scores(model, pre(part.x.to(dev)), y_all, cfg)
    y = part.y.to(dev)
    loss, acc, pred = evaluate(model, preprocessed(pre, part, dev), y_all if cfg.model.heads else y,
                               cfg.train.eval_batch_size, eval_loss(cfg) if cfg.model.heads else None)
    views, tta_acc, warnings = None, None, tta_warnings(tta, cfg.data.name)
    if tta:
        views = tta_views(tta, cfg, len(splits.classes))
        probs = tta_probabilities(model, pre, part.x, views, cfg.train.eval_batch_size)
        pred = probs.argmax(1)
        tta_acc = (pred == y).float().mean().item()
    k = len(splits.classes)
    confusion = torch.bincount(y.cpu() * k + pred.cpu(), minlength=k * k).view(k, k)
    top5 = (topk_accuracy(_scores(model, pre, part.x, cfg.train.eval_batch_size)[:, :k], y, 5)
            if k > 5 else None)
    return EvalResult(split, loss, acc, confusion, splits.classes, tta, len(views) if views else 0, tta_acc,
                      tuple(warnings), top5, tasks if cfg.model.heads else {})


@torch.no_grad()
def _scores(model: nn.Module, pre: Preprocessor, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The class scores (N, K) of raw images ``x``, in eval mode, on the model's device."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = torch.cat([model(pre(x[i : i + batch_size].to(dev))) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def topk_accuracy(scores: torch.Tensor, y: torch.Tensor, k: int = 5) -> float:
    """Share of rows whose true class y_i is among the k highest scores (top-1 accuracy at k = 1)."""
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return (top == y.to(top.device)[:, None]).any(1).float().mean().item()


def format_confusion(res: EvalResult) -> str:
    """The confusion matrix as text: rows are true classes, columns predicted, with per-class accuracy."""
    names = [c[:8] for c in res.classes]
    width = max(6, *(len(n) for n in names), len(str(int(res.confusion.max()))) + 1)
    lines = ["true \\ pred".ljust(12) + "".join(n.rjust(width) for n in names) + "   acc"]
    for i, (name, row) in enumerate(zip(names, res.confusion.tolist())):
        total = sum(row)
        acc = row[i] / total if total else float("nan")
        lines.append(name.ljust(12) + "".join(str(v).rjust(width) for v in row) + f"  {acc:.3f}")
    return "\n".join(lines)


def result_json(res: EvalResult) -> str:
    return json.dumps({"split": res.split, "loss": res.loss, "accuracy": res.accuracy,
                       "confusion": res.confusion.tolist(), "classes": res.classes, "tta": res.tta,
                       "tta_views": res.tta_views, "tta_accuracy": res.tta_accuracy, "top5": res.top5,
                       "tasks": res.tasks})
