"""Reader (and writer) for the IDX format that MNIST and Fashion-MNIST ship in.

An IDX file is: two zero bytes, one byte giving the element type, one byte giving the number of
dimensions ``d``, then ``d`` big-endian uint32 sizes, then the elements in C order, big-endian.
Files may be gzip-compressed; compression is detected from the content (the ``1f 8b`` magic), not
from the name, because browsers sometimes unpack a download but keep its ``.gz`` name.

Every way a file can be wrong (bad magic, unknown type, truncated, trailing bytes, broken gzip) is
a :class:`~babysit.errors.BabysitError` that names the file and says to fetch it again.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from babysit.errors import BabysitError
from babysit.limits import check_memory, human_bytes

# Element type byte -> big-endian numpy dtype (the IDX spec's table).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_FETCH_AGAIN = "delete it and fetch it again (e.g. `babysit data get`)"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-endian array of the shape it declares.

    Checks the magic number, the element type, that every size is given, and that the file holds
    exactly ``prod(sizes)`` elements: a short file is reported as truncated, a long one as having
    trailing bytes.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
        with (gzip.GzipFile(path, "rb") if compressed else open(path, "rb")) as f:
            return _read_stream(f, path, None if compressed else path.stat().st_size)
    except FileNotFoundError:
        raise BabysitError(f"IDX file {path} does not exist; check the path.") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise BabysitError(
            f"IDX file {path} is a damaged or truncated gzip file ({e}); {_FETCH_AGAIN}."
        ) from None


def _read_stream(f: io.BufferedIOBase, path: Path, file_size: int | None = None) -> np.ndarray:
    """The array in ``f``; ``file_size`` (a plain file's) lets a header declaring more than the file holds be
    refused before the array for it is allocated."""
    header = _read_exact(f, 4)
    if len(header) < 4:
        raise BabysitError(f"IDX file {path} is truncated (shorter than its 4-byte header); "
                           f"{_FETCH_AGAIN}.")
    zero, code, ndim = struct.unpack(">HBB", header)
    if zero != 0 or code not in IDX_DTYPES:
        raise BabysitError(
            f"{path} is not an IDX file (magic number 0x{header.hex()}, expected 0x0000 then a type "
            f"byte in {sorted(hex(c) for c in IDX_DTYPES)}); {_FETCH_AGAIN}."
        )
    if ndim == 0:
        raise BabysitError(f"IDX file {path} declares 0 dimensions; {_FETCH_AGAIN}.")
    dims_raw = _read_exact(f, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise BabysitError(f"IDX file {path} is truncated inside its header ({ndim} sizes "
                           f"declared); {_FETCH_AGAIN}.")
    shape = struct.unpack(f">{ndim}I", dims_raw)
    dtype = IDX_DTYPES[code]
    count = math.prod(shape)
    need = count * dtype.itemsize
    if file_size is not None and need > file_size - 4 - 4 * ndim:
        raise BabysitError(
            f"IDX file {path} is truncated: shape {shape} needs {need} bytes of data but only "
            f"{max(0, file_size - 4 - 4 * ndim)} are there; {_FETCH_AGAIN}."
        )
    # the array, then the images as float32 for training
    check_memory(5 * need, f"IDX file {path} (shape {shape}, {human_bytes(need)})",
                 f"check the file (a damaged header?) or {_FETCH_AGAIN}")
    try:
        data = np.empty(count, dtype=dtype)
    except (MemoryError, ValueError):
        raise BabysitError(
            f"IDX file {path} declares shape {shape}, too large to load (damaged header?); "
            f"{_FETCH_AGAIN}."
        ) from None
    got = _readinto_exact(f, data.view(np.uint8).data)
    if got < data.nbytes:
        raise BabysitError(
            f"IDX file {path} is truncated: shape {shape} needs {data.nbytes} bytes of data but "
            f"only {got} are there; {_FETCH_AGAIN}."
        )
    if f.read(1):
        raise BabysitError(
            f"IDX file {path} has bytes after the {data.nbytes} its shape {shape} needs; "
            f"{_FETCH_AGAIN}."
        )
    return data.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _read_exact(f: io.BufferedIOBase, n: int) -> bytes:
    """Read up to ``n`` bytes, looping over short reads; fewer only at end of file."""
    chunks, left = [], n
    while left:
        chunk = f.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _readinto_exact(f: io.BufferedIOBase, buf: memoryview) -> int:
    """Fill ``buf`` from ``f``, looping over short reads; returns the bytes actually read."""
    got = 0
    while got < len(buf):
        n = f.readinto(buf[got:])
        if not n:
            break
        got += n
    return got


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file; gzip-compressed when ``path`` ends in ``.gz``.

    The inverse of :func:`read_idx`, for making small fixtures or exporting a subset.
    """
    path = Path(path)
    array = np.asarray(array)
    code = next((c for c, dt in IDX_DTYPES.items() if dt.newbyteorder("=") == array.dtype), None)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of uint8, int8, "
                         "int16, int32, float32, float64")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    buf = io.BytesIO()
    buf.write(struct.pack(">HBB", 0, code, array.ndim))
    buf.write(struct.pack(f">{array.ndim}I", *array.shape))
    buf.write(np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes())
    payload = buf.getvalue()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path
