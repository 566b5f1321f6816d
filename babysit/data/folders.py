"""Image folders (``root/<class>/<image>``) and the Pillow conversions every source shares.

Decisions, so results do not depend on what happens to be in a folder:

* Classes are the sorted names of the sub-folders of ``root``; images inside nested folders of a
  class folder belong to that class. If ``root`` holds exactly ``train/`` and ``test/``, each is
  read as a class-folder tree and ``test`` becomes the official test split.
* Image files are those ending in .png .jpg .jpeg .bmp .gif (any case). Everything else (.txt,
  .DS_Store, hidden files such as macOS ``._x.png``, the ``__MACOSX`` folder) is skipped and
  counted; the count is reported by the caller. A file with an image extension that Pillow cannot
  decode is an error naming the file: silently dropping it would hide a broken copy.
* Only the first frame of an animated GIF is used. JPEG EXIF orientation is applied, so images are
  the way photo viewers show them.
* Every image becomes 1 channel (grayscale) or 3 (RGB). Alpha is composited onto black (a
  transparent pixel's hidden colour is meaningless, so it must not reach the network); palette
  images become grayscale when their palette is gray, RGB otherwise; 16-bit grayscale is scaled to
  0..255. With ``channels=0`` the set is grayscale if every image is, else RGB.
* Sizes must match unless ``size`` is given (then every image is resized to size x size, bilinear).
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from babysit.errors import BabysitError
from babysit.limits import check_images

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# The only decoders Pillow may try: without ``formats=`` it sniffs every plugin, and a PostScript file named
# .png would start Ghostscript (an external program) on untrusted input. (A phone's multi-picture JPEG still
# opens through the JPEG entry, as format "MPO".)
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "GIF")
_SKIP_DIRS = {"__MACOSX"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError,
                  Image.DecompressionBombError)
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class FolderImages:
    """Pixels and labels read from one class-folder tree."""

    x: np.ndarray  # (N, C, H, W) uint8
    y: np.ndarray  # (N,) int64
    classes: list[str]


@dataclass(frozen=True)
class FolderScan:
    """The files of a class-folder tree, before decoding."""

    files: list[Path]
    labels: list[int]
    classes: list[str]
    skipped: list[Path]  # non-image files, skipped and counted
    unreadable: int = 0  # sub-folders that could not be listed (permissions), skipped with a warning
    repeats: int = 0  # folders / images reached again through a symlink, taken once


def scan_folder(root: Path, classes: list[str] | None = None) -> FolderScan:
    """List the image files of ``root/<class>/...`` with their labels; decodes nothing.

    ``classes`` fixes the class list (for a test split, whose folders must be a subset of it).
    """
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and is_visible(p.name))
    if not subdirs:
        loose = sum(1 for p in root.iterdir() if _is_image(p))
        hint = f" (found {loose} images directly in it)" if loose else ""
        raise BabysitError(f"Image folder {shown(root)} has no class folders{hint}; arrange the images as "
                           f"{shown(root)}/<class>/<image>, one folder per class.")
    if classes is None:
        classes = subdirs
    else:
        extra = [d for d in subdirs if d not in classes]
        if extra:
            raise BabysitError(f"Test folder {shown(root / extra[0])} is a class the train folder lacks; "
                               f"rename it to one of {classes} or add it to train.")
    files: list[Path] = []
    labels: list[int] = []
    skipped = [p for p in sorted(root.iterdir()) if p.is_file()]
    walk = _Walk()
    for name in subdirs:
        found = _walk(root / name, skipped, walk)
        if not found:
            raise BabysitError(
                f"Class folder {shown(root / name)} has no images ({', '.join(IMAGE_EXTENSIONS)}); add "
                "images to it or remove it."
            )
        files += found
        labels += [classes.index(name)] * len(found)
    if len(classes) < 2:
        raise BabysitError(f"Image folder {shown(root)} has only one class ({shown(classes[0])}); a classifier "
                           "needs at least two class folders.")
    _warn_walk(root, walk)
    names = [shown(c) for c in classes]
    if len(set(names)) < len(names):
        raise BabysitError(f"Image folder {shown(root)} has class folders whose names differ only in bytes that "
                           "are not UTF-8; rename them to distinct UTF-8 names.")
    return FolderScan(files, labels, classes, skipped, len(walk.unreadable), walk.repeats)


def _warn_walk(root: Path, walk: _Walk) -> None:
    """Say what the walk left out: silently training on part of a folder would hide it."""
    if walk.unreadable:
        warnings.warn(f"{len(walk.unreadable)} sub-folder(s) of {shown(root)} could not be read and were skipped, "
                      f"e.g. {walk.unreadable[0]}; fix their permissions to use their images.", FolderWarning,
                      stacklevel=3)
    if walk.repeats:
        warnings.warn(f"{walk.repeats} folder(s) or image(s) under {shown(root)} were reached a second time through "
                      "a symlink (a loop or a duplicate) and were taken once.", FolderWarning, stacklevel=3)


class FolderWarning(UserWarning):
    """Part of an image folder was left out (an unreadable sub-folder, a symlink loop, a duplicate link)."""


@dataclass
class _Walk:
    """What one walk of a tree saw besides images: shared by its class folders so links are followed once."""

    seen_dirs: set[tuple[int, int]] = field(default_factory=set)  # (st_dev, st_ino) of every folder entered
    seen_files: set[tuple[int, int]] = field(default_factory=set)  # of every image taken
    unreadable: list[str] = field(default_factory=list)
    repeats: int = 0  # folders and files reached a second time through a link (loops and duplicates)


def _walk(folder: Path, skipped: list[Path], walk: _Walk) -> list[Path]:
    """Image files under ``folder`` in sorted order; other files are appended to ``skipped``.

    Symlinks are followed, but every folder and image file is taken once (by device and inode): a link loop
    would otherwise be walked again and again, and a linked duplicate would leak across train/val/test.
    """
    found: list[Path] = []

    def onerror(e: OSError) -> None:
        walk.unreadable.append(shown(e.filename if e.filename is not None else folder))

    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=onerror):
        try:
            st = os.stat(dirpath)
        except OSError as e:
            onerror(e)
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in walk.seen_dirs:
            walk.repeats += 1
            dirnames[:] = []
            continue
        walk.seen_dirs.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if is_visible(d))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if not (is_visible(name) and _is_image(path)):
                skipped.append(path)
                continue
            try:
                fst = os.stat(path)
            except OSError:  # a dangling link: reported as undecodable when read
                found.append(path)
                continue
            if stat.S_ISREG(fst.st_mode) and (fst.st_dev, fst.st_ino) in walk.seen_files:
                walk.repeats += 1
                continue
            walk.seen_files.add((fst.st_dev, fst.st_ino))
            found.append(path)
    return found


def is_visible(name: str) -> bool:
    """False for hidden names (.DS_Store, ._x.png, .ipynb_checkpoints) and __MACOSX."""
    return not name.startswith(".") and name not in _SKIP_DIRS


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def read_folders(scans: list[FolderScan], channels: int, size: int) -> list[FolderImages]:
    """Decode the scanned files of one or more trees into arrays of one common shape.

    A first pass reads only headers (:func:`probe_shape`) to pick the channel count and check that sizes
    agree before anything is decoded; a second pass decodes into preallocated uint8 arrays.
    """
    c, h, w = probe_shape([p for scan in scans for p in scan.files], channels, size)
    check_images(sum(len(scan.files) for scan in scans), (c, h, w), "reading the image folders")
    out = []
    for scan in scans:
        x = np.empty((len(scan.files), c, h, w), dtype=np.uint8)
        for i, path in enumerate(scan.files):
            x[i] = read_image(path, c, size)
        out.append(FolderImages(x, np.asarray(scan.labels, dtype=np.int64), [shown(c) for c in scan.classes]))
    return out


def probe_shape(files: list[Path], channels: int, size: int) -> tuple[int, int, int]:
    """(C, H, W) every image of ``files`` will have, from their headers alone: grayscale unless one is in colour
    (or ``channels``), and one common size (or ``size``); images that differ in size are refused."""
    return shape_from_headers(files, [image_header(p) for p in files], channels, size)


def shape_from_headers(files: list[Path], headers: list[tuple[int, tuple[int, int]]], channels: int,
                       size: int) -> tuple[int, int, int]:
    """:func:`probe_shape` from headers already read (:func:`image_header` per file, in the same order)."""
    first_wh = headers[0][1]  # scan_folder and the CSV reader guarantee at least one image
    if not size:
        bad = next((i for i, (_, wh) in enumerate(headers) if wh != first_wh), None)
        if bad is not None:
            wh = headers[bad][1]
            raise BabysitError(
                f"Images differ in size: {shown(files[0])} is {first_wh[0]}x{first_wh[1]} but {shown(files[bad])} "
                f"is {wh[0]}x{wh[1]} (width x height); pass --data.size=N to resize all to NxN."
            )
    w, h = (size, size) if size else first_wh
    return channels or (3 if any(native == 3 for native, _ in headers) else 1), h, w


def image_header(path: Path) -> tuple[int, tuple[int, int]]:
    """(native channels 1 or 3, (width, height) as displayed) of one image file, from its header alone."""
    with _open(path) as img:
        return native_channels(img), _oriented_size(img)


def read_image(path: Path, channels: int, size: int = 0) -> np.ndarray:
    """One image file -> (channels, H, W) uint8, converted as every image of a folder is (JPEG orientation,
    alpha onto black, grey or RGB, resized to size x size when ``size`` > 0); an undecodable file is an error."""
    with _open(path) as img:
        try:
            if img.format == "JPEG":
                img = ImageOps.exif_transpose(img)
            return pil_to_array(img, channels, size)
        except _DECODE_ERRORS as e:
            raise _corrupt(path, e) from None


def shown(path: str | os.PathLike[str]) -> str:
    """A file or folder name fit to print: bytes that are not UTF-8 (kept by Python as lone surrogates, which
    no terminal or JSON encoder can write) become U+FFFD."""
    return os.fsencode(path).decode("utf-8", errors="replace")


def _open(path: Path) -> Image.Image:
    """Open a regular file with the supported decoders only: a FIFO or device named .png would hang or stream
    forever, and any other format (PostScript, EPS, ...) must never reach its plugin."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise _corrupt(path, e) from None
    if not stat.S_ISREG(mode):
        raise BabysitError(f"Image {shown(path)} is not a regular file (a FIFO, device or socket); remove it "
                           "from the image folder.")
    try:
        return Image.open(path, formats=PILLOW_FORMATS)
    except _DECODE_ERRORS as e:
        raise _corrupt(path, e) from None


def _corrupt(path: Path, e: Exception) -> BabysitError:
    why = shown(str(e)) if not isinstance(e, UnidentifiedImageError) else "not a PNG, JPEG, BMP or GIF image"
    return BabysitError(f"Image {shown(path)} cannot be decoded ({type(e).__name__}: {why}); remove or "
                        "replace the file.")


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed: JPEG EXIF orientations 5-8 swap the two."""
    w, h = img.size
    if img.format == "JPEG" and img.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):
        return h, w
    return w, h


def native_channels(img: Image.Image) -> int:
    """1 for grayscale images (including gray palettes and gray+alpha), else 3."""
    if img.mode in ("1", "L", "LA", "La", "F") or img.mode.startswith("I"):
        return 1
    if img.mode in ("P", "PA"):
        return 1 if _gray_palette(img) else 3
    return 3


def _gray_palette(img: Image.Image) -> bool:
    palette = img.getpalette()
    if not palette:
        return False
    rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
    return bool((rgb == rgb[:, :1]).all())


def pil_to_array(img: Image.Image, channels: int, size: int = 0) -> np.ndarray:
    """One Pillow image -> (C, H, W) uint8 with ``channels`` 1 or 3, resized if ``size`` > 0."""
    img = flatten_mode(img)
    want = "L" if channels == 1 else "RGB"
    if img.mode != want:
        img = img.convert(want)  # RGB -> L uses ITU-R 601-2 luma, L -> RGB replicates
    if size and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def flatten_mode(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> "L" or "RGB": alpha onto black, palettes expanded, 16-bit scaled."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 16-bit grayscale: 65535 -> 255
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    gray = native_channels(img) == 1
    if mode in ("LA", "La", "RGBA", "RGBa", "PA") or "transparency" in img.info:
        rgb = composite_on_black(np.asarray(img.convert("RGBA")))
        return Image.fromarray(np.ascontiguousarray(rgb[..., 0]) if gray else rgb)
    return img.convert("L" if gray else "RGB")


def composite_on_black(rgba: np.ndarray) -> np.ndarray:
    """(..., 4) uint8 RGBA -> (..., 3) uint8 RGB over a black background: rgb * alpha / 255."""
    rgb = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:].astype(np.uint16)
    return ((rgb * alpha + 127) // 255).astype(np.uint8)


def convert_array(x: np.ndarray, channels: int, size: int) -> np.ndarray:
    """(N, C, H, W) uint8 with C in 1, 3, 4 -> (N, channels or C, size or H, size or W) uint8.

    Four channels are read as RGBA and composited onto black; the rest goes through Pillow, one
    image at a time, exactly as image files do.
    """
    if x.shape[1] == 4:
        x = composite_on_black(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    c = channels or x.shape[1]
    if c == x.shape[1] and (not size or x.shape[2:] == (size, size)):
        return np.ascontiguousarray(x)
    if not size and c == 3:  # gray -> RGB is plain replication, no need for Pillow
        return np.repeat(x, 3, axis=1)
    h, w = (size, size) if size else x.shape[2:]
    check_images(len(x), (c, h, w), "resizing the data set")
    out = np.empty((len(x), c, h, w), dtype=np.uint8)
    for i, im in enumerate(x):
        pix = im[0] if x.shape[1] == 1 else im.transpose(1, 2, 0)  # (H, W) -> "L", (H, W, 3) -> "RGB"
        out[i] = pil_to_array(Image.fromarray(np.ascontiguousarray(pix)), c, size)
    return out
