"""``babysit predict RUN|ENSEMBLE INPUT...``: class, probability and top-k of new images.

Inputs: image files, folders (every image under them, sorted; a folder whose sub-folders are named after
the run's classes, as a training folder is, also gives each image its true class) and .npz files (array
``x``, and ``y`` when it has labels). Where the true classes are known the accuracy is printed too, so a
held-out folder is scored the way ``babysit eval`` scores a split.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from babysit.data.folders import IMAGE_EXTENSIONS, is_visible, read_image
from babysit.data.npz import read_images
from babysit.deploy.load import Classifier, load_model
from babysit.errors import BabysitError
from babysit.rundir import atomic_write_text


@dataclass
class Predictions:
    """Probabilities (N, K) of named images; ``labels`` the true class index where known, else -1."""

    names: list[str]
    probabilities: np.ndarray
    classes: list[str]
    labels: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        """The most probable class index of each image."""
        return self.probabilities.argmax(1)

    def top(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """The k most probable (class, probability) of each image, most probable first."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [[(self.classes[j], float(p[j])) for j in row] for p, row in zip(self.probabilities, order)]

    @property
    def accuracy(self) -> float | None:
        """Share of the labelled images whose most probable class is the true one (None: no labels)."""
        known = self.labels >= 0
        return float((self.predicted[known] == self.labels[known]).mean()) if known.any() else None


def gather(inputs: list[str | Path], clf: Classifier) -> tuple[list[str], torch.Tensor, np.ndarray]:
    """(names, uint8 images (N, C, H, W) in the run's input volume, true class indices or -1) of the inputs."""
    names: list[str] = []
    images: list[np.ndarray] = []
    labels: list[int] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = _images_under(path)
            if not files:
                raise BabysitError(f"folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)}); give image "
                                   "files, a folder of them or a .npz.")
            for f in files:
                names.append(str(f))
                images.append(_read(f, clf))
                top = f.relative_to(path).parts
                labels.append(clf.classes.index(top[0]) if len(top) > 1 and top[0] in clf.classes else -1)
        elif path.is_file() and path.suffix.lower() == ".npz":
            x, y = read_images(path)
            images += list(clf.convert(x, f"the images of {path}"))
            names += [f"{path}[{i}]" for i in range(len(x))]
            labels += [int(v) if 0 <= v < len(clf.classes) else -1 for v in (y if y is not None else [-1] * len(x))]
        elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            names.append(str(path))
            images.append(_read(path, clf))
            labels.append(-1)
        elif path.exists():
            raise BabysitError(f"{path} is neither an image ({', '.join(IMAGE_EXTENSIONS)}), a folder of images nor "
                               "a .npz file; give one of those.")
        else:
            raise BabysitError(f"{path} does not exist; give image files, a folder of images or a .npz file.")
    if not images:
        raise BabysitError("no images to predict; give image files, a folder of images or a .npz file.")
    return names, torch.from_numpy(np.stack(images)), np.asarray(labels, dtype=np.int64)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and all(is_visible(part) for part in p.relative_to(folder).parts))


def _read(path: Path, clf: Classifier) -> np.ndarray:
    """One file in the run's channels and size; a run without data.size refuses another size."""
    c, h, w = clf.input_shape
    x = read_image(path, c, clf.size)
    if x.shape[1:] != (h, w):
        raise BabysitError(f"image {path} is {x.shape[2]}x{x.shape[1]} but the run was trained on {w}x{h} images "
                           f"without data.size, so it never resized; resize the image to {w}x{h} first.")
    return x


def predict(run: str | Path | Classifier, images: Any, tta: str = "", weights: str = "best",
            device: str = "cpu", model: Any = None) -> Predictions:
    """``babysit.predict``: probabilities of ``images`` by a run or ensemble directory (or a loaded
    :func:`babysit.load_model`). ``images``: image files / folders / .npz files (a path or a list of them), or
    raw pixels (N, H, W[, C]) as an array or tensor. ``tta``: test-time views as for ``babysit eval --tta``.
    ``model``: a fresh instance of your own nn.Module, for a run trained with one."""
    clf = run if isinstance(run, Classifier) else load_model(run, weights, device, model)
    if isinstance(images, str | Path) or (isinstance(images, list | tuple) and images
                                          and all(isinstance(i, str | Path) for i in images)):
        names, x, labels = gather([images] if isinstance(images, str | Path) else list(images), clf)
    else:
        x = clf.pixels(images)
        names, labels = [str(i) for i in range(len(x))], np.full(len(x), -1, dtype=np.int64)
    probs = clf.probabilities(x, tta).double().numpy()
    return Predictions(names, probs, clf.classes, labels)


def format_predictions(pred: Predictions, top: int = 5) -> str:
    """One line per image: ``NAME: CLASS (p)   top-k: c1 p1, c2 p2, ...``, then the accuracy where known."""
    k = min(top, len(pred.classes))
    lines = []
    for name, best in zip(pred.names, pred.top(k)):
        cls, p = best[0]
        rest = f"   top-{k}: " + ", ".join(f"{c} {q:.4f}" for c, q in best) if k > 1 else ""
        lines.append(f"{name}: {cls} ({p:.4f}){rest}")
    acc, known = pred.accuracy, int((pred.labels >= 0).sum())
    if acc is not None:
        lines.append(f"accuracy {acc:.4f} ({round(acc * known)}/{known}) over the images whose folder or .npz y "
                     "gives their class")
    return "\n".join(lines)


def write_csv(pred: Predictions, path: str | Path, top: int = 5) -> Path:
    """image, true (class name or empty), predicted, probability, then top-k class and probability columns."""
    k = min(top, len(pred.classes))
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["image", "true", "predicted", "probability"]
                 + [c for i in range(1, k + 1) for c in (f"top{i}", f"p{i}")])
    for name, label, best in zip(pred.names, pred.labels, pred.top(k)):
        out.writerow([name, pred.classes[label] if label >= 0 else "", best[0][0], f"{best[0][1]:.6f}"]
                     + [v for c, p in best for v in (c, f"{p:.6f}")])
    atomic_write_text(Path(path), buf.getvalue())
    return Path(path)
