"""What a preprocessing does to the pictures: training images before and after, side by side."""

from __future__ import annotations

from pathlib import Path

import torch

from babysit.config import RunConfig
from babysit.data.grid import image_grid, save_png
from babysit.data.preprocess import Preprocessor
from babysit.data.split import prepare_data


def example_indices(y: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` indices into labels ``y``: the first image of each class, then the second, and so on."""
    per_class = [torch.nonzero(y == c).flatten() for c in torch.unique(y)]
    picked: list[int] = []
    for rank in range(max((len(idx) for idx in per_class), default=0)):
        picked += [int(idx[rank]) for idx in per_class if rank < len(idx)]
        if len(picked) >= count:
            break
    return torch.tensor(picked[:count], dtype=torch.long)


def preprocess_grid(cfg: RunConfig, out: str | Path, count: int = 8) -> tuple[Path, str]:
    """Fit ``cfg.data``'s preprocessing on the training split, exactly as training does, and save a
    PNG of ``count`` training images: row "original", row "<kind>" (:meth:`Preprocessor.to_image`).

    Returns (path of the PNG, :meth:`Preprocessor.describe`).
    """
    _, splits = prepare_data(cfg)
    pre = Preprocessor.from_config(splits.train.x, cfg.data)
    x = splits.train.x[example_indices(splits.train.y, count)]
    grid = image_grid([x.float(), pre.to_image(pre(x))], ["original", pre.kind])
    return save_png(grid, out), pre.describe()
