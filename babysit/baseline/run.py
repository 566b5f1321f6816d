"""The classical baselines by name, each run into a result directory: ``babysit baseline NAME``.

- ``knn``: k-nearest neighbours on ``baseline.features``; k and the distance chosen by K-fold
  cross-validation on the training split (babysit.baseline.knn), then scored once on val and test.
- ``linear``: multiclass SVM or softmax on ``baseline.features`` through babysit's training loop, the L2
  strength chosen on the validation split (babysit.baseline.linear).
- ``two-layer``: the net ``fc-H relu fc`` on the pixels, trained by ``babysit train``'s own path
  (babysit.experiment.train: sanity checks, report, checkpoints); its run directory gets baseline.json too.

Every baseline starts like a run (babysit.start.plan_run: the config checked, the data split the same way,
threads and device set) and writes RUN/config.toml and RUN/baseline.json (name, chosen settings, val/test
accuracy, seconds); knn adds RUN/cv.csv and RUN/cv.png. Default directory: ``runs/baseline-NAME-DATA-DATE-TIME``.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from babysit import config as C
from babysit.baseline.features import FEATURES, compute_features
from babysit.baseline.knn import DISTANCES, CVTable, cross_validate, predict
from babysit.baseline.linear import LINEAR_LOSSES, train_linear
from babysit.errors import BabysitError
from babysit.experiment import train
from babysit.figures import cross_validation_figure, png
from babysit.log import get_logger, shows_progress
from babysit.registry import Registry
from babysit.rundir import RunDir, atomic_write_bytes, atomic_write_text, named_dir
from babysit.start import Plan, plan_run

_log = get_logger(__name__)


@dataclass(frozen=True)
class BaselineResult:
    """What one baseline scored: accuracies on the val and test splits, the settings it chose, its time."""

    name: str  # knn, linear or two-layer
    data: str  # the data set
    features: str  # what it classified: a baseline.features name, or "pixels"
    chosen: dict[str, Any]  # the settings it chose or was given: k and distance, loss and lambda, hidden units
    val_acc: float
    test_acc: float
    seconds: float  # wall time, features and cross-validation included
    path: Path | None  # the result directory
    cv: CVTable | None = None  # knn: the cross-validation accuracies

    @property
    def test_error(self) -> float:
        return 1.0 - self.test_acc

    def describe(self) -> str:
        """The chosen settings in a few words: "k=3, l2", "svm, lambda=0.001", "H=300"."""
        return ", ".join(f"{v}" if k in ("distance", "loss") else f"{k}={v:g}" if isinstance(v, float)
                         else f"{k}={v}" for k, v in self.chosen.items())

    def to_json(self) -> dict[str, Any]:
        out = {"baseline": self.name, "data": self.data, "features": self.features, "chosen": self.chosen,
               "val_acc": self.val_acc, "test_acc": self.test_acc, "test_error": self.test_error,
               "seconds": self.seconds}
        if self.cv is not None:
            out["cv"] = {"ks": list(self.cv.ks), "folds": self.cv.folds, "images": self.cv.images,
                         "accuracy": {d: a.tolist() for d, a in self.cv.acc.items()}}
        return out


Baseline = Callable[[C.RunConfig, str, str], BaselineResult]
BASELINES: Registry[Baseline] = Registry("baseline", hint=" (or all: every one, one table)")
"""The baselines by the names ``babysit baseline NAME`` takes: ``fn(cfg, out, dir_name) -> BaselineResult``."""


def check_baseline(cfg: C.RunConfig) -> None:
    """The baseline options' names, before any data is read: distances, features, loss."""
    for d in cfg.baseline.distance:
        DISTANCES.get(d)
    FEATURES.get(cfg.baseline.features)
    if cfg.baseline.loss not in LINEAR_LOSSES:
        raise BabysitError(f"baseline.loss must be one of {', '.join(LINEAR_LOSSES)}, got {cfg.baseline.loss!r}.")


def _progress(cfg: C.RunConfig) -> bool:
    return cfg.train.progress and sys.stderr.isatty() and shows_progress()  # -q hides the bars


def _result_dir(plan: Plan, name: str, out: str | Path, dir_name: str) -> RunDir:
    """The new result directory (refused when it already holds one), with the resolved config written."""
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    path = named_dir(out, dir_name or f"baseline-{name}-{plan.dataset.name.replace('/', '_')}-{stamp}")
    if RunDir(path).config.exists():
        raise BabysitError(f"{path} already holds a result; choose another --name or --out.")
    run = RunDir.create(path, checkpoints=False)
    with run.removed_on_error():
        atomic_write_text(run.config, C.dumps_toml(plan.cfg))
    return run


def _features(plan: Plan) -> list[torch.Tensor]:
    """[train, val, test] features of ``baseline.features`` on the plan's device (cached when slow to make)."""
    s, b = plan.splits, plan.cfg.baseline
    started = time.perf_counter()
    feats, cached = compute_features(b.features, [s.train.x, s.val.x, s.test.x], b, plan.cfg.train.seed)
    where = f" (cache {cached})" if cached else ""
    _log.info(f"features {b.features}: {feats[0].shape[1]} values per image, "
              f"{time.perf_counter() - started:.1f} s{where}")
    return [f.to(plan.device) for f in feats]


def write_result(run: RunDir, result: BaselineResult) -> None:
    """baseline.json, and for knn cv.csv and cv.png, all written atomically."""
    run.write_json(run.baseline, result.to_json())
    if result.cv is not None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=["distance", "k", "fold", "accuracy"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(result.cv.rows())
        atomic_write_text(run.cv_table, text.getvalue())
        fig = cross_validation_figure(result.cv.ks, result.cv.acc,
                                      f"kNN on {result.data}: {result.cv.folds}-fold cross-validation on "
                                      f"{result.cv.images} training images")
        atomic_write_bytes(run.cv_plot, png(fig, dpi=120))


@BASELINES.register("knn")
def run_knn(cfg: C.RunConfig, out: str | Path = "runs", dir_name: str = "") -> BaselineResult:
    """k-nearest neighbours: cross-validate k and the distance on (a subset of) the training split, then vote
    with every training image for val and test."""
    started = time.perf_counter()
    plan = plan_run(replace(cfg, model=replace(cfg.model, spec="fc")))  # no model; "fc" suits any input shape
    b, s, k_classes = plan.cfg.baseline, plan.splits, plan.num_classes
    run = _result_dir(plan, "knn", out, dir_name)
    with run.removed_on_error():
        x_tr, x_va, x_te = _features(plan)
        y_tr, y_va, y_te = (part.y.to(plan.device) for part in (s.train, s.val, s.test))
        n_cv = min(b.cv_size or len(x_tr), len(x_tr))  # the train split is already in a seeded random order
        _log.info(f"{b.folds}-fold cross-validation on {n_cv} training images, k in {list(b.k)}, "
                  f"distances {', '.join(b.distance)}")
        table = cross_validate(x_tr[:n_cv], y_tr[:n_cv], b.k, b.distance, b.folds, k_classes, plan.cfg.train.seed,
                               b.chunk_size, _progress(cfg))
        _log.info(table.format())
        distance, k, cv_acc = table.best()
        _log.info(f"chosen: k={k}, {distance} (cross-validation accuracy {cv_acc:.4f}); voting with all "
                  f"{len(x_tr)} training images")
        acc = [(predict(x, x_tr, y_tr, k, k_classes, distance, b.chunk_size, _progress(cfg)) == y).float().mean().item()
               for x, y in ((x_va, y_va), (x_te, y_te))]
        result = BaselineResult("knn", plan.dataset.name, b.features, {"k": k, "distance": distance}, acc[0], acc[1],
                                time.perf_counter() - started, run.path, table)
        write_result(run, result)
    return result


@BASELINES.register("linear")
def run_linear(cfg: C.RunConfig, out: str | Path = "runs", dir_name: str = "") -> BaselineResult:
    """Multiclass SVM or softmax on the features, trained by fit(); lambda chosen on the validation split."""
    started = time.perf_counter()
    plan = plan_run(replace(cfg, model=replace(cfg.model, spec="fc"), loss=replace(cfg.loss, name=cfg.baseline.loss)))
    s = plan.splits
    run = _result_dir(plan, "linear", out, dir_name)
    with run.removed_on_error():
        x = _features(plan)
        y = [part.y.to(plan.device) for part in (s.train, s.val, s.test)]
        res = train_linear(plan.cfg, x, y, plan.num_classes)
        _log.info("validation accuracy per L2 strength: " + ", ".join(f"lambda={lam:g}: {a:.4f}"
                                                                  for lam, a in res.val_acc.items()))
        result = BaselineResult("linear", plan.dataset.name, plan.cfg.baseline.features,
                                {"loss": plan.cfg.baseline.loss, "lambda": res.l2}, res.best_val_acc, res.test_acc,
                                time.perf_counter() - started, run.path)
        write_result(run, result)
    return result


@BASELINES.register("two-layer")
def run_two_layer(cfg: C.RunConfig, out: str | Path = "runs", dir_name: str = "") -> BaselineResult:
    """The net fc-H relu fc on the pixels, trained exactly like ``babysit train`` (its run directory)."""
    hidden = cfg.baseline.hidden
    two = replace(cfg, model=replace(cfg.model, spec=f"fc-{hidden} relu fc"))
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    res = train(two, out=out, name=dir_name or f"baseline-two-layer-{cfg.data.name.replace('/', '_')}-{stamp}")
    assert res.run is not None
    result = BaselineResult("two-layer", cfg.data.name, "pixels", {"H": hidden}, res.state.best_val_acc, res.test_acc,
                            res.seconds, res.run.path)
    write_result(res.run, result)
    return result


def run_baseline(name: str, cfg: C.RunConfig, out: str | Path = "runs", dir_name: str = "") -> BaselineResult:
    """Run the baseline ``name`` (knn, linear, two-layer) with ``cfg``; its result directory goes in ``out``."""
    entry = BASELINES.get(name)
    C.validate(cfg)
    check_baseline(cfg)
    return entry(cfg, out, dir_name)


def run_all(cfg: C.RunConfig, out: str | Path = "runs") -> list[BaselineResult]:
    """Every baseline in turn, each into its own result directory."""
    C.validate(cfg)
    check_baseline(cfg)
    return [run_baseline(name, cfg, out) for name in BASELINES.names()]


def format_table(results: list[BaselineResult]) -> str:
    """One line per baseline: what it classified, what it chose, val and test accuracy, test error, time."""
    head = f"{'baseline':<10} {'features':<10} {'chosen':<22} {'val acc':>8} {'test acc':>8} {'error %':>8} " \
           f"{'seconds':>8}  directory"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.name:<10} {r.features:<10} {r.describe():<22} {r.val_acc:8.4f} {r.test_acc:8.4f} "
                     f"{100 * r.test_error:8.2f} {r.seconds:8.1f}  {r.path}")
    return "\n".join(lines)
