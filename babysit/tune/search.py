"""Hyper-parameter search the way the notes teach: random on a log scale, coarse to fine, early kill.

    result = babysit.search(cfg, ["optim.lr=loguniform(1e-4,1)", "optim.weight_decay=loguniform(1e-6,1e-2)"])

1. Check everything once (the config, the space, every listed value against the data), print the plan,
   run the sanity checks once for the whole search (monitor.checks).
2. Coarse stage: ``search.trials`` trials of a few epochs (search.coarse_epochs, search.coarse_data),
   drawn at random (or grid, TPE) by Optuna; a trial whose loss explodes is killed, a pruner may stop
   weak ones early, a crash is recorded and the search goes on.
3. Fine stage: every range narrowed around the top-k coarse trials (babysit.tune.narrow), the full
   epochs.
4. trials.csv, best.toml (``babysit train --config``) and report.html in ``search/NAME``.

Each trial is an ordinary run directory (search/NAME/trials/NNNN), so eval, diagnose and report work
on it. The studies live in an Optuna storage (SQLite in the folder, or search.storage), so ``babysit
search --resume search/NAME`` continues after Ctrl-C or kill -9 without rerunning a finished trial.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import optuna

from babysit import config as C
from babysit.errors import BabysitError, ChecksFailed, Interrupted
from babysit.log import get_logger
from babysit.monitor.sanity import format_checks, run_checks
from babysit.monitor.session import write_checks
from babysit.rundir import RunDir, SearchDir, atomic_write_text, named_dir, new_folder
from babysit.start import check_against, concrete_epochs, cpu_threads, fresh_start, plan_run
from babysit.tune.narrow import narrow
from babysit.tune.space import Space, check_sampler, grid_size, parse_space
from babysit.tune.study import (
    METRIC,
    abandon_dead,
    find_study,
    open_storage,
    set_stage,
    stage_info,
    stage_study,
    storage_url,
    study_name,
)
from babysit.tune.table import TrialRow, best_config, best_row, collect, write_best, write_table
from babysit.tune.trial import Budget, budget, trial_config
from babysit.tune.worker import run_worker

_log = get_logger(__name__)

READY_WAIT = 300.0
"""Seconds the in-process worker waits for the worker processes to start (import torch, open the storage)."""


@dataclass
class SearchResult:
    """What a search found: its folder, the Optuna study of each stage, every trial and the best one."""

    path: Path
    studies: dict[str, optuna.Study]
    trials: list[TrialRow]
    best: TrialRow | None
    best_config: C.RunConfig | None
    report: Path | None

    @property
    def study(self) -> optuna.Study:
        """The last stage's study (the fine one after coarse to fine)."""
        return list(self.studies.values())[-1]


def stage_size(cfg: C.RunConfig, stage: str, space: Space) -> int:
    """Trials of a stage: search.trials for the first, fine_trials (default half) after a coarse stage; a grid
    has at most its number of combinations."""
    s = cfg.search
    n = s.trials if stage == s.stages[0] else (s.fine_trials or max(1, s.trials // 2))
    return min(n, grid_size(space)) if s.sampler == "grid" else n


def check_search(cfg: C.RunConfig) -> tuple[Space, int, int]:
    """Every mistake a search can hold, before anything is written: the config, the space (keys, ranges),
    the sampler, the data, and each listed value (a spec, an optimiser) against the data. Returns the parsed
    space, the number of training images a trial sees at the full budget and the classes."""
    C.validate(cfg)
    space = parse_space(cfg.search.space, cfg)
    check_sampler(space, cfg.search.sampler)
    base = trial_config(cfg, {}, Budget("fine"), 0, 1, 0 if cfg.search.folds else None)  # every image, all epochs
    plan = plan_run(base)
    for p in space:
        for value in p.choices:  # a spec that does not fit the images is refused now, not in trial 7
            try:
                check_against(C.apply_overrides(base, {p.key: value}), plan.splits)
            except BabysitError as e:
                raise BabysitError(f"search.space: {p.key}={value!r} cannot be trained: {e}") from None
    return space, len(plan.splits.train), plan.num_classes


def _folder(cfg: C.RunConfig, out: str | Path) -> SearchDir:
    name = cfg.search.name or f"{cfg.data.name.replace('/', '_')}-{datetime.now():%Y%m%d-%H%M%S}"
    sdir = SearchDir(named_dir(out, name, "--search.name"))
    if sdir.config.exists():
        raise BabysitError(f"search folder {str(sdir.path)!r} already holds a search; continue it with "
                           f"`babysit search --resume {sdir.path}` or choose another --search.name.")
    with new_folder(sdir.path):  # removed again if it cannot be made or written to
        probe = sdir.path / f".write-test.{os.getpid()}.probe.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    return sdir


def _shown(url: str) -> str:
    """A storage URL without its password."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def format_plan(cfg: C.RunConfig, sdir: SearchDir, space: Space, n_train: int, workers: int, threads: int) -> str:
    """The plan, printed before the first trial: trials x epochs per stage, the ranges, the workers."""
    s = cfg.search
    lines = [f"search {sdir.path}: {' then '.join(s.stages)}, sampler {s.sampler}, pruner {s.pruner}, "
             f"{workers} worker(s) x {threads} thread(s), storage {_shown(s.storage) or sdir.storage.name}"
             + (f", {s.folds}-fold cross-validation per trial" if s.folds else "")]
    for stage in s.stages:
        b = budget(cfg, stage)
        limit = b.limit(cfg, n_train)
        images = f"{limit} of the {n_train}" if limit and limit < n_train else f"all {n_train}"
        ranges = ("ranges below" if stage == s.stages[0] else
                  f"ranges narrowed around the top {s.top_k} coarse trials")
        lines.append(f"  {stage:<6}: {stage_size(cfg, stage, space)} trials x {b.epochs(cfg)} epoch(s) on {images} "
                     f"training images, {ranges}")
    lines += [f"    {p.text()}" for p in space]
    return "\n".join(lines)


def _sanity_checks(cfg: C.RunConfig, sdir: SearchDir, threads: int) -> None:
    """The notes' checks once, on the base config, in search/NAME/checks; a failure stops the search."""
    run = RunDir(sdir.checks)
    if run.checks.is_file() and run.read_json(run.checks).get("passed"):
        return
    shutil.rmtree(sdir.checks, ignore_errors=True)  # a check killed half-way starts again
    base = C.apply_overrides(cfg, {"train.progress": False, "train.threads": threads})
    plan = plan_run(base)
    run = RunDir.create(sdir.checks)
    with run.removed_on_error():  # a full disk leaves no config-only checks folder that looks like a run
        atomic_write_text(run.config, C.dumps_toml(base))
    model, data, _ = fresh_start(plan)
    results = run_checks(model, data, base, plan.num_classes, progress=True)
    _log.info(format_checks(results))
    write_checks(run, results)
    failed = [r.title for r in results if not r.passed]
    if failed and cfg.monitor.force:
        _log.warning(f"warning: {len(failed)} sanity check(s) failed; searching anyway (--monitor.force=true).")
    elif failed:  # exit 1, as `babysit train` and `babysit check` do
        raise ChecksFailed(f"the sanity checks failed on the base config ({', '.join(failed)}; see {run.checks}); "
                           "fix the model or data first, or search anyway with --monitor.force=true.")


def _write_space(sdir: SearchDir, cfg: C.RunConfig, storage: optuna.storages.BaseStorage, n_train: int) -> None:
    """space.json: each stage's ranges and budget, what the report reads."""
    stages = []
    for stage in cfg.search.stages:
        study = find_study(storage, study_name(cfg, sdir, stage))
        info = stage_info(study) if study is not None else None
        b = budget(cfg, stage)
        params = info["space"] if info else None
        stages.append({"name": stage, "trials": info["trials"] if info else None,
                       "epochs": b.epochs(cfg), "data_share": b.data_share, "limit": b.limit(cfg, n_train),
                       "params": params})
    sdir.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sdir.space, json.dumps({"metric": METRIC, "folds": cfg.search.folds,
                                              "sampler": cfg.search.sampler, "pruner": cfg.search.pruner,
                                              "top_k": cfg.search.top_k, "stages": stages}, indent=2) + "\n")


def _prepare(cfg: C.RunConfig, sdir: SearchDir, storage: optuna.storages.BaseStorage, stage: str, space: Space,
             n_train: int) -> optuna.Study:
    """The stage's study, created once with its space (the fine one narrowed around the best coarse trials)."""
    study = stage_study(storage, study_name(cfg, sdir, stage), create=True)
    if stage_info(study) is not None:
        return study
    offset = 0
    if stage == "fine" and "coarse" in cfg.search.stages:
        coarse = stage_study(storage, study_name(cfg, sdir, "coarse"))
        done = sorted((t for t in coarse.trials if t.state == optuna.trial.TrialState.COMPLETE and not
                       t.user_attrs.get("surplus")), key=lambda t: (-(t.value or 0.0), t.number))
        if not done:
            raise BabysitError("no coarse trial finished, so there is nothing to narrow the ranges around; the "
                               f"ranges are too aggressive or the model cannot train (see {sdir.trials} and the "
                               "trials' log.txt); change the space and start a new search.")
        space = narrow(space, [t.params for t in done[: cfg.search.top_k]])
        offset = max(t.number for t in coarse.trials) + 1
        _log.info(f"fine ranges, around the top {min(len(done), cfg.search.top_k)} coarse trials:\n"
                  + "\n".join(f"    {p.text()}" for p in space))
    set_stage(study, space, stage_size(cfg, stage, space), offset, n_train)
    return study


def _run_workers(sdir: SearchDir, stage: str, workers: int, threads: int, deadline: float | None = None) -> None:
    """Run the stage with ``workers`` workers sharing the storage: worker 0 in this process (everything is loaded
    already), workers 1 .. N-1 as processes."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder babysit is imported from
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    sdir.workers.mkdir(parents=True, exist_ok=True)
    for i in range(1, workers):
        sdir.worker_ready(i).unlink(missing_ok=True)
    procs = [subprocess.Popen([sys.executable, "-m", "babysit.tune.worker", str(sdir.path), stage, str(i),
                               str(threads), str(os.getpid()), "none" if deadline is None else repr(deadline)],
                              env=env) for i in range(1, workers)]

    def others_ready() -> None:
        """Start together: the processes take seconds to import torch, and the first trials should not all go
        to this worker (wait at most READY_WAIT seconds, and not for a process that already stopped)."""
        deadline = time.monotonic() + READY_WAIT
        while time.monotonic() < deadline and not all(
                sdir.worker_ready(i).exists() or p.poll() is not None for i, p in enumerate(procs, 1)):
            time.sleep(0.1)

    try:
        run_worker(sdir, stage, 0, threads, others_ready, deadline)
        codes = [p.wait() for p in procs]
    except (Interrupted, KeyboardInterrupt):  # Ctrl-C reached the workers too: let them record it, then stop
        for p in procs:
            p.wait()
        raise
    except BaseException:
        for p in procs:  # this process failed: the others stop with it (their trials rerun on --resume)
            p.terminate()
            p.wait()
        raise
    if any(c == 130 for c in codes):
        raise KeyboardInterrupt
    bad = [(i + 1, c) for i, c in enumerate(codes) if c != 0]
    if bad:
        i, c = bad[0]
        raise BabysitError(f"search worker {i} stopped with exit code {c} (its error is printed above; its trials in "
                           f"{sdir.worker_log(i)}); fix it and continue with `babysit search --resume {sdir.path}`.")


def _finish(cfg: C.RunConfig, sdir: SearchDir, storage: optuna.storages.BaseStorage) -> tuple[list[TrialRow],
                                                                                           TrialRow | None, Path]:
    from babysit.review.searchreport import write_search_report

    rows, keys = collect(sdir, cfg, storage)
    write_table(sdir, rows, keys)
    best = best_row(rows)
    if best is not None:
        write_best(sdir, cfg, best)
    return rows, best, write_search_report(sdir)


def search(cfg: C.RunConfig | None = None, space: list[str] | tuple[str, ...] | None = None,
           out: str | Path = "search", resume: str | Path | None = None, workers: int | None = None,
           deadline: Callable[[str], float | None] | None = None) -> SearchResult:
    """Run (or with ``resume``, continue) a search; ``space`` replaces cfg.search.space, ``workers``
    cfg.search.workers. ``deadline(stage)``, asked as each stage starts, gives the time.time() after which the
    stage starts no new trial (babysit recipe's time budget; None: no limit). Returns the studies, the trials
    and the best one (also written to search/NAME)."""
    if resume is not None:
        sdir = SearchDir.open(resume)
        cfg = C.load_toml(sdir.config)
    else:
        cfg = cfg if cfg is not None else C.RunConfig()
        if space is not None:
            cfg = replace(cfg, search=replace(cfg.search, space=tuple(space)))
    if workers is not None:
        cfg = replace(cfg, search=replace(cfg.search, workers=workers))
    cfg = concrete_epochs(cfg)  # auto epochs: fixed once for the full data, so every stage shares the same number
    parsed, n_train, _ = check_search(cfg)
    n_workers = cfg.search.workers
    threads = cfg.train.threads or max(1, cpu_threads() // n_workers)
    if resume is None:
        sdir = _folder(cfg, out)
        atomic_write_text(sdir.config, C.dumps_toml(cfg))
    storage = open_storage(storage_url(cfg, sdir))
    _log.info(format_plan(cfg, sdir, parsed, n_train, n_workers, threads))
    if cfg.monitor.checks:
        _sanity_checks(cfg, sdir, threads)
    studies: dict[str, optuna.Study] = {}
    try:
        for stage in cfg.search.stages:
            study = _prepare(cfg, sdir, storage, stage, parsed, n_train)
            _write_space(sdir, cfg, storage, n_train)
            for number in abandon_dead(study):
                _log.info(f"  {stage} trial {number} was left running by a killed worker: marked FAIL, queued again")
            _log.info(f"{stage} stage: {stage_info(study)['trials']} trials")
            _run_workers(sdir, stage, n_workers, threads, deadline(stage) if deadline is not None else None)
            studies[stage] = study
    except (Interrupted, KeyboardInterrupt) as e:
        _finish(cfg, sdir, storage)
        signum = e.exit_code - 128 if isinstance(e, Interrupted) else 2
        raise Interrupted(f"search interrupted; the finished trials are kept in {sdir.trials}: continue with "
                          f"`babysit search --resume {sdir.path}`.", signum) from None
    except BabysitError:
        _finish(cfg, sdir, storage)
        raise
    rows, best, report = _finish(cfg, sdir, storage)
    if best is not None:
        test = f", test {best.test_acc:.4f}" if best.test_acc is not None else ""
        _log.info(f"best: trial {best.number} ({best.stage}), val {best.val_acc:.4f}{test}: "
                  + ", ".join(f"{k}={v}" for k, v in best.params.items()) + f"\nconfig: {sdir.best} (babysit train "
                  f"--config {sdir.best}); table: {sdir.trials}; report: {report}")
    else:
        _log.info(f"no trial finished; see {sdir.trials} and {report}")
    return SearchResult(sdir.path, studies, rows, best, best_config(cfg, best) if best else None, report)

