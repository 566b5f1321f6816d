"""One trial of a search: the sampled values on the base config, the stage's budget, a normal run
directory per fold (``babysit train`` with monitoring off), and what became of it.

A trial ends in one of four states:

    COMPLETE   trained to the end; its score is the best val accuracy (the mean over K folds)
    PRUNED     the pruner stopped it at an epoch end (its val accuracy was behind the other trials')
    KILLED     the loss exploded (> 3x the initial, or NaN: babysit.divergence) and the guard stopped it
    FAIL       anything else went wrong (a refused combination, a crash); the reason is kept, the search goes on
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babysit import config as C
from babysit.errors import BabysitError, Diverged, Interrupted
from babysit.experiment import train
from babysit.rundir import RunDir
from babysit.train.loop import LoopState
from babysit.tune.space import apply_params

STATES = ("COMPLETE", "PRUNED", "KILLED", "FAIL")


@dataclass(frozen=True)
class Budget:
    """What a stage gives each trial: a share of the epochs and of the training images."""

    stage: str  # coarse | fine
    epochs_share: float = 1.0  # of train.epochs (at least one epoch)
    data_share: float = 1.0  # of the training images (data.limit)

    def epochs(self, cfg: C.RunConfig) -> int:
        """The stage's epochs; 0 while train.epochs is 0 (auto: search() makes it concrete before any trial)."""
        if cfg.train.epochs == 0:
            return 0
        return max(1, math.floor(cfg.train.epochs * self.epochs_share + 1e-9))

    def limit(self, cfg: C.RunConfig, n_train: int) -> int:
        """data.limit for the trials (0 keeps every training image)."""
        if self.data_share >= 1:
            return cfg.data.limit
        return max(cfg.train.batch_size or 32, round(self.data_share * n_train))  # auto batch: at least 32


def budget(cfg: C.RunConfig, stage: str) -> Budget:
    s = cfg.search
    return Budget(stage, s.coarse_epochs, s.coarse_data) if stage == "coarse" else Budget(stage, 1.0, s.fine_data)


def trial_config(cfg: C.RunConfig, params: dict[str, Any], b: Budget, n_train: int, threads: int,
                 fold: int | None = None) -> C.RunConfig:
    """The run a trial trains: ``params`` on ``cfg``, the stage's epochs (the warm-up shortened alike) and
    images, monitoring off (the sanity checks ran once for the search), ``threads`` CPU threads, and with
    K-fold validation the fold's split."""
    run = apply_params(cfg, params)
    epochs = b.epochs(run)
    warmup = run.schedule.warmup_epochs * epochs / run.train.epochs if run.train.epochs else run.schedule.warmup_epochs
    folds = {"data.folds": cfg.search.folds, "data.fold": fold} if fold is not None else {}
    return C.apply_overrides(run, {
        "train.epochs": epochs, "schedule.warmup_epochs": warmup, "data.limit": b.limit(run, n_train),
        "monitor.checks": False, "monitor.stats_every": 0, "monitor.report": False, "monitor.tensorboard": False,
        "train.progress": False, "train.threads": threads, **folds})


@dataclass
class Outcome:
    """What one trial gave: its state, scores, cost and why it stopped."""

    state: str
    val_acc: float | None = None  # best val accuracy (mean over folds)
    val_acc_std: float | None = None  # spread over folds (K-fold only)
    test_acc: float | None = None
    epochs: int = 0  # epochs trained (of the first fold with K-fold)
    seconds: float = 0.0
    run_dir: Path | None = None  # the run directory (the first fold's with K-fold)
    reason: str = ""
    fold_val_accs: list[float] = field(default_factory=list)


class EpochReport:
    """Callback: report each epoch's val accuracy to the Optuna trial and, with a pruner, stop the run at
    an epoch end when the pruner says so (the epoch's weights are scored and kept as usual)."""

    def __init__(self, trial: Any, prune: bool) -> None:
        self.trial, self.prune, self.pruned_at = trial, prune, 0

    def on_epoch_end(self, state: LoopState) -> None:
        record = state.history[-1]
        self.trial.report(record["val_acc"], record["epoch"])
        if self.prune and self.trial.should_prune():
            self.pruned_at = record["epoch"]
            state.stop = True


def _epochs_and_best(run: RunDir) -> tuple[int, float | None]:
    epochs = [r for r in run.read_history() if r.get("kind") == "epoch"]
    return len(epochs), max((r["val_acc"] for r in epochs), default=None)


def _train_fold(cfg: C.RunConfig, path: Path, callbacks: list[Any]) -> tuple[dict[str, Any], RunDir]:
    """Train one run into ``path``; what it prints goes to RUN/log.txt, not the terminal."""
    path.mkdir(parents=True, exist_ok=True)
    run = RunDir(path)
    with open(run.log, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            res = train_one(cfg, path, callbacks)
        except BaseException:
            traceback.print_exc()  # into the log: the table keeps one line, the log the whole story
            raise
    return {"val_acc": res.state.best_val_acc, "test_acc": res.test_acc}, run


def train_one(cfg: C.RunConfig, path: Path, callbacks: list[Any]) -> Any:
    """``babysit train`` of one trial (a seam the tests use to make a trial crash)."""
    return train(cfg, out=path.parent, name=path.name, callbacks=callbacks)


def run_trial(cfg: C.RunConfig, params: dict[str, Any], b: Budget, paths: list[Path], n_train: int, threads: int,
              optuna_trial: Any = None, prune: bool = False) -> Outcome:
    """Train a trial (one run, or one per fold in ``paths``) and say how it ended. Ctrl-C propagates; every other
    error becomes the trial's FAIL or KILLED state."""
    started = time.perf_counter()
    vals, tests, epochs = [], [], 0
    for k, path in enumerate(paths):
        report = EpochReport(optuna_trial, prune) if optuna_trial is not None and k == 0 else None
        try:
            tcfg = trial_config(cfg, params, b, n_train, threads, k if cfg.search.folds else None)
            scores, run = _train_fold(tcfg, path, [report] if report else [])
        except (Interrupted, KeyboardInterrupt):
            raise
        except Diverged as e:
            n, best = _epochs_and_best(RunDir(path))
            return Outcome("KILLED", best, None, None, n if k == 0 else epochs, time.perf_counter() - started,
                           paths[0], f"{e.what} at step {e.step} (lr {e.lr:.3g})")
        except BabysitError as e:
            return Outcome("FAIL", None, None, None, epochs, time.perf_counter() - started, paths[0], str(e))
        except Exception as e:  # noqa: BLE001 - a crashing trial is recorded and the search goes on
            return Outcome("FAIL", None, None, None, epochs, time.perf_counter() - started, paths[0],
                           f"{type(e).__name__}: {e} (traceback in {RunDir(path).log})")
        if k == 0:
            epochs = _epochs_and_best(run)[0]
        vals.append(scores["val_acc"])
        tests.append(scores["test_acc"])
        if report is not None and report.pruned_at:
            return Outcome("PRUNED", vals[0], None, tests[0], epochs, time.perf_counter() - started, paths[0],
                           f"pruned after epoch {report.pruned_at}: val accuracy {vals[0]:.4f} was behind the "
                           "other trials'", vals)
    std = statistics.stdev(vals) if len(vals) > 1 else None
    test = statistics.fmean(tests) if None not in tests else None  # train.score_test=false: the test stays unseen
    return Outcome("COMPLETE", statistics.fmean(vals), std, test, epochs,
                   time.perf_counter() - started, paths[0], "", vals)
