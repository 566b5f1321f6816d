"""Training-time data augmentation: whole batches on the training device, seeded by (seed, step).

A pipeline is a list of tokens, ``NAME`` or ``NAME-ARG`` (``augment.pipeline``), for example
``["flip-h", "translate-2", "rotate-10", "cutout-8", "mixup-0.2"]``; ``babysit augment list`` shows
them all. Whatever order they are listed in, they run by stage:

    geometry     flips, rotate, scale, shear, translate, crop, resized-crop, elastic: one warp (warp.py)
    photometric  brightness, contrast, noise, on pixels 0..255, clamped back into 0..255
    occlusion    cutout: a square set to the training set's mean pixel (zero after mean subtraction)
    mixing       mixup, cutmix: blend or paste a partner image; the labels become soft (rows sum to 1)

then the run's preprocessing (fitted on the unaugmented training split) is applied, so whitening and
mean subtraction see augmented pixels exactly as they see real ones. The random numbers of step ``t``
come from a generator seeded with (seed, t): the same step always gets the same augmented batch, and a
resumed run continues exactly. Augmentation is for training only; evaluation never calls it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from babysit.config import RunConfig
from babysit.data.warp import affine_matrix, crop_matrix, elastic_field, warp
from babysit.errors import BabysitError


@dataclass(frozen=True)
class AugmentOp:
    """One pipeline token: ``rotate-10`` is AugmentOp("rotate", (10.0,))."""

    name: str
    args: tuple[float, ...] = ()

    def __str__(self) -> str:
        return "-".join([self.name, *(f"{a:g}" for a in self.args)])


@dataclass(frozen=True)
class OpInfo:
    stage: str  # geometry | photometric | occlusion | mixing
    nargs: tuple[int, int]  # fewest and most numbers after the name
    meaning: str  # what the token does, for `babysit augment list` and errors
    check: Callable[[tuple[float, ...]], bool] = lambda args: True


AUGMENTATIONS: dict[str, OpInfo] = {
    "flip-h": OpInfo("geometry", (0, 0), "flip-h: mirror left-right with probability 1/2 (takes no number)"),
    "flip-v": OpInfo("geometry", (0, 0), "flip-v: turn upside down with probability 1/2 (takes no number)"),
    "rotate": OpInfo("geometry", (1, 1), "rotate-D: rotate by an angle uniform in -D..D degrees",
                     lambda a: 0 < a[0] <= 180),
    "scale": OpInfo("geometry", (1, 1), "scale-S: zoom by a factor uniform in 1-S..1+S", lambda a: 0 < a[0] < 1),
    "shear": OpInfo("geometry", (1, 1), "shear-D: shear along x by an angle uniform in -D..D degrees",
                    lambda a: 0 < a[0] < 90),
    "translate": OpInfo("geometry", (1, 1), "translate-P: shift x and y by whole pixels in -P..P "
                        "(the same as padding P pixels and cropping at random)", lambda a: a[0] >= 1 and a[0] % 1 == 0),
    "crop": OpInfo("geometry", (1, 1), "crop-S: an S x S section at a random place, resized to the image size",
                   lambda a: a[0] >= 2 and a[0] % 1 == 0),
    "resized-crop": OpInfo("geometry", (1, 1), "resized-crop-A: a section of A..1 of the area and aspect 3/4..4/3 "
                           "at a random place, resized to the image size", lambda a: 0 < a[0] < 1),
    "elastic": OpInfo("geometry", (1, 2), "elastic-A[-S]: elastic warp, displacements of A pixels smoothed by a "
                      "Gaussian of S pixels (Simard: 34-4 on 28 x 28)",
                      lambda a: a[0] > 0 and (len(a) < 2 or a[1] > 0)),
    "brightness": OpInfo("photometric", (1, 1), "brightness-B: add a value uniform in -B..B of the full range",
                         lambda a: 0 < a[0] <= 1),
    "contrast": OpInfo("photometric", (1, 1), "contrast-C: stretch about the image's mean by 1-C..1+C",
                       lambda a: 0 < a[0] < 1),
    "noise": OpInfo("photometric", (1, 1), "noise-S: add Gaussian noise of std S of the full range",
                    lambda a: 0 < a[0] <= 1),
    "cutout": OpInfo("occlusion", (1, 1), "cutout-S: set an S x S square at a random centre to the mean pixel",
                     lambda a: a[0] >= 1 and a[0] % 1 == 0),
    "mixup": OpInfo("mixing", (1, 1), "mixup-A: blend each image with a partner, weight lambda ~ Beta(A, A); "
                    "soft labels", lambda a: a[0] > 0),
    "cutmix": OpInfo("mixing", (1, 1), "cutmix-A: paste a box of a partner covering 1-lambda of the image, "
                     "lambda ~ Beta(A, A); soft labels", lambda a: a[0] > 0),
}
MIXING_LOSSES = ("softmax", "bce")  # the losses that take soft (N, K) targets


def list_augmentations() -> list[str]:
    """The token names ``augment.pipeline`` accepts."""
    return list(AUGMENTATIONS)


def parse_op(token: str) -> AugmentOp:
    """``"rotate-10"`` -> AugmentOp("rotate", (10.0,)); a bad token is a :class:`BabysitError`."""
    m = re.fullmatch(r"([a-z]+(?:-[a-z]+)*)((?:-[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)*)", token.strip().lower())
    info = AUGMENTATIONS.get(m.group(1)) if m else None
    if m is None or info is None:
        raise BabysitError(f"unknown augmentation {token!r}; choose from {', '.join(AUGMENTATIONS)} "
                           "(`babysit augment list` explains each).")
    args = tuple(float(v) for v in m.group(2).split("-")[1:])
    if not info.nargs[0] <= len(args) <= info.nargs[1] or not info.check(args):
        raise BabysitError(f"bad augmentation {token!r}: {info.meaning}.")
    return AugmentOp(m.group(1), args)


def parse_pipeline(tokens: tuple[str, ...] | list[str]) -> list[AugmentOp]:
    """Parse every token; each name may appear once."""
    ops = [parse_op(t) for t in tokens]
    names = [op.name for op in ops]
    for name in names:
        if names.count(name) > 1:
            raise BabysitError(f"augmentation {name!r} is listed twice in augment.pipeline; keep one.")
    return ops


def uniform(rng: np.random.Generator, low: float, high: float, n: int, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(rng.uniform(low, high, n), dtype=torch.float32, device=device)


class Augment:
    """``Augment(ops, ...)(x_uint8, y, step) -> (x, targets)``: augmented, preprocessed training batch.

    ``targets`` are the labels (B,) unless the pipeline mixes images; then they are soft (B, K).
    ``preprocess`` maps pixels 0..255 to the network's input (a fitted Preprocessor); ``mean_pixel``
    (C,) is what cutout writes. Fill modes and value: see warp.py.
    """

    def __init__(self, ops: list[AugmentOp], num_classes: int, seed: int = 0,
                 preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 mean_pixel: torch.Tensor | None = None, fill: str = "constant", fill_value: float = 0.0):
        self.ops = {op.name: op.args for op in ops}
        self.num_classes, self.seed = num_classes, seed
        self.preprocess, self.mean_pixel = preprocess, mean_pixel
        self.fill, self.fill_value = fill, fill_value

    def __repr__(self) -> str:
        return f"Augment({', '.join(str(AugmentOp(n, a)) for n, a in self.ops.items())}; fill {self.fill})"

    def has(self, stage: str) -> bool:
        """Whether any op of ``stage`` (geometry, photometric, occlusion, mixing) is in the pipeline."""
        return any(AUGMENTATIONS[name].stage == stage for name in self.ops)

    @property
    def mixes(self) -> bool:
        return self.has("mixing")

    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, targets = self.pixels(x, y, step)
        return (pixels if self.preprocess is None else self.preprocess(pixels)), targets

    def pixels(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented batch in pixel units 0..255 (float) and its targets, before preprocessing."""
        rng = np.random.default_rng([self.seed, step, 0xA06])  # this step's numbers, whatever ran before
        gen = torch.Generator(x.device).manual_seed(int(rng.integers(2**62)))  # for the big noise tensors
        x = x.float()
        x = self.geometry(x, rng, gen).clamp(0, 255)  # bilinear weights can overshoot by a rounding error
        x = self.photometric(x, rng, gen)
        if "cutout" in self.ops:
            x = self.cutout(x, int(self.ops["cutout"][0]), rng)
        if self.mixes:
            return self.mix(x, y, rng)
        return x, y

    def geometry(self, x: torch.Tensor, rng: np.random.Generator, gen: torch.Generator) -> torch.Tensor:
        """All geometric ops as one forward matrix per image (crop first, then flips and the affine part)."""
        b, _, h, w = x.shape
        o, dev = self.ops, x.device
        if not self.has("geometry"):
            return x
        coin = lambda name: torch.as_tensor(rng.random(b) < 0.5, device=dev) if name in o else None
        spread = lambda name, base=0.0: (uniform(rng, base - o[name][0], base + o[name][0], b, dev)
                                         if name in o else None)
        shift = None
        if "translate" in o:
            p = int(o["translate"][0])
            shift = torch.as_tensor(rng.integers(-p, p + 1, (b, 2)), dtype=torch.float32, device=dev)
        m = affine_matrix(h, w, angle=spread("rotate"), scale=spread("scale", 1.0), shear=spread("shear"),
                          shift=shift, flip_h=coin("flip-h"), flip_v=coin("flip-v"), batch=b, device=dev)
        if "crop" in o or "resized-crop" in o:
            m = m @ crop_matrix(h, w, self.crop_boxes(h, w, b, rng).to(dev))
        field = None
        if "elastic" in o:
            alpha, sigma = o["elastic"][0], (o["elastic"][1] if len(o["elastic"]) > 1 else 4.0)
            noise = torch.rand(b, 2, h, w, generator=gen, device=dev) * 2 - 1
            field = elastic_field(noise, torch.full((b,), alpha, device=dev), sigma)
        return warp(x, m, self.fill, self.fill_value, field)

    def crop_boxes(self, h: int, w: int, b: int, rng: np.random.Generator) -> torch.Tensor:
        """(B, 4) sections (x0, y0, width, height): a fixed S x S (crop) or Inception-style (resized-crop)."""
        if "crop" in self.ops:
            s = min(int(self.ops["crop"][0]), h, w)
            bw, bh = np.full(b, float(s)), np.full(b, float(s))
        else:
            area = rng.uniform(self.ops["resized-crop"][0], 1.0, b) * h * w
            aspect = np.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3), b))
            bw = np.clip(np.sqrt(area * aspect), 2, w)
            bh = np.clip(np.sqrt(area / aspect), 2, h)
        x0, y0 = rng.uniform(0, 1, b) * (w - bw), rng.uniform(0, 1, b) * (h - bh)
        return torch.as_tensor(np.stack([x0, y0, bw, bh], 1), dtype=torch.float32)

    def photometric(self, x: torch.Tensor, rng: np.random.Generator, gen: torch.Generator) -> torch.Tensor:
        """Illumination and sensor noise on pixels 0..255, clamped back into range."""
        o, b = self.ops, len(x)
        if not self.has("photometric"):
            return x
        if "brightness" in o:
            x = x + 255 * uniform(rng, -o["brightness"][0], o["brightness"][0], b, x.device).view(b, 1, 1, 1)
        if "contrast" in o:
            factor = uniform(rng, 1 - o["contrast"][0], 1 + o["contrast"][0], b, x.device).view(b, 1, 1, 1)
            mean = x.mean((1, 2, 3), keepdim=True)
            x = (x - mean) * factor + mean
        if "noise" in o:
            x = x + 255 * o["noise"][0] * torch.randn(x.shape, generator=gen, device=x.device)
        return x.clamp(0, 255)

    def cutout(self, x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
        """Cutout: an S x S square centred anywhere in the image (partly outside at the borders) takes
        the mean pixel, so after mean subtraction it is zero, as in DeVries & Taylor."""
        b, c, h, w = x.shape
        inside = self.box_mask(h, w, rng.integers(0, h, b), rng.integers(0, w, b), size, size, x.device)
        fill = (self.mean_pixel if self.mean_pixel is not None else torch.zeros(c)).to(x).view(1, c, 1, 1)
        return torch.where(inside[:, None], fill, x)

    @staticmethod
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

    def mix(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup (blend with weight lambda) or cutmix (paste a box covering 1 - lambda) with a partner from the
        same batch; targets lambda * onehot(y) + (1 - lambda) * onehot(y_partner). With both in the
        pipeline each batch uses one of them, chosen by a coin."""
        b, _, h, w = x.shape
        kind = "mixup" if "cutmix" not in self.ops or ("mixup" in self.ops and rng.random() < 0.5) else "cutmix"
        alpha = self.ops[kind][0]
        lam = rng.beta(alpha, alpha, b)  # (B,) one lambda per image
        partner = torch.as_tensor(rng.permutation(b), device=x.device)
        if kind == "mixup":
            lam_t = torch.as_tensor(lam, dtype=x.dtype, device=x.device).view(b, 1, 1, 1)
            x = lam_t * x + (1 - lam_t) * x[partner]
        else:
            cut = np.sqrt(1 - lam)  # a box of (1 - lambda) of the area, clipped at the borders ...
            bh, bw = np.round(cut * h).astype(np.int64), np.round(cut * w).astype(np.int64)
            box = self.box_mask(h, w, rng.integers(0, h, b), rng.integers(0, w, b), bh, bw, x.device)
            x = torch.where(box[:, None], x[partner], x)
            lam = 1 - box.flatten(1).float().mean(1).cpu().numpy()  # ... so lambda is the share actually kept
        onehot = torch.nn.functional.one_hot(y, self.num_classes).to(x.dtype)
        lam_y = torch.as_tensor(lam, dtype=x.dtype, device=x.device).view(b, 1)
        return x, lam_y * onehot + (1 - lam_y) * onehot[partner]


def make_augment(cfg: RunConfig, num_classes: int, x_train: torch.Tensor,
                 preprocess: Callable[[torch.Tensor], torch.Tensor] | None) -> Augment | None:
    """The run's augmentation (None when ``augment.pipeline`` is empty); ``x_train`` (N, C, H, W) uint8
    gives cutout its mean pixel."""
    ops = check_augment(cfg)
    if not ops:
        return None
    mean_pixel = torch.stack([x_train[:, c].float().mean() for c in range(x_train.shape[1])])
    return Augment(ops, num_classes, cfg.train.seed, preprocess, mean_pixel, cfg.augment.fill, cfg.augment.fill_value)


def check_augment(cfg: RunConfig) -> list[AugmentOp]:
    """Parse ``augment.pipeline`` and refuse mixing with a loss that cannot take soft targets."""
    ops = parse_pipeline(cfg.augment.pipeline)
    mixing = [str(op) for op in ops if AUGMENTATIONS[op.name].stage == "mixing"]
    if mixing and cfg.loss.name not in MIXING_LOSSES:
        raise BabysitError(f"{mixing[0]} makes soft labels, which loss.name={cfg.loss.name} cannot take; use "
                           f"--loss.name={MIXING_LOSSES[0]} or drop {mixing[0]} from augment.pipeline.")
    return ops


def augment_warnings(ops: list[AugmentOp], dataset: str, preprocess: str = "none") -> list[str]:
    """What the config check says about a pipeline (warnings, not errors):

    - flips that change what the image shows (the notes: "not MNIST"): a 2 mirrored is no 2, a 6 upside
      down is a 9; clothes survive a left-right mirror but not being turned upside down;
    - geometry on top of whole-image whitening (pca-white, zca): the whitening matrix is fitted to the pixel
      layout of unmoved images and scales directions that had almost no variance by up to 1/sqrt(eps); a
      shifted or rotated image puts energy there. On digits, zca + translate-1,rotate-10 diverged with
      whiten_eps=1e-5 and reached 81-95 % test instead of 98-99 % with larger eps.
    """
    name = dataset.lower()
    digits = name in ("digits", "mnist") or "digit" in name
    fashion = "fashion" in name
    out = []
    for op in ops:
        if op.name == "flip-h" and digits:
            out.append(f"flip-h on {dataset}: a mirrored digit is not the same digit (2, 3, 4, 5, 7 change); "
                       "drop flip-h and use translate or rotate instead.")
        if op.name == "flip-v" and (digits or fashion):
            out.append(f"flip-v on {dataset}: upside-down images change class meaning (6 and 9) or never occur "
                       "(clothes); drop flip-v.")
        if op.name == "rotate" and digits and op.args[0] > 30:
            out.append(f"rotate-{op.args[0]:g} on {dataset}: turns beyond ~30 degrees confuse 6 and 9; use rotate-15.")
    moving = [str(op) for op in ops if AUGMENTATIONS[op.name].stage == "geometry"]
    if moving and preprocess in ("pca-white", "zca"):
        out.append(f"{moving[0]} with data.preprocess={preprocess}: whole-image whitening is fitted to unmoved "
                   "images and blows up what a warp moves into low-variance pixels; use --data.preprocess="
                   "patch-white (or channel-mean-std) with geometric augmentation.")
    return out
