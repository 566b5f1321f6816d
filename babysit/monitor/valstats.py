"""What the report shows about validation: confusion matrix, per-class accuracy, most-confused pairs.

Computed with the model once at the end of a run and written to ``RunDir.confusion`` and
``RunDir.confused`` (example images of each most-confused pair, raw uint8 pixels), so the report
reads only the run directory (:func:`babysit.review.stats.read_val_analysis`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from babysit.rundir import RunDir, atomic_write_bytes, atomic_write_text

TOP_PAIRS = 6
"""Most-confused (true, predicted) pairs shown in the report."""
EXAMPLES_PER_PAIR = 6
"""Example images shown per pair."""


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels in eval mode."""
    was = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]) if len(x) else \
        torch.empty(0, dtype=torch.long)
    model.train(was)
    return out


def confusion_matrix(y: torch.Tensor, pred: torch.Tensor, k: int) -> torch.Tensor:
    """(K, K) counts: rows the true class, columns the predicted one."""
    return torch.bincount(y.cpu() * k + pred.cpu(), minlength=k * k).view(k, k)


def most_confused(confusion: torch.Tensor, top: int = TOP_PAIRS) -> list[tuple[int, int, int]]:
    """(true, predicted, count) of the largest off-diagonal entries, largest first."""
    off = confusion.clone()
    off.fill_diagonal_(0)
    values, idx = off.flatten().sort(descending=True)
    k = confusion.shape[0]
    return [(int(i) // k, int(i) % k, int(v)) for v, i in zip(values[:top], idx[:top]) if v > 0]


def val_analysis(model: nn.Module, x: torch.Tensor, y: torch.Tensor, raw: torch.Tensor, classes: list[str],
                 batch_size: int = 1000) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(summary, examples): the confusion matrix etc. as JSON-able data, and uint8 example images
    (E, C, H, W) per most-confused pair keyed ``pair<i>``. ``raw`` holds the unpreprocessed images."""
    pred = predict(model, x, batch_size).cpu()
    y = y.cpu()
    k = len(classes)
    conf = confusion_matrix(y, pred, k)
    totals = conf.sum(1).clamp_min(1)
    pairs, examples = [], {}
    for i, (t, p, count) in enumerate(most_confused(conf)):
        idx = torch.nonzero((y == t) & (pred == p)).flatten()[:EXAMPLES_PER_PAIR]
        examples[f"pair{i}"] = raw[idx].cpu().numpy().astype(np.uint8)
        pairs.append({"true": t, "pred": p, "count": count})
    summary = {"classes": classes, "confusion": conf.tolist(), "accuracy": float((pred == y).float().mean()),
               "per_class_acc": (conf.diagonal() / totals).tolist(), "pairs": pairs}
    return summary, examples


def write_val_analysis(run: RunDir | str | Path, summary: dict[str, Any], examples: dict[str, np.ndarray]) -> None:
    """Write what :func:`val_analysis` returned into the run's stats folder."""
    run = RunDir.of(run)
    atomic_write_text(run.confusion, json.dumps(summary) + "\n")
    buf = io.BytesIO()
    np.savez_compressed(buf, **examples)  # type: ignore[arg-type]  # numpy's stub types **kwds too narrowly
    atomic_write_bytes(run.confused, buf.getvalue())
