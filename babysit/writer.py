"""File writes off the training thread: checkpoints and monitoring files go to disk while the next steps run.

A checkpoint is serialised to bytes on the training thread (so it is a snapshot of that moment), then a background
thread writes it atomically: temporary file, fsync, rename, fsync of the folder (babysit.rundir). The fsyncs cost
milliseconds each on a real disk, which on a GPU is several percent of a short epoch. Jobs run one at a time, in the
order they were given, so "history fsynced, then the checkpoint that resumes from it" still holds.

A crash while a write is pending leaves the previous file (the write is atomic): the same as a crash just before
the save. :func:`flush` waits for every pending write and raises the first write error (a disk-full sentence) on the
calling thread; fit() flushes before it returns or raises, and before anything reads the files back.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from babysit.rundir import atomic_write_bytes

MAX_PENDING = 8  # jobs queued before a new one waits for the disk (bounds the bytes held in memory)


class BackgroundWriter:
    """One worker thread at a time runs the queued jobs in order, then exits (no thread idles between saves)."""

    def __init__(self) -> None:
        self._jobs: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` after the jobs already queued; a write error of an earlier job is raised here."""
        self._raise()
        if len(self._jobs) >= MAX_PENDING:
            self.flush()
        with self._lock:
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="babysit-writer")
                self._thread.start()

    def flush(self) -> None:
        """Wait until every queued job has run; raise the first error one of them had."""
        while True:
            with self._lock:
                thread = self._thread
            if thread is None:
                break
            thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._thread = None
                    return
                job = self._jobs.popleft()
            if self._error is not None:  # after a failed write the rest is dropped: flush() reports the first
                continue
            try:
                job()
            except BaseException as e:  # noqa: BLE001 -- handed to the training thread by flush()
                self._error = e


WRITER = BackgroundWriter()
"""The process's writer: every run's background writes, so one flush covers them all."""


def write_later(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` on the background writer."""
    WRITER.submit(lambda: atomic_write_bytes(path, data))


def later(job: Callable[[], None]) -> None:
    """Run ``job`` (a file operation) on the background writer, after the writes queued before it."""
    WRITER.submit(job)


def flush() -> None:
    """Wait for every pending background write; raise the first one's error."""
    WRITER.flush()
