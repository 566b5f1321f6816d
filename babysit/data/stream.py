"""Data sets bigger than memory: image folders and CSV lists decoded once into a uint8 cache on disk.

``data.stream``: ``off`` decodes every image into memory (the default path); ``on`` decodes them once, by a
``torch.utils.data.DataLoader`` whose worker processes run Pillow (``data.workers``), into a uint8 file
``(N, C, H, W)`` under ``data.cache``, and from then on every split is a memory-mapped view of that file:
pages come from the disk (or the page cache) as batches are drawn, and are never copied into the process
as a whole. ``auto`` (the default) streams when the in-memory path would need more than half the memory
this process may use (:func:`use_stream`).

What stays the same, so a streamed run equals an in-memory one: the bytes (the same :func:`read_image`
decodes every file), the split (it only needs the labels), the epoch permutation, the augmentation (a seeded
batch per step from the raw pixels) and the preprocessing (statistics fitted in one chunked pass over the
memory-mapped training rows, applied per batch). Hence resume stays exact.

The cache, per source (files, their sizes and times, channels, size): ``images.u8`` with ``cache.json``. While
it is being filled it is ``images.u8.partial`` with ``progress.json`` (rows written, saved after the rows are
flushed), so a killed first pass continues where it stopped; a lock file keeps two processes (search workers)
from filling it at once. Each split is gathered once into ``rows-<hash>.u8`` (contiguous, so batches read
few pages), written to a temporary name and renamed. Delete the folder to reclaim the disk.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from babysit.data.folders import image_header, read_image, shape_from_headers, shown
from babysit.errors import BabysitError
from babysit.limits import read_small_text
from babysit.log import get_logger
from babysit.rundir import atomic_write_text, write_error

_log = get_logger(__name__)

IN_MEMORY_FACTOR = 8.0
"""Peak resident memory of an in-memory run over the uint8 size of its images: 5.9 and 8.4 in two runs of
bench/streaming.py (60,000 MNIST PNGs: 675 / 788 MB peak against 410 MB for digits, 45 MB of uint8 pixels): the
decoded set, its split copies, float32 train and val, the test split at the end; the larger one, to stream when in
doubt. ``auto`` streams when this many times the uint8 size exceeds ``MEMORY_SHARE`` of the available memory."""
MEMORY_SHARE = 0.5
CACHE_VERSION = 1  # bump when the cache's layout or the decoding changes: old caches are then never read
_BATCH = 256  # images per DataLoader batch in the filling pass
_SAVE_EVERY = 2.0  # seconds between progress saves (flush + progress.json)


@dataclass(frozen=True)
class StreamOptions:
    """``data.stream``, ``data.cache`` and ``data.workers``."""

    mode: str = "off"  # auto | on | off
    cache: str = ""  # folder of the caches; "" = $XDG_CACHE_HOME/babysit/stream (~/.cache/babysit/stream)
    workers: int = 2  # DataLoader worker processes that decode images in the first pass; 0 = this process


@dataclass(frozen=True)
class MapStore:
    """Where a memory-mapped image set lives: its cache folder and a key naming its rows there."""

    folder: Path
    key: str


def cache_root(cache: str) -> Path:
    """``data.cache``, or the user's cache folder."""
    if cache:
        return Path(cache).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "babysit" / "stream"


def available_memory() -> int:
    """Bytes this process may still take: the least of the system's available memory, the address-space limit
    (``ulimit -v``, less what is mapped already) and the cgroup's limit (less its usage)."""
    limits = []
    info = _read("/proc/meminfo")
    for line in info.splitlines():
        if line.startswith("MemAvailable:"):
            limits.append(int(line.split()[1]) * 1024)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        vm = next((int(x.split()[1]) * 1024 for x in _read("/proc/self/status").splitlines()
                   if x.startswith("VmSize:")), 0)
        limits.append(soft - vm)
    for high_file, used_file in (("memory.max", "memory.current"),  # cgroup v2, then v1
                                 ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        high, used = _read(f"/sys/fs/cgroup/{high_file}").strip(), _read(f"/sys/fs/cgroup/{used_file}").strip()
        if high.isdigit() and used.isdigit() and int(high) < 1 << 60:  # v1 writes "no limit" as a huge number
            limits.append(int(high) - int(used))
    return max(0, min(limits)) if limits else 1 << 62


def _cache_record(path: Path, folder: Path, counted: tuple[str, ...] = ()) -> dict[str, Any]:
    """A cache's own small JSON file (cache.json, progress.json: a "shape" list, and whole numbers under
    ``counted``), read with a size bound; a damaged one is one sentence saying to delete the folder, as for a cache
    of the wrong size."""
    try:
        record = json.loads(read_small_text(path))
        if not isinstance(record, dict) or not isinstance(record.get("shape"), list) or \
                not all(type(v) is int for v in record["shape"] + [record.get(k) for k in counted]):
            raise ValueError(record)
        return record
    except ValueError:  # not JSON, not UTF-8, or not the record babysit wrote
        raise BabysitError(f"the cache file {shown(path)} is damaged; delete the folder {shown(folder)} so babysit "
                           "decodes the images again.") from None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def use_stream(mode: str, n: int, shape: tuple[int, int, int]) -> bool:
    """``data.stream`` made concrete for ``n`` images of ``shape``: ``auto`` streams when the in-memory path's
    estimated peak (``IN_MEMORY_FACTOR`` times the uint8 size) is above ``MEMORY_SHARE`` of the free memory."""
    if mode in ("on", "off"):
        return mode == "on"
    return n * math.prod(shape) * IN_MEMORY_FACTOR > MEMORY_SHARE * available_memory()


def _source_key(files: list[Path], channels: int, size: int) -> str:
    """The cache's name: a hash of every file's path, size and modification time and the conversion asked for."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, channels, size]).encode())
    for path in files:
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"  # reported as undecodable when read
        h.update(os.fsencode(os.path.abspath(path)) + b"\0" + stamp.encode() + b"\n")
    return h.hexdigest()[:24]


def map_images(files: list[Path], channels: int, size: int, opts: StreamOptions) -> tuple[torch.Tensor, Path]:
    """Every file of ``files`` as rows of one memory-mapped uint8 tensor (N, C, H, W), decoded into the cache
    the first time (resumably) and read back from it afterwards; also returns the cache folder."""
    folder = cache_root(opts.cache) / _source_key(files, channels, size)
    final, meta = folder / "images.u8", folder / "cache.json"
    if not (final.exists() and meta.exists()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock = open(folder / "lock", "a")  # noqa: SIM115 - held for the whole fill
        except OSError as e:
            raise write_error(folder, e) from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process filling it: wait, then read what it made
            if not (final.exists() and meta.exists()):
                _fill(folder, files, channels, size, opts.workers)
    shape = tuple(_cache_record(meta, folder)["shape"])
    if shape[0] != len(files):
        raise BabysitError(f"the cache {shown(folder)} holds {shape[0]} images, not {len(files)}; delete that folder "
                           "so babysit decodes the images again.")
    return _open_map(final, shape), folder


def _open_map(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """A uint8 file as a tensor backed by the page cache. Copy-on-write (``c``): torch wants a writable array, and
    nothing ever writes to it, so no page is copied."""
    if math.prod(shape) == 0:
        return torch.empty(shape, dtype=torch.uint8)
    return torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="c", shape=shape))


class _Files(torch.utils.data.Dataset):
    """One file per item through a top-level function (picklable, for the worker processes): an error comes
    back as its sentence, since an exception raised in a worker reaches the main process as a traceback text."""

    def __init__(self, files: list[Path], channels: int, size: int, header: bool) -> None:
        self.files, self.channels, self.size, self.header = files, channels, size, header

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Any, str]:
        try:
            if self.header:
                return image_header(self.files[i]), ""
            return read_image(self.files[i], self.channels, self.size), ""
        except BabysitError as e:
            return None, str(e)


def _collate(items: list[tuple[Any, str]]) -> tuple[list[Any], str]:
    return [v for v, _ in items], next((e for _, e in items if e), "")


def _batches(files: list[Path], channels: int, size: int, workers: int, header: bool) -> Iterator[list[Any]]:
    """The files' headers or pixels in order, ``_BATCH`` at a time, decoded by ``workers`` processes."""
    loader = torch.utils.data.DataLoader(_Files(files, channels, size, header), batch_size=_BATCH, shuffle=False,
                                         num_workers=workers, collate_fn=_collate)
    for values, error in loader:
        if error:
            raise BabysitError(error)
        yield values


def _fill(folder: Path, files: list[Path], channels: int, size: int, workers: int) -> None:
    """Decode ``files`` into ``folder/images.u8``, continuing a partial fill; rename it into place when complete."""
    partial, progress = folder / "images.u8.partial", folder / "progress.json"
    started = time.perf_counter()
    done, shape = 0, None
    if partial.exists() and progress.exists():
        saved = _cache_record(progress, folder, ("rows",))
        done, shape = int(saved["rows"]), tuple(saved["shape"])
    if shape is None:
        headers = [h for batch in _batches(files, channels, size, workers, header=True) for h in batch]
        shape = (len(files), *shape_from_headers(files, headers, channels, size))
        done = 0
    _log.info(f"data: decoding {len(files) - done:,} images ({'x'.join(map(str, shape[1:]))}) into the cache "
              f"{shown(folder)} with {workers} worker process(es)" + (f", continuing after {done:,}" if done else ""))
    try:
        mm = np.memmap(partial, dtype=np.uint8, mode="r+" if done else "w+", shape=shape)
        last_save, row = time.perf_counter(), done
        for images in _batches(files[done:], shape[1], size, workers, header=False):
            mm[row : row + len(images)] = np.stack(images)
            row += len(images)
            if time.perf_counter() - last_save > _SAVE_EVERY:  # flushed rows first, then the claim
                mm.flush()
                atomic_write_text(progress, json.dumps({"rows": row, "shape": list(shape)}))
                last_save = time.perf_counter()
        mm.flush()
        del mm
        os.replace(partial, folder / "images.u8")
    except OSError as e:
        raise write_error(partial, e) from None
    atomic_write_text(folder / "cache.json", json.dumps({"shape": list(shape), "version": CACHE_VERSION}))
    progress.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    _log.info(f"data: cache filled in {seconds:.1f} s ({(len(files) - done) / max(seconds, 1e-9):,.0f} images/s)")


def gather(x: torch.Tensor, index: torch.Tensor, store: MapStore) -> tuple[torch.Tensor, MapStore]:
    """The rows ``x[index]`` of a memory-mapped set as a new memory-mapped file (made once, then reused): a split
    kept contiguous on disk, never whole in memory."""
    index = torch.nonzero(index).flatten() if index.dtype == torch.bool else index.flatten().long()
    key = hashlib.sha256(store.key.encode() + index.cpu().numpy().astype(np.int64).tobytes()).hexdigest()[:24]
    path = store.folder / f"rows-{key}.u8"
    shape = (len(index), *x.shape[1:])
    if not path.exists() and len(index):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
            src = x.numpy()
            step = max(1, (64 << 20) // max(1, math.prod(shape[1:])))  # about 64 MB per copy
            for i in range(0, len(index), step):
                out[i : i + step] = src[index[i : i + step].numpy()]
            out.flush()
            del out
            os.replace(tmp, path)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise write_error(path, e) from None
    return _open_map(path, shape), MapStore(store.folder, key)


def pixel_means(x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(C,) float32 mean pixel of uint8 images (N, C, H, W), summed exactly in int64 a chunk at a time (a
    memory-mapped set is never turned into floats whole)."""
    total = torch.zeros(x.shape[1], dtype=torch.int64)
    for i in range(0, len(x), chunk):
        total += x[i : i + chunk].sum((0, 2, 3), dtype=torch.int64).cpu()
    count = max(1, len(x) * x.shape[2] * x.shape[3])
    return (total.double() / count).float().to(x.device)


class MappedImages:
    """A memory-mapped split as the loop sees its tensors: ``len``, ``x[index or slice]`` -> the rows read
    from disk, moved to ``device`` and preprocessed by ``pre`` (raw uint8 without it), ``split(n)``, ``device``.
    Put in :class:`babysit.train.loop.TensorData` in place of the preprocessed tensors when streaming."""

    def __init__(self, raw: torch.Tensor, device: torch.device, pre: Any = None) -> None:
        self.raw, self.device, self.pre = raw, torch.device(device), pre

    def __len__(self) -> int:
        return int(self.raw.shape[0])

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def shape(self) -> tuple[int, ...]:
        c, h, w = self.raw.shape[1:]
        out = self.pre.output_shape((int(c), int(h), int(w))) if self.pre is not None else (c, h, w)
        return (len(self), *out)

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu()
        xb = self.raw[index].to(self.device, non_blocking=True)
        return self.pre(xb) if self.pre is not None else xb

    def split(self, size: int) -> Iterator[torch.Tensor]:
        return (self[i : i + size] for i in range(0, len(self), size))

    def to(self, device: torch.device | str) -> MappedImages:
        return MappedImages(self.raw, torch.device(device), self.pre)
