"""Image folders root/<class>/<image>: modes, formats, resizing, and every folder mistake."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from babysit.data.folders import composite_on_black, convert_array, pil_to_array
from babysit.data.sources import load_dataset
from babysit.errors import BabysitError

RED_HALF_ALPHA = (255, 0, 0, 128)  # composited on black: (128, 0, 0)
ORANGE = (200, 100, 50)  # ITU-R 601-2 luma: .299*200 + .587*100 + .114*50 = 124.2 -> 124


def _save(path: Path, img: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _mixed_folder(root: Path) -> Path:
    """Class 'colour': RGB PNG, RGBA PNG, palette GIF, RGB BMP; class 'gray': L JPEG, L PNG."""
    _save(root / "colour" / "a_rgb.png", Image.new("RGB", (8, 8), ORANGE))
    _save(root / "colour" / "b_rgba.png", Image.new("RGBA", (8, 8), RED_HALF_ALPHA))
    _save(root / "colour" / "c_palette.gif", Image.new("RGB", (8, 8), (255, 0, 0)).convert("P"))
    _save(root / "colour" / "d_rgb.BMP", Image.new("RGB", (8, 8), (0, 0, 255)))
    _save(root / "gray" / "e_gray.JPG", Image.new("L", (8, 8), 77))
    _save(root / "gray" / "f_gray.png", Image.new("L", (8, 8), 200))
    return root


def test_mixed_modes_to_rgb(tmp_path: Path) -> None:
    ds = load_dataset(str(_mixed_folder(tmp_path / "imgs")))
    x, y = ds.train.x, ds.train.y
    assert x.dtype == torch.uint8 and x.shape == (6, 3, 8, 8)
    assert ds.train.classes == ["colour", "gray"] and y.tolist() == [0, 0, 0, 0, 1, 1]
    assert ds.test is None and ds.name == "imgs"
    pixels = [tuple(x[i, :, 3, 3].tolist()) for i in range(6)]
    assert pixels == [ORANGE, (128, 0, 0), (255, 0, 0), (0, 0, 255), (77, 77, 77), (200,) * 3]


def test_mixed_modes_to_grayscale(tmp_path: Path) -> None:
    ds = load_dataset(str(_mixed_folder(tmp_path / "imgs")), channels=1)
    assert ds.train.input_shape == (1, 8, 8)
    assert ds.train.x[:, 0, 3, 3].tolist() == [124, 38, 76, 29, 77, 200]


def test_all_grayscale_stays_one_channel(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "1.png", Image.new("L", (5, 5), 10))
    gray_palette = Image.new("L", (5, 5), 99).convert("P")
    _save(tmp_path / "b" / "2.png", gray_palette)
    _save(tmp_path / "b" / "3.png", Image.new("LA", (5, 5), (100, 51)))  # 100 * 51/255 = 20
    ds = load_dataset(str(tmp_path))
    assert ds.train.input_shape == (1, 5, 5)
    assert ds.train.x[:, 0, 0, 0].tolist() == [10, 99, 20]
    assert load_dataset(str(tmp_path), channels=3).train.x[1, :, 0, 0].tolist() == [99] * 3


def test_sixteen_bit_png_scaled(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "1.png", Image.fromarray(np.full((4, 4), 65535, np.uint16)))
    _save(tmp_path / "b" / "2.png", Image.fromarray(np.full((4, 4), 257 * 10, np.uint16)))
    ds = load_dataset(str(tmp_path))
    assert ds.train.x[:, 0, 0, 0].tolist() == [255, 10]


def test_resize_to_square(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "wide.png", Image.new("RGB", (12, 7), (10, 20, 30)))
    _save(tmp_path / "b" / "tall.jpg", Image.new("RGB", (5, 9), (40, 50, 60)))
    ds = load_dataset(str(tmp_path), size=6)
    assert ds.train.x.shape == (2, 3, 6, 6)
    # a constant image stays constant under bilinear resizing
    assert ds.train.x[0].flatten(1).unique(dim=1).tolist() == [[10], [20], [30]]


def test_jpeg_exif_orientation_applied(tmp_path: Path) -> None:
    rotated = Image.new("RGB", (8, 4), (0, 200, 0))  # stored 8 wide, displayed 4 wide
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "a").mkdir()
    rotated.save(tmp_path / "a" / "photo.jpg", exif=exif)
    _save(tmp_path / "b" / "upright.png", Image.new("RGB", (4, 8)))
    assert load_dataset(str(tmp_path)).train.input_shape == (3, 8, 4)


def test_non_image_files_skipped_and_counted(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "1.png", Image.new("L", (3, 3)))
    _save(tmp_path / "b" / "nested" / "2.png", Image.new("L", (3, 3)))
    (tmp_path / "a" / "notes.txt").write_text("hello")
    (tmp_path / "b" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "b" / "._2.png").write_bytes(b"\0")  # macOS resource fork, not an image
    ds = load_dataset(str(tmp_path))
    assert len(ds.train) == 2 and ds.train.y.tolist() == [0, 1]
    assert "3 non-image files skipped" in ds.source and "notes.txt" in ds.source


def test_train_test_layout(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("test", 1)):
        for cls in ("cat", "dog"):
            for i in range(n):
                _save(tmp_path / split / cls / f"{i}.png", Image.new("L", (4, 4), 50))
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden folders are not splits or classes
    ds = load_dataset(str(tmp_path))
    assert len(ds.train) == 6 and ds.test is not None and len(ds.test) == 2
    assert ds.test.classes == ["cat", "dog"] and ds.test.y.tolist() == [0, 1]


def _expect(root: Path, phrase: str, **kw: int) -> str:
    with pytest.raises(BabysitError) as err:
        load_dataset(str(root), **kw)
    assert isinstance(err.value, BabysitError)
    assert phrase in str(err.value), str(err.value)
    return str(err.value)


def test_test_class_missing_from_train_is_user_error(tmp_path: Path) -> None:
    for split, classes in (("train", "ab"), ("test", "ac")):
        for cls in classes:
            _save(tmp_path / split / cls / "1.png", Image.new("L", (4, 4)))
    msg = _expect(tmp_path, "is a class the train folder lacks")
    assert str(tmp_path / "test" / "c") in msg


def test_val_folder_is_user_error(tmp_path: Path) -> None:
    for split in ("train", "val"):
        _save(tmp_path / split / "a" / "1.png", Image.new("L", (4, 4)))
    _expect(tmp_path, "merge the validation images into train")


def test_empty_root_is_user_error(tmp_path: Path) -> None:
    _expect(tmp_path, "has no class folders")


def test_loose_images_is_user_error(tmp_path: Path) -> None:
    _save(tmp_path / "1.png", Image.new("L", (4, 4)))
    _expect(tmp_path, "found 1 images directly in it")


def test_empty_class_folder_is_user_error(tmp_path: Path) -> None:
    _save(tmp_path / "cat" / "1.png", Image.new("L", (4, 4)))
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "readme.txt").write_text("x")
    msg = _expect(tmp_path, "has no images")
    assert str(tmp_path / "dog") in msg


def test_one_class_is_user_error(tmp_path: Path) -> None:
    _save(tmp_path / "cat" / "1.png", Image.new("L", (4, 4)))
    _expect(tmp_path, "only one class")


def test_different_sizes_is_user_error(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "1.png", Image.new("L", (4, 4)))
    _save(tmp_path / "b" / "2.png", Image.new("L", (6, 5)))
    msg = _expect(tmp_path, "pass --data.size=N")
    assert "1.png is 4x4" in msg and "2.png is 6x5" in msg


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_is_user_error(tmp_path: Path, damage: str) -> None:
    _save(tmp_path / "a" / "ok.png", Image.new("L", (16, 16)))
    good = _save(tmp_path / "b" / "bad.png", Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)))
    data = good.read_bytes()
    good.write_bytes(b"not an image at all" if damage == "garbage" else data[: len(data) // 2])
    msg = _expect(tmp_path, "remove or replace the file")
    assert "bad.png" in msg


def test_convert_array_matches_files(tmp_path: Path) -> None:
    """Arrays (npz, IDX) and image files go through the same conversion."""
    rgb = np.random.default_rng(1).integers(0, 256, (2, 3, 9, 7), dtype=np.uint8)
    for i, im in enumerate(rgb):
        _save(tmp_path / "ab"[i] / "x.png", Image.fromarray(im.transpose(1, 2, 0)))
    from_files = load_dataset(str(tmp_path), channels=1, size=5).train.x.numpy()
    np.testing.assert_array_equal(convert_array(rgb, 1, 5), from_files)


def test_convert_array_rgba_and_replication() -> None:
    rgba = np.zeros((1, 4, 2, 2), np.uint8)
    rgba[0, :, 0, 0] = (200, 100, 0, 255)
    rgba[0, :, 1, 1] = (200, 100, 0, 51)  # 20% opaque -> (40, 20, 0)
    out = convert_array(rgba, 0, 0)
    assert out.shape == (1, 3, 2, 2)
    assert out[0, :, 0, 0].tolist() == [200, 100, 0] and out[0, :, 1, 1].tolist() == [40, 20, 0]
    gray = np.arange(4, dtype=np.uint8).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(convert_array(gray, 3, 0), np.repeat(gray, 3, axis=1))


def test_composite_on_black_formula() -> None:
    rgba = np.array([[255, 255, 255, 0], [255, 128, 2, 255], [100, 0, 0, 128]], np.uint8)
    assert composite_on_black(rgba).tolist() == [[0, 0, 0], [255, 128, 2], [50, 0, 0]]


def test_pil_to_array_layout() -> None:
    img = Image.new("RGB", (3, 2), (1, 2, 3))
    arr = pil_to_array(img, 3)
    assert arr.shape == (3, 2, 3) and arr[:, 0, 0].tolist() == [1, 2, 3]
