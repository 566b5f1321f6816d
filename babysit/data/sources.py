"""Data sources: a name or a path in, a :class:`Dataset` of uint8 images and int64 labels out.

``name`` is a named set (``digits``, ``mnist``, ``fashion-mnist``; see :mod:`babysit.data.locate`
for where their files are looked up), else a path to an image folder ``root/<class>/<image>``
(:mod:`babysit.data.folders`), to a ``.csv`` image list ``path,label[,split]`` (:mod:`babysit.data.csvlist`)
or to a ``.npz`` file (:mod:`babysit.data.npz`). A named set wins over a folder of the same name in the
current directory; write ``./mnist`` for the folder. Folders and CSV lists may be streamed: decoded once into a
memory-mapped uint8 cache instead of into memory (:mod:`babysit.data.stream`, ``data.stream``).

Images are always kept as uint8 (N, C, H, W) with C = 1 or 3, so MNIST's 60,000 training images
take 47 MB; scaling to floats and normalising happen later, in ``preprocess``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from babysit.data.csvlist import read_csv_list
from babysit.data.folders import FolderScan, convert_array, is_visible, probe_shape, read_folders, scan_folder, shown
from babysit.data.idx import read_idx
from babysit.data.locate import find_dataset, idx_files, missing_error
from babysit.data.named import DIGIT_CLASSES, FASHION_MNIST_CLASSES, NAMED_SETS, UNKNOWN, NamedSet, Traits, named_key
from babysit.data.npz import read_npz
from babysit.data.stream import MapStore, StreamOptions, gather, map_images, use_stream
from babysit.errors import BabysitError

__all__ = ["DIGIT_CLASSES", "FASHION_MNIST_CLASSES", "Dataset", "ImageSet", "balance_verdict", "dataset_info",
           "list_datasets", "load_dataset"]


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Labelled images: pixels stay uint8 0..255 until preprocessing."""

    x: torch.Tensor  # (N, C, H, W) uint8 pixel values 0..255
    y: torch.Tensor  # (N,) int64 class indices 0..K-1
    classes: list[str]  # class names, len K
    store: MapStore | None = None  # streaming: x is memory-mapped from this cache (subsets are written there too)
    tasks: dict[str, torch.Tensor] = field(default_factory=dict)  # multi-task: more label columns (N,) by task name

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: torch.Tensor) -> ImageSet:
        """The images at ``index`` (an index or boolean tensor), same classes (and task labels); a memory-mapped
        set's subset is written to its cache once and memory-mapped too."""
        tasks = {k: v[index] for k, v in self.tasks.items()}
        if self.store is not None:
            x, store = gather(self.x, index, self.store)
            return ImageSet(x, self.y[index], self.classes, store, tasks=tasks)
        return ImageSet(self.x[index], self.y[index], self.classes, tasks=tasks)

    def class_counts(self) -> torch.Tensor:
        """(K,) int64 number of images per class."""
        return torch.bincount(self.y, minlength=self.num_classes)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded source: the training images, the official test split if any, and its origin."""

    name: str
    train: ImageSet
    test: ImageSet | None  # the set's official test split (mnist, fashion-mnist), else None
    source: str  # where it was loaded from: a path, or "scikit-learn"
    traits: Traits = UNKNOWN  # what a mirror or turn does to the classes: filled for named sets, unknown otherwise
    val: ImageSet | None = None  # a validation split the source fixes (a CSV list's split column), else None


def _image_set(x: np.ndarray, y: np.ndarray, classes: list[str]) -> ImageSet:
    return ImageSet(torch.from_numpy(np.ascontiguousarray(x)),
                    torch.from_numpy(y.astype(np.int64, copy=False)), list(classes))


_Arrays = tuple[np.ndarray, np.ndarray]


def list_datasets() -> list[str]:
    """The named sets ``load_dataset`` knows (it also takes image folders and .npz files)."""
    return NAMED_SETS.names()


def _digits(_name: str, _entry: NamedSet) -> tuple[_Arrays, None, str]:
    """scikit-learn's bundled 8x8 digits; values 0..16 become round(v * 255 / 16)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    return (x, bunch.target), None, "scikit-learn"


def _idx_set(name: str, entry: NamedSet) -> tuple[_Arrays, _Arrays, str]:
    folder = find_dataset(name)
    files = idx_files(folder) if folder is not None else None
    if folder is None or files is None:
        raise missing_error(name)
    splits = []
    for split in ("train", "t10k"):
        images, labels = files[f"{split}-images-idx3-ubyte"], files[f"{split}-labels-idx1-ubyte"]
        x, y = read_idx(images), read_idx(labels)
        if x.dtype != np.uint8 or x.ndim != 3:
            raise BabysitError(f"{images} holds {x.dtype} {x.shape}, not uint8 (N, H, W) images; "
                               f"replace it with the {name} image file.")
        if y.dtype != np.uint8 or y.ndim != 1 or len(y) != len(x) or y.max(initial=0) >= len(entry.classes):
            raise BabysitError(f"{labels} does not hold {len(x)} labels 0..{len(entry.classes) - 1} "
                               f"for {images}; replace it with the matching {name} label file.")
        splits.append((x[:, None], y))
    return splits[0], splits[1], str(folder)


# How each kind of named-set file is read: (name, entry) -> (train, test or None, source).
_READERS: dict[str, Callable[[str, NamedSet], tuple[_Arrays, _Arrays | None, str]]] = {
    "scikit-learn": _digits, "idx": _idx_set}


def load_dataset(name: str, channels: int = 0, size: int = 0, stream: StreamOptions | None = None) -> Dataset:
    """Load a named set, an image folder, a CSV image list or a .npz file as uint8 (N, C, H, W) images.

    ``channels``: 0 keeps the source's (1 for grayscale, else 3), 1 or 3 converts with Pillow.
    ``size``: 0 keeps the source's size, else every image is resized to size x size (bilinear).
    ``stream``: data.stream / cache / workers; folders and CSV lists streamed are memory-mapped from a cache.
    """
    stream = stream or StreamOptions()
    if channels not in (0, 1, 3):
        raise BabysitError(f"channels must be 0 (keep), 1 (grayscale) or 3 (RGB), not {channels}; "
                           "set --data.channels accordingly.")
    if size < 0:
        raise BabysitError(f"size must be 0 (keep) or a positive side in pixels, not {size}; "
                           "set --data.size accordingly.")
    key = named_key(name)
    if key in NAMED_SETS:
        entry = NAMED_SETS.get(key)
        _refuse_stream(stream, key)
        train, test, source = _READERS[entry.files](key, entry)
        classes = list(entry.classes)
        return Dataset(key, _convert(train, classes, channels, size),
                       _convert(test, classes, channels, size) if test else None, source, entry.traits)
    path = Path(name).expanduser()
    if path.is_dir():
        return _load_folder(path, channels, size, stream)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _load_csv(path, channels, size, stream)
    if path.is_file() and path.suffix.lower() == ".npz":
        _refuse_stream(stream, shown(path.name))
        data = read_npz(path)
        train = _convert((data.x, data.y), data.classes, channels, size)
        test = _convert(data.test, data.classes, channels, size) if data.test else None
        train.tasks.update({k: torch.from_numpy(v) for k, v in data.tasks.items()})
        if test is not None:
            test.tasks.update({k: torch.from_numpy(v) for k, v in data.tasks_test.items()})
        return Dataset(shown(path.stem), train, test, str(path.resolve()))
    if path.is_file():
        raise BabysitError(f"{shown(path)} is neither a .npz file, a .csv list nor a folder; give a folder of images "
                           "(root/<class>/<image>), a CSV with the header path,label or a .npz with arrays x and y.")
    close = NAMED_SETS.closest(key)
    raise BabysitError(f"'{shown(name)}' is not a named set ({', '.join(NAMED_SETS)}) nor an existing folder or "
                       ".npz file; " + (f"did you mean '{close}'?" if close else "check the name or path."))


def _convert(arrays: _Arrays, classes: list[str], channels: int, size: int) -> ImageSet:
    x, y = arrays
    return _image_set(convert_array(x, channels, size), y, classes)


_SPLIT_NAMES = {"train", "test", "val", "valid", "validation"}


def _refuse_stream(stream: StreamOptions, name: str) -> None:
    if stream.mode == "on":
        raise BabysitError(f"data.stream=on reads image folders and CSV lists; {name} is loaded whole from its arrays, "
                           "so use --data.stream=auto (or off).")


def _images(scans: list[FolderScan], channels: int, size: int, stream: StreamOptions) -> tuple[list[ImageSet], str]:
    """Decode the scans into memory, or (streaming) map them from the cache; returns the sets and a note for
    ``Dataset.source``."""
    files = [p for scan in scans for p in scan.files]
    if stream.mode != "off" and use_stream(stream.mode, len(files), probe_shape(files[:1], channels, size)):
        x, folder = map_images(files, channels, size, stream)
        sets, start = [], 0
        for i, scan in enumerate(scans):  # each scan is a contiguous range of the cache: a view, no copy
            sets.append(ImageSet(x[start : start + len(scan.files)], torch.tensor(scan.labels, dtype=torch.int64),
                                 [shown(c) for c in scan.classes], MapStore(folder, f"scan{i}")))
            start += len(scan.files)
        return sets, f" (streamed: memory-mapped from the cache {shown(folder)})"
    return [_image_set(s.x, s.y, s.classes) for s in read_folders(scans, channels, size)], ""


def _load_csv(path: Path, channels: int, size: int, stream: StreamOptions) -> Dataset:
    """A CSV image list: train rows (all rows without a split column), and the test and val rows it fixes."""
    rows = read_csv_list(path)
    parts = [split for split in ("train", "test", "val") if rows.rows(split)]
    scans = [FolderScan([rows.files[i] for i in rows.rows(split)], [rows.labels[i] for i in rows.rows(split)],
                        rows.classes, []) for split in parts]
    sets, note = _images(scans, channels, size, stream)
    by_split = dict(zip(parts, sets, strict=True))
    return Dataset(shown(path.stem), by_split["train"], by_split.get("test"), shown(path.resolve()) + note,
                   val=by_split.get("val"))


def _load_folder(root: Path, channels: int, size: int, stream: StreamOptions) -> Dataset:
    """``root/<class>/...``, or ``root/train/<class>/...`` + ``root/test/<class>/...``."""
    subdirs = {p.name for p in root.iterdir() if p.is_dir() and is_visible(p.name)}
    scans: list[FolderScan]
    if subdirs == {"train", "test"}:
        train = scan_folder(root / "train")
        scans = [train, scan_folder(root / "test", classes=train.classes)]
    elif "train" in subdirs and subdirs <= _SPLIT_NAMES:
        raise BabysitError(f"{root} holds {sorted(subdirs)}; babysit reads root/train and "
                           "root/test only and makes its own validation split, so merge the "
                           "validation images into train.")
    else:
        scans = [scan_folder(root)]
    image_sets, note = _images(scans, channels, size, stream)
    skipped = sum(len(s.skipped) for s in scans)
    source = shown(root.resolve())
    if skipped:
        example = next(p.relative_to(root) for s in scans for p in s.skipped)
        source += f" ({skipped} non-image files skipped, e.g. {shown(example)})"
    unreadable = sum(s.unreadable for s in scans)
    if unreadable:
        source += f" ({unreadable} unreadable sub-folders skipped)"
    return Dataset(shown(root.resolve().name), image_sets[0],
                   image_sets[1] if len(image_sets) > 1 else None, source + note)


def dataset_info(ds: Dataset) -> str:
    """`babysit data info`: counts, image shape, and a per-class table with a balance verdict.

    Balance is the ratio of the largest to the smallest class count in train: up to 1.5 is
    balanced, up to 3 mildly imbalanced, beyond that imbalanced.
    """
    c, h, w = ds.train.input_shape
    splits = [("train", ds.train)] + ([("test", ds.test)] if ds.test is not None else [])
    lines = [f"name     {ds.name}", f"source   {ds.source}"]
    lines += [f"{split:<8} {len(s):,} images" for split, s in splits]
    lines += [f"shape    {c}x{h}x{w} (C x H x W), uint8 0..255",
              f"classes  {ds.train.num_classes}", ""]
    counts = [s.class_counts().tolist() for _, s in splits]
    width = max(5, *(len(k) for k in ds.train.classes))
    header = f"{'class':<{width}}" + "".join(f" {split:>9} {'%':>6}" for split, _ in splits)
    lines += [header, "-" * len(header)]
    for k, cls in enumerate(ds.train.classes):
        row = f"{cls:<{width}}"
        for (_, s), cnt in zip(splits, counts, strict=True):
            row += f" {cnt[k]:>9,} {100 * cnt[k] / max(len(s), 1):>5.1f}%"
        lines.append(row)
    lines += ["", balance_verdict(counts[0], ds.train.classes)]
    return "\n".join(lines)


def balance_verdict(counts: list[int], classes: list[str]) -> str:
    """One line on class balance from per-class training counts (largest / smallest)."""
    hi, lo = max(counts), min(counts)
    big, small = classes[counts.index(hi)], classes[counts.index(lo)]
    if lo == 0:
        return f"balance  class '{small}' has no training images"
    if hi == lo:
        return f"balance  every class has {hi:,} training images: balanced"
    ratio = hi / lo
    if ratio <= 1.5:
        verdict = "balanced"
    elif ratio <= 3:
        verdict = "mildly imbalanced"
    else:
        verdict = "imbalanced: consider class weights or stratified sampling"
    return f"balance  max/min = {ratio:.2f} ('{big}' {hi:,} / '{small}' {lo:,}): {verdict}"
