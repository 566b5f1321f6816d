"""The picture grid and the before/after preprocessing picture."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from babysit.config import DataConfig, RunConfig
from babysit.data.grid import GAP, SEP, image_grid, save_png
from babysit.data.show import example_indices, preprocess_grid


def test_grid_size_follows_the_layout():
    rows = [torch.rand(3, 1, 8, 8), torch.rand(2, 3, 5, 6), torch.rand(1, 4, 8, 8)]
    img = image_grid(rows, scale=4)
    widths = [3 * (32 + SEP), 2 * (24 + SEP), 4 * 32 + 3 * GAP + SEP]  # grey, RGB, 4 channels side by side
    assert img.size == (SEP + max(widths), SEP + (32 + SEP) + (20 + SEP) + (32 + SEP))
    assert img.mode == "RGB"
    labelled = image_grid(rows, ["original", "zca", "patch-white"], scale=4)
    assert labelled.size[1] == img.size[1] and labelled.size[0] > img.size[0] + 20
    label_w = labelled.size[0] - img.size[0]
    left = np.asarray(labelled)[:, :label_w]
    assert (left < 128).any()  # some text was drawn in the label column


def test_normalize_and_nearest_upscaling():
    ramp = torch.tensor([[[-1.0, 0.0], [1.0, 3.0]]])  # (1, 2, 2): min -1 -> 0, max 3 -> 255
    a = np.asarray(image_grid([ramp[None]], scale=3))
    cell = a[SEP : SEP + 6, SEP : SEP + 6, 0]
    assert cell[0, 0] == 0 and cell[5, 5] == 255 and cell[0, 5] == round(255 / 4) and cell[5, 0] == round(510 / 4)
    assert (cell[:3, :3] == cell[0, 0]).all() and (cell[3:, 3:] == 255).all()  # 3x3 blocks, no blending
    raw = np.asarray(image_grid([torch.tensor([[[-5.0, 100.0]]])[None]], scale=1, normalize="none"))
    assert raw[SEP, SEP, 0] == 0 and raw[SEP, SEP + 1, 0] == 100  # clipped, else as it is
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 255
    assert tuple(np.asarray(image_grid([red], normalize="none"))[SEP, SEP]) == (255, 0, 0)
    with pytest.raises(ValueError):
        image_grid([red], normalize="sigmoid")


def test_save_png_is_atomic_and_readable(tmp_path: Path):
    img = image_grid([torch.rand(2, 1, 4, 4)], ["x"])
    path = save_png(img, tmp_path / "sub" / "grid.png")
    assert path == tmp_path / "sub" / "grid.png"
    with Image.open(path) as back:
        assert back.format == "PNG" and back.size == img.size
        assert np.array_equal(np.asarray(back.convert("RGB")), np.asarray(img))
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary file left behind


def test_example_indices_take_one_per_class_first():
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    assert example_indices(y, 5).tolist() == [0, 2, 3, 1, 4]
    assert example_indices(y, 10).tolist() == [0, 2, 3, 1, 4, 5]


@pytest.mark.parametrize("kind", ["zca", "patch-white"])
def test_preprocess_grid_on_digits(tmp_path: Path, kind: str):
    cfg = replace(RunConfig(), data=DataConfig(name="digits", preprocess=kind))
    path, text = preprocess_grid(cfg, tmp_path / "grid.png", count=8)
    expected = {"zca": "zca: 64 dims, eps 1e-05", "patch-white": "patch-white: 2x2 patches -> 4 channels, eps 1e-05"}
    assert text == expected[kind]
    with Image.open(path) as img:
        channels = 4 if kind == "patch-white" else 1
        assert img.size[1] == SEP + 2 * (32 + SEP)  # two rows of 8x8 digits at scale 4
        assert img.size[0] > SEP + 8 * (channels * 32 + (channels - 1) * GAP + SEP)  # plus the labels
