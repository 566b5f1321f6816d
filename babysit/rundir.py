"""The run directory: the one interface between training and everything after it.

Every file and folder of a run is declared once, as a property of :class:`RunDir` (``run.meta`` is
RUN/meta.json); no other module spells a run file's name (tests/test_rundir_wall.py checks it).
Layout::

    RUN/config.toml            resolved config (every key, defaults included)
    RUN/spec.txt               the model spec, as parsed and printed back
    RUN/meta.json              seed, versions, git commit, data source, class names, split sizes
    RUN/result.json            best val accuracy, its epoch, test accuracy, wall time
    RUN/history.jsonl          one JSON object per step / epoch, append-only
    RUN/train.lock             the PID of the process training the run, under an OS lock (flock)
    RUN/preprocess.safetensors statistics fitted on the training split
    RUN/checkpoints/last.safetensors  everything needed to resume (weights, optimiser, RNG, position)
    RUN/checkpoints/best.safetensors  the weights with the best validation accuracy (train.monitor)
    RUN/checkpoints/ema.safetensors   the moving average of the weights at its best validation score (train.ema)
    RUN/checkpoints/swa.safetensors   the weights averaged over the last epochs, BN recomputed (train.swa_epochs)
    RUN/checkpoints/snapshots/        the weights at the end of each cosine-restarts cycle (snapshot ensembles)
    RUN/checkpoints/epochs/           the weights of the last checkpoint.keep_last epoch ends
    RUN/teacher.safetensors    distillation: the teacher's soft targets for every training image
    RUN/checks.json            the sanity checks before training
    RUN/findings.json          the diagnoses in words
    RUN/report.html            the self-contained report
    RUN/stats/                 layer statistics, first-layer filters, validation analysis, augmented images
    RUN/events/                TensorBoard event files (monitor.tensorboard)
    RUN/baseline.json          a classical baseline's result (`babysit baseline`; two-layer: beside a training run)
    RUN/cv.csv, RUN/cv.png     its cross-validation table and picture (knn)
    RUN/log.txt                what the run printed, when a search ran it as a trial

A hyper-parameter search (``babysit search``) has a folder of its own, declared the same way by
:class:`SearchDir`: search.toml, study.db, space.json, trials.csv, best.toml, report.html, checks/
(the sanity checks' run), workers/ (each worker's output) and trials/NNNN (one run directory per trial).

Crash safety. Every file except the history is written atomically: a temporary file in the same
folder (named ``.<name>.<pid>.<random>.tmp``), fsynced, renamed over the old file, and the folder
fsynced; a kill at any moment leaves the old file or the new one, never a mix. A write that fails
(disk full, read-only folder) removes its temporary file and raises a :class:`BabysitError`.
Temporary files orphaned by a SIGKILL are removed when the run is next opened for writing.
history.jsonl is only ever appended to; a torn last line (a kill mid-append) is ignored on read
and cut off before the next append.

Power loss. The history is fsynced once per checkpoint, just before the checkpoint is written (not per line:
that costs a disk flush per logged step), so after a power cut every record up to the last checkpoint's step
is on disk. What came after it may be missing, complete, torn, or a run of NUL bytes (a file system that had
grown the file but not written its data); on resume the unfinished tail is cut at the last newline, unreadable
lines are skipped, and the ``resume`` record drops every record of a step after the checkpoint's, so the
history continues exactly from the checkpoint, each step once.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, overload

from babysit.errors import BabysitError
from babysit.limits import HISTORY_FILE, read_bounded, read_small_text

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask once: temporary files are created 0600, renamed files should not be


def write_error(path: Path, e: OSError) -> BabysitError:
    """The one sentence for a file babysit could not write (disk full, read-only, not a folder)."""
    why = e.strerror or type(e).__name__
    return BabysitError(f"cannot write {path} ({why}); free disk space or pick a writable --out, then run again "
                        "(an interrupted run continues with `babysit train --resume RUN`).")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one.

    Temporary file in the same folder, ``fsync``, ``os.replace``, then ``fsync`` of the folder so
    the rename itself survives a power cut. On any error the temporary file is removed.
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def read_history(path: Path) -> list[dict[str, Any]]:
    """Read history.jsonl; a torn last line (a kill mid-write) and any other unreadable line are ignored.

    A ``{"kind": "resume", "step": S}`` record drops the earlier records of steps after ``S``:
    those steps were lost with the crash and are logged again by the resumed run.
    """
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    # bounded: a history replaced by /dev/zero, a FIFO or a huge file is refused, not read forever
    for line in read_bounded(path, HISTORY_FILE).decode(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        if rec.get("kind") == "resume" and isinstance(rec.get("step"), int):
            records = [r for r in records if r.get("step", 0) <= rec["step"]]
        records.append(rec)
    return records


def open_nofollow(path: Path, flags: int, mode: str) -> Any:
    """``open(path, mode)`` for a run file babysit appends to or truncates, refusing a symlink: a history.jsonl
    replaced by a link would otherwise make a resume truncate or grow the file the link points to."""
    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BabysitError(f"{path} is a symbolic link, not the run's own file; replace it with the run's file "
                               "(or delete it) and run again.") from None
        raise
    return os.fdopen(fd, mode)


def _cut_torn_tail(path: Path) -> None:
    """Drop an unfinished last line (no trailing newline) so the next append starts a fresh line."""
    try:
        with open_nofollow(path, os.O_RDWR, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            keep = 0
            pos = size
            while pos > 0:  # scan back in blocks for the last newline
                step = min(4096, pos)
                pos -= step
                f.seek(pos)
                block = f.read(step)
                i = block.rfind(b"\n")
                if i >= 0:
                    keep = pos + i + 1
                    break
            f.truncate(keep)
    except FileNotFoundError:
        return


def named_dir(out: str | Path, name: str, option: str = "--name") -> Path:
    """``out/name``, refused unless it stays inside ``out``: an absolute name or a ``..`` part would make (and
    later resume, truncate or delete) a folder anywhere the user can write. Sub-folders (``exp/run1``) are fine."""
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts or "\0" in name or name.strip() in ("", "."):
        shown = name.encode("utf-8", "replace").decode()
        raise BabysitError(f"{option} {shown!r} would not name a folder inside {str(out)!r}; give a plain name such "
                           "as exp1 (use --out to choose where it goes).")
    return Path(out) / name


@contextmanager
def new_folder(path: Path) -> Iterator[Path]:
    """Make ``path`` (parents too) for the block's first writes; if the block fails (disk full, no inodes), the
    folders made here are removed again, so a failed start leaves nothing that looks like a search or recipe."""
    made = [q for q in (path, *path.parents) if not q.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        yield path
    except BaseException as e:
        if made:
            shutil.rmtree(made[-1], ignore_errors=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_LOCKS: dict[str, int] = {}  # run folder (real path) -> descriptor holding its flock, for this process

WEIGHTS = "best, last, ema, swa, snapshot-N or epoch-N"
"""The names of a run's sets of weights (:meth:`RunDir.weights_file`)."""


class RunPath:
    """One file or folder of a run, declared on :class:`RunDir`: ``run.<name>`` is its path in that run."""

    def __init__(self, rel: str, doc: str, root: str = "RUN") -> None:
        self.rel = rel  # relative to the run directory, "/"-separated
        self.__doc__ = f"{root}/{rel}: {doc}"

    @overload
    def __get__(self, run: None, owner: type) -> RunPath: ...
    @overload
    def __get__(self, run: RunDir, owner: type) -> Path: ...
    def __get__(self, run: RunDir | None, owner: type) -> RunPath | Path:
        return self if run is None else run.path / self.rel


class RunDir:
    """Paths and small I/O helpers for one run directory: one property per file or folder."""

    config = RunPath("config.toml", "resolved config (every key, defaults included)")
    spec = RunPath("spec.txt", "the model spec, as parsed and printed back")
    meta = RunPath("meta.json", "seed, versions, git commit, data source, class names, split sizes")
    result = RunPath("result.json", "best val accuracy, its epoch, test accuracy, wall time")
    history = RunPath("history.jsonl", "one JSON object per step / epoch, append-only")
    preprocess = RunPath("preprocess.safetensors", "preprocessing statistics fitted on the training split")
    checkpoints = RunPath("checkpoints", "the folder of the two checkpoints")
    last = RunPath("checkpoints/last.safetensors", "everything needed to resume (weights, optimiser, RNG, position)")
    best = RunPath("checkpoints/best.safetensors", "the weights with the best validation score (train.monitor)")
    best_ema = RunPath("checkpoints/ema.safetensors", "the moving average of the weights (train.ema) at its best "
                       "validation score")
    swa = RunPath("checkpoints/swa.safetensors", "the weights averaged over the last train.swa_epochs epoch ends, "
                  "batch-norm statistics recomputed")
    snapshots = RunPath("checkpoints/snapshots", "the weights at the end of each cosine-restarts cycle")
    epochs = RunPath("checkpoints/epochs", "the weights of the last checkpoint.keep_last epoch ends")
    teacher = RunPath("teacher.safetensors", "distillation: the teacher's soft targets for every training image")
    checks = RunPath("checks.json", "the sanity checks: verdicts and numbers")
    findings = RunPath("findings.json", "the diagnoses (observation -> likely cause -> next action)")
    report = RunPath("report.html", "the self-contained HTML report")
    stats = RunPath("stats", "the folder of what the report shows besides the history")
    layers = RunPath("stats/layers.json", "layer-statistics records of the probes, bounded in number")
    histograms = RunPath("stats/histograms.json", "activation / gradient histogram snapshots, bounded in number")
    filters = RunPath("stats/filters.png", "the first layer's filters at the end of training (while it runs: redrawn "
                      "every 30 s or so)")
    filters_initial = RunPath("stats/filters_initial.png", "the first layer's filters at initialisation")
    first_layer = RunPath("stats/first_layer.safetensors", "the first weighted layer's weights at initialisation and "
                          "at the last epoch end (the report draws both on one scale)")
    confusion = RunPath("stats/confusion.json", "val confusion matrix, per-class accuracy, most-confused pairs")
    confused = RunPath("stats/confused.npz", "example val images (uint8) of each most-confused pair")
    augment = RunPath("stats/augment.png", "training images as the first augmented batches show them")
    events = RunPath("events", "the folder of TensorBoard event files")
    transfer = RunPath("transfer.json", "a fine-tune run's origin: source run and data, strategy, and what "
                       "transfer.strategy=auto measured and chose")
    log = RunPath("log.txt", "what the run printed, when a hyper-parameter search ran it as one of its trials")
    lock = RunPath("train.lock", "the PID of the process training the run; an OS lock on it refuses a second one")

    baseline = RunPath("baseline.json", "a classical baseline's result: name, chosen settings, val/test accuracy, "
                       "seconds, cross-validation table")
    cv_table = RunPath("cv.csv", "a baseline's cross-validation accuracies, one row per setting and fold")
    cv_plot = RunPath("cv.png", "cross-validation accuracy against k, each fold and mean +- std (the notes' picture)")

    def snapshot(self, cycle: int) -> Path:
        """The snapshot file of cosine-restarts cycle ``cycle`` (1, 2, ...)."""
        return self.snapshots / f"cycle-{cycle:03d}.safetensors"

    def epoch_weights(self, epoch: int) -> Path:
        """The kept weights of epoch ``epoch`` (1, 2, ...; checkpoint.keep_last)."""
        return self.epochs / f"epoch-{epoch:03d}.safetensors"

    def weights_file(self, name: str = "best") -> Path:
        """A set of the run's weights by name: best (the last checkpoint while there is no best), last, ema, swa,
        snapshot-N or epoch-N; a missing one is a BabysitError saying which option makes it."""
        kind, _, number = name.partition("-")
        named = {"best": self.best if self.best.exists() else self.last, "last": self.last, "ema": self.best_ema,
                 "swa": self.swa}
        if name in named:
            path = named[name]
        elif kind in ("snapshot", "epoch") and number.isdigit():
            path = self.snapshot(int(number)) if kind == "snapshot" else self.epoch_weights(int(number))
        else:
            raise BabysitError(f"unknown weights {name!r}; use {WEIGHTS}.")
        made_by = {"ema": "--train.ema=0.999", "swa": "--train.swa_epochs=N",
                   "snapshot": "--schedule.name=cosine-restarts --schedule.cycles=M",
                   "epoch": "--checkpoint.keep_last=N"}.get(kind)
        if made_by and not path.is_file():  # (a missing best or last is the checkpoint reader's "does not exist")
            raise BabysitError(f"run {str(self.path)!r} has no {name} weights; the run was not trained with {made_by}.")
        return path

    @staticmethod
    def numbered(folder: Path) -> list[tuple[int, Path]]:
        """The (number, file) pairs of :meth:`snapshot` or :meth:`epoch_weights` files in ``folder``, in order."""
        found = []
        for p in folder.glob("*-*.safetensors") if folder.is_dir() else []:
            number = p.name.removesuffix(".safetensors").rpartition("-")[2]
            if number.isdigit() and not p.name.startswith("."):
                found.append((int(number), p))
        return sorted(found)

    @classmethod
    def layout(cls) -> dict[str, str]:
        """Every declared file and folder: property name -> path relative to the run directory."""
        return {name: v.rel for name, v in vars(cls).items() if isinstance(v, RunPath)}

    @classmethod
    def of(cls, run: RunDir | str | Path) -> RunDir:
        """``run`` itself when it is a RunDir, else the RunDir at that path (not checked: see :meth:`open`)."""
        return run if isinstance(run, RunDir) else cls(run)

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._history_checked = False
        self._undo: Path | None = None  # the topmost folder create() made
        self._before: set[str] | None = None  # entries of the run folder before create(), when it existed

    @classmethod
    def create(cls, path: str | Path, checkpoints: bool = True) -> RunDir:
        """Make a new run directory (its parents too); refuses one that already holds a run. ``checkpoints=False``
        leaves out the checkpoints folder (a result directory without weights, e.g. a kNN baseline)."""
        p = Path(path)
        blocker = next((q for q in (p, *p.parents) if q.exists() and not q.is_dir()), None)
        if blocker is not None:
            raise BabysitError(f"{str(blocker)!r} is a file, so run directory {str(p)!r} cannot be made there; "
                               "choose another --out or --name.")
        if cls(p).config.exists():
            raise BabysitError(f"run directory {str(p)!r} already holds a run; resume it with "
                               f"`babysit train --resume {p}` or choose another --name.")
        before = {q.name for q in p.iterdir()} if p.is_dir() else None
        made = [q for q in (p, *p.parents) if not q.exists()]
        run = cls(p)
        run._undo = made[-1] if made else None
        run._before = before
        try:
            (run.checkpoints if checkpoints else p).mkdir(parents=True, exist_ok=True)
            probe = p / f".write-test.{os.getpid()}.probe.tmp"  # removed as an orphan if killed here
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            run.remove_partial()
            raise BabysitError(f"cannot create run directory {str(p)!r} ({e.strerror or e}); "
                               "choose a writable --out.") from None
        return run

    @classmethod
    def open(cls, path: RunDir | str | Path, write: bool = False) -> RunDir:
        """An existing run. With ``write`` (resuming) temporary files orphaned by a killed run are removed."""
        run = cls.of(path)
        p = run.path
        if not run.config.exists():  # a special file is refused by its reader, with its own sentence
            if p.is_dir() and run.checkpoints.is_dir():
                raise BabysitError(f"{str(p)!r} has no config.toml: the run was stopped before it saved its "
                                   "config; start it again with its original options.")
            raise BabysitError(f"{str(p)!r} is not a babysit run directory (no config.toml); "
                               "pass the folder that `babysit train` printed.")
        if write:
            run.remove_orphans()
        return run

    def remove_orphans(self) -> list[Path]:
        """Delete temporary files left by a writer that no longer runs; returns what was removed."""
        removed = []
        for tmp in self.path.rglob(".*.tmp"):
            if tmp.is_file():
                parts = tmp.name.rsplit(".", 3)  # ['.name', pid, random, 'tmp']
                pid = int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None
                if pid is None or pid == os.getpid() or not pid_alive(pid):
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
        return removed

    @contextmanager
    def removed_on_error(self) -> Iterator[RunDir]:
        """Undo :meth:`create` if the block fails, so a failed start (disk full) leaves nothing behind."""
        try:
            yield self
        except BaseException:
            self.release_lock()
            self.remove_partial()
            raise

    def remove_partial(self) -> None:
        """Remove the folders :meth:`create` made, or in a folder that existed, the entries added since."""
        if self._undo is not None:
            shutil.rmtree(self._undo, ignore_errors=True)
        elif self._before is not None and self.path.is_dir():
            for q in self.path.iterdir():
                if q.name in self._before:
                    continue
                if q.is_dir():
                    shutil.rmtree(q, ignore_errors=True)
                else:
                    q.unlink(missing_ok=True)

    def take_lock(self) -> None:
        """Lock the run for this process (an OS file lock, ``flock``), so a second ``train --resume`` of it is
        refused instead of training alongside and logging every step twice. The lock is held until
        :meth:`release_lock` or the process ends; the kernel drops it when the process dies, even by SIGKILL, so
        a killed run never stays locked. Taking it again in the same process is a no-op."""
        import fcntl

        key = os.path.realpath(self.path)
        if key in _LOCKS:
            return
        try:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise write_error(self.lock, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BabysitError(f"run {str(self.path)!r} is being trained by another process (PID {holder}); wait "
                               "for it to finish or stop it, then resume.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _LOCKS[key] = fd

    def release_lock(self) -> None:
        """Drop :meth:`take_lock`'s lock (the file stays; its PID is stale once unlocked)."""
        fd = _LOCKS.pop(os.path.realpath(self.path), None)
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    def append_history(self, record: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Append one JSON line per record (a list is written at once); the first append of this process
        cuts a torn line left by a crash."""
        records = record if isinstance(record, list) else [record]
        try:
            if not self._history_checked:
                _cut_torn_tail(self.history)
                self._history_checked = True
            with open_nofollow(self.history, os.O_WRONLY | os.O_APPEND | os.O_CREAT, "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in records))
        except OSError as e:
            raise write_error(self.history, e) from None

    def sync_history(self) -> None:
        """``fsync`` history.jsonl: called before each checkpoint is written, so after a power cut every record up
        to the last checkpoint's step is on disk (records after it may be lost or torn; a resume drops them
        anyway). Once per checkpoint, not per line: a per-line fsync costs a disk flush per logged step
        (bench/history_fsync.py)."""
        try:
            with open_nofollow(self.history, os.O_RDONLY, "rb") as f:
                os.fsync(f.fileno())
        except FileNotFoundError:
            return
        except OSError as e:
            raise write_error(self.history, e) from None

    def read_history(self) -> list[dict[str, Any]]:
        return read_history(self.history)

    def _file(self, name: str | Path) -> Path:
        """A path given as a property (``run.meta``) is used as is; a name is taken inside the run."""
        return name if isinstance(name, Path) else self.path / name

    def write_json(self, name: str | Path, obj: Any) -> None:
        """Write ``obj`` as indented JSON, atomically, to ``name`` (e.g. ``run.write_json(run.meta, ...)``)."""
        atomic_write_text(self._file(name), json.dumps(obj, indent=2) + "\n")

    def read_json(self, name: str | Path) -> Any:
        """Read a JSON file of the run; a missing or damaged one is a BabysitError saying how to rewrite it."""
        path = self._file(name)
        try:
            return json.loads(read_small_text(path))
        except (OSError, ValueError):
            raise BabysitError(f"{path} is missing or damaged; resume the run with "
                               f"`babysit train --resume {self.path}` to write it again.") from None


class EnsembleDir:
    """An ensemble directory (``babysit ensemble``): its members and their scores. Members trained for it
    (``--seeds``) are run directories inside it."""

    ensemble = RunPath("ensemble.json", "the members (run, weights, share) and the val/test accuracy of each member "
                       "and of the ensemble, with the gains")
    figure = RunPath("ensemble.png", "members against the ensemble: val and test accuracy")

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def layout(cls) -> dict[str, str]:
        return {name: v.rel for name, v in vars(cls).items() if isinstance(v, RunPath)}

    @classmethod
    def holds_one(cls, path: str | Path) -> bool:
        """True when ``path`` is an ensemble directory (it has ensemble.json)."""
        return cls(path).ensemble.is_file()


def _open_folder(found: Any, command: str, example: str) -> Any:
    """``found`` (a SearchDir or RecipeDir) when its config file is there, else the one sentence naming what to pass."""
    if not found.config.is_file():
        raise BabysitError(f"{str(found.path)!r} is not a babysit {command} folder (no {found.config.name}); pass "
                           f"the folder `babysit {command}` printed, e.g. {example}.")
    return found


class SearchDir:
    """The folder of one hyper-parameter search: one property per file, and a run directory per trial."""

    config = RunPath("search.toml", "the base config with its [search] section (what --resume continues)", "SEARCH")
    storage = RunPath("study.db", "the Optuna studies (SQLite), unless search.storage names another database",
                      "SEARCH")
    space = RunPath("space.json", "each stage's ranges as searched (the fine stage's narrowed) and budget", "SEARCH")
    trials = RunPath("trials.csv", "one row per trial: number, stage, state, val_acc, ..., params_KEY", "SEARCH")
    best = RunPath("best.toml", "the best trial's config at the full budget, for `babysit train --config`", "SEARCH")
    report = RunPath("report.html", "the self-contained search report: table, accuracy per parameter, findings",
                     "SEARCH")
    checks = RunPath("checks", "the run directory of the sanity checks, run once for the whole search", "SEARCH")
    runs = RunPath("trials", "the folder of the trials' run directories (trials/NNNN)", "SEARCH")
    workers = RunPath("workers", "the folder of what each worker process printed (worker-I.log)", "SEARCH")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def trial(self, number: int, fold: int | None = None) -> Path:
        """The run directory of trial ``number`` (of fold ``fold`` of it when the search cross-validates)."""
        base = self.runs / f"{number:04d}"
        return base if fold is None else base / f"fold-{fold}"

    def worker_log(self, index: int) -> Path:
        return self.workers / f"worker-{index}.log"

    def worker_ready(self, index: int) -> Path:
        """Made by worker ``index`` once it has loaded everything and opened the storage (a fair start)."""
        return self.workers / f"worker-{index}.ready"

    @classmethod
    def open(cls, path: str | Path) -> SearchDir:
        """An existing search folder (one with search.toml), else a BabysitError naming what to pass."""
        return _open_folder(cls(path), "search", "search/NAME")


class RecipeDir:
    """The folder of one ``babysit recipe``: its config and state, one folder per step's runs, the report."""

    config = RunPath("recipe.toml", "the base config with its [recipe] section (what --resume continues)", "RECIPE")
    state = RunPath("recipe.json", "the budget, the plan, and per step its evidence, decision, outputs and times",
                    "RECIPE")
    checks = RunPath("checks", "the run directory of the sanity checks on the chosen architecture", "RECIPE")
    lr_find = RunPath("lr_find.json", "the LR range test's curves and suggestions", "RECIPE")
    lr_plot = RunPath("lr_find.png", "the LR range test's loss against lr", "RECIPE")
    coarse = RunPath("search-coarse", "the coarse search (a `babysit search` folder)", "RECIPE")
    widened = RunPath("search-widened", "the coarse search again over a range widened past a border", "RECIPE")
    fine = RunPath("search-fine", "the fine search over ranges narrowed around the best coarse trials", "RECIPE")
    final = RunPath("final", "the run directory of the final training", "RECIPE")
    seeds = RunPath("final-seeds", "the final config trained again with other seeds while time was left (seed-N run "
                    "directories, ensemble candidates)", "RECIPE")
    ensemble = RunPath("ensemble", "the kept ensemble (an ensemble directory), when one helped on val", "RECIPE")
    baselines = RunPath("baselines", "the baselines' result directories (knn, linear, ...)", "RECIPE")
    report = RunPath("report.html", "the self-contained recipe report: timeline, every step's evidence and "
                     "decision, baselines beside the final model, what to try next", "RECIPE")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | Path) -> RecipeDir:
        """An existing recipe folder (one with recipe.toml), else a BabysitError naming what to pass."""
        return _open_folder(cls(path), "recipe", "recipes/NAME")
