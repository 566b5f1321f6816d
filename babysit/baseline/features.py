"""The hand-made image features of the pre-ConvNet pipelines, as vectors for kNN and the linear classifiers.

- ``pixels``: the raw pixels scaled to 0..1, flattened (C*H*W).
- ``color-hist``: the share of pixels in each of ``hist_bins`` hue bins (scikit-image's rgb2hsv); an image with
  one channel has no hue, so it gets the histogram of its intensities instead.
- ``hog``: histograms of oriented gradients, scikit-image's ``skimage.feature.hog`` (``hog_orientations`` bins,
  ``hog_cell`` pixels per cell, 2 x 2 cells per block, L2-Hys block normalisation).
- ``bovw``: bag of visual words: dense local patches (``bovw_patch`` pixels, stride half a patch), each
  brightness- and contrast-normalised, clustered into ``bovw_words`` words by scikit-learn's MiniBatchKMeans
  fitted on the training split; an image is the histogram of its patches' nearest words.
- ``pca``: the top ``pca_components`` principal components of the pixels, fitted on the training split
  (babysit's own pca preprocessing, babysit.data.preprocess).

A feature that is slow to compute is cached in the user cache (``~/.cache/babysit/features``, or under
``$XDG_CACHE_HOME``), one safetensors file per (images, feature, settings): the key is a SHA-256 of every
split's pixels and the settings, so another split, seed, limit or option is another file. Files are written
atomically (babysit.ckptfile), so a killed run never leaves half a cache entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from babysit.ckptfile import load_checkpoint, save_checkpoint
from babysit.config import BaselineConfig
from babysit.data.locate import cache_dir
from babysit.data.preprocess import Preprocessor
from babysit.errors import BabysitError
from babysit.registry import Registry

VERSION = 1  # part of every cache key: bump it when a feature's computation changes


@dataclass(frozen=True)
class Feature:
    """One feature kind: ``compute(splits, cfg, seed)`` maps [train, *others] uint8 (N, C, H, W) to float32
    (N, D) each, fitting on the first; ``settings(cfg, shape)`` are the options its result depends on."""

    compute: Callable[[Sequence[torch.Tensor], BaselineConfig, int], list[torch.Tensor]]
    settings: Callable[[BaselineConfig, tuple[int, int, int]], dict[str, Any]]
    meaning: str
    cached: bool = True  # worth a cache file (pixels is not: reading it back costs as much as making it)


FEATURES: Registry[Feature] = Registry("baseline.features")
"""The features by the names ``--baseline.features`` takes."""


def hog_cell(cfg: BaselineConfig, shape: tuple[int, int, int]) -> int:
    """HOG's cell side: ``cfg.hog_cell``, or the image side / 7, at least 2 (4 pixels on MNIST's 28)."""
    return cfg.hog_cell or max(2, min(shape[1:]) // 7)


def bovw_patch(cfg: BaselineConfig, shape: tuple[int, int, int]) -> int:
    """The side of the local patches: ``cfg.bovw_patch``, or the image side / 4, at least 3 (7 on MNIST)."""
    return cfg.bovw_patch or max(3, min(shape[1:]) // 4)


def _pixels(splits: Sequence[torch.Tensor], cfg: BaselineConfig, seed: int) -> list[torch.Tensor]:
    return [x.flatten(1).float() / 255.0 for x in splits]


def color_histogram(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Share of pixels per hue bin (3 channels) or per intensity bin (1 channel): (N, bins), rows sum to 1."""
    from skimage.color import rgb2hsv

    if x.shape[1] == 3:
        values = rgb2hsv(x.permute(0, 2, 3, 1).numpy())[..., 0]  # hue in [0, 1], (N, H, W)
    else:
        values = x[:, 0].numpy() / 256.0  # intensity in [0, 1)
    which = np.minimum((values.reshape(len(x), -1) * bins).astype(np.int64), bins - 1)
    counts = np.zeros((len(x), bins))
    np.add.at(counts, (np.arange(len(x))[:, None], which), 1.0)
    return torch.from_numpy(counts / which.shape[1]).float()


def _color_hist(splits: Sequence[torch.Tensor], cfg: BaselineConfig, seed: int) -> list[torch.Tensor]:
    return [color_histogram(x, cfg.hist_bins) for x in splits]


def hog_features(x: torch.Tensor, orientations: int, cell: int) -> torch.Tensor:
    """scikit-image's HOG of each image (N, D): 2 x 2 cells per block (1 x 1 when the image holds one cell)."""
    from skimage.feature import hog

    block = 2 if min(x.shape[2:]) // cell >= 2 else 1
    images = x.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    channel = -1 if x.shape[1] > 1 else None
    rows = [hog(img if channel is not None else img[..., 0], orientations=orientations,
                pixels_per_cell=(cell, cell), cells_per_block=(block, block), block_norm="L2-Hys",
                channel_axis=channel) for img in images]
    return torch.from_numpy(np.stack(rows)).float()


def _hog(splits: Sequence[torch.Tensor], cfg: BaselineConfig, seed: int) -> list[torch.Tensor]:
    cell = hog_cell(cfg, tuple(splits[0].shape[1:]))  # type: ignore[arg-type]
    return [hog_features(x, cfg.hog_orientations, cell) for x in splits]


def patch_descriptors(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Dense patches (stride patch // 2), each minus its mean and divided by its std (+ 10/255, so a flat
    background patch stays near zero instead of amplifying noise): (N, L, C*patch*patch)."""
    cols = F.unfold(x.float() / 255.0, patch, stride=max(1, patch // 2))  # (N, C*p*p, L)
    cols = cols.transpose(1, 2)
    cols = cols - cols.mean(2, keepdim=True)
    return cols / (cols.std(2, keepdim=True) + 10 / 255)


def bag_of_words(splits: Sequence[torch.Tensor], words: int, patch: int, seed: int,
                 sample: int = 100_000, chunk: int = 2000) -> list[torch.Tensor]:
    """Fit a ``words``-word vocabulary on (at most ``sample``) training patches with MiniBatchKMeans, then each
    image's histogram of nearest words (N, words), rows summing to 1."""
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    train = patch_descriptors(splits[0][:4096], patch)  # enough images to sample the vocabulary from
    flat = train.reshape(-1, train.shape[2])
    pick = np.random.default_rng(seed).permutation(len(flat))[:sample]
    kmeans = MiniBatchKMeans(n_clusters=words, random_state=seed, batch_size=4096, n_init=3)
    with threadpool_limits(1):  # scikit-learn's OpenMP threads otherwise keep spinning and starve torch's after it
        centres = torch.from_numpy(kmeans.fit(flat[torch.from_numpy(pick)].numpy()).cluster_centers_).float()
    out = []
    for x in splits:
        hist = torch.zeros(len(x), words)
        for i in range(0, len(x), chunk):  # descriptors of a chunk only: N * L * D floats would not fit
            d = patch_descriptors(x[i : i + chunk], patch)  # (n, L, D)
            nearest_word = torch.cdist(d.reshape(-1, d.shape[2]), centres).argmin(1).view(len(d), -1)
            hist[i : i + len(d)].scatter_add_(1, nearest_word, torch.ones_like(nearest_word, dtype=torch.float))
        out.append(hist / hist.sum(1, keepdim=True))
    return out


def _bovw(splits: Sequence[torch.Tensor], cfg: BaselineConfig, seed: int) -> list[torch.Tensor]:
    return bag_of_words(splits, cfg.bovw_words, bovw_patch(cfg, tuple(splits[0].shape[1:])), seed)  # type: ignore


def _pca(splits: Sequence[torch.Tensor], cfg: BaselineConfig, seed: int) -> list[torch.Tensor]:
    c, h, w = splits[0].shape[1:]
    if cfg.pca_components > c * h * w:
        raise BabysitError(f"baseline.pca_components={cfg.pca_components} is more than the {c * h * w} pixel values "
                           f"of an image; use at most {c * h * w}.")
    pre = Preprocessor.fit(splits[0], "pca", components=cfg.pca_components)
    return [pre(x).flatten(1).float() for x in splits]


FEATURES.add("pixels", Feature(_pixels, lambda cfg, shape: {}, "raw pixels scaled to 0..1", cached=False))
FEATURES.add("color-hist", Feature(_color_hist, lambda cfg, shape: {"bins": cfg.hist_bins},
                                   "hue histogram (intensity histogram for one channel)"))
FEATURES.add("hog", Feature(_hog, lambda cfg, shape: {"orientations": cfg.hog_orientations,
                                                      "cell": hog_cell(cfg, shape)}, "scikit-image's HOG"))
FEATURES.add("bovw", Feature(_bovw, lambda cfg, shape: {"words": cfg.bovw_words, "patch": bovw_patch(cfg, shape)},
                             "bag of visual words (MiniBatchKMeans over local patches)"))
FEATURES.add("pca", Feature(_pca, lambda cfg, shape: {"components": cfg.pca_components},
                            "top principal components of the pixels"))


def cache_key(name: str, splits: Sequence[torch.Tensor], settings: dict[str, Any], seed: int) -> str:
    """SHA-256 over the feature's name, settings, seed, version and every split's pixels and shape."""
    h = hashlib.sha256(json.dumps({"feature": name, "settings": settings, "seed": seed, "version": VERSION},
                                  sort_keys=True).encode())
    for x in splits:
        h.update(str(tuple(x.shape)).encode())
        h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()


def feature_cache() -> Path:
    """Where cached features live: the user cache's ``features`` folder."""
    return cache_dir("features")


def compute_features(name: str, splits: Sequence[torch.Tensor], cfg: BaselineConfig,
                     seed: int = 0) -> tuple[list[torch.Tensor], Path | None]:
    """Features ``name`` of [train, *others] (uint8 (N, C, H, W) on the CPU) fitted on train: float32 (N, D)
    each, and the cache file they came from or went to (None when not cached)."""
    feature = FEATURES.get(name)
    splits = [x.cpu() for x in splits]
    if not (cfg.cache and feature.cached):
        return feature.compute(splits, cfg, seed), None
    settings = feature.settings(cfg, tuple(splits[0].shape[1:]))  # type: ignore[arg-type]
    path = feature_cache() / f"{name}-{cache_key(name, splits, settings, seed)[:24]}.safetensors"
    if path.is_file():
        try:
            tensors, _ = load_checkpoint(path)
            return [tensors[str(i)] for i in range(len(splits))], path
        except (BabysitError, KeyError):
            pass  # a damaged or foreign file: compute again and write it over
    out = feature.compute(splits, cfg, seed)
    save_checkpoint(path, {str(i): t for i, t in enumerate(out)},
                    {"feature": name, "settings": settings, "seed": seed, "version": VERSION,
                     "shapes": [list(t.shape) for t in out]})
    return out, path
