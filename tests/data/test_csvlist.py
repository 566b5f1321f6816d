"""CSV image lists (``--data.name=labels.csv``): the same images as the folder they list, split columns, and
every mistake a list can hold, each one sentence naming the line."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from babysit import config as C
from babysit.cli import main
from babysit.data.sources import load_dataset
from babysit.data.split import prepare_data
from babysit.errors import BabysitError

N = 60  # digits written out: 6 of each class


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """The first 60 digits as PNGs in root/<class>/, and root/labels.csv listing them in file order."""
    root = tmp_path_factory.mktemp("csv")
    d = load_digits()
    x = np.rint(d.images[:N] * (255 / 16)).astype(np.uint8)
    rows = ["path,label"]
    for i, (im, y) in enumerate(zip(x, d.target[:N], strict=True)):
        (root / str(y)).mkdir(exist_ok=True)
        Image.fromarray(im).save(root / str(y) / f"{i:03d}.png")
        rows.append(f"{y}/{i:03d}.png,{y}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root, x, d.target[:N]


def _write(root: Path, text: str, name: str = "list.csv") -> Path:
    path = root / name
    path.write_text(text)
    return path


def test_a_list_loads_the_pixels_and_integer_labels_it_names(listed):
    root, x, y = listed
    ds = load_dataset(str(root / "labels.csv"))
    assert ds.name == "labels" and ds.test is None and ds.val is None
    assert ds.train.classes == [str(k) for k in range(10)]  # integer labels are the class indices
    assert torch.equal(ds.train.x, torch.from_numpy(x[:, None]))  # file order, bytes as written
    assert torch.equal(ds.train.y, torch.from_numpy(y).long())


def test_class_names_sort_like_folders_and_the_folder_gives_the_same_images(listed, tmp_path):
    root, x, y = listed
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    rows = [f"{root}/{k}/{i:03d}.png, {names[k]}" for i, k in enumerate(y)]  # absolute paths; spaces stripped
    ds = load_dataset(str(_write(tmp_path, "Path, LABEL\n" + "\n".join(rows) + "\n")))
    assert ds.train.classes == sorted(names)
    assert [ds.train.classes[k] for k in ds.train.y] == [names[k] for k in y]
    folder = load_dataset(str(root))  # root/<class>/: sorted by class, then by name
    order = np.argsort(y, kind="stable")
    assert torch.equal(folder.train.x, torch.from_numpy(x[order][:, None]))


def test_a_split_column_fixes_train_val_and_test(listed, tmp_path):
    root, _, y = listed
    split = ["test" if i % 5 == 0 else "val" if i % 5 == 1 else "train" for i in range(N)]  # 12 test, 12 val
    rows = [f"{root}/{k}/{i:03d}.png,{k},{s.upper()}" for i, (k, s) in enumerate(zip(y, split, strict=True))]
    csv = _write(tmp_path, "path,label,split\n" + "\n".join(rows) + "\n")
    cfg = C.apply_overrides(C.RunConfig(), {"data.name": str(csv)})
    ds, splits = prepare_data(cfg)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 12, 12)
    assert torch.equal(splits.test.y, torch.tensor([y[i] for i in range(N) if split[i] == "test"]))
    assert torch.equal(splits.val.y, torch.tensor([y[i] for i in range(N) if split[i] == "val"]))
    with pytest.raises(BabysitError, match="fixes its val rows"):
        prepare_data(C.apply_overrides(cfg, {"data.folds": 3}))
    no_test = _write(tmp_path, "path,label,split\n" + "\n".join(r for r, s in zip(rows, split, strict=True)
                                                                 if s != "test") + "\n", "nt.csv")
    _, carved = prepare_data(C.apply_overrides(cfg, {"data.name": str(no_test), "data.test_fraction": 0.25}))
    counts = np.bincount([k for k, s in zip(y, split, strict=True) if s == "train"], minlength=10)
    carved_test = sum(max(1, round(0.25 * n)) for n in counts)  # stratified_indices: round(f * n_c), at least 1
    assert (len(carved.val), len(carved.test), len(carved.train)) == (12, carved_test, 36 - carved_test)


def test_non_utf8_file_names_are_read(tmp_path):
    d = load_digits()
    for k in (0, 1):
        Image.fromarray(np.rint(d.images[k] * 255 / 16).astype(np.uint8)).save(
            os.fsdecode(os.fsencode(str(tmp_path)) + b"/\xff" + str(k).encode() + b".png"))
    (tmp_path / "l.csv").write_bytes(b"path,label\n\xff0.png,a\n\xff1.png,b\n")
    ds = load_dataset(str(tmp_path / "l.csv"))
    assert ds.train.classes == ["a", "b"] and len(ds.train) == 2


@pytest.mark.parametrize(("text", "words"), [
    ("", "is empty"),
    ("file,class\n0/000.png,0\n", "header path,label"),
    ("path,label\n", "no rows"),
    ("path,label\n0/000.png,0\nnope.png,1\n", "line 3: nope.png does not exist"),
    ("path,label\n0/000.png,0,extra\n", "line 2 has 3 column"),
    ("path,label\n0/000.png,\n", "line 2 has an empty label"),
    ("path,label\n0/000.png,0\n1/001.png,2\n", "none equal to 1, an empty class"),
    ("path,label\n0/000.png,a\n0/010.png,a\n", "only one class"),
    ("path,label\n0/000.png,0\n./0/000.png,1\n", "twice (lines 2 and 3)"),
    ("path,label,split\n0/000.png,0,train\n1/001.png,1,holdout\n", "line 3 has split 'holdout'"),
    ("path,label,split\n0/000.png,0,train\n1/001.png,1,test\n", "no train rows of class 1"),
], ids=["empty", "header", "no-rows", "missing", "columns", "empty-label", "gap", "one-class", "twice",
        "split-value", "class-not-in-train"])
def test_list_mistakes_are_one_sentence(listed, text, words):
    root, _, _ = listed
    path = _write(root, text, "bad.csv")
    with pytest.raises(BabysitError, match=re.escape(words)) as e:
        load_dataset(str(path))
    assert str(e.value).count(". ") == 0 and "\n" not in str(e.value)


def test_a_corrupt_listed_image_exits_2_naming_it(listed, tmp_path, capsys):
    root, _, _ = listed
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    csv = _write(tmp_path, f"path,label\n{root}/0/000.png,0\nbroken.png,1\n")
    assert main(["train", f"--data.name={csv}", "--train.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "broken.png cannot be decoded" in err and "Traceback" not in err
