"""The run directory: the one interface between training and everything after it.

Layout::

    RUN/config.toml            resolved config (every key, defaults included)
    RUN/spec.txt               the model spec, as parsed and printed back
    RUN/meta.json              seed, versions, git commit, data source, class names, split sizes
    RUN/result.json            best val accuracy, its epoch, test accuracy, wall time
    RUN/history.jsonl          one JSON object per step / epoch, append-only
    RUN/preprocess.safetensors statistics fitted on the training split
    RUN/checkpoints/last.safetensors  everything needed to resume (weights, optimiser, RNG, position)
    RUN/checkpoints/best.safetensors  the weights with the best validation accuracy

Every file except the history is written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from babysit.errors import BabysitError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def read_history(path: Path) -> list[dict[str, Any]]:
    """Read history.jsonl; a torn last line (a kill mid-write) is ignored.

    A ``{"kind": "resume", "step": S}`` record drops the earlier records of steps after ``S``:
    those steps were lost with the crash and are logged again by the resumed run.
    """
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind") == "resume":
            records = [r for r in records if r.get("step", 0) <= rec["step"]]
        records.append(rec)
    return records


class RunDir:
    """Paths and small I/O helpers for one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise BabysitError(f"run directory {str(p)!r} is a file; choose another --out or --name.")
        if (p / "config.toml").exists():
            raise BabysitError(f"run directory {str(p)!r} already holds a run; resume it with "
                               f"`babysit train --resume {p}` or choose another --name.")
        try:
            (p / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BabysitError(f"cannot create run directory {str(p)!r} ({e.strerror}); "
                               "choose a writable --out.") from None
        return cls(p)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        p = Path(path)
        if not (p / "config.toml").is_file():
            raise BabysitError(f"{str(p)!r} is not a babysit run directory (no config.toml); "
                               "pass the folder that `babysit train` printed.")
        return cls(p)

    config = property(lambda self: self.path / "config.toml")
    history = property(lambda self: self.path / "history.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last = property(lambda self: self.path / "checkpoints" / "last.safetensors")
    best = property(lambda self: self.path / "checkpoints" / "best.safetensors")

    def append_history(self, record: dict[str, Any]) -> None:
        with open(self.history, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_history(self) -> list[dict[str, Any]]:
        return read_history(self.history)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.path / name, json.dumps(obj, indent=2) + "\n")

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())
