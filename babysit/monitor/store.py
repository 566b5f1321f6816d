"""Bounded storage for layer statistics (its reader is :mod:`babysit.review.stats`).

``RunDir.layers`` holds probe records, ``RunDir.histograms`` histogram snapshots. Both keep a fixed
number of entries spread evenly over the whole run, whatever its length: when a store is full every
other entry is dropped and from then on only every second offered entry is kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from babysit.writer import write_later


class Thinned:
    """Keep at most ``capacity`` of the items offered, evenly spaced: item k is kept while k % stride == 0."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: list[dict[str, Any]] = []
        self.stride = 1
        self.offered = 0

    def wants_next(self) -> bool:
        """Whether the next offered item will be kept (so costly items can be skipped)."""
        return self.offered % self.stride == 0

    def offer(self, item: dict[str, Any]) -> bool:
        keep = self.wants_next()
        self.offered += 1
        if keep:
            self.items.append(item)
            if len(self.items) > self.capacity:
                self.items = self.items[::2]
                self.stride *= 2
        return keep

    def state(self) -> dict[str, int]:
        return {"stride": self.stride, "offered": self.offered, "capacity": self.capacity}

    def restore(self, state: dict[str, Any], items: list[dict[str, Any]], max_step: int) -> None:
        """Back to a checkpoint: its counters, and the stored items up to its step."""
        self.stride, self.offered = int(state["stride"]), int(state["offered"])
        self.items = [it for it in items if it.get("step", 0) <= max_step]

    def dump(self, path: Path, meta: dict[str, Any]) -> None:
        """Write the items as JSON: serialised now, put on disk by the background writer (babysit.writer)."""
        write_later(path, (json.dumps({**meta, **self.state(), "records": self.items}) + "\n").encode())
