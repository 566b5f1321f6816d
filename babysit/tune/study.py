"""The Optuna side of a search: storage, one study per stage, samplers, pruners, and how many trials a
stage still needs when several workers (processes or machines) share it.

Trial bookkeeping, shared by every worker through the storage:

- A stage wants ``N`` trials. A worker asks for a trial, then counts the live trials numbered before
  it; Optuna numbers trials densely under a lock on the study, so when ``N`` are already there the
  new trial is *surplus*: it is told FAIL, marked, and left out of every table. No trial runs twice and
  no stage runs more than ``N``, however many workers race.
- A trial left RUNNING by a worker that was killed (kill -9, power cut) is *abandoned* when the search
  is resumed: told FAIL with the reason, and its parameters are enqueued so the point is tried again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from babysit import config as C
from babysit.errors import BabysitError
from babysit.rundir import SearchDir, pid_alive
from babysit.tune.space import Param, Space

optuna.logging.set_verbosity(optuna.logging.WARNING)  # babysit prints one line per trial itself

METRIC = "val_acc"
"""What every study maximises: the best validation accuracy of a trial (the mean over folds with K-fold)."""


def storage_url(cfg: C.RunConfig, sdir: SearchDir) -> str:
    """search.storage, or the SQLite file in the search folder."""
    return cfg.search.storage or f"sqlite:///{sdir.storage.resolve()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The RDB storage at ``url``; SQLite waits for a lock instead of failing at once (several local workers
    write to one file). A database that cannot be reached is a BabysitError."""
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except ImportError as e:
        raise BabysitError(f"search.storage {url.split(':')[0]}:// needs a database driver that is missing "
                           f"({e}); install it (pip install 'psycopg[binary]') or leave search.storage out.") from None
    except Exception as e:  # noqa: BLE001 - sqlalchemy's many connection errors
        raise BabysitError(f"cannot open the search storage {url!r} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                           "check the URL, that the database server runs and accepts this user.") from None


def study_name(cfg: C.RunConfig, sdir: SearchDir, stage: str) -> str:
    """One study per stage; workers on other machines join it by using the same search.name and storage."""
    return f"{cfg.search.name or sdir.path.name}/{stage}"


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid sampler, without its ``study.stop()`` once the grid is walked (only allowed inside
    ``study.optimize``; here the stage's trial count, at most the grid's size, ends the stage)."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        return None


def make_sampler(cfg: C.RunConfig, space: Space, seed: int) -> optuna.samplers.BaseSampler:
    kind = cfg.search.sampler
    if kind == "grid":
        return _Grid({p.key: list(p.choices) for p in space}, seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # the liar: parallel workers spread out
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(cfg: C.RunConfig) -> optuna.pruners.BasePruner:
    """median: stop a trial whose val accuracy at an epoch is below the median of the earlier trials at that
    epoch; asha: successive halving (keep the top 1/4 at each rung of epochs)."""
    kind = cfg.search.pruner
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3)
    if kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def stage_study(storage: optuna.storages.BaseStorage, name: str, sampler: optuna.samplers.BaseSampler | None = None,
                pruner: optuna.pruners.BasePruner | None = None, create: bool = False) -> optuna.Study:
    if create:
        return optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                   sampler=sampler, pruner=pruner)
    return optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)


def find_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return stage_study(storage, name)
    except KeyError:
        return None


def stage_info(study: optuna.Study) -> dict[str, Any] | None:
    """What a stage was set up with, kept with its study so every worker (and machine) uses the same: "space"
    (the ranges), "trials" (how many), "offset" (its first trial's number across stages), "n_train"."""
    return study.user_attrs.get("stage")


def stage_space(info: dict[str, Any]) -> Space:
    return tuple(Param.from_json(d) for d in info["space"])


def set_stage(study: optuna.Study, space: Space, trials: int, offset: int, n_train: int) -> dict[str, Any]:
    """Record a stage's set-up once (one write); returns what the study holds."""
    info = stage_info(study)
    if info is None:
        info = {"space": [p.to_json() for p in space], "trials": trials, "offset": offset, "n_train": n_train}
        study.set_user_attr("stage", info)
    return info


def abandoned(attrs: dict[str, Any]) -> dict[str, str]:
    """Trial number (as text) -> why it was abandoned, for the trials of killed workers, from the study's user
    attributes (a trial stopped by Ctrl-C says so itself, in its user attribute "abandoned")."""
    return dict(attrs.get("abandoned", {}))


def live(t: FrozenTrial, gone: dict[str, str]) -> bool:
    """A trial that counts towards the stage: not surplus, not abandoned (its parameters were queued again)."""
    return not t.user_attrs.get("surplus") and not t.user_attrs.get("abandoned") and str(t.number) not in gone


def slots_left(study: optuna.Study) -> bool:
    """Whether a worker should ask for another trial (a waiting, enqueued trial always gets one)."""
    attrs, trials = study.user_attrs, study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return True
    gone = abandoned(attrs)
    return sum(live(t, gone) for t in trials) < int(attrs["stage"]["trials"])


def is_surplus(study: optuna.Study, number: int) -> bool:
    """Trial ``number`` came after the stage was full (another worker took the last slot first)."""
    attrs, trials = study.user_attrs, study.get_trials(deepcopy=False)
    gone = abandoned(attrs)
    return sum(live(t, gone) for t in trials if t.number < number) >= int(attrs["stage"]["trials"])


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_here(worker: str | None) -> bool:
    """The worker ran on this machine and is gone (a trial without one was killed before it said)."""
    if not worker:
        return True
    host, _, pid = worker.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def abandon_dead(study: optuna.Study) -> list[int]:
    """Mark the RUNNING trials of dead local workers abandoned (FAIL) and enqueue their parameters again;
    returns their numbers."""
    gone = abandoned(study.user_attrs)
    found = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if dead_here(t.user_attrs.get("worker")):
            gone[str(t.number)] = (f"its worker ({t.user_attrs.get('worker', 'unknown')}) was killed mid-trial; "
                                   "the same parameters were queued again")
            study.tell(t.number, state=TrialState.FAIL)
            if t.params:
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            found.append(t.number)
    if found:
        study.set_user_attr("abandoned", gone)
    return found


def stage_trials(study: optuna.Study) -> Iterator[tuple[FrozenTrial, str]]:
    """The trials of a stage that belong in the table, with the abandoned reason ('' if none)."""
    gone = abandoned(study.user_attrs)
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):
            continue
        yield t, gone.get(str(t.number), t.user_attrs.get("abandoned", ""))


def relative(path: Path, sdir: SearchDir) -> str:
    return os.path.relpath(path, sdir.path)
