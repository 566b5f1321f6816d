"""What an augmentation pipeline does: each row one training image, then several augmented draws of it."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from babysit.config import RunConfig
from babysit.data.augment import Augment, make_augment
from babysit.data.grid import image_grid, save_png
from babysit.data.show import example_indices
from babysit.data.sources import load_dataset
from babysit.data.split import split_dataset


def showcase(size: int) -> tuple[str, ...]:
    """A pipeline to preview when none is configured, scaled to ``size`` x ``size`` images."""
    return (f"translate-{max(1, round(size / 14))}", "rotate-10", "scale-0.1",
            f"elastic-{round(size * 2 / 7)}-{max(1, round(size / 7))}",
            f"cutout-{max(2, size // 4)}")


def augment_grid(cfg: RunConfig, out: str | Path, count: int = 8, draws: int = 7) -> tuple[Path, Augment]:
    """Save a PNG: ``count`` training images (one per class first), each followed by ``draws`` augmented
    versions, batch by batch as training makes them (steps 0, 1, ...). Pixels are shown as they are (0..255),
    before the preprocessing. Returns (path, the pipeline)."""
    d = cfg.data
    ds = load_dataset(d.name, channels=d.channels, size=d.size)  # as babysit.experiment.prepare_data
    splits = split_dataset(ds, d.val_fraction, d.test_fraction, cfg.train.seed, d.limit)
    augment = make_augment(cfg, len(splits.classes), splits.train.x, None)
    assert augment is not None, "augment.pipeline is empty"
    idx = example_indices(splits.train.y, count)
    picture = augment_picture(augment, splits.train.x[idx], splits.train.y[idx], splits.classes, draws)
    return save_png(picture, out), augment


def augment_picture(augment: Augment, x: torch.Tensor, y: torch.Tensor, classes: list[str],
                    draws: int = 7) -> Image.Image:
    """Rows: each image of ``x`` (uint8), then ``draws`` augmented versions (training steps 0, 1, ...)."""
    views = torch.stack([augment.pixels(x, y, step)[0] for step in range(draws)], 1)  # (N, draws, C, H, W)
    rows = [torch.cat([x[i : i + 1].float(), views[i]]) for i in range(len(x))]
    scale = max(1, 96 // max(x.shape[-2:]))
    return image_grid(rows, [classes[int(c)] for c in y], scale=scale, normalize="none")
