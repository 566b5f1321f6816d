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

Each op is one entry of the registry in :mod:`babysit.data.augment_ops`, carrying its own code; this
module parses pipelines and runs the stages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from babysit.config import RunConfig
from babysit.data.augment_ops import AUGMENTATIONS, STAGES, Draw, OpInfo
from babysit.data.named import Traits, traits_of
from babysit.data.stream import pixel_means
from babysit.data.warp import compose, warp
from babysit.errors import BabysitError

__all__ = ["AUGMENTATIONS", "MIXING_LOSSES", "Augment", "AugmentOp", "OpInfo", "augment_warnings", "check_augment",
           "list_augmentations", "make_augment", "parse_op", "parse_pipeline"]


@dataclass(frozen=True)
class AugmentOp:
    """One pipeline token: ``rotate-10`` is AugmentOp("rotate", (10.0,))."""

    name: str
    args: tuple[float, ...] = ()

    def __str__(self) -> str:
        return "-".join([self.name, *(f"{a:g}" for a in self.args)])


MIXING_LOSSES = ("softmax", "bce")  # the losses that take soft (N, K) targets


def list_augmentations() -> list[str]:
    """The token names ``augment.pipeline`` accepts."""
    return AUGMENTATIONS.names()


def parse_op(token: str) -> AugmentOp:
    """``"rotate-10"`` -> AugmentOp("rotate", (10.0,)); a bad token is a :class:`BabysitError`."""
    m = re.fullmatch(r"([a-z]+(?:-[a-z]+)*)((?:-[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)*)", token.strip().lower())
    if m is None:
        raise AUGMENTATIONS.error(token.strip().lower(), shown=token)
    info = AUGMENTATIONS.get(m.group(1), shown=token)
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


class Augment:
    """``Augment(ops, ...)(x_uint8, y, step) -> (x, targets)``: augmented, preprocessed training batch.

    ``targets`` are the labels (B,) unless the pipeline mixes images; then they are soft (B, K).
    ``preprocess`` maps pixels 0..255 to the network's input (a fitted Preprocessor); ``mean_pixel``
    (C,) is what cutout writes. Fill modes and value: see warp.py. The ops run by stage and, within a
    stage, in registry order (augment_ops.py), whatever order the pipeline lists them in.
    """

    def __init__(self, ops: list[AugmentOp], num_classes: int, seed: int = 0,
                 preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 mean_pixel: torch.Tensor | None = None, fill: str = "constant", fill_value: float = 0.0):
        self.ops = {op.name: op.args for op in ops}
        self.num_classes, self.seed = num_classes, seed
        self.preprocess, self.mean_pixel = preprocess, mean_pixel
        self.fill, self.fill_value = fill, fill_value
        self._stages: dict[str, list[tuple[OpInfo, tuple[float, ...]]]] = {
            stage: [(info, self.ops[name]) for name, info in AUGMENTATIONS.items()
                    if name in self.ops and info.stage == stage] for stage in STAGES}

    def __repr__(self) -> str:
        return f"Augment({', '.join(str(AugmentOp(n, a)) for n, a in self.ops.items())}; fill {self.fill})"

    def has(self, stage: str) -> bool:
        """Whether any op of ``stage`` (geometry, photometric, occlusion, mixing) is in the pipeline."""
        return bool(self._stages[stage])

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
        b, _, h, w = x.shape
        draw = Draw(rng, gen, b, h, w, x.device, self.mean_pixel)
        x = self.geometry(x.float(), draw).clamp(0, 255)  # bilinear weights can overshoot by a rounding error
        if self.has("photometric"):
            for info, args in self._stages["photometric"]:
                x = info.code(x, args, draw)
            x = x.clamp(0, 255)
        for info, args in self._stages["occlusion"]:
            x = info.code(x, args, draw)
        if self.mixes:
            return self.mix(x, y, draw)
        return x, y

    def geometry(self, x: torch.Tensor, draw: Draw) -> torch.Tensor:
        """Every geometric op's matrix composed into one forward map per image (plus any displacement
        field), then one resampling."""
        if not self.has("geometry"):
            return x
        matrices, fields = [], []
        for info, args in self._stages["geometry"]:
            (fields if info.field else matrices).append(info.code(args, draw))
        field = sum(fields[1:], fields[0]) if fields else None
        return warp(x, compose(matrices, draw.b, draw.device), self.fill, self.fill_value, field)

    def mix(self, x: torch.Tensor, y: torch.Tensor, draw: Draw) -> tuple[torch.Tensor, torch.Tensor]:
        """One mixing op (chosen by a draw when several are listed) pairs each image with a partner; targets
        lambda * onehot(y) + (1 - lambda) * onehot(y_partner)."""
        mixers = self._stages["mixing"]
        info, args = mixers[int(draw.rng.random() * len(mixers))] if len(mixers) > 1 else mixers[0]
        x, lam, partner = info.code(x, args, draw)
        onehot = torch.nn.functional.one_hot(y, self.num_classes).to(x.dtype)
        lam_y = torch.as_tensor(lam, dtype=x.dtype, device=x.device).view(draw.b, 1)
        return x, lam_y * onehot + (1 - lam_y) * onehot[partner]


def make_augment(cfg: RunConfig, num_classes: int, x_train: torch.Tensor,
                 preprocess: Callable[[torch.Tensor], torch.Tensor] | None,
                 ops: list[AugmentOp] | None = None) -> Augment | None:
    """The run's augmentation (None when ``augment.pipeline`` is empty); ``x_train`` (N, C, H, W) uint8
    gives cutout its mean pixel. ``ops``: the pipeline already parsed (default: parse ``cfg``'s)."""
    ops = check_augment(cfg) if ops is None else ops
    if not ops:
        return None
    mean_pixel = pixel_means(x_train)  # in chunks: a memory-mapped (streamed) set is never made float whole
    return Augment(ops, num_classes, cfg.train.seed, preprocess, mean_pixel, cfg.augment.fill, cfg.augment.fill_value)


def check_augment(cfg: RunConfig) -> list[AugmentOp]:
    """Parse ``augment.pipeline`` and refuse mixing with a loss that cannot take soft targets."""
    ops = parse_pipeline(cfg.augment.pipeline)
    mixing = [str(op) for op in ops if AUGMENTATIONS[op.name].stage == "mixing"]
    if mixing and cfg.loss.name not in MIXING_LOSSES:
        raise BabysitError(f"{mixing[0]} makes soft labels, which loss.name={cfg.loss.name} cannot take; use "
                           f"--loss.name={MIXING_LOSSES[0]} or drop {mixing[0]} from augment.pipeline.")
    return ops


def augment_warnings(ops: list[AugmentOp], dataset: str, preprocess: str = "none",
                     traits: Traits | None = None) -> list[str]:
    """What the config check says about a pipeline (warnings, not errors). ``traits`` are the data set's
    (:attr:`Dataset.traits`); by default those of the named set ``dataset``, unknown for anything else.

    - flips that change what the image shows (the notes: "not MNIST"): a 2 mirrored is no 2, a 6 upside
      down is a 9; clothes survive a left-right mirror but not being turned upside down;
    - geometry on top of whole-image whitening (pca-white, zca): the whitening matrix is fitted to the pixel
      layout of unmoved images and scales directions that had almost no variance by up to 1/sqrt(eps); a
      shifted or rotated image puts energy there. On digits, zca + translate-1,rotate-10 diverged with
      whiten_eps=1e-5 and reached 81-95 % test instead of 98-99 % with larger eps.
    """
    t = traits if traits is not None else traits_of(dataset)
    out = []
    for op in ops:
        if op.name == "flip-h" and t.mirror_safe is False:
            out.append(f"flip-h on {dataset}: {t.mirror_why}; drop flip-h and use translate or rotate instead.")
        if op.name == "flip-v" and t.upright_only:
            out.append(f"flip-v on {dataset}: upside-down images change class meaning (6 and 9) or never occur "
                       "(clothes); drop flip-v.")
        if op.name == "rotate" and t.max_rotation is not None and op.args[0] > t.max_rotation:
            out.append(f"rotate-{op.args[0]:g} on {dataset}: turns beyond ~{t.max_rotation:g} degrees "
                       f"{t.rotation_why}; use rotate-{t.max_rotation / 2:g}.")
    moving = [str(op) for op in ops if AUGMENTATIONS[op.name].stage == "geometry"]
    if moving and preprocess in ("pca-white", "zca"):
        out.append(f"{moving[0]} with data.preprocess={preprocess}: whole-image whitening is fitted to unmoved "
                   "images and blows up what a warp moves into low-variance pixels; use --data.preprocess="
                   "patch-white (or channel-mean-std) with geometric augmentation.")
    return out
