"""Images per second of babysit's batched augmentation vs a per-image Pillow pipeline doing the same work.

Pipeline: flip-h, rotate-10, scale-0.1, translate-2, noise-0.05, cutout-7 (fill constant 0) on real
images. The Pillow side is what a hand-written Dataset.__getitem__ does, one image at a time:
ImageOps.mirror, one Image.transform(AFFINE, BILINEAR) for rotate+scale+translate, numpy noise and a
numpy cutout, then torch.from_numpy. A third column runs kornia.augmentation's own modules
(RandomHorizontalFlip, RandomAffine, RandomGaussianNoise, RandomErasing) on the same batches, to
check that composing the warp ourselves (one resampling, five fill modes) costs nothing.
Rounds are interleaved (ours, Pillow, kornia, ours, ...) so machine drift hits all alike; the
first round of each is a warm-up. Prints images/s (median over rounds) and the ratios.

    python bench/augment_throughput.py [--data fashion-mnist] [--batch 256] [--batches 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import kornia.augmentation as K
import numpy as np
import torch
from PIL import Image, ImageOps

from babysit.data.augment import Augment, parse_pipeline
from babysit.data.sources import load_dataset

PIPELINE = ["flip-h", "rotate-10", "scale-0.1", "translate-2", "noise-0.05", "cutout-7"]


def pillow_one(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One (H, W) uint8 image through the same transforms, the per-sample way."""
    h, w = img.shape
    pic = Image.fromarray(img)
    if rng.random() < 0.5:
        pic = ImageOps.mirror(pic)
    angle, s = math.radians(rng.uniform(-10, 10)), rng.uniform(0.9, 1.1)
    dx, dy = rng.integers(-2, 3, 2)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # Pillow wants the inverse map output -> input: x_in = a x + b y + c, y_in = d x + e y + f
    cos, sin = math.cos(angle) / s, math.sin(angle) / s
    ox, oy = cx + dx, cy + dy
    coeffs = (cos, sin, cx - cos * ox - sin * oy, -sin, cos, cy + sin * ox - cos * oy)
    pic = pic.transform((w, h), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR, fillcolor=0)
    out = np.asarray(pic, dtype=np.float32) + rng.normal(0, 0.05 * 255, (h, w)).astype(np.float32)
    out = np.clip(out, 0, 255)
    cy_, cx_ = rng.integers(0, h), rng.integers(0, w)
    out[max(0, cy_ - 3) : cy_ + 4, max(0, cx_ - 3) : cx_ + 4] = 0
    return out


def pillow_batch(x: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(np.stack([pillow_one(img, rng) for img in x]))[:, None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 keeps torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    x = ds.train.x[: args.batch * args.batches]
    y = ds.train.y[: len(x)]
    batches = list(zip(x.split(args.batch), y.split(args.batch)))
    ours = Augment(parse_pipeline(PIPELINE), len(ds.train.classes), seed=0, mean_pixel=torch.zeros(x.shape[1]))
    kornia_seq = K.AugmentationSequential(
        K.RandomHorizontalFlip(), K.RandomAffine(degrees=10, translate=(2 / x.shape[-1], 2 / x.shape[-2]),
                                                 scale=(0.9, 1.1), p=1.0),
        K.RandomGaussianNoise(std=0.05, p=1.0), K.RandomErasing(scale=(0.0625, 0.0625), ratio=(1, 1), p=1.0))
    rng = np.random.default_rng(0)

    def run_ours() -> None:
        for step, (xb, yb) in enumerate(batches):
            ours.pixels(xb, yb, step)

    def run_pillow() -> None:
        for xb, _ in batches:
            pillow_batch(xb[:, 0].numpy(), rng)

    def run_kornia() -> None:
        for xb, _ in batches:
            kornia_seq(xb.float() / 255)

    times: dict[str, list[float]] = {"babysit (batched)": [], "Pillow (per image)": [], "kornia.augmentation": []}
    for r in range(args.rounds + 1):
        for name, fn in zip(times, (run_ours, run_pillow, run_kornia)):
            start = time.perf_counter()
            fn()
            if r > 0:
                times[name].append(time.perf_counter() - start)
    rate = {name: len(x) / statistics.median(t) for name, t in times.items()}
    print(f"{args.data}: {len(x)} images {tuple(x.shape[1:])} per round, batch {args.batch}, {args.rounds} rounds "
          f"(+1 warm-up), torch threads {torch.get_num_threads()}; pipeline {', '.join(PIPELINE)}")
    for name, r in rate.items():
        print(f"  {name:<22} {r:12,.0f} images/s")
    base = rate["babysit (batched)"]
    print(f"ratio batched / Pillow: {base / rate['Pillow (per image)']:.1f}x")
    print(f"ratio batched / kornia.augmentation: {base / rate['kornia.augmentation']:.2f}x")


if __name__ == "__main__":
    main()
