"""The augmentations, one registry entry each: its stage, how many numbers it takes, what it means, and its code.

An entry's code depends on its stage (the stages run in this order, see :mod:`babysit.data.augment`):

    geometry     ``code(args, draw) -> (B, 3, 3)`` forward maps in pixels; the warp composes them, in the
                 order of this file (the first registered is applied last), and resamples once. With
                 ``field=True`` the code returns displacements (B, H, W, 2) added to the sampling grid.
    photometric  ``code(x, args, draw) -> x`` on pixels 0..255 (float); the stage clamps to 0..255 after.
    occlusion    ``code(x, args, draw) -> x``.
    mixing       ``code(x, args, draw) -> (x, lam, partner)``: image i now holds lam[i] of itself and
                 1 - lam[i] of image partner[i]; the stage turns that into soft targets. One mixing op
                 is used per batch, chosen by the batch's random numbers when several are listed.

Ops draw their random numbers from ``draw.rng`` (numpy) and, for big tensors, ``draw.gen`` (torch), in
the order of this file: keep that order, it is what makes every step's batch reproducible across
versions. Adding an augmentation is one ``@AUGMENTATIONS.register`` below plus its test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from babysit.data import warp
from babysit.registry import Registry

Args = tuple[float, ...]
STAGES = ("geometry", "photometric", "occlusion", "mixing")


@dataclass(frozen=True)
class Draw:
    """What an op's code gets besides its numbers: this step's random generators and the batch's size."""

    rng: np.random.Generator  # small draws (one number per image), in registry order
    gen: torch.Generator  # big tensors (noise images), on the batch's device
    b: int
    h: int
    w: int
    device: torch.device
    mean_pixel: torch.Tensor | None = None  # (C,) what cutout writes (the training set's mean pixel)

    def uniform(self, low: float, high: float) -> torch.Tensor:
        """(B,) float32, uniform in low..high."""
        return torch.as_tensor(self.rng.uniform(low, high, self.b), dtype=torch.float32, device=self.device)

    def coin(self) -> torch.Tensor:
        """(B,) bool, True with probability 1/2."""
        return torch.as_tensor(self.rng.random(self.b) < 0.5, device=self.device)


@dataclass(frozen=True)
class OpInfo:
    """One augmentation: what ``babysit augment list`` shows, what the parser checks, and the code."""

    code: Callable[..., Any]  # per stage, see the module docstring
    stage: str  # geometry | photometric | occlusion | mixing
    nargs: tuple[int, int]  # fewest and most numbers after the name
    meaning: str  # what the token does, for `babysit augment list` and errors
    check: Callable[[Args], bool] = lambda args: True
    field: bool = False  # geometry code returns a displacement field instead of a matrix (elastic)


AUGMENTATIONS: Registry[OpInfo] = Registry("augmentation", hint=" (`babysit augment list` explains each)",
                                           make=OpInfo)


def whole(a: float) -> bool:
    return a % 1 == 0


# ---- geometry: forward maps, composed first-registered-outermost: translate . rotate . ... . crop ----

@AUGMENTATIONS.register("translate", stage="geometry", nargs=(1, 1), check=lambda a: a[0] >= 1 and whole(a[0]),
                        meaning="translate-P: shift x and y by whole pixels in -P..P (the same as padding P pixels "
                                "and cropping at random)")
def _translate(args: Args, d: Draw) -> torch.Tensor:
    p = int(args[0])
    return warp.shift_matrix(torch.as_tensor(d.rng.integers(-p, p + 1, (d.b, 2)), dtype=torch.float32,
                                             device=d.device))


@AUGMENTATIONS.register("rotate", stage="geometry", nargs=(1, 1), check=lambda a: 0 < a[0] <= 180,
                        meaning="rotate-D: rotate by an angle uniform in -D..D degrees")
def _rotate(args: Args, d: Draw) -> torch.Tensor:
    return warp.rotation_matrix(d.h, d.w, d.uniform(-args[0], args[0]))


@AUGMENTATIONS.register("scale", stage="geometry", nargs=(1, 1), check=lambda a: 0 < a[0] < 1,
                        meaning="scale-S: zoom by a factor uniform in 1-S..1+S")
def _scale(args: Args, d: Draw) -> torch.Tensor:
    return warp.scale_matrix(d.h, d.w, d.uniform(1.0 - args[0], 1.0 + args[0]))


@AUGMENTATIONS.register("shear", stage="geometry", nargs=(1, 1), check=lambda a: 0 < a[0] < 90,
                        meaning="shear-D: shear along x by an angle uniform in -D..D degrees")
def _shear(args: Args, d: Draw) -> torch.Tensor:
    return warp.shear_matrix(d.h, d.w, d.uniform(-args[0], args[0]))


@AUGMENTATIONS.register("flip-h", stage="geometry", nargs=(0, 0),
                        meaning="flip-h: mirror left-right with probability 1/2 (takes no number)")
def _flip_h(args: Args, d: Draw) -> torch.Tensor:
    return warp.flip_matrix(d.h, d.w, d.coin(), axis=0)


@AUGMENTATIONS.register("flip-v", stage="geometry", nargs=(0, 0),
                        meaning="flip-v: turn upside down with probability 1/2 (takes no number)")
def _flip_v(args: Args, d: Draw) -> torch.Tensor:
    return warp.flip_matrix(d.h, d.w, d.coin(), axis=1)


def _section(d: Draw, bw: np.ndarray, bh: np.ndarray) -> torch.Tensor:
    """The crop matrices of sections bw x bh (B,) at uniformly random places inside the image."""
    x0, y0 = d.rng.uniform(0, 1, d.b) * (d.w - bw), d.rng.uniform(0, 1, d.b) * (d.h - bh)
    box = torch.as_tensor(np.stack([x0, y0, bw, bh], 1), dtype=torch.float32)
    return warp.crop_matrix(d.h, d.w, box.to(d.device))


@AUGMENTATIONS.register("crop", stage="geometry", nargs=(1, 1), check=lambda a: a[0] >= 2 and whole(a[0]),
                        meaning="crop-S: an S x S section at a random place, resized to the image size")
def _crop(args: Args, d: Draw) -> torch.Tensor:
    s = float(min(int(args[0]), d.h, d.w))
    return _section(d, np.full(d.b, s), np.full(d.b, s))


@AUGMENTATIONS.register("resized-crop", stage="geometry", nargs=(1, 1), check=lambda a: 0 < a[0] < 1,
                        meaning="resized-crop-A: a section of A..1 of the area and aspect 3/4..4/3 at a random "
                                "place, resized to the image size")
def _resized_crop(args: Args, d: Draw) -> torch.Tensor:
    area = d.rng.uniform(args[0], 1.0, d.b) * d.h * d.w  # Inception-style
    aspect = np.exp(d.rng.uniform(math.log(3 / 4), math.log(4 / 3), d.b))
    return _section(d, np.clip(np.sqrt(area * aspect), 2, d.w), np.clip(np.sqrt(area / aspect), 2, d.h))


@AUGMENTATIONS.register("elastic", stage="geometry", nargs=(1, 2), field=True,
                        check=lambda a: a[0] > 0 and (len(a) < 2 or a[1] > 0),
                        meaning="elastic-A[-S]: elastic warp, displacements of A pixels smoothed by a Gaussian of "
                                "S pixels (Simard: 34-4 on 28 x 28)")
def _elastic(args: Args, d: Draw) -> torch.Tensor:
    alpha, sigma = args[0], (args[1] if len(args) > 1 else 4.0)
    noise = torch.rand(d.b, 2, d.h, d.w, generator=d.gen, device=d.device) * 2 - 1
    return warp.elastic_field(noise, torch.full((d.b,), alpha, device=d.device), sigma)


# ---- photometric: pixels 0..255 in, pixels out (clamped by the stage) ----

@AUGMENTATIONS.register("brightness", stage="photometric", nargs=(1, 1), check=lambda a: 0 < a[0] <= 1,
                        meaning="brightness-B: add a value uniform in -B..B of the full range")
def _brightness(x: torch.Tensor, args: Args, d: Draw) -> torch.Tensor:
    return x + 255 * d.uniform(-args[0], args[0]).view(d.b, 1, 1, 1)


@AUGMENTATIONS.register("contrast", stage="photometric", nargs=(1, 1), check=lambda a: 0 < a[0] < 1,
                        meaning="contrast-C: stretch about the image's mean by 1-C..1+C")
def _contrast(x: torch.Tensor, args: Args, d: Draw) -> torch.Tensor:
    factor = d.uniform(1 - args[0], 1 + args[0]).view(d.b, 1, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * factor + mean


@AUGMENTATIONS.register("noise", stage="photometric", nargs=(1, 1), check=lambda a: 0 < a[0] <= 1,
                        meaning="noise-S: add Gaussian noise of std S of the full range")
def _noise(x: torch.Tensor, args: Args, d: Draw) -> torch.Tensor:
    return x + 255 * args[0] * torch.randn(x.shape, generator=d.gen, device=x.device)


# ---- occlusion ----

def box_mask(h: int, w: int, cy: np.ndarray, cx: np.ndarray, bh: int | np.ndarray, bw: int | np.ndarray,
             device: torch.device) -> torch.Tensor:
    """(B, H, W) bool: the boxes of height ``bh`` and width ``bw`` centred at (cy, cx), clipped to the image."""
    top = torch.as_tensor(cy - np.asarray(bh) // 2, device=device).view(-1, 1, 1)
    left = torch.as_tensor(cx - np.asarray(bw) // 2, device=device).view(-1, 1, 1)
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    bh_t = torch.as_tensor(np.broadcast_to(bh, cy.shape).copy(), device=device).view(-1, 1, 1)
    bw_t = torch.as_tensor(np.broadcast_to(bw, cx.shape).copy(), device=device).view(-1, 1, 1)
    return (rows >= top) & (rows < top + bh_t) & (cols >= left) & (cols < left + bw_t)


@AUGMENTATIONS.register("cutout", stage="occlusion", nargs=(1, 1), check=lambda a: a[0] >= 1 and whole(a[0]),
                        meaning="cutout-S: set an S x S square at a random centre to the mean pixel")
def _cutout(x: torch.Tensor, args: Args, d: Draw) -> torch.Tensor:
    """An S x S square centred anywhere in the image (partly outside at the borders) takes the mean pixel,
    so after mean subtraction it is zero, as in DeVries & Taylor."""
    size, c = int(args[0]), x.shape[1]
    inside = box_mask(d.h, d.w, d.rng.integers(0, d.h, d.b), d.rng.integers(0, d.w, d.b), size, size, x.device)
    fill = (d.mean_pixel if d.mean_pixel is not None else torch.zeros(c)).to(x).view(1, c, 1, 1)
    return torch.where(inside[:, None], fill, x)


# ---- mixing: a partner from the same batch, lambda ~ Beta(A, A) per image ----

def _partner(args: Args, d: Draw) -> tuple[np.ndarray, torch.Tensor]:
    lam = d.rng.beta(args[0], args[0], d.b)  # (B,) one lambda per image
    return lam, torch.as_tensor(d.rng.permutation(d.b), device=d.device)


@AUGMENTATIONS.register("mixup", stage="mixing", nargs=(1, 1), check=lambda a: a[0] > 0,
                        meaning="mixup-A: blend each image with a partner, weight lambda ~ Beta(A, A); soft labels")
def _mixup(x: torch.Tensor, args: Args, d: Draw) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    lam, partner = _partner(args, d)
    lam_t = torch.as_tensor(lam, dtype=x.dtype, device=x.device).view(d.b, 1, 1, 1)
    return lam_t * x + (1 - lam_t) * x[partner], lam, partner


@AUGMENTATIONS.register("cutmix", stage="mixing", nargs=(1, 1), check=lambda a: a[0] > 0,
                        meaning="cutmix-A: paste a box of a partner covering 1-lambda of the image, "
                                "lambda ~ Beta(A, A); soft labels")
def _cutmix(x: torch.Tensor, args: Args, d: Draw) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    lam, partner = _partner(args, d)
    cut = np.sqrt(1 - lam)  # a box of (1 - lambda) of the area, clipped at the borders ...
    bh, bw = np.round(cut * d.h).astype(np.int64), np.round(cut * d.w).astype(np.int64)
    box = box_mask(d.h, d.w, d.rng.integers(0, d.h, d.b), d.rng.integers(0, d.w, d.b), bh, bw, x.device)
    kept = 1 - box.flatten(1).float().mean(1).cpu().numpy()  # ... so lambda is the share actually kept
    return torch.where(box[:, None], x[partner], x), kept, partner
