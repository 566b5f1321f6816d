"""Stratified, seeded train/val/test splits.

The set's official test split is kept as test when it has one; otherwise a stratified share of
the images is held out. Validation is always carved out of the training images, per class, so
every split keeps the class balance of the whole set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from babysit.config import RunConfig
from babysit.data.sources import Dataset, ImageSet, load_dataset
from babysit.data.stream import StreamOptions
from babysit.errors import BabysitError


@dataclass(frozen=True)
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    classes: list[str]

    def get(self, name: str) -> ImageSet:
        """One split by name; a clear error for any other name."""
        if name not in ("train", "val", "test"):
            raise BabysitError(f"there is no split {name!r}; use one of train, val, test.")
        return getattr(self, name)


def stratified_indices(y: torch.Tensor, fractions: list[float], seed: int) -> list[torch.Tensor]:
    """Partition ``range(len(y))`` into ``len(fractions) + 1`` index sets, class by class.

    Part ``i`` takes ``round(fractions[i] * n_c)`` of the ``n_c`` examples of each class (at least
    one when the class has more than one example); the rest form the last part.
    """
    g = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for i, frac in enumerate(fractions):
            take = int(round(frac * len(idx)))
            if len(idx) > 1 and take == 0:
                take = 1
            parts[i].append(idx[start : start + take])
            start += take
        parts[-1].append(idx[start:])
    out = []
    for chunks in parts:
        joined = torch.cat(chunks)
        out.append(joined[torch.randperm(len(joined), generator=g)])
    return out


def fold_indices(y: torch.Tensor, folds: int, fold: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) positions into ``y`` for fold ``fold`` of ``folds`` stratified folds (scikit-learn's
    StratifiedKFold, shuffled with ``seed``): each image is in the val part of exactly one fold."""
    import warnings

    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    if len(y) < folds:
        raise BabysitError(f"data.folds={folds} needs at least {folds} images outside the test split, got {len(y)}.")
    with warnings.catch_warnings():  # a class with fewer images than folds: some folds lack it, which is allowed
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed % 2**32)
        train, val = list(splitter.split(np.zeros(len(y)), y.numpy()))[fold]
    return torch.from_numpy(train), torch.from_numpy(val)


def split_dataset(ds: Dataset, val_fraction: float = 0.1, test_fraction: float = 0.2,
                  seed: int = 0, limit: int = 0, folds: int = 0, fold: int = 0) -> Splits:
    """Split ``ds`` into train/val/test, stratified and seeded.

    ``limit`` > 0 keeps at most that many training images (a seeded, roughly stratified subset).
    ``folds`` = K > 0: K-fold cross-validation; the test split is the same as without folds, and val is fold
    ``fold`` of the remaining images (train the other K-1 folds).
    """
    counts = torch.bincount(ds.train.y, minlength=len(ds.train.classes))
    if int((counts > 0).sum()) < 2:
        raise BabysitError(f"{ds.name} has only one class with images; a classifier needs at least two classes.")
    if ds.val is not None:  # the source fixed val (a CSV list's split column): train is every train row
        if folds:
            raise BabysitError(f"{ds.name} fixes its val rows (the split column), so K-fold validation has nothing to "
                               "choose; drop --data.folds, or drop the val rows from the list.")
        if ds.test is not None:
            train_idx, test = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(seed)), ds.test
        else:
            test_idx, train_idx = stratified_indices(ds.train.y, [test_fraction], seed)
            test = ds.train.subset(test_idx)
        if limit:
            train_idx = train_idx[:limit]
        _refuse_empty(ds, {"train": len(train_idx), "val": len(ds.val), "test": len(test)}, folds)
        return Splits(train=ds.train.subset(train_idx), val=ds.val, test=test, classes=list(ds.train.classes))
    if folds:
        if ds.test is not None:
            rest, test = torch.arange(len(ds.train.y)), ds.test
        else:  # the same test images as the single split: stratified_indices draws each class's order alike
            test_idx, rest = stratified_indices(ds.train.y, [test_fraction], seed)
            test = ds.train.subset(test_idx)
        train_pos, val_pos = fold_indices(ds.train.y[rest], folds, fold, seed)
        order = torch.randperm(len(train_pos), generator=torch.Generator().manual_seed(seed))  # data.limit: a
        train_idx, val_idx = rest[train_pos][order], rest[val_pos]  # random subset, not the lowest indices
    elif ds.test is not None:
        val_idx, train_idx = stratified_indices(ds.train.y, [val_fraction], seed)
        test = ds.test
    else:
        test_idx, val_idx, train_idx = stratified_indices(
            ds.train.y, [test_fraction, val_fraction], seed)
        test = ds.train.subset(test_idx)
    if limit:
        train_idx = train_idx[:limit]
    _refuse_empty(ds, {"train": len(train_idx), "val": len(val_idx), "test": len(test)}, folds)
    return Splits(train=ds.train.subset(train_idx), val=ds.train.subset(val_idx), test=test,
                  classes=list(ds.train.classes))


def _refuse_empty(ds: Dataset, sizes: dict[str, int], folds: int) -> None:
    """An empty split would report "accuracy 0.0" (or nan) as if it were a measurement: refuse it with the fix."""
    empty = [name for name, n in sizes.items() if n == 0]
    if not empty:
        return
    counts = ds.train.class_counts()
    smallest = int(counts[counts > 0].min())
    fix = {"train": "lower --data.val_fraction / --data.test_fraction or raise --data.limit",
           "val": "raise --data.val_fraction" if not folds else "lower --data.folds",
           "test": "raise --data.test_fraction"}[empty[0]]
    raise BabysitError(f"the {empty[0]} split of {ds.name} would be empty ({len(ds.train)} images, the smallest class "
                       f"has {smallest}); add images (at least 3 per class) or {fix}.")


def split_seed(cfg: RunConfig) -> int:
    """The seed of the train/val/test split: data.split_seed, or train.seed when it is -1."""
    return cfg.data.split_seed if cfg.data.split_seed >= 0 else cfg.train.seed


def prepare_data(cfg: RunConfig) -> tuple[Dataset, Splits]:
    """Load the configured data set and split it (stratified, seeded): what every command starts from."""
    d = cfg.data
    ds = load_dataset(d.name, channels=d.channels, size=d.size, stream=StreamOptions(d.stream, d.cache, d.workers))
    splits = split_dataset(ds, d.val_fraction, d.test_fraction, split_seed(cfg), d.limit, d.folds, d.fold)
    return ds, splits
