"""Multi-task learning with hard parameter sharing: one trunk, one head per task.

``model.heads=class:10,group:4`` makes the network's last fc layer output 10 + 4 scores: rows 0..9 are the
``class`` head, rows 10..13 the ``group`` head. A linear layer onto concatenated scores *is* one linear head per
task on the shared features (each head owns its rows of the weight matrix), so the network, its checkpoints and
its init are any run's. The labels become a matrix (N, T), column t for task t (the first task is the data's
``y``, the others its ``y_NAME`` columns). The cost is the weighted sum of each task's data loss on its own slice
of the scores, L = sum_t w_t L_t(s[:, slice_t], y[:, t]); accuracy is per task (the first task's is the run's
val/test accuracy, which picks the best epoch).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from babysit.config import weight_pairs
from babysit.errors import BabysitError

Head = tuple[str, int]


def parse_heads(text: str) -> list[Head]:
    """``"class:10,group:4"`` -> [("class", 10), ("group", 4)]; "" -> [] (one task)."""
    if not text.strip():
        return []
    heads: list[Head] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*([A-Za-z][A-Za-z0-9_]*)\s*:\s*(\d+)\s*", part)
        if m is None or int(m.group(2)) < 2:
            raise BabysitError(f"model.heads takes NAME:CLASSES pairs with at least 2 classes each, e.g. "
                               f"class:10,group:4; got {part.strip()!r}.")
        heads.append((m.group(1), int(m.group(2))))
    if len(heads) < 2 or len({n for n, _ in heads}) != len(heads):
        raise BabysitError(f"model.heads needs two or more tasks with different names, got {text!r}; e.g. "
                           "class:10,group:4.")
    return heads


def parse_task_weights(text: str, heads: list[Head]) -> list[float]:
    """``"group=0.5"`` -> a weight per head (1 where not named)."""
    weights = {n: 1.0 for n, _ in heads}
    for part, name, w in weight_pairs(text):
        if name not in weights or w is None:
            raise BabysitError(f"loss.task_weights takes NAME=WEIGHT pairs (weights >= 0) for the tasks of "
                               f"model.heads ({', '.join(weights)}), got {part!r}; e.g. {heads[-1][0]}=0.5.")
        weights[name] = w
    return list(weights.values())


def task_slices(heads: list[Head]) -> list[slice]:
    """Each task's columns of the concatenated scores."""
    out, start = [], 0
    for _, k in heads:
        out.append(slice(start, start + k))
        start += k
    return out


class MultiTaskLoss:
    """L = sum_t w_t * loss(scores[:, slice_t], y[:, t]); ``slices`` and ``names`` tell evaluation the tasks."""

    def __init__(self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], heads: list[Head],
                 weights: list[float]) -> None:
        self.loss, self.names, self.weights = loss, [n for n, _ in heads], weights
        self.slices = task_slices(heads)

    def __call__(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.dim() != 2 or y.shape[1] != len(self.slices):
            raise ValueError(f"multi-task labels must be (N, {len(self.slices)}), got {tuple(y.shape)}")
        terms = [w * self.loss(scores[:, s], y[:, t]) for t, (s, w) in enumerate(zip(self.slices, self.weights))]
        return torch.stack(terms).sum()


@torch.no_grad()
def task_accuracies(scores: torch.Tensor, y: torch.Tensor, heads: list[Head]) -> dict[str, float]:
    """Accuracy of each task: argmax of its own slice of the scores against its column of the labels."""
    return {name: (scores[:, s].argmax(1) == y[:, t]).float().mean().item()
            for t, ((name, _), s) in enumerate(zip(heads, task_slices(heads)))}


def label_matrix(y: torch.Tensor, tasks: dict[str, torch.Tensor], heads: list[Head], where: str = "") -> torch.Tensor:
    """(N, T) labels: y for the first task, then each other task's column; a missing column or a label out of its
    head's range is a BabysitError."""
    cols = [y]
    for name, _ in heads[1:]:
        if name not in tasks:
            raise BabysitError(f"model.heads names task {name!r} but the data{where} has no labels y_{name} "
                               f"(it has {', '.join('y_' + k for k in tasks) or 'none'}); save them in the .npz as "
                               f"y_{name}.")
        cols.append(tasks[name])
    out = torch.stack([c.long() for c in cols], 1)
    for t, (name, k) in enumerate(heads):
        top = int(out[:, t].max()) if len(out) else 0
        if top >= k:
            raise BabysitError(f"task {name!r} has label {top} but model.heads gives it {k} classes; use "
                               f"{name}:{top + 1} in --model.heads.")
    return out
