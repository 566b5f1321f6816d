"""Where an ensemble's members come from: the notes' list of cheap and less cheap ensembles.

    runs            run directories given by hand (same model, different models, ...)
    seeds           one config trained with several seeds (different initialisations and batch orders)
    search          the top trials of a `babysit search` (the best models found by cross-validation)
    snapshots       the cycle-end snapshots of one cosine-restarts run (snapshot ensembles, one run's cost)
    last-epochs     the last epochs' weights of one run (checkpoint.keep_last; "different checkpoints")

A member is a run directory and which of its weights to use (best, ema, swa, snapshot-N, epoch-N).
Every member must have been scored on the same validation and test images: the same data set, split
fractions and split seed (``data.split_seed``; by default ``train.seed``, so ``--seeds`` pins it).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

from babysit import config as C
from babysit.data.split import split_seed
from babysit.errors import BabysitError
from babysit.log import get_logger
from babysit.models.auto import is_named
from babysit.rundir import RunDir, SearchDir

_log = get_logger(__name__)

SOURCES = ("runs", "seeds", "search", "snapshots", "last-epochs")  # the last: --checkpoints=RUN --last=k


@dataclass(frozen=True)
class Member:
    """One model of an ensemble: a run directory and which of its weights."""

    run: Path
    weights: str = "best"

    @property
    def label(self) -> str:
        return self.run.name if self.weights == "best" else f"{self.run.name}:{self.weights}"


def check_choice(runs: list[str], seeds: int, search: str | None, snapshots: str | None, checkpoints: str | None,
                 top: int | None, last: int | None, overrides: bool) -> str:
    """Exactly one source of members, and only the options that belong to it; returns the source's name.
    (Plain Python, so the command answers a mistake before it loads torch.)"""
    given = [name for name, value in zip(SOURCES, (runs, seeds, search, snapshots, checkpoints)) if value]
    if len(given) != 1:
        raise BabysitError("give the members one way: run directories, --seeds=N, --search=DIR, --snapshots=RUN or "
                           f"--checkpoints=RUN (got {', '.join(given) if given else 'none'}).")
    source = given[0]
    if seeds < 0 or (seeds and seeds < 2):
        raise BabysitError(f"--seeds needs at least 2 seeds for an ensemble, got {seeds}.")
    if top is not None and source != "search":
        raise BabysitError("--top picks the best trials of --search=DIR; drop it or add --search.")
    if last is not None and source != "last-epochs":
        raise BabysitError("--last picks the last epochs of --checkpoints=RUN; drop it or add --checkpoints.")
    if overrides and source != "seeds":
        raise BabysitError("--config and the --section.key options configure the runs --seeds=N trains; the "
                           "other members are trained already, so drop them.")
    if source == "runs" and len(runs) < 2:
        raise BabysitError(f"an ensemble needs at least 2 members, got 1 run ({runs[0]}); add more runs.")
    for name, value in (("--top", top), ("--last", last)):
        if value is not None and value < 2:
            raise BabysitError(f"{name} must be at least 2 (an ensemble of one model is that model), got {value}.")
    return source


def from_runs(paths: list[str | Path], weights: str = "best") -> list[Member]:
    """Run directories given by hand, each with ``weights``."""
    return [Member(RunDir.open(p).path, weights) for p in paths]


def from_snapshots(run: str | Path) -> list[Member]:
    """The cycle-end snapshots of a cosine-restarts run."""
    r = RunDir.open(run)
    found = RunDir.numbered(r.snapshots)
    if len(found) < 2:
        raise BabysitError(f"run {str(r.path)!r} has {len(found)} snapshot(s); a snapshot ensemble needs a run trained "
                           "with --schedule.name=cosine-restarts --schedule.cycles=M (M >= 2).")
    return [Member(r.path, f"snapshot-{n}") for n, _ in found]


def from_checkpoints(run: str | Path, last: int) -> list[Member]:
    """The weights of the last ``last`` epochs a run kept (checkpoint.keep_last)."""
    r = RunDir.open(run)
    found = RunDir.numbered(r.epochs)
    if len(found) < last:
        raise BabysitError(f"run {str(r.path)!r} kept the weights of {len(found)} epoch(s), fewer than --last={last}; "
                           f"use --last={len(found)} or train with --checkpoint.keep_last={last}."
                           if found else f"run {str(r.path)!r} kept no epoch weights; train it with "
                           f"--checkpoint.keep_last={last} to ensemble its last epochs.")
    return [Member(r.path, f"epoch-{n}") for n, _ in found[-last:]]


def from_search(search: str | Path, top: int) -> list[Member]:
    """The ``top`` finished trials of a search by validation accuracy (ties: the earlier trial)."""
    folder = Path(search)
    table = SearchDir(folder).trials
    if not table.is_file():
        raise BabysitError(f"{str(folder)!r} has no {table.name}; pass the folder `babysit search` wrote "
                           "(search/NAME).")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"number", "state", "val_acc", "run_dir"} - set(rows[0] if rows else {})
    if rows and missing:
        raise BabysitError(f"{table} lacks the columns {', '.join(sorted(missing))}; is it a `babysit search` table?")
    done = []
    for row in rows:
        try:
            acc = float(row["val_acc"])
        except ValueError:
            continue
        if row["state"] == "COMPLETE" and row["run_dir"]:
            done.append((-acc, int(row["number"]), row["run_dir"]))
    if len(done) < 2:
        raise BabysitError(f"{table} has {len(done)} finished trial(s); an ensemble needs at least 2, so let the "
                           "search run longer (`babysit search --resume DIR`).")
    return [Member(RunDir.open(folder / run_dir).path) for _, _, run_dir in sorted(done)[:top]]


def seed_configs(cfg: C.RunConfig, seeds: int) -> list[C.RunConfig]:
    """The runs of a seeds ensemble: train.seed, +1, ... with the split pinned to the first run's, so every member
    is scored on the same validation and test images."""
    pinned = replace(cfg.data, split_seed=split_seed(cfg))
    return [replace(cfg, data=pinned, train=replace(cfg.train, seed=cfg.train.seed + i)) for i in range(seeds)]


def same_run(saved: C.RunConfig, wanted: C.RunConfig) -> bool:
    """A run's config.toml is ``wanted``, its automatic values aside (a spec name such as auto, batch size or epochs 0:
    the run records them made concrete)."""
    if is_named(wanted.model.spec):
        saved = replace(saved, model=replace(saved.model, spec=wanted.model.spec))
    if wanted.train.batch_size == 0:
        saved = replace(saved, train=replace(saved.train, batch_size=0))
    if wanted.train.epochs == 0:
        saved = replace(saved, train=replace(saved.train, epochs=0))
    return saved == wanted


def train_seeds(cfg: C.RunConfig, seeds: int, folder: Path) -> list[Member]:
    """Train the seeds' runs into ``folder``/seed-S; a run that is there already is reused (finished) or resumed
    (killed), so a killed ``--seeds`` ensemble continues where it stopped."""
    from babysit.experiment import train

    members = []
    for member_cfg in seed_configs(cfg, seeds):
        run = RunDir(folder / f"seed-{member_cfg.train.seed}")
        if run.config.is_file():
            if not same_run(C.load_toml(run.config), member_cfg):
                raise BabysitError(f"{str(run.path)!r} holds a run with another config; choose another --name for "
                                   "this ensemble.")
            if not run.result.is_file():
                _log.info(f"resuming member {run.path.name}")
                train(member_cfg, resume=run.path)
        else:
            _log.info(f"training member {run.path.name} ({len(members) + 1} of {seeds})")
            train(member_cfg, out=folder, name=run.path.name)
        members.append(Member(run.path))
    return members
