"""Fixtures for the data-source tests: an isolated lookup environment and tiny IDX sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from babysit.data import locate
from babysit.data.idx import write_idx


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $BABYSIT_DATA, an empty cache, no system folders, no `npm root -g`; returns tmp_path."""
    monkeypatch.delenv("BABYSIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"mnist": (), "fashion-mnist": ()})
    monkeypatch.setattr(locate, "_npm_global_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_idx_set(folder: Path, n_train: int = 20, n_test: int = 10, fill: int = 0,
                 gz: bool = False) -> Path:
    """Write the four IDX files of a tiny 4x5 MNIST-like set; every pixel is ``fill``."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte{ext}", np.full((n, 4, 5), fill, np.uint8))
        write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", (np.arange(n) % 10).astype(np.uint8))
    return folder


@pytest.fixture
def idx_set() -> object:
    """The :func:`make_idx_set` helper, as a fixture so test files need no conftest import."""
    return make_idx_set
