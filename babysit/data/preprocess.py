"""Preprocessing fitted on the training split only, then applied to every split.

The lecture's common pitfall: the statistics (mean image, per-channel mean and std) must be
computed over the training data alone and subtracted equally from train, val and test.
Pixels are first scaled from 0..255 to 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from babysit.errors import BabysitError

KINDS = ("none", "mean-image", "channel-mean", "channel-mean-std")


@dataclass(frozen=True)
class Preprocessor:
    """x -> (x/255 - mean) / std with ``mean``/``std`` broadcastable to (N, C, H, W)."""

    kind: str
    mean: torch.Tensor  # (1, C, H, W) for mean-image, (1, C, 1, 1) otherwise
    std: torch.Tensor  # same shape as mean; ones unless kind is channel-mean-std

    @classmethod
    def fit(cls, x: torch.Tensor, kind: str, chunk: int = 8192) -> Preprocessor:
        """Fit the statistics on training images ``x`` (N, C, H, W) uint8, in float64."""
        if kind not in KINDS:
            raise BabysitError(f"unknown preprocessing {kind!r}; choose one of {', '.join(KINDS)}.")
        n, c, h, w = x.shape
        total = torch.zeros(c, h, w, dtype=torch.float64)
        total_sq = torch.zeros(c, dtype=torch.float64)
        for i in range(0, n, chunk):
            xb = x[i : i + chunk].to(torch.float64) / 255.0
            total += xb.sum(0)
            total_sq += (xb**2).sum((0, 2, 3))
        mean_image = total / n  # (C, H, W)
        if kind == "none":
            mean = torch.zeros(1, c, 1, 1, dtype=torch.float64)
        elif kind == "mean-image":
            mean = mean_image[None]
        else:
            mean = mean_image.mean((1, 2)).view(1, c, 1, 1)
        std = torch.ones_like(mean)
        if kind == "channel-mean-std":
            var = total_sq / (n * h * w) - mean.flatten() ** 2
            std = var.clamp_min(1e-12).sqrt().view(1, c, 1, 1)
        return cls(kind, mean.float(), std.float())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to uint8 images (N, C, H, W); returns float32 on ``x``'s device."""
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x.float() / 255.0 - mean) / std

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        """Map preprocessed images back to 0..255 floats (for pictures and tests)."""
        return (z * self.std.to(z.device) + self.mean.to(z.device)) * 255.0

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_state_dict(cls, kind: str, state: dict[str, torch.Tensor]) -> Preprocessor:
        return cls(kind, state["mean"], state["std"])
