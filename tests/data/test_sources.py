"""Named sets (digits, mnist, fashion-mnist), load options, ImageSet helpers and `data info`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from babysit.data.locate import idx_files
from babysit.data.named import NAMED_SETS, UNKNOWN
from babysit.data.sources import (
    FASHION_MNIST_CLASSES,
    balance_verdict,
    dataset_info,
    list_datasets,
    load_dataset,
)
from babysit.errors import BabysitError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_digits_shape_dtype_and_scaling() -> None:
    ds = load_dataset("digits")
    x, y = ds.train.x, ds.train.y
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.uint8
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert ds.train.classes == [str(d) for d in range(10)] and ds.train.num_classes == 10
    assert ds.test is None and ds.source == "scikit-learn" and ds.name == "digits"
    raw = load_digits().images  # 0..16
    np.testing.assert_array_equal(x[:, 0].numpy(), np.rint(raw * 255 / 16).astype(np.uint8))
    assert int(x.max()) == 255 and int(x.min()) == 0
    assert (y.numpy() == load_digits().target).all()


def test_digits_channels_and_size() -> None:
    ds = load_dataset("digits", channels=3, size=16)
    assert ds.train.x.shape == (1797, 3, 16, 16)
    assert torch.equal(ds.train.x[:, 0], ds.train.x[:, 2])  # gray replicated


def test_name_normalised() -> None:
    assert load_dataset(" Digits ").name == "digits"


def test_list_datasets() -> None:
    assert list_datasets() == ["digits", "mnist", "fashion-mnist"]


def test_named_sets_carry_their_traits_and_folders_do_not(tmp_path: Path) -> None:
    digits = load_dataset("digits").traits
    assert (digits.mirror_safe, digits.upright_only, digits.max_rotation) == (False, True, 30.0)
    clothes = NAMED_SETS.get("fashion-mnist").traits
    assert (clothes.mirror_safe, clothes.upright_only, clothes.max_rotation) == (True, True, None)
    np.savez(tmp_path / "digits_copy.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.arange(4) % 2)
    assert load_dataset(str(tmp_path / "digits_copy.npz")).traits == UNKNOWN


def test_a_misspelt_named_set_gets_a_suggestion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BabysitError, match=r"'mnsit' is not a named set .*; did you mean 'mnist'\?$"):
        load_dataset("mnsit")


@pytest.mark.skipif(not idx_files(DEBIAN_FASHION), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from babysit.data import locate

    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"fashion-mnist": (DEBIAN_FASHION,)})
    ds = load_dataset("Fashion_MNIST")
    assert ds.name == "fashion-mnist" and ds.source == str(DEBIAN_FASHION)
    assert len(ds.train) == 60000 and ds.test is not None and len(ds.test) == 10000
    assert ds.train.input_shape == (1, 28, 28) and ds.train.x.dtype == torch.uint8
    assert ds.train.classes == FASHION_MNIST_CLASSES
    assert ds.train.class_counts().tolist() == [6000] * 10
    assert ds.test.class_counts().tolist() == [1000] * 10


def test_idx_set_with_gz_and_conversion(isolated: Path, idx_set, monkeypatch) -> None:
    idx_set(isolated / "d" / "mnist", n_train=12, n_test=5, fill=90, gz=True)
    monkeypatch.setenv("BABYSIT_DATA", str(isolated / "d"))
    ds = load_dataset("mnist", channels=3, size=6)
    assert ds.train.x.shape == (12, 3, 6, 6) and ds.test is not None and len(ds.test) == 5
    assert int(ds.train.x.min()) == int(ds.train.x.max()) == 90


def test_idx_labels_out_of_range_is_user_error(isolated: Path, idx_set, monkeypatch) -> None:
    from babysit.data.idx import write_idx

    folder = idx_set(isolated / "d" / "mnist")
    write_idx(folder / "train-labels-idx1-ubyte", np.full(20, 12, np.uint8))
    monkeypatch.setenv("BABYSIT_DATA", str(isolated / "d"))
    with pytest.raises(BabysitError, match="does not hold 20 labels 0..9"):
        load_dataset("mnist")


def test_idx_images_wrong_shape_is_user_error(isolated: Path, idx_set, monkeypatch) -> None:
    from babysit.data.idx import write_idx

    folder = idx_set(isolated / "d" / "mnist")
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((10, 16), np.uint8))
    monkeypatch.setenv("BABYSIT_DATA", str(isolated / "d"))
    with pytest.raises(BabysitError, match=r"not uint8 \(N, H, W\) images"):
        load_dataset("mnist")


@pytest.mark.parametrize(("kw", "phrase"), [
    ({"channels": 2}, "channels must be 0 (keep), 1 (grayscale) or 3 (RGB)"),
    ({"size": -1}, "size must be 0 (keep)"),
])
def test_bad_options_are_user_errors(kw: dict, phrase: str) -> None:
    with pytest.raises(BabysitError) as err:
        load_dataset("digits", **kw)
    assert phrase in str(err.value)


def test_unknown_name_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(BabysitError, match="is not a named set"):
        load_dataset(str(tmp_path / "nowhere"))


def test_other_file_is_user_error(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("1,2")
    with pytest.raises(BabysitError, match="neither a .npz file, a .csv list nor a folder"):
        load_dataset(str(tmp_path / "x.txt"))
    (tmp_path / "x.csv").write_text("1,2")  # a .csv is an image list: its header is checked
    with pytest.raises(BabysitError, match="first row must be the header path,label"):
        load_dataset(str(tmp_path / "x.csv"))


def test_image_set_helpers() -> None:
    train = load_dataset("digits").train
    assert len(train) == 1797 and train.input_shape == (1, 8, 8)
    sub = train.subset(torch.tensor([0, 5, 10]))
    assert len(sub) == 3 and sub.classes is train.classes
    assert torch.equal(sub.x[1], train.x[5]) and sub.y.tolist() == train.y[[0, 5, 10]].tolist()
    assert len(train.subset(train.y == 3)) == 183


def test_dataset_info_table() -> None:
    info = dataset_info(load_dataset("digits"))
    lines = info.splitlines()
    assert "train    1,797 images" in lines and "shape    1x8x8 (C x H x W), uint8 0..255" in lines
    assert "classes  10" in lines
    row3 = next(ln for ln in lines if ln.startswith("3 "))
    assert row3.split() == ["3", "183", "10.2%"]  # 183 / 1797
    assert lines[-1] == "balance  max/min = 1.05 ('3' 183 / '8' 174): balanced"


def test_dataset_info_with_test_split(tmp_path: Path) -> None:
    x = np.zeros((6, 2, 2), np.uint8)
    np.savez(tmp_path / "s.npz", x=x, y=np.array([0, 0, 0, 0, 0, 1]), x_test=x[:2],
             y_test=np.array([0, 1]), classes=np.array(["ant", "bee"]))
    info = dataset_info(load_dataset(str(tmp_path / "s.npz")))
    assert "test     2 images" in info
    bee = next(ln for ln in info.splitlines() if ln.startswith("bee"))
    assert bee.split() == ["bee", "1", "16.7%", "1", "50.0%"]
    assert "5.00 ('ant' 5 / 'bee' 1): imbalanced" in info


def test_balance_verdicts() -> None:
    assert balance_verdict([10, 10], ["a", "b"]).endswith(": balanced")
    assert balance_verdict([20, 10], ["a", "b"]).endswith("mildly imbalanced")
    assert "no training images" in balance_verdict([5, 0], ["a", "b"])
