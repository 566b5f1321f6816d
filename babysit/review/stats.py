"""Reading a run's ``stats/`` back: layer-statistics records, histogram snapshots, the validation analysis.

The writers are in babysit.monitor (``store.Thinned`` for the bounded records, ``valstats`` for the
confusion matrix and its example images); the files are :class:`~babysit.rundir.RunDir` properties.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from babysit.limits import read_small_text
from babysit.rundir import RunDir


def read_json_records(path: Path) -> list[dict[str, Any]]:
    """The ``records`` of a stats file; [] when the run has none."""
    if not path.is_file():
        return []
    try:
        return list(json.loads(read_small_text(path)).get("records", []))
    except (json.JSONDecodeError, AttributeError):
        return []


def read_layer_records(run: RunDir | str | Path) -> list[dict[str, Any]]:
    """Probe records of a run: ``{"step", "epoch", "lr", "layers": {name: {"kind", stat: value}}}``."""
    return read_json_records(RunDir.of(run).layers)


def read_histograms(run: RunDir | str | Path) -> list[dict[str, Any]]:
    """Histogram snapshots: ``{"step", "layers": {name: {"act": [lo, hi, counts, below, above, min, max], ...}}}``
    (lo, hi: the 0.5 and 99.5 % quantiles; below / above: values outside, counted in the edge bins; older runs
    have [lo, hi, counts] only)."""
    return read_json_records(RunDir.of(run).histograms)


def read_val_analysis(run: RunDir | str | Path) -> tuple[dict[str, Any] | None, dict[str, np.ndarray]]:
    """(summary, examples) as ``monitor.valstats.val_analysis`` made them; (None, {}) when the run has none."""
    r = RunDir.of(run)
    if not r.confusion.is_file():
        return None, {}
    summary = json.loads(read_small_text(r.confusion))
    examples: dict[str, np.ndarray] = {}
    if r.confused.is_file():
        with np.load(r.confused) as z:
            examples = {k: z[k] for k in z.files}
    return summary, examples
