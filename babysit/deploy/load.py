"""A trained run (or an ensemble of runs) as a classifier of raw images, from its directory alone.

``babysit.start.load_run`` sets a run up again for scoring its own splits, so it reloads and re-splits the
training data. Using a run on new images needs none of that: the run directory holds the config
(config.toml), the class names and input volume (meta.json), the preprocessing fitted on its training split
(preprocess.safetensors) and the weights (checkpoints/). :func:`load_model` reads only those.

Raw images are turned into the run's input exactly as its training images were: grey or RGB as the run's
channels, resized (bilinear, through Pillow) to ``data.size`` when the run set one; a run without
``data.size`` takes images of its own size only (it never saw a resize, so one would be a guess).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from babysit import config as C
from babysit.data.folders import convert_array
from babysit.data.preprocess import Preprocessor
from babysit.ensemble.make import read_members
from babysit.errors import BabysitError
from babysit.rundir import EnsembleDir, RunDir
from babysit.start import load_model as load_weights
from babysit.start import load_preprocessor, resolve_device
from babysit.train.tta import tta_probabilities, tta_views


@dataclass
class LoadedRun:
    """One run ready to score raw images: its network (eval mode), preprocessing, classes and input volume."""

    run: RunDir
    cfg: C.RunConfig
    model: nn.Module
    pre: Preprocessor
    classes: list[str]
    input_shape: tuple[int, int, int]  # (C, H, W) of the run's images before preprocessing

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, tta: str = "") -> torch.Tensor:
        """softmax(f(pre(x))) (N, K) of uint8 images ``x`` (N, C, H, W) already in the run's input volume."""
        bs = self.cfg.train.eval_batch_size
        if tta:
            views = tta_views(tta, self.cfg, len(self.classes))
            return tta_probabilities(self.model, self.pre, x, views, bs).cpu()
        dev = next(self.model.parameters()).device
        return torch.cat([self.model(self.pre(x[i : i + bs].to(dev))).softmax(1).cpu() for i in range(0, len(x), bs)])


def load_run_alone(path: str | Path, weights: str = "best", device: str = "cpu", what: str = "use",
                   model: nn.Module | None = None) -> LoadedRun:
    """One run directory, without its training data (``what``: the verb for the ensemble-directory error)."""
    if EnsembleDir.holds_one(path):
        raise BabysitError(f"{str(path)!r} is an ensemble directory, a set of networks; {what} one of its member "
                           "runs instead (ensemble.json lists them).")
    if not Path(path).is_dir():
        raise BabysitError(f"run directory {str(path)!r} does not exist; pass the folder that `babysit train` "
                           "printed.")
    run = RunDir.open(path)
    cfg = C.load_toml(run.config)
    if cfg.model.heads:
        raise BabysitError(f"run {str(path)!r} is a multi-task run (model.heads={cfg.model.heads}); predict, export "
                           "and "
                           "convert serve one task's probabilities, so score it with `babysit eval` instead.")
    meta = run.read_json(run.meta)
    classes, shape = meta.get("classes"), meta.get("input_shape")
    if not (isinstance(classes, list) and len(classes) >= 2 and isinstance(shape, list) and len(shape) == 3):
        raise BabysitError(f"{run.meta} lacks the class names or input shape (a run older than them); resume the "
                           f"run with `babysit train --resume {run.path}` to write them.")
    input_shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    pre = load_preprocessor(run)
    model = load_weights(run, cfg, pre, input_shape, len(classes), weights, model)
    model = model.to(resolve_device(device, "--device")).eval()
    return LoadedRun(run, cfg, model, pre, [str(c) for c in classes], input_shape)


class Classifier:
    """``babysit.load_model(run)``: a callable from raw images to class probabilities (N, K).

    Images: uint8 (or 0..255 float) arrays or tensors of shape (N, H, W) or (N, H, W, C) with C = 1, 3 or 4
    (RGBA is composited onto black). An ensemble directory averages its members' probabilities with their
    shares, p = sum_i w_i p_i."""

    def __init__(self, members: list[LoadedRun], shares: list[float], path: Path) -> None:
        self.members, self.shares, self.path = members, shares, path
        first = members[0]
        for m in members[1:]:
            if m.classes != first.classes or m.input_shape != first.input_shape:
                raise BabysitError(f"member {m.run.path} has other classes or another input volume than "
                                   f"{first.run.path}; an ensemble's members must score the same images.")
        self.classes = first.classes
        self.input_shape = first.input_shape
        self.size = first.cfg.data.size  # 0: the run took its images at their own size

    def __call__(self, images: Any, tta: str = "") -> torch.Tensor:
        return self.probabilities(self.pixels(images), tta)

    def probabilities(self, x: torch.Tensor, tta: str = "") -> torch.Tensor:
        """p (N, K) of uint8 images (N, C, H, W) already in the run's input volume (see :meth:`pixels`)."""
        if x.shape[1:] != self.input_shape:
            raise BabysitError(f"the images are {tuple(x.shape[1:])} (C, H, W) but the run takes {self.input_shape}; "
                               "pass them through Classifier.pixels first.")
        return sum(w * m.probabilities(x, tta) for w, m in zip(self.shares, self.members))

    def pixels(self, images: Any, name: str = "the images") -> torch.Tensor:
        """Raw images (N, H, W[, C]) -> uint8 (N, C, H, W) in the run's channels and size."""
        x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[3] in (1, 3, 4):
            x = x.transpose(0, 3, 1, 2)
        else:
            raise BabysitError(f"{name} have shape {x.shape}; pass (N, H, W) grey or (N, H, W, C) images with "
                               "C = 1, 3 or 4 (add a first axis of 1 for a single image).")
        return torch.from_numpy(self.convert(to_uint8(x, name), name))

    def convert(self, x: np.ndarray, name: str) -> np.ndarray:
        """uint8 (N, C, H, W) -> the run's channels and, where it resized its data, size."""
        h, w = self.input_shape[1:]
        if not self.size and x.shape[2:] != (h, w):
            raise BabysitError(f"{name} are {x.shape[3]}x{x.shape[2]} (width x height) but the run was trained on "
                               f"{w}x{h} images without data.size, so it never resized; resize them to {w}x{h} first.")
        return convert_array(np.ascontiguousarray(x), self.input_shape[0], self.size)


def to_uint8(x: np.ndarray, name: str) -> np.ndarray:
    """Pixels 0..255 of any numeric dtype -> uint8 (floats rounded); anything else is refused."""
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "uif" or (x.dtype.kind == "f" and not np.isfinite(x).all()):
        raise BabysitError(f"{name} must be numbers 0..255 (uint8 or float), not {x.dtype} with NaN/Inf; pass raw "
                           "pixels.")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise BabysitError(f"{name} have values in [{x.min():g}, {x.max():g}]; pass raw pixels 0..255 (undo any "
                           "scaling or standardisation: the run applies its own preprocessing).")
    return np.rint(x).astype(np.uint8)


def load_model(path: str | Path, weights: str = "best", device: str = "cpu", model: nn.Module | None = None
               ) -> Classifier:
    """A run or ensemble directory as a :class:`Classifier` of raw images (``weights``: best, last, ema, swa,
    snapshot-N, epoch-N of a run; an ensemble uses the weights its ensemble.json names). ``model``: a fresh
    instance of your own module, for a run trained with one (``babysit.train(cfg, model=...)``)."""
    if EnsembleDir.holds_one(path):
        if weights != "best":
            raise BabysitError("--weights picks one run's weights; an ensemble's members are listed in its "
                               "ensemble.json, so drop --weights.")
        members, shares = read_members(path)
        return Classifier([load_run_alone(m.run, m.weights, device) for m in members], shares, Path(path))
    return Classifier([load_run_alone(path, weights, device, model=model)], [1.0], Path(path))
