"""Real images for the baseline tests: scikit-learn's digits, split the way every babysit run splits them."""

from __future__ import annotations

import pytest

from babysit.data.sources import load_dataset
from babysit.data.split import Splits, split_dataset


@pytest.fixture(scope="session")
def digits() -> Splits:
    return split_dataset(load_dataset("digits"), seed=0)


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """An empty user cache, so the feature cache of the tests never touches ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"
