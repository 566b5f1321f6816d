"""IDX reader: hand-written files, round trips, and every way a file can be broken."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from babysit.data.idx import read_idx, write_idx
from babysit.errors import BabysitError

# A 2x2x3 uint8 image file written out byte by byte as the IDX spec describes it:
# 0x0000 (zero), 0x08 (unsigned byte), 0x03 (three dims), sizes 2, 2, 3 big-endian, then data.
HAND_WRITTEN = (
    b"\x00\x00\x08\x03"
    b"\x00\x00\x00\x02" b"\x00\x00\x00\x02" b"\x00\x00\x00\x03"
    + bytes(range(12))
)
EXPECTED = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)


def test_reads_hand_written_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny-idx3-ubyte"
    path.write_bytes(HAND_WRITTEN)
    x = read_idx(path)
    assert x.dtype == np.uint8 and x.shape == (2, 2, 3)
    np.testing.assert_array_equal(x, EXPECTED)


def test_reads_hand_written_gzip_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(HAND_WRITTEN))
    np.testing.assert_array_equal(read_idx(path), EXPECTED)


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    unpacked_but_named_gz = tmp_path / "tiny-idx3-ubyte.gz"
    unpacked_but_named_gz.write_bytes(HAND_WRITTEN)
    np.testing.assert_array_equal(read_idx(unpacked_but_named_gz), EXPECTED)


def test_big_endian_int16_converted_to_native(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(b"\x00\x00\x0b\x01" + struct.pack(">I", 3) + struct.pack(">3h", -2, 258, 7))
    y = read_idx(path)
    assert y.dtype == np.int16 and y.dtype.isnative
    assert y.tolist() == [-2, 258, 7]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a-idx", "a-idx.gz"])
def test_write_read_round_trip(tmp_path: Path, dtype: type, name: str) -> None:
    x = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype is np.uint8:
        x = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    back = read_idx(write_idx(tmp_path / name, x))
    assert back.dtype == x.dtype and back.shape == x.shape
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("cut", [2, 4, 9, len(HAND_WRITTEN) - 1])
def test_truncated_file_is_user_error(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "cut"
    path.write_bytes(HAND_WRITTEN[:cut])
    with pytest.raises(BabysitError, match="truncated") as err:
        read_idx(path)
    assert str(path) in str(err.value) and "fetch it again" in str(err.value)


def test_truncated_gzip_stream_is_user_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(HAND_WRITTEN + bytes(1000))[:-30])
    with pytest.raises(BabysitError, match="truncated") as err:
        read_idx(path)
    assert isinstance(err.value, BabysitError)


def test_gz_of_truncated_idx_is_user_error(tmp_path: Path) -> None:
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(HAND_WRITTEN[:-3]))
    with pytest.raises(BabysitError, match=r"needs 12 bytes of data but only 9"):
        read_idx(path)


def test_trailing_bytes_is_user_error(tmp_path: Path) -> None:
    path = tmp_path / "long"
    path.write_bytes(HAND_WRITTEN + b"\x00")
    with pytest.raises(BabysitError, match="bytes after"):
        read_idx(path)


@pytest.mark.parametrize("header", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"PK\x03\x04"])
def test_bad_magic_is_user_error(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "bad"
    path.write_bytes(header + bytes(8))
    with pytest.raises(BabysitError, match="not an IDX file"):
        read_idx(path)


def test_zero_dimensions_is_user_error(tmp_path: Path) -> None:
    path = tmp_path / "zero"
    path.write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(BabysitError, match="0 dimensions"):
        read_idx(path)


def test_missing_file_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(BabysitError, match="does not exist"):
        read_idx(tmp_path / "nope")


def test_write_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dtype"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint16))
