"""A picture grid of image tensors (Pillow only): one row per tensor, an optional label at the left.

Layout, in output pixels: every cell is its image upscaled ``scale`` times (nearest neighbour),
with ``SEP`` white pixels between cells and around the edge. A cell with C=1 is grey, C=3 is RGB,
and any other C shows its channels side by side as grey, ``GAP`` pixels apart. So a row of K
cells of shape (C, H, W) is ``SEP + K * (cell_w + SEP)`` wide, ``cell_w = C'*W*scale + (C'-1)*GAP``
(C' = 1 for C in 1, 3, else C), and ``H*scale + SEP`` high; labels add a column at the left.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from babysit.rundir import atomic_write_bytes

SEP = 4
"""White pixels between cells and around the grid."""
GAP = 1
"""White pixels between the channels of a cell shown side by side."""
LABEL_PAD = 4
"""Pixels either side of a row label."""


def image_grid(rows: list[torch.Tensor], labels: list[str] | None = None, scale: int = 4,
               normalize: str = "image") -> Image.Image:
    """An RGB picture of ``rows``, each (K, C, H, W) float in any range, laid out as the module says.

    ``normalize``: "image" stretches each image (all its channels together) from its min..max to
    0..255 (a constant image shows black); "none" takes the values as pixels 0..255 (clipped).
    """
    if normalize not in ("image", "none"):
        raise ValueError(f"normalize must be 'image' or 'none', not {normalize!r}")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} rows")
    cells = [[_cell(image, normalize, scale) for image in row] for row in rows]
    heights = [max((c.shape[0] for c in row), default=0) for row in cells]
    font = ImageFont.load_default()
    label_w = 0
    if labels:
        label_w = max(int(font.getbbox(text)[2]) for text in labels) + 2 * LABEL_PAD
    width = label_w + SEP + max((sum(c.shape[1] + SEP for c in row) for row in cells), default=0)
    canvas = np.full((SEP + sum(h + SEP for h in heights), width, 3), 255, np.uint8)
    y = SEP
    for row, h in zip(cells, heights):
        x = label_w + SEP
        for c in row:
            canvas[y : y + c.shape[0], x : x + c.shape[1]] = c
            x += c.shape[1] + SEP
        y += h + SEP
    picture = Image.fromarray(canvas, "RGB")
    if labels:
        draw = ImageDraw.Draw(picture)
        y = SEP
        for text, h in zip(labels, heights):
            top, bottom = font.getbbox(text)[1::2]
            draw.text((LABEL_PAD, y + (h - (bottom - top)) // 2 - top), text, fill=(0, 0, 0), font=font)
            y += h + SEP
    return picture


def save_png(img: Image.Image, path: str | Path) -> Path:
    """Write ``img`` as PNG atomically (temporary file in the same folder, then rename); returns the path."""
    path = Path(path)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _cell(image: torch.Tensor, normalize: str, scale: int) -> np.ndarray:
    """One image (C, H, W) as upscaled RGB uint8 (H*scale, cell_w, 3)."""
    v = image.detach().to("cpu", torch.float64)
    if normalize == "image":
        lo, hi = v.min(), v.max()
        v = (v - lo) / (hi - lo) * 255.0 if hi > lo else torch.zeros_like(v)
    pixels = v.clamp(0, 255).round().to(torch.uint8).numpy()
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest-neighbour upscaling
    if pixels.shape[0] == 3:
        return np.ascontiguousarray(pixels.transpose(1, 2, 0))
    gap = np.full((pixels.shape[1], GAP), 255, np.uint8)
    strips = [part for ch in pixels for part in (gap, ch)][1:]  # channels side by side, GAP apart
    grey = np.concatenate(strips, axis=1)
    return np.repeat(grey[:, :, None], 3, axis=2)
