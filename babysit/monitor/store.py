"""Bounded storage for layer statistics, and reading it back from a run directory.

``stats/layers.json`` holds probe records, ``stats/histograms.json`` histogram snapshots. Both keep a
fixed number of entries spread evenly over the whole run, whatever its length: when a store is full
every other entry is dropped and from then on only every second offered entry is kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from babysit.rundir import atomic_write_text

LAYERS_FILE = "stats/layers.json"
HISTOGRAMS_FILE = "stats/histograms.json"
FILTERS_FILE = "stats/filters.png"
FILTERS_INITIAL_FILE = "stats/filters_initial.png"
CONFUSION_FILE = "stats/confusion.json"
CONFUSED_FILE = "stats/confused.npz"


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
        atomic_write_text(path, json.dumps({**meta, **self.state(), "records": self.items}) + "\n")


def read_json_records(path: Path) -> list[dict[str, Any]]:
    """The ``records`` of a stats file; [] when the run has none."""
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text()).get("records", []))
    except (json.JSONDecodeError, AttributeError):
        return []


def read_layer_records(run_path: str | Path) -> list[dict[str, Any]]:
    """Probe records of a run: ``{"step", "epoch", "lr", "layers": {name: {"kind", stat: value}}}``."""
    return read_json_records(Path(run_path) / LAYERS_FILE)


def read_histograms(run_path: str | Path) -> list[dict[str, Any]]:
    """Histogram snapshots: ``{"step", "layers": {name: {"act": [lo, hi, counts], "grad": ...}}}``."""
    return read_json_records(Path(run_path) / HISTOGRAMS_FILE)
