"""The nearest-neighbour classifier of the notes: distances to every training image, a vote of the k closest.

Distances are computed block by block: ``chunk_size`` query images against the whole training set at a time,
so the memory is bounded by chunk_size x N_train x 4 bytes (one float32 block) whatever the number of queries,
and there is no Python loop over images. They run on whatever device the tensors are on.

- L1: d1(I1, I2) = sum_p |I1_p - I2_p|
- L2: d2(I1, I2) = sqrt(sum_p (I1_p - I2_p)^2), through ||a||^2 + ||b||^2 - 2 a.b (one matrix product)

**The vote.** Each of the k nearest training images votes for its label; the label with the most votes wins.
Tie rule: among the labels tied for the most votes, the one whose nearest member is closest wins (so k=2 with
two different labels answers like k=1). Neighbours at exactly the same distance are taken in the order
``torch.topk`` returns them. (scikit-learn's KNeighborsClassifier breaks a tie toward the smallest label.)

**Choosing k and the distance.** K-fold cross-validation on the training split (:func:`cross_validate`): each
fold in turn is the validation fold, the others vote; the distances of a fold are computed once for the
largest k and every smaller k reads its first columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from babysit.registry import Registry

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DISTANCES: Registry[Distance] = Registry("baseline.distance")
"""Distance functions by the names ``--baseline.distance`` takes: ``fn(a (M, D), b (N, D)) -> (M, N)``."""


@DISTANCES.register("l1")
def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """d1 = sum_p |a_p - b_p| for every row of ``a`` against every row of ``b``: (M, N)."""
    return torch.cdist(a, b, p=1)


@DISTANCES.register("l2")
def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """d2 = sqrt(sum_p (a_p - b_p)^2) via ||a||^2 + ||b||^2 - 2 a.b: one matrix product (M, N)."""
    squared = torch.addmm(b.pow(2).sum(1), a, b.T, alpha=-2).add_(a.pow(2).sum(1, keepdim=True))  # one (M, N) block
    return squared.clamp_min_(0).sqrt_()  # rounding can leave -1e-7 where the true value is 0


def distance_blocks(queries: torch.Tensor, train: torch.Tensor, distance: str = "l2", chunk_size: int = 500,
                    progress: bool = False, desc: str = "") -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, block of distances (<= chunk_size, N_train)) for consecutive blocks of ``queries``.

    Only one block exists at a time: memory ~ chunk_size x N_train x 4 bytes. ``progress`` shows a tqdm
    bar over the blocks (on stderr)."""
    fn = DISTANCES.get(distance)
    starts = range(0, len(queries), chunk_size)
    for start in tqdm(starts, desc=desc or f"{distance} distances", unit="block", disable=not progress,
                      leave=False, mininterval=0):  # every block drawn: a block takes far longer than a redraw
        yield start, fn(queries[start : start + chunk_size], train)


def nearest(queries: torch.Tensor, train: torch.Tensor, k: int, distance: str = "l2", chunk_size: int = 500,
            progress: bool = False, desc: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Distances (M, k) and indices (M, k) of the k nearest training rows of each query, nearest first."""
    k = min(k, len(train))
    dists = torch.empty(len(queries), k, device=queries.device)
    index = torch.empty(len(queries), k, dtype=torch.long, device=queries.device)
    for start, block in distance_blocks(queries, train, distance, chunk_size, progress, desc):
        d, i = block.topk(k, dim=1, largest=False, sorted=True)
        dists[start : start + len(block)], index[start : start + len(block)] = d, i
    return dists, index


def vote(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The majority label of each row of neighbour labels (M, k), nearest first; a tie goes to the tied label
    whose nearest member comes first (the module's tie rule)."""
    votes = torch.zeros(len(labels), num_classes, dtype=torch.long, device=labels.device)
    votes.scatter_add_(1, labels, torch.ones_like(labels))
    tied = votes == votes.max(1, keepdim=True).values  # (M, C): the labels with the most votes
    first = tied.gather(1, labels).int().argmax(1, keepdim=True)  # first neighbour whose label is tied
    return labels.gather(1, first).squeeze(1)


def predict(queries: torch.Tensor, train: torch.Tensor, train_labels: torch.Tensor, k: int, num_classes: int,
            distance: str = "l2", chunk_size: int = 500, progress: bool = False) -> torch.Tensor:
    """The kNN label of every query (M,)."""
    _, index = nearest(queries, train, k, distance, chunk_size, progress)
    return vote(train_labels[index], num_classes)


@dataclass(frozen=True)
class CVTable:
    """Cross-validation accuracies: ``acc[distance]`` is (len(ks), folds)."""

    ks: tuple[int, ...]
    acc: dict[str, np.ndarray]
    images: int = 0  # how many training images were cross-validated

    @property
    def folds(self) -> int:
        return next(iter(self.acc.values())).shape[1]

    def mean(self, distance: str) -> np.ndarray:
        return self.acc[distance].mean(1)

    def std(self, distance: str) -> np.ndarray:
        return self.acc[distance].std(1)

    def best(self) -> tuple[str, int, float]:
        """(distance, k, mean accuracy) of the best mean; on a tie the smaller k, then the first distance."""
        rows = [(-float(self.mean(d)[i]), k, j, d) for j, d in enumerate(self.acc) for i, k in enumerate(self.ks)]
        score, k, _, d = min(rows)
        return d, k, -score

    def rows(self) -> list[dict[str, float | int | str]]:
        """One record per (distance, k, fold): what cv.csv holds."""
        return [{"distance": d, "k": k, "fold": f + 1, "accuracy": float(a[i, f])}
                for d, a in self.acc.items() for i, k in enumerate(self.ks) for f in range(a.shape[1])]

    def format(self) -> str:
        """The table of fold accuracies per k, the mean and std, one block per distance."""
        lines = []
        for d, a in self.acc.items():
            lines.append(f"{d:>4} {'k':>4}  " + "  ".join(f"fold {f + 1}" for f in range(a.shape[1]))
                         + "    mean     std")
            for i, k in enumerate(self.ks):
                lines.append(f"{'':>4} {k:>4}  " + "  ".join(f"{v:6.4f}" for v in a[i])
                             + f"  {a[i].mean():6.4f}  {a[i].std():6.4f}")
        return "\n".join(lines)


def cross_validate(x: torch.Tensor, y: torch.Tensor, ks: Sequence[int], distances: Sequence[str], folds: int,
                   num_classes: int, seed: int = 0, chunk_size: int = 500, progress: bool = False) -> CVTable:
    """K-fold cross-validation of kNN on (x, y): stratified folds (scikit-learn's StratifiedKFold, shuffled
    with ``seed``); each fold scored by the others for every k and distance."""
    from sklearn.model_selection import StratifiedKFold

    ks = tuple(sorted(set(ks)))
    labels = y.cpu().numpy()
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    acc = {d: np.zeros((len(ks), folds)) for d in distances}
    for f, (train_idx, val_idx) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        tr = torch.as_tensor(train_idx, device=x.device)
        va = torch.as_tensor(val_idx, device=x.device)
        for d in distances:
            _, index = nearest(x[va], x[tr], max(ks), d, chunk_size, progress, f"{d} fold {f + 1}/{folds}")
            neighbours = y[tr][index]  # (M, k_max) labels, nearest first
            for i, k in enumerate(ks):
                acc[d][i, f] = (vote(neighbours[:, :k], num_classes) == y[va]).float().mean().item()
    return CVTable(ks, acc, len(x))
