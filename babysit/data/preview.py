"""What an augmentation pipeline does: each row one training image, then several augmented draws of it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from babysit.config import RunConfig
from babysit.data.augment import Augment, make_augment
from babysit.data.grid import image_grid, save_png
from babysit.data.show import example_indices
from babysit.data.split import Splits, prepare_data


def showcase(size: int) -> tuple[str, ...]:
    """A pipeline to preview when none is configured, scaled to ``size`` x ``size`` images."""
    return (f"translate-{max(1, round(size / 14))}", "rotate-10", "scale-0.1",
            f"elastic-{round(size * 2 / 7)}-{max(1, round(size / 7))}",
            f"cutout-{max(2, size // 4)}")


def augment_grid(cfg: RunConfig, out: str | Path, count: int = 8, draws: int = 7) -> tuple[Path, Augment]:
    """Save a PNG: ``count`` training images (one per class first), each followed by ``draws`` augmented
    versions, batch by batch as training makes them (steps 0, 1, ...). Pixels are shown as they are (0..255),
    before the preprocessing. An empty ``augment.pipeline`` previews :func:`showcase`. Returns (path, the pipeline)."""
    _, splits = prepare_data(cfg)
    if not cfg.augment.pipeline:
        cfg = replace(cfg, augment=replace(cfg.augment, pipeline=showcase(min(splits.train.x.shape[-2:]))))
    augment = make_augment(cfg, len(splits.classes), splits.train.x, None)
    assert augment is not None
    return save_augment_picture(augment, splits, out, count, draws), augment


def save_augment_picture(augment: Augment, splits: Splits, out: str | Path, count: int = 8, draws: int = 7) -> Path:
    """Rows: ``count`` training images (one per class first), each then in ``draws`` augmented versions
    (training steps 0, 1, ...); written as a PNG to ``out``."""
    idx = example_indices(splits.train.y, count)
    x, y = splits.train.x[idx], splits.train.y[idx]
    views = torch.stack([augment.pixels(x, y, step)[0] for step in range(draws)], 1)  # (N, draws, C, H, W)
    rows = [torch.cat([x[i : i + 1].float(), views[i]]) for i in range(len(x))]
    scale = max(1, 96 // max(x.shape[-2:]))
    picture = image_grid(rows, [splits.classes[int(c)] for c in y], scale=scale, normalize="none")
    return save_png(picture, out)
