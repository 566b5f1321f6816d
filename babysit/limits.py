"""Sizes that blow up: memory estimated before allocating, and every small-file read bounded.

A number that passes validation can still ask for terabytes (``--data.size=100000``, ``conv3-100000000``, an
``.npz`` header declaring 10^12 pixels), and a run file can be a FIFO, ``/dev/zero`` or a 64 GB sparse file.
Allocating first and catching ``MemoryError`` does not work: Linux overcommits, so the allocation may succeed
and the machine swaps or the kernel's OOM killer ends the process later, with no sentence. So every place that
allocates from a user's number estimates the bytes first and calls :func:`check_memory`, and every run file is
read through :func:`read_bounded`, which refuses special files and files larger than the reader expects.
"""

from __future__ import annotations

import math
import os
import resource
import stat
from pathlib import Path

from babysit.errors import BabysitError

SMALL_FILE = 64 * 2**20
"""Bytes a JSON / TOML / text run file may have (meta.json, config.toml, checks.json, ...): the largest real one
(a meta.json with 100,000 class names) is a few MB."""

HISTORY_FILE = 2 * 2**30
"""Bytes history.jsonl may have: ~10 million step records, far beyond any run babysit trains."""

HEADROOM = 0.8
"""Share of the available memory an estimate may take: the estimate counts the big arrays only (images,
weights, activations), not Python, torch's allocator slack or the page cache."""


def human_bytes(n: float) -> str:
    """``n`` bytes as ``1.5 GB`` (powers of 1000, as the summary table prints memory)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f.read(1 << 16).decode(errors="replace").splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_left() -> int | None:
    """memory.max - memory.current of this process's cgroup (v2), when a container caps memory."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def available_memory() -> int:
    """Bytes this process can still allocate: the least of the kernel's MemAvailable, a container's cgroup cap
    and the address-space limit (``ulimit -v``). Unknown everywhere: a large number, so nothing is refused."""
    found = [v for v in (_meminfo_available(), _cgroup_left()) if v is not None]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        found.append(soft)
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            return 2**62
    return max(0, min(found))


def check_memory(need: float, what: str, fix: str, have: int | None = None, where: str = "this machine") -> None:
    """Refuse (BabysitError) when ``need`` bytes exceed :data:`HEADROOM` of the available memory (``have``:
    default :func:`available_memory`; a GPU's free memory for a CUDA run); the sentence gives both numbers,
    ``what`` needs the memory and ``fix`` says what to change."""
    have = available_memory() if have is None else have
    if need > HEADROOM * have:
        raise BabysitError(f"{what} needs about {human_bytes(need)} of memory but {where} has "
                           f"{human_bytes(have)} available; {fix}.")


def check_images(n: int, shape: tuple[int, ...], what: str) -> None:
    """Refuse ``n`` images of ``shape`` (C, H, W) that cannot fit: held as uint8 pixels and then, preprocessed, as
    float32 numbers (1 + 4 bytes each), before the array for them is made."""
    pixels = n * math.prod(shape)
    check_memory(5 * pixels, f"{what}: {n:,} images of {'x'.join(map(str, shape))} (C x H x W)",
                 "resize them smaller (--data.size, e.g. 32) or use fewer (--data.limit)")


def read_bounded(path: str | Path, limit: int = SMALL_FILE, what: str = "") -> bytes:
    """The bytes of the regular file ``path``, refused (BabysitError) when it is not a regular file (a FIFO,
    which would block; a device such as /dev/zero, which never ends; a folder) or holds more than ``limit``
    bytes. Other OSErrors (missing file, permissions) propagate for the caller's own sentence.

    Opened non-blocking so a FIFO cannot hang the open itself; the size is checked with fstat on the opened
    file (no race with a swap of the name) and the read stops at ``limit`` + 1 bytes whatever fstat said.
    """
    name = what or str(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a special file")
            raise BabysitError(f"{name} is {kind}, not a regular file; put back the file babysit wrote (or delete "
                               "it) and run again.")
        if st.st_size > limit:
            raise BabysitError(f"{name} holds {human_bytes(st.st_size)}, more than the {human_bytes(limit)} such a "
                               "file can have (damaged or replaced?); put back the file babysit wrote (or delete "
                               "it) and run again.")
        os.set_blocking(fd, True)
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise BabysitError(f"{name} grew past {human_bytes(limit)} while being read; put back the file babysit "
                               "wrote (or delete it) and run again.")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_small_text(path: str | Path, limit: int = SMALL_FILE, what: str = "") -> str:
    """:func:`read_bounded` decoded as UTF-8 (undecodable bytes raise UnicodeDecodeError, a ValueError)."""
    return read_bounded(path, limit, what).decode()
