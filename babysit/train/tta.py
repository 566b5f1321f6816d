"""Test-time augmentation: "marginalise over the noise" by averaging the class probabilities of
several augmented views of each test image.

Views (``babysit eval RUN --tta flip,translate``), combined as a product:

    flip, flip-h     the image and its left-right mirror                  (2 views)
    flip-v           the image and its upside-down version                (2 views)
    translate[-P]    the image and its shifts by P pixels left/right/up/down (5 views; P = 1)
    random-N         N draws of the run's own training pipeline (geometry and photometric ops only)

so ``flip,translate`` gives 10 views, like the 10 crops (4 corners + centre, and mirrors) of AlexNet.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from babysit.config import RunConfig
from babysit.data.augment import AUGMENTATIONS, Augment, parse_pipeline
from babysit.data.warp import compose, flip_matrix, shift_matrix, warp
from babysit.errors import BabysitError

TTA_TOKENS = ("flip", "flip-h", "flip-v", "translate[-P]", "random-N")
RANDOM_STEP = 2**40  # the random views' steps lie far from any training step
MAX_VIEWS = 100  # each view is one more pass over the split; AlexNet's 10 crops gain most of what views give


def parse_tta(text: str) -> tuple[list[tuple[str, torch.Tensor]], int]:
    """``"flip,translate-2"`` -> the fixed views as (name, (flip_h, flip_v, dx, dy)) and the number of random draws."""
    factors: list[list[tuple[str, tuple[float, float, float, float]]]] = []
    draws = 0
    seen: set[str] = set()
    for token in (t.strip().lower() for t in text.split(",") if t.strip()):
        m = re.fullmatch(r"(flip|flip-h|flip-v|translate|random)(?:-(\d+))?", token)
        if m is None or (m.group(1).startswith("flip") and m.group(2)) or (m.group(1) == "random" and not m.group(2)):
            raise BabysitError(f"unknown test-time augmentation {token!r}; use a comma-separated list of "
                               f"{', '.join(TTA_TOKENS)}, e.g. --tta flip,translate.")
        name, arg = m.group(1), int(m.group(2) or 1)
        kind = "flip-h" if name == "flip" else name
        if kind in seen:  # flip,flip would only repeat views (and double their count per repeat)
            raise BabysitError(f"test-time augmentation {name!r} is given twice in {text!r}; give each once.")
        seen.add(kind)
        if name == "random" and not 1 <= arg <= MAX_VIEWS:
            raise BabysitError(f"random-{arg} asks for {arg} random views; use 1 to {MAX_VIEWS}, e.g. random-8.")
        if name in ("flip", "flip-h"):
            factors.append([("", (0, 0, 0, 0)), ("flip-h", (1, 0, 0, 0))])
        elif name == "flip-v":
            factors.append([("", (0, 0, 0, 0)), ("flip-v", (0, 1, 0, 0))])
        elif name == "translate":
            factors.append([("", (0, 0, 0, 0))] + [(f"shift({dx},{dy})", (0, 0, dx, dy)) for dx, dy in
                                                  ((arg, 0), (-arg, 0), (0, arg), (0, -arg))])
        else:
            draws = arg
    fixed = math.prod(len(f) for f in factors)
    if fixed + draws > MAX_VIEWS:
        raise BabysitError(f"--tta {text} makes {fixed + draws} views, each one more pass over the split; use at most "
                           f"{MAX_VIEWS} (e.g. flip,translate: 10 views).")
    views = []
    for combo in itertools.product(*factors) if factors else [[("", (0, 0, 0, 0))]]:
        name = "+".join(n for n, _ in combo if n) or "original"
        views.append((name, torch.tensor([sum(p[i] for _, p in combo) for i in range(4)], dtype=torch.float32)))
    return views, draws


def random_view_augment(pipeline: tuple[str, ...] | list[str], num_classes: int, seed: int, fill: str,
                        fill_value: float) -> Augment:
    """The run's training pipeline without cutout and mixing, for random-N views."""
    ops = [op for op in parse_pipeline(pipeline) if AUGMENTATIONS[op.name].stage in ("geometry", "photometric")]
    if not ops:
        raise BabysitError("random-N test-time views replay the run's augment.pipeline, but this run has no "
                           "geometric or photometric augmentation; use --tta flip,translate instead.")
    return Augment(ops, num_classes, seed, fill=fill, fill_value=fill_value)


@dataclass
class TTAViews:
    """The views of ``babysit eval --tta``: fixed ones (name, (flip_h, flip_v, dx, dy)) and random draws."""

    fixed: list[tuple[str, torch.Tensor]]
    random: Augment | None = None
    draws: int = 0
    fill: str = "constant"  # how the fixed views fill uncovered pixels (the run's augment.fill)
    fill_value: float = 0.0

    def __len__(self) -> int:
        return len(self.fixed) + (self.draws if self.random is not None else 0)


def tta_views(text: str, cfg: RunConfig, num_classes: int) -> TTAViews:
    """Parse ``--tta`` for a run trained with ``cfg`` (its pipeline, seed and fill mode)."""
    fixed, draws = parse_tta(text)
    a = cfg.augment
    rand = random_view_augment(a.pipeline, num_classes, cfg.train.seed, a.fill, a.fill_value) if draws else None
    return TTAViews(fixed, rand, draws, a.fill, a.fill_value)


def _views_of(xb: torch.Tensor, views: TTAViews, dev: torch.device, i: int) -> Iterator[torch.Tensor]:
    """The views of the batch ``xb`` (the ``i``-th image onwards), one after another."""
    b, _, h, w = xb.shape
    for _, (fh, fv, dx, dy) in views.fixed:
        if fh or fv or dx or dy:
            m = compose([shift_matrix(torch.tensor([[dx, dy]], device=dev).expand(b, 2)),
                         flip_matrix(h, w, torch.full((b,), bool(fh), device=dev), axis=0),
                         flip_matrix(h, w, torch.full((b,), bool(fv), device=dev), axis=1)], b, dev)
            yield warp(xb, m, views.fill, views.fill_value)
        else:
            yield xb
    for d in range(views.draws if views.random is not None else 0):
        no_labels = torch.zeros(b, dtype=torch.long, device=dev)
        yield views.random.pixels(xb, no_labels, RANDOM_STEP + d * 2**20 + i)[0]


@torch.no_grad()
def tta_probabilities(model: nn.Module, pre: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      views: TTAViews, batch_size: int = 1000) -> torch.Tensor:
    """Mean softmax probabilities (N, K) over the views of uint8 images ``x`` (N, C, H, W), in eval mode:
    p = 1/V sum_v softmax(f(pre(view_v(x))))."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(dev).float()
        total = None
        for pixels in _views_of(xb, views, dev, i):  # one view at a time: memory does not grow with their count
            p = model(pre(pixels)).softmax(1)
            total = p if total is None else total + p
        assert total is not None
        out.append(total / len(views))
    model.train(was_training)
    return torch.cat(out)
