"""The background writer: checkpoints go to disk off the training thread, in order, and its errors reach fit()."""

import threading
import time
from pathlib import Path

import pytest

from babysit import writer
from babysit.errors import BabysitError
from babysit.rundir import RunDir, write_error
from babysit.train.loop import fit
from tests.train.test_loop import cfg, digits_data, small_model


def test_jobs_run_in_order_off_the_calling_thread_and_flush_waits_for_them():
    w = writer.BackgroundWriter()
    done: list[tuple[int, str]] = []
    gate = threading.Event()

    def job(i: int):
        def run() -> None:
            if i == 0:
                gate.wait()  # the first is slow: the others still wait their turn
            done.append((i, threading.current_thread().name))
        return run

    for i in range(5):
        w.submit(job(i))
    assert done == []  # submit does not wait for the disk
    gate.set()
    w.flush()
    assert [i for i, _ in done] == [0, 1, 2, 3, 4]
    assert {name for _, name in done} == {"babysit-writer"}
    w.submit(job(5))  # a new thread once the last one has finished
    w.flush()
    assert done[-1][0] == 5


def test_a_failed_write_is_raised_by_flush_and_drops_the_jobs_after_it(tmp_path):
    w = writer.BackgroundWriter()
    done: list[int] = []

    def full() -> None:
        raise write_error(tmp_path / "last.safetensors", OSError(28, "No space left on device"))

    w.submit(lambda: done.append(1))
    w.submit(full)
    w.submit(lambda: done.append(3))  # e.g. the checkpoint's .json after its failed .safetensors
    with pytest.raises(BabysitError, match=r"^cannot write .*last\.safetensors \(No space left on device\)"):
        w.flush()
    assert done == [1]
    w.submit(lambda: done.append(4))  # reported once; the writer goes on
    w.flush()
    assert done == [1, 4]


def test_a_full_queue_waits_for_the_disk():
    w = writer.BackgroundWriter()
    taken, gate = threading.Event(), threading.Event()

    def slow_disk() -> None:
        taken.set()
        gate.wait()

    w.submit(slow_disk)
    assert taken.wait(5)  # the worker holds the slow job: the queue behind it is empty
    for _ in range(writer.MAX_PENDING):
        w.submit(lambda: None)
    threading.Timer(0.05, gate.set).start()
    started = time.perf_counter()
    w.submit(lambda: None)  # the queue is full: this waits until the slow job ends
    assert time.perf_counter() - started >= 0.04
    w.flush()


def test_fit_returns_with_every_checkpoint_on_disk(tmp_path):
    run = RunDir.create(tmp_path / "run")
    fit(small_model(), digits_data(), cfg(**{"train.epochs": 2, "checkpoint.keep_last": 1}), run)
    assert writer.WRITER._thread is None  # nothing pending
    assert run.last.exists() and run.best.exists()
    assert [n for n, _ in RunDir.numbered(run.epochs)] == [2]  # epoch 1's weights removed after epoch 2's were written
    assert not list(Path(run.checkpoints).rglob("*.tmp"))


def test_a_write_error_in_the_background_stops_fit_with_the_sentence(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "run")

    def full(path: Path, data: bytes) -> None:
        raise write_error(path, OSError(28, "No space left on device"))

    monkeypatch.setattr(writer, "atomic_write_bytes", full)
    with pytest.raises(BabysitError, match=r"^cannot write .* \(No space left on device\); free disk space"):
        fit(small_model(), digits_data(), cfg(**{"train.epochs": 2}), run)
    assert writer.WRITER._thread is None
