"""Per-class precision, recall and F1 from a confusion matrix (rows: true class, columns: predicted).

For class k with TP = C[k, k]:  precision = TP / (column k's sum), recall = TP / (row k's sum),
F1 = 2 precision recall / (precision + recall). A class never predicted has precision 0 (and one with no
images recall 0), as scikit-learn's ``zero_division=0`` reports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PerClass:
    precision: np.ndarray  # (K,)
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # images of each true class

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean())


def per_class(confusion: Any) -> PerClass:
    """Precision, recall, F1 and support of each class of a (K, K) confusion matrix."""
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    predicted, actual = c.sum(0), c.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    return PerClass(precision, recall, f1, actual.astype(np.int64))


def format_per_class(classes: list[str], confusion: Any) -> str:
    """The table ``babysit eval`` prints: class, precision, recall, F1, support, then the macro average."""
    m = per_class(confusion)
    width = max(12, *(len(c[:20]) + 2 for c in classes))
    lines = ["class".ljust(width) + "precision   recall       f1  support"]
    for name, p, r, f, n in zip(classes, m.precision, m.recall, m.f1, m.support):
        lines.append(f"{name[:20].ljust(width)}{p:9.3f}{r:9.3f}{f:9.3f}{n:9d}")
    lines.append(f"{'macro avg'.ljust(width)}{m.precision.mean():9.3f}{m.recall.mean():9.3f}{m.macro_f1:9.3f}"
                 f"{int(m.support.sum()):9d}")
    return "\n".join(lines)
