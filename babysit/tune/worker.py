"""A search worker: ask the stage's study for a trial, train it, tell the result, until the stage is full.

The notes' "make a worker and master": the master (babysit.tune.search) prepares each stage and starts
``search.workers`` of these, in this process when there is one, else as processes

    python -m babysit.tune.worker SEARCH_DIR STAGE INDEX THREADS PARENT_PID [DEADLINE]

that share the study through its storage (SQLite in the search folder, or search.storage). A worker
whose master dies (kill -9) stops too; its unfinished trial is abandoned and rerun on --resume.

Cores: every worker trains with THREADS = ``train.threads``, else ($OMP_NUM_THREADS or the cores this process may
use) // ``search.workers`` (search.py), so the workers together ask for no more threads than there are cores.
DDP ranks under torchrun split a machine the same way (start.cpu_threads: the cores // LOCAL_WORLD_SIZE); a
search is not meant to run under torchrun.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from babysit import config as C
from babysit.errors import BabysitError, Interrupted
from babysit.log import get_logger
from babysit.rundir import SearchDir
from babysit.tune.space import show
from babysit.tune.study import (
    is_surplus,
    make_pruner,
    make_sampler,
    open_storage,
    relative,
    slots_left,
    stage_info,
    stage_space,
    stage_study,
    storage_url,
    study_name,
    worker_id,
)
from babysit.tune.table import refresh_table
from babysit.tune.trial import Outcome, budget, run_trial

_log = get_logger(__name__)


def say(sdir: SearchDir, index: int, line: str) -> None:
    """Print a line and keep it in workers/worker-I.log."""
    _log.info(line)
    sdir.workers.mkdir(parents=True, exist_ok=True)
    with open(sdir.worker_log(index), "a") as f:
        f.write(line + "\n")


def _seed(cfg: C.RunConfig, stage: str, index: int, asked: int) -> int:
    """The sampler's seed: a fresh single-worker search draws the same trials every time; other workers and a
    resumed search draw other ones."""
    return (cfg.train.seed * 1_000_003 + (stage == "fine") * 7_919 + index * 104_729 + asked) % 2**32


def _record(trial: optuna.Trial, out: Outcome, sdir: SearchDir) -> None:
    """The outcome on the trial, in one write (trials.csv is made from it)."""
    trial.set_user_attr("outcome", {
        "state": out.state, "reason": out.reason, "val_acc": out.val_acc, "val_acc_std": out.val_acc_std,
        "test_acc": out.test_acc, "epochs": out.epochs, "seconds": round(out.seconds, 3),
        "fold_val_accs": out.fold_val_accs, "run_dir": relative(out.run_dir, sdir) if out.run_dir else ""})


def _tell(study: optuna.Study, trial: optuna.Trial, out: Outcome) -> None:
    """COMPLETE with its score; PRUNED as itself; KILLED as PRUNED, so TPE learns the region is bad (a FAIL it
    would ignore); FAIL as FAIL."""
    if out.state == "COMPLETE":
        study.tell(trial, out.val_acc)
    elif out.state in ("PRUNED", "KILLED"):
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)


def describe(stage: str, number: int, out: Outcome, params: dict[str, Any]) -> str:
    """The one line a finished trial prints."""
    values = " ".join(f"{k}={show(v)}" for k, v in params.items())
    if out.state in ("COMPLETE", "PRUNED"):
        spread = f" +- {out.val_acc_std:.4f}" if out.val_acc_std is not None else ""
        test = f" test {out.test_acc:.4f}" if out.test_acc is not None else ""
        what = (f"val {out.val_acc:.4f}{spread}{test}, {out.epochs} epoch(s)"
                + (f" ({out.reason})" if out.state == "PRUNED" else ""))
    else:
        what = out.reason
    return f"  {stage} trial {number}: {out.state:<8} {what}, {out.seconds:.1f} s | {values}"


def out_of_time(deadline: float | None, seconds: list[float]) -> bool:
    """No new trial once the clock (time.time()) has passed ``deadline`` less half a trial (the mean of this
    worker's ``seconds`` so far): the stage ends within about half a trial of its time budget."""
    if deadline is None:
        return False
    return time.time() + 0.5 * (sum(seconds) / len(seconds) if seconds else 0.0) > deadline


def run_worker(sdir: SearchDir, stage: str, index: int, threads: int, ready: Callable[[], None] | None = None,
               deadline: float | None = None) -> int:
    """Run trials of ``stage`` until it has all of its trials, or until ``deadline`` (a time.time() value; see
    out_of_time); returns how many this worker ran. ``ready`` is called once the storage is open, before the
    first trial."""
    cfg = C.load_toml(sdir.config)
    storage = open_storage(storage_url(cfg, sdir))
    if ready is not None:
        ready()
    name = study_name(cfg, sdir, stage)
    probe = stage_study(storage, name)
    info = stage_info(probe)
    space = stage_space(info)
    study = stage_study(storage, name, make_sampler(cfg, space, _seed(cfg, stage, index, len(probe.trials))),
                        make_pruner(cfg))
    offset, n_train = int(info["offset"]), int(info["n_train"])
    b = budget(cfg, stage)
    dists = {p.key: p.distribution() for p in space}
    ran, seconds = 0, []
    while slots_left(study):
        if out_of_time(deadline, seconds):
            say(sdir, index, f"  {stage}: the stage's time is spent; no new trial after {ran} here")
            break
        trial = study.ask(dists)
        if is_surplus(study, trial.number):  # another worker took the last slot first
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            break
        trial.set_user_attr("worker", worker_id())
        number = offset + trial.number
        paths = [sdir.trial(number)] if not cfg.search.folds else [sdir.trial(number, k)
                                                                    for k in range(cfg.search.folds)]
        try:
            out = run_trial(cfg, trial.params, b, paths, n_train, threads, trial, prune=cfg.search.pruner != "none")
        except (Interrupted, KeyboardInterrupt):
            trial.set_user_attr("abandoned", "interrupted (Ctrl-C or SIGTERM); the same parameters were queued again")
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        _record(trial, out, sdir)
        _tell(study, trial, out)
        seconds.append(out.seconds)
        say(sdir, index, describe(stage, number, out, trial.params))
        refresh_table(sdir, cfg, storage)
        ran += 1
    return ran


def _watch_parent(parent: int) -> None:
    """Exit when the master is gone (killed with -9): the unfinished trial is rerun on --resume."""
    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    folder, stage, index, threads, parent = args[:5]
    deadline = float(args[5]) if len(args) > 5 and args[5] != "none" else None
    _watch_parent(int(parent))
    try:
        sdir = SearchDir(Path(folder))
        run_worker(sdir, stage, int(index), int(threads), lambda: sdir.worker_ready(int(index)).touch(), deadline)
    except (Interrupted, KeyboardInterrupt):
        return 130
    except BabysitError as e:
        print(f"babysit search worker {index}: error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
