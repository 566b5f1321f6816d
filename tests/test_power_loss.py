"""Reliability class 8 (issue 20): a power cut and history.jsonl.

Policy (babysit/rundir.py's docstring): the history is fsynced once per checkpoint, just before the checkpoint
is written, so every record up to the checkpoint's step survives a power cut; whatever came after may be lost,
complete, torn or NUL bytes. These tests kill a real run (SIGKILL, the soak's hooks) one step after its
checkpoint, then replace everything after the durable prefix the way a power cut can, resume, and require the
same logical history, weights and state as an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from babysit.cli import main
from babysit.rundir import RunDir, read_history
from tests.test_faults import args, soak

CHECKPOINT_STEP = 25  # TRAIN_ARGS checkpoint every 5 steps; the kill comes at step 27


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("power-reference")
    assert main(args(d, "reference")) == 0
    return d / "reference"


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run SIGKILLed at history line 27 (mid-epoch 2), its last checkpoint at step 25."""
    d = tmp_path_factory.mktemp("power-killed")
    res = soak.child(soak.KillPoint("step", 27), args(d), d)
    assert res.returncode == -signal.SIGKILL, res.stderr
    return d / "run"


def _durable_prefix(history: bytes, step: int) -> int:
    """Bytes up to the end of the last line whose step is <= the checkpoint's: what the fsync guaranteed."""
    end = 0
    for line in history.splitlines(keepends=True):
        if b'"step": ' in line and int(line.split(b'"step": ')[1].split(b",")[0].split(b"}")[0]) > step:
            break
        end += len(line)
    return end


TAILS = {
    "lost": lambda tail: b"",  # nothing after the checkpoint reached the disk
    "torn": lambda tail: tail[: len(tail) // 2 + 3],  # part of it, cut inside a line
    "zeros": lambda tail: b"\0" * len(tail),  # the file grew but its data never came (delayed allocation)
    "kept+zeros": lambda tail: tail + b"\0" * 4096,  # all of it, then a block of NULs
}


@pytest.mark.slow
@pytest.mark.parametrize("tail", TAILS, ids=list(TAILS))
def test_power_cut_after_a_checkpoint_resumes_exactly(tail: str, killed: Path, reference: Path,
                                                      tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(killed, run)
    history = RunDir(run).history
    data = history.read_bytes()
    cut = _durable_prefix(data, CHECKPOINT_STEP)
    assert 0 < cut < len(data)
    history.write_bytes(data[:cut] + TAILS[tail](data[cut:]))
    assert max(r["step"] for r in read_history(history)) <= 27  # the damage is read without an error
    assert main(["train", "--resume", str(run)]) == 0
    assert soak.differences(run, reference) == []
    assert b"\0" not in history.read_bytes()  # the unfinished tail was cut before the resume appended
    steps = [r["step"] for r in read_history(history) if r.get("kind") == "step"]
    assert steps == sorted(set(steps))  # each step once, in order


@pytest.mark.parametrize("tail", TAILS, ids=list(TAILS))
def test_power_cut_tail_is_cut_and_dropped_on_resume(tail: str, tmp_path: Path) -> None:
    """The same damage on a history alone (fast): read without an error, the unfinished tail cut at the first
    append, and the resume record (checkpoint at step 5) drops the complete records after it."""
    run = RunDir(tmp_path)
    for step in range(1, 6):
        run.append_history({"kind": "step", "step": step})
    durable = run.history.read_bytes()
    for step in range(6, 9):
        run.append_history({"kind": "step", "step": step})
    data = run.history.read_bytes()
    run.history.write_bytes(durable + TAILS[tail](data[len(durable):]))
    assert [r["step"] for r in read_history(run.history)][:5] == [1, 2, 3, 4, 5]
    resumed = RunDir(tmp_path)
    resumed.append_history({"kind": "resume", "step": 5, "epoch": 1})
    for step in range(6, 9):
        resumed.append_history({"kind": "step", "step": step})
    assert b"\0" not in run.history.read_bytes()
    assert [r["step"] for r in read_history(run.history) if r["kind"] == "step"] == list(range(1, 9))


def test_history_is_fsynced_before_each_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The order on disk: sync_history, then last.safetensors, at every checkpoint; never an fsync per line.
    Both happen on the background writer (babysit.writer), so they are recorded where the disk sees them."""
    from babysit import writer

    events: list[str] = []
    sync, write = RunDir.sync_history, writer.atomic_write_bytes
    fsync = os.fsync

    def on_sync(self: RunDir) -> None:
        events.append("sync")
        sync(self)

    def on_write(path: Path, data: bytes) -> None:
        events.append(path.name)
        write(path, data)

    history_fsyncs = [0]

    def on_fsync(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == "history.jsonl":
            history_fsyncs[0] += 1
        fsync(fd)

    monkeypatch.setattr(RunDir, "sync_history", on_sync)
    monkeypatch.setattr(writer, "atomic_write_bytes", on_write)
    monkeypatch.setattr(os, "fsync", on_fsync)
    assert main(["train", "--data.name=digits", "--data.limit=100", "--model.spec=conv3-4 relu pool2 fc",
                 "--train.epochs=1", "--train.batch_size=16", "--checkpoint.every=2", "--train.progress=false",
                 "--monitor.checks=false", "--monitor.report=false", "--train.threads=1",
                 "--out", str(tmp_path), "--name", "run"]) == 0
    lasts = [i for i, e in enumerate(events) if e == "last.safetensors"]
    assert len(lasts) >= 3
    assert all(events[i - 1] == "sync" for i in lasts)
    lines = len(RunDir(tmp_path / "run").history.read_bytes().splitlines())
    assert history_fsyncs[0] == len(lasts) < lines
