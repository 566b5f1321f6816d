"""Labelled images from a NumPy ``.npz`` file: arrays ``x``, ``y``; optional ``x_test``, ``y_test``,
``classes``; and for multi-task learning more label columns ``y_NAME`` (with ``y_NAME_test``), one per task.

Decisions:

* Layout is decided by shape. ``x`` of 3 dims is (N, H, W) grayscale. ``x`` of 4 dims is
  channels-last (N, H, W, C) when its last axis is 1, 3 or 4, else channels-first (N, C, H, W)
  when its second axis is; when both could be channels (e.g. (N, 3, 4, 3)) channels-last wins, the
  NumPy/Pillow convention. Four channels are RGBA and are composited onto black.
* Pixel values: uint8 as they are; other integer types must lie in 0..255; floats must be finite
  and are read as [0, 1] (scaled by 255) when every value of ``x`` and ``x_test`` lies in [0, 1],
  else as 0..255 when every value lies in [0, 255]; anything else is an error (we do not guess
  a min-max rescale, which would hide standardised or corrupt data).
* ``y`` holds class indices 0..K-1 (integers, or floats that are whole numbers), shape (N,) or
  (N, 1). Every class must have training images; K is ``len(classes)`` when given, else
  ``max(y) + 1``, and must be at least 2.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from babysit.errors import BabysitError
from babysit.limits import check_memory, human_bytes


@dataclass(frozen=True)
class NpzImages:
    """What a .npz holds, checked and converted to (N, C, H, W) uint8 with int64 labels."""

    x: np.ndarray  # (N, C, H, W) uint8
    y: np.ndarray  # (N,) int64
    test: tuple[np.ndarray, np.ndarray] | None  # (x_test, y_test) when the file has them
    classes: list[str]
    tasks: dict[str, np.ndarray] = field(default_factory=dict)  # multi-task: y_NAME arrays (N,) int64, by NAME
    tasks_test: dict[str, np.ndarray] = field(default_factory=dict)  # y_NAME_test


def _read_header(f: Any) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the .npy header at the start of ``f``; ValueError when it is not one."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:  # 3.0 (UTF-8 field names) has no public reader
        shape, _, dtype = np.lib.format._read_array_header(f, version)
    return shape, dtype


def check_sizes(path: Path) -> None:
    """Read every member's .npy header, before ``np.load`` allocates what it declares: an array larger than the
    bytes its member holds is a damaged (or crafted) file, and arrays that fit no memory are refused with the
    numbers, instead of a MemoryError. The member sizes bound the reads (zipfile stops at them), so a header
    cannot make np.load read more than the file declares either."""
    total = 0
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    shape, dtype = _read_header(f)
                    data = info.file_size - f.tell()
                if dtype.hasobject:
                    continue  # np.load refuses it (allow_pickle=False) with its own sentence
                need = math.prod(shape) * dtype.itemsize
                if need > data:
                    raise BabysitError(f"{path} is damaged: {info.filename} declares an array of shape {shape} "
                                       f"({human_bytes(need)}) but holds only {human_bytes(data)}; save it again "
                                       "with np.savez.")
                total += need
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError) as e:
        raise BabysitError(f"{path} is damaged ({e}); save it again with np.savez.") from None
    # the arrays, then the images as uint8 and as float32 for training
    check_memory(total + 5 * total, f"loading {path} ({human_bytes(total)} of arrays)",
                 "save fewer or smaller images in it (a subset, or resized)")


def read_npz(path: Path) -> NpzImages:
    """Load and check a .npz of labelled images; every mistake is a BabysitError naming it."""
    if not zipfile.is_zipfile(path):
        raise BabysitError(f"{path} is not a .npz (zip) file; save it with "
                           "np.savez(path, x=images, y=labels).")
    check_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        if "pickle" not in str(e):
            raise BabysitError(f"{path} is damaged ({e}); save it again with np.savez.") from None
        raise BabysitError(f"{path} holds an object array, which needs pickle; save class names "
                           "as a string array, e.g. np.array(['cat', 'dog']).") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise BabysitError(f"{path} is damaged ({e}); save it again with np.savez.") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise BabysitError(f"{path} has no array '{key}' (it has {sorted(arrays)}); save it "
                               "with np.savez(path, x=images, y=labels).")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise BabysitError(f"{path} has only one of x_test and y_test; save both or neither.")
    has_test = "x_test" in arrays
    xs = [_layout(arrays["x"], "x", path)]
    if has_test:
        xs.append(_layout(arrays["x_test"], "x_test", path))
        if xs[1].shape[1:] != xs[0].shape[1:]:
            raise BabysitError(f"In {path}, x_test images are {xs[1].shape[1:]} (C, H, W) but x "
                               f"images are {xs[0].shape[1:]}; save both splits at one size.")
    xs = _to_uint8(xs, path)
    ys = [_labels(arrays["y"], "y", len(xs[0]), path)]
    if has_test:
        ys.append(_labels(arrays["y_test"], "y_test", len(xs[1]), path))
    classes = _classes(arrays.get("classes"), ys, path)
    tasks = {k[2:]: _labels(v, k, len(xs[0]), path) for k, v in arrays.items()
             if k.startswith("y_") and k != "y_test" and not k.endswith("_test")}
    tasks_test = {}
    for name in tasks if has_test else ():
        if f"y_{name}_test" not in arrays:
            raise BabysitError(f"{path} has y_{name} but no y_{name}_test for its x_test images; save both.")
        tasks_test[name] = _labels(arrays[f"y_{name}_test"], f"y_{name}_test", len(xs[1]), path)
    return NpzImages(xs[0], ys[0], (xs[1], ys[1]) if has_test else None, classes, tasks, tasks_test)


def read_images(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The images ``x`` of a .npz as (N, C, H, W) uint8 (layout and pixel values read as for training), and its
    labels ``y`` when it has them (class indices, as stored): what ``babysit predict FILE.npz`` reads."""
    if not zipfile.is_zipfile(path):
        raise BabysitError(f"{path} is not a .npz (zip) file; save it with np.savez(path, x=images).")
    check_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            x = f["x"] if "x" in f.files else None
            y = f["y"] if "y" in f.files else None
            names = sorted(f.files)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise BabysitError(f"{path} is damaged or holds an object array ({e}); save it again with "
                           "np.savez(path, x=images).") from None
    if x is None:
        raise BabysitError(f"{path} has no array 'x' (it has {names}); save it with np.savez(path, x=images).")
    images = _to_uint8([_layout(x, "x", path)], path)[0]
    return images, (None if y is None else _labels(y, "y", len(images), path))


def _layout(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) -> (N, C, H, W); see the module docstring."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[3] in (1, 3, 4):
            return x.transpose(0, 3, 1, 2)
        if x.shape[1] in (1, 3, 4):
            return x
    raise BabysitError(
        f"In {path}, '{key}' has shape {x.shape}; save images as (N, H, W), (N, H, W, C) or "
        "(N, C, H, W) with C = 1, 3 or 4."
    )


def _to_uint8(xs: list[np.ndarray], path: Path) -> list[np.ndarray]:
    """Pixel arrays of any numeric dtype -> uint8 0..255; one scale for all float splits."""
    keys = ("x", "x_test")
    for key, x in zip(keys[: len(xs)], xs, strict=True):
        if x.dtype.kind not in "uif":
            raise BabysitError(f"In {path}, '{key}' has dtype {x.dtype}; save pixels as uint8 "
                               "0..255 or floats in [0, 1].")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise BabysitError(f"In {path}, '{key}' contains NaN or Inf; fix or drop those images.")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise BabysitError(
                f"In {path}, '{key}' has pixel values in [{x.min():g}, {x.max():g}]; save them as "
                "uint8 0..255 or floats in [0, 1] (undo any standardisation first)."
            )
    floats = [x for x in xs if x.dtype.kind == "f" and x.size]
    scale = 255.0 if floats and max(float(x.max()) for x in floats) <= 1 else 1.0
    return [x if x.dtype == np.uint8 else
            np.rint(x.astype(np.float64) * (scale if x.dtype.kind == "f" else 1.0)).astype(np.uint8)
            for x in xs]


MAX_CLASSES = 100_000  # a larger label is a corrupt file, not a class count: its one-hot / bincount would not fit


def _labels(y: np.ndarray, key: str, n: int, path: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise BabysitError(f"In {path}, '{key}' has shape {y.shape}; save labels as one class "
                           "index per image, shape (N,) (not one-hot).")
    if len(y) != n:
        raise BabysitError(f"In {path}, '{key}' has {len(y)} labels for {n} images; save one "
                           "label per image.")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise BabysitError(f"In {path}, '{key}' has non-integer labels; save class indices "
                               "0..K-1 as integers.")
    elif y.dtype.kind not in "iu":
        raise BabysitError(f"In {path}, '{key}' has dtype {y.dtype}; save class indices 0..K-1 as "
                           "integers (and names in 'classes').")
    if len(y) and y.min() < 0:
        raise BabysitError(f"In {path}, '{key}' has negative labels (min {y.min():g}); save class "
                           "indices 0..K-1.")
    if len(y) and y.max() >= MAX_CLASSES:  # checked before the int64 cast: 1e20 or a uint64 above 2**63 would wrap
        raise BabysitError(f"In {path}, '{key}' has a label of {y.max():g}; save class indices 0..K-1 with K "
                           f"below {MAX_CLASSES:,}.")
    return y.astype(np.int64)


def _classes(names: np.ndarray | None, ys: list[np.ndarray], path: Path) -> list[str]:
    top = max(int(y.max(initial=-1)) for y in ys)
    if names is not None:
        classes = [c.decode() if isinstance(c, bytes) else str(c)
                   for c in np.asarray(names).reshape(-1).tolist()]
        if top >= len(classes):
            raise BabysitError(f"In {path}, a label is {top} but 'classes' names only "
                               f"{len(classes)}; add the missing names or fix the labels.")
    else:
        classes = [str(k) for k in range(top + 1)]
    if len(classes) < 2:
        raise BabysitError(f"{path} has only one class; a classifier needs labels from at least "
                           "two classes.")
    counts = np.bincount(ys[0], minlength=len(classes))
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise BabysitError(
            f"In {path}, class {empty[0]} ('{classes[empty[0]]}') has no training images; labels "
            "must be 0..K-1 with every class present (subtract 1 if they start at 1)."
        )
    return classes
