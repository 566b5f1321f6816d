"""Image lists in a CSV file: ``--data.name=labels.csv`` with the columns ``path,label[,split]``.

Decisions, so a list means one thing:

* The first row is the header ``path,label`` or ``path,label,split`` (any case, spaces around names
  ignored). Paths are relative to the CSV's folder (an absolute path is taken as it is).
* Labels are class names, or all integers: integers ``0..K-1`` are the class indices themselves (a gap is
  an empty class, refused), names become classes in sorted order, as image folders' do.
* ``split`` is ``train``, ``val`` or ``test`` on every row; rows say where each image goes and the seeded
  split only fills what the list leaves out (no val rows: val is carved from train; no test rows: test is).
* A file listed twice is refused (it would leak between train and test), as are missing files, empty
  labels and blank paths. Bytes that are not UTF-8 are kept as the file name's own bytes
  (``surrogateescape``, like ``os.listdir``) and printed with U+FFFD.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from babysit.data.folders import shown
from babysit.errors import BabysitError

SPLITS = ("train", "val", "test")
_INT = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class CsvList:
    """The rows of an image list, before decoding."""

    files: list[Path]
    labels: list[int]  # class indices
    classes: list[str]
    splits: list[str] | None  # train / val / test per row, None without a split column

    def rows(self, split: str) -> list[int]:
        """Row numbers (0-based, header excluded) of one split; every row when the list has no split column."""
        if self.splits is None:
            return list(range(len(self.files))) if split == "train" else []
        return [i for i, s in enumerate(self.splits) if s == split]


def read_csv_list(path: Path) -> CsvList:
    """Parse and check ``path``; every mistake is one sentence naming the line."""
    text = _read_text(path)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    name = shown(path)
    if not rows:
        raise BabysitError(f"{name} is empty; write the header path,label (or path,label,split) and one row per image.")
    header = [h.strip().lower() for h in rows[0]]
    if header not in (["path", "label"], ["path", "label", "split"]):
        raise BabysitError(f"{name}'s first row must be the header path,label or path,label,split, not "
                           f"{shown(','.join(rows[0]))!r}; add or fix the header row.")
    files: list[Path] = []
    raw_labels: list[str] = []
    splits: list[str] = []
    seen: dict[tuple[int, int], int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue  # a blank line
        if len(row) != len(header):
            raise BabysitError(f"{name} line {line} has {len(row)} column(s) but the header has {len(header)}; "
                               "quote paths that hold commas and give every row the header's columns.")
        cells = [cell.strip() for cell in row]
        if not cells[0] or not cells[1]:
            raise BabysitError(f"{name} line {line} has an empty {'path' if not cells[0] else 'label'}; fill it in or "
                               "remove the row.")
        file = path.parent / cells[0]
        key = _identity(file, name, line, cells[0])
        if key in seen:
            raise BabysitError(f"{name} lists {shown(cells[0])} twice (lines {seen[key]} and {line}); a repeated image "
                               "would leak between train and test, so keep one row.")
        seen[key] = line
        if len(header) == 3:
            split = cells[2].lower()
            if split not in SPLITS:
                raise BabysitError(f"{name} line {line} has split {shown(cells[2])!r}; use train, val or test.")
            splits.append(split)
        files.append(file)
        raw_labels.append(cells[1])
    if not files:
        raise BabysitError(f"{name} has a header but no rows; add one row per image (path,label).")
    classes, labels = _classes(raw_labels, name)
    if len(classes) < 2:
        raise BabysitError(f"{name} has only one class ({shown(classes[0])}); a classifier needs at least two.")
    out = CsvList(files, labels, classes, splits if len(header) == 3 else None)
    if out.splits is not None:
        train = {labels[i] for i in out.rows("train")}
        missing = [classes[k] for k in range(len(classes)) if k not in train]
        if missing:
            raise BabysitError(f"{name} has no train rows of class {shown(missing[0])}; add some, or drop the split "
                               "column so babysit splits the images itself.")
    return out


def _read_text(path: Path) -> str:
    """The CSV as text: a regular file only (a FIFO would hang), UTF-8 with an optional byte-order mark;
    bytes that are not UTF-8 stay the file names' own bytes."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise BabysitError(f"{shown(path)} is not a regular file; give the path of a CSV file.")
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise BabysitError(f"cannot read {shown(path)} ({e.strerror or type(e).__name__}); check the path and "
                           "its permissions.") from None
    if b"\x00" in raw:
        raise BabysitError(f"{shown(path)} holds NUL bytes, so it is not a CSV text file; give a CSV with the "
                           "header path,label.")
    return raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")


def _identity(file: Path, name: str, line: int, cell: str) -> tuple[int, int]:
    """(device, inode) of a listed file: two spellings of one file are the same image."""
    try:
        st = os.stat(file)
    except OSError as e:
        why = "does not exist" if isinstance(e, FileNotFoundError) else f"cannot be read ({e.strerror})"
        raise BabysitError(f"{name} line {line}: {shown(cell)} {why} (paths are relative to the CSV's folder); "
                           "fix the path or remove the row.") from None
    if not stat.S_ISREG(st.st_mode):
        raise BabysitError(f"{name} line {line}: {shown(cell)} is not a regular file; list image files only.")
    return st.st_dev, st.st_ino


def _classes(raw: list[str], name: str) -> tuple[list[str], list[int]]:
    """Class names and the label index of each row: all-integer labels are indices, else sorted names."""
    if all(_INT.fullmatch(v) for v in raw):
        ints = [int(v) for v in raw]
        k = max(ints) + 1
        present = set(ints)
        gap = next((c for c in range(k) if c not in present), None)
        if gap is not None:
            raise BabysitError(f"{name} has integer labels up to {k - 1} but none equal to {gap}, an empty class; "
                               f"number the classes 0..K-1 without gaps, or use class names.")
        return [str(c) for c in range(k)], ints
    classes = sorted(set(raw))
    if len({shown(c) for c in classes}) < len(classes):
        raise BabysitError(f"{name} has labels that differ only in bytes that are not UTF-8; write them in UTF-8.")
    index = {c: i for i, c in enumerate(classes)}
    return [shown(c) for c in classes], [index[v] for v in raw]
