""".npz sources: layouts, pixel scaling, labels, and each mistake as a BabysitError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from babysit.data.sources import load_dataset
from babysit.errors import BabysitError

RNG = np.random.default_rng(0)


def _npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "set.npz"
    np.savez(path, **arrays)
    return str(path)


def _labels(n: int, k: int = 3) -> np.ndarray:
    return np.arange(n) % k


def test_happy_path_channels_last_with_test_and_classes(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)  # (N, H, W, C)
    xt = RNG.integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    ds = load_dataset(_npz(tmp_path, x=x, y=_labels(6), x_test=xt, y_test=_labels(3),
                           classes=np.array(["cat", "dog", "eel"])))
    assert ds.name == "set" and ds.source == str((tmp_path / "set.npz").resolve())
    assert ds.train.x.dtype == torch.uint8 and ds.train.x.shape == (6, 3, 5, 4)
    assert ds.train.x.is_contiguous()
    np.testing.assert_array_equal(ds.train.x.numpy(), x.transpose(0, 3, 1, 2))
    assert ds.train.y.dtype == torch.int64 and ds.train.y.tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.test is not None and ds.test.x.shape == (3, 3, 5, 4)
    assert ds.train.classes == ["cat", "dog", "eel"]


def test_channels_first_float_unit_range_scaled(tmp_path: Path) -> None:
    x = np.zeros((4, 1, 6, 6), np.float32)
    x[:, :, 0, 0] = 1.0
    x[:, :, 0, 1] = 0.5
    ds = load_dataset(_npz(tmp_path, x=x, y=_labels(4, 2)))
    assert ds.train.input_shape == (1, 6, 6) and ds.train.classes == ["0", "1"]
    assert ds.train.x[0, 0, 0, :3].tolist() == [255, 128, 0]  # rint(127.5) = 128


def test_three_dim_float_0_255_kept_and_converted(tmp_path: Path) -> None:
    x = np.full((4, 7, 7), 200.0)
    ds = load_dataset(_npz(tmp_path, x=x, y=_labels(4, 2)), channels=3, size=4)
    assert ds.train.x.shape == (4, 3, 4, 4) and int(ds.train.x.max()) == 200


def test_ambiguous_shape_is_channels_last(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, (4, 3, 4, 3), dtype=np.uint8)
    assert load_dataset(_npz(tmp_path, x=x, y=_labels(4, 2))).train.input_shape == (3, 3, 4)


def test_rgba_composited_and_integer_pixels(tmp_path: Path) -> None:
    x = np.zeros((2, 2, 2, 4), np.int64)
    x[..., 0], x[..., 3] = 200, 51
    ds = load_dataset(_npz(tmp_path, x=x, y=np.array([[0], [1]])))
    assert ds.train.input_shape == (3, 2, 2) and ds.train.x[0, :, 0, 0].tolist() == [40, 0, 0]


def test_whole_float_labels_accepted(tmp_path: Path) -> None:
    ds = load_dataset(_npz(tmp_path, x=np.zeros((3, 2, 2), np.uint8), y=np.array([0.0, 1.0, 1.0])))
    assert ds.train.y.tolist() == [0, 1, 1]


X = np.zeros((4, 5, 5), np.uint8)
Y = _labels(4, 2)


@pytest.mark.parametrize(("arrays", "phrase"), [
    ({"y": Y}, "has no array 'x'"),
    ({"x": X}, "has no array 'y'"),
    ({"x": X, "y": Y[:3]}, "3 labels for 4 images"),
    ({"x": np.full((4, 5, 5), np.nan), "y": Y}, "contains NaN or Inf"),
    ({"x": np.full((4, 5, 5), np.inf), "y": Y}, "contains NaN or Inf"),
    ({"x": X, "y": np.array([0, 1, 0.5, 1])}, "non-integer labels"),
    ({"x": X, "y": np.array([0, 1, -1, 1])}, "negative labels"),
    ({"x": X, "y": np.zeros(4, int)}, "only one class"),
    ({"x": np.zeros((4, 25)), "y": Y}, "has shape (4, 25)"),
    ({"x": np.zeros((4, 1, 5, 5, 1)), "y": Y}, "has shape (4, 1, 5, 5, 1)"),
    ({"x": np.zeros((4, 5, 5, 7)), "y": Y}, "C = 1, 3 or 4"),
    ({"x": np.full((4, 5, 5), -1.5), "y": Y}, "undo any standardisation"),
    ({"x": np.full((4, 5, 5), 300), "y": Y}, "pixel values in [300, 300]"),
    ({"x": X.astype(bool), "y": Y}, "has dtype bool"),
    ({"x": X, "y": np.eye(2)[Y]}, "not one-hot"),
    ({"x": X, "y": np.array(["a", "b", "a", "b"])}, "save class indices 0..K-1 as integers"),
    ({"x": X, "y": np.array([1, 2, 1, 2])}, "class 0 ('0') has no training images"),
    ({"x": X, "y": Y, "classes": np.array(["one"])}, "'classes' names only 1"),
    ({"x": X, "y": Y, "x_test": X}, "only one of x_test and y_test"),
    ({"x": X, "y": Y, "x_test": np.zeros((2, 6, 6), np.uint8), "y_test": Y[:2]},
     "save both splits at one size"),
    ({"x": X, "y": Y, "classes": np.array(["a", None], dtype=object)}, "object array"),
])
def test_npz_mistakes_are_user_errors(tmp_path: Path, arrays: dict, phrase: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(BabysitError) as err:
        load_dataset(str(path))
    assert isinstance(err.value, BabysitError)
    assert phrase in str(err.value), str(err.value)


def test_not_a_zip_is_user_error(tmp_path: Path) -> None:
    path = tmp_path / "fake.npz"
    path.write_text("hello")
    with pytest.raises(BabysitError, match=r"not a \.npz \(zip\) file"):
        load_dataset(str(path))
