"""Reliability: hostile image files (class 1) and the folder walk (class 2).

Files named .png that are not images babysit supports (PostScript would start Ghostscript), special files
(a FIFO would hang the read), names that are not UTF-8; symlink loops, linked duplicates, unreadable
sub-folders, and splits that would be empty.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from babysit.data.folders import FolderWarning, scan_folder, shown
from babysit.data.sources import Dataset, ImageSet, dataset_info, load_dataset
from babysit.data.split import split_dataset
from babysit.errors import BabysitError

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n"


def _tree(root: Path, per_class: int = 3, classes: tuple[str, ...] = ("a", "b")) -> Path:
    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("L", (6, 6), 40 * k + i).save(root / cls / f"{i}.png")
    return root


@pytest.fixture
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything starts an external program (Ghostscript for EPS)."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"an external program was started: {args}")
    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "check_call", refuse)


# ---- class 1: hostile image files ----

def test_postscript_named_png_is_refused_without_ghostscript(tmp_path: Path, no_subprocess: None) -> None:
    root = _tree(tmp_path / "imgs")
    (root / "a" / "evil.png").write_bytes(EPS)
    with pytest.raises(BabysitError, match=r"evil\.png cannot be decoded .*not a PNG, JPEG, BMP or GIF"):
        load_dataset(str(root))


@pytest.mark.parametrize("fmt", ["TIFF", "PPM", "ICO", "WEBP"])
def test_other_formats_named_png_are_refused(tmp_path: Path, fmt: str) -> None:
    root = _tree(tmp_path / "imgs")
    Image.new("RGB", (6, 6), (1, 2, 3)).save(root / "b" / "other.png", format=fmt)
    with pytest.raises(BabysitError, match=r"other\.png cannot be decoded"):
        load_dataset(str(root))


def test_supported_formats_under_any_image_extension_still_load(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    Image.new("L", (6, 6), 7).save(root / "a" / "really_a_bmp.png", format="BMP")  # the content decides, as before
    Image.new("L", (6, 6), 9).save(root / "b" / "really_a_png.jpg", format="PNG")
    ds = load_dataset(str(root))
    assert len(ds.train) == 8 and sorted(ds.train.x[:, 0, 0, 0].tolist())[:2] == [0, 1]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_named_png_is_refused_not_read(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    os.mkfifo(root / "a" / "pipe.png")
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("reading the FIFO hung"))
    signal.alarm(20)
    try:
        with pytest.raises(BabysitError, match=r"pipe\.png is not a regular file"):
            load_dataset(str(root))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_device_linked_as_png_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    (root / "b" / "zero.png").symlink_to("/dev/zero")
    with pytest.raises(BabysitError, match=r"zero\.png is not a regular file"):
        load_dataset(str(root))


def test_non_utf8_class_and_file_names_load_and_print(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs", classes=("b",))
    bad = os.fsencode(root) + b"/caf\xe9"  # Latin-1 "café": not UTF-8
    os.mkdir(bad)
    for i in range(3):
        Image.new("L", (6, 6), 200).save(os.fsdecode(bad + b"/\xff%d.png" % i))
    (Path(os.fsdecode(bad)) / os.fsdecode(b"notes\xfe.txt")).write_text("x")
    ds = load_dataset(str(root))
    assert ds.train.classes == ["b", "caf\ufffd"]
    assert ds.train.y.tolist() == [0, 0, 0, 1, 1, 1]
    text = dataset_info(ds)
    text.encode("utf-8")  # a lone surrogate here would be a UnicodeEncodeError on print
    assert "caf\ufffd" in text and "1 non-image files skipped" in ds.source


def test_non_utf8_name_in_error_message_is_printable(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    (root / "a" / os.fsdecode(b"bro\xffken.png")).write_bytes(b"not an image")
    with pytest.raises(BabysitError) as info:
        load_dataset(str(root))
    assert "bro\ufffdken.png cannot be decoded" in str(info.value)
    str(info.value).encode("utf-8")


def test_cli_on_non_utf8_folder_exits_cleanly_in_the_c_locale(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    (root / "a" / os.fsdecode(b"x\xff.png")).write_bytes(EPS)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run([sys.executable, "-m", "babysit", "data", "info", str(root)], capture_output=True,
                         env=env, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert b"Traceback" not in out.stderr and b"cannot be decoded" in out.stdout + out.stderr


@given(st.binary(min_size=1, max_size=40))
def test_shown_is_printable_and_faithful_for_utf8(raw: bytes) -> None:
    name = os.fsdecode(raw)
    text = shown(name)
    text.encode("utf-8")  # never raises
    try:
        assert text == raw.decode("utf-8")
    except UnicodeDecodeError:
        assert "\ufffd" in text


# ---- class 2: the folder walk ----

def test_symlink_loop_is_walked_once(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    (root / "a" / "loop").symlink_to(root / "a", target_is_directory=True)
    (root / "b" / "up").symlink_to(root, target_is_directory=True)
    with pytest.warns(FolderWarning, match="reached a second time"):
        ds = load_dataset(str(root))
    assert ds.train.class_counts().tolist() == [3, 3]


def test_linked_duplicate_image_is_taken_once(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    (root / "b" / "copy.png").symlink_to(root / "a" / "0.png")  # would leak one image into two classes
    with pytest.warns(FolderWarning, match="1 folder"):
        scan = scan_folder(root)
    assert len(scan.files) == 6 and scan.repeats == 1


def test_link_to_a_folder_outside_is_followed(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    extra = _tree(tmp_path / "extra", classes=("more",))
    (root / "a" / "more").symlink_to(extra / "more", target_is_directory=True)
    ds = load_dataset(str(root))
    assert ds.train.class_counts().tolist() == [6, 3]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_sub_folder_is_reported_with_a_count(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    for name in ("locked1", "locked2"):
        locked = root / "a" / name
        locked.mkdir()
        Image.new("L", (6, 6), 1).save(locked / "x.png")
        locked.chmod(0)
    try:
        with pytest.warns(FolderWarning, match=r"^2 sub-folder\(s\) of .* could not be read"):
            ds = load_dataset(str(root))
        assert ds.train.class_counts().tolist() == [3, 3]
        assert "(2 unreadable sub-folders skipped)" in ds.source
    finally:
        for name in ("locked1", "locked2"):
            (root / "a" / name).chmod(0o755)


def test_one_image_per_class_refuses_the_split(tmp_path: Path) -> None:
    ds = load_dataset(str(_tree(tmp_path / "imgs", per_class=1)))
    with pytest.raises(BabysitError, match=r"the (val|test) split of imgs would be empty .*at least 3 per class"):
        split_dataset(ds)


def test_cli_one_image_per_class_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from babysit.cli import main

    root = _tree(tmp_path / "imgs", per_class=1)
    assert main(["train", f"--data.name={root}", "--train.threads=1", "--out", str(tmp_path / "runs")]) == 2
    assert "would be empty" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=2, max_size=4), st.floats(0.0, 0.5), st.floats(0.05, 0.5),
       st.integers(0, 3))
def test_splits_are_never_empty_and_partition_the_images(counts: list[int], val: float, test: float,
                                                         seed: int) -> None:
    y = torch.cat([torch.full((n,), k) for k, n in enumerate(counts)])
    x = torch.arange(len(y), dtype=torch.uint8).view(-1, 1, 1, 1)  # each image its own pixel value
    ds = Dataset("toy", ImageSet(x, y, [str(k) for k in range(len(counts))]), None, "test")
    try:
        s = split_dataset(ds, val, test, seed)
    except BabysitError as e:
        assert "would be empty" in str(e)
        return
    parts = [s.train.x.flatten().tolist(), s.val.x.flatten().tolist(), s.test.x.flatten().tolist()]
    assert all(parts)
    assert sorted(sum(parts, [])) == list(range(len(y)))  # disjoint and complete: nothing leaks, nothing lost


def test_unreadable_sub_folder_as_root_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same through a listing that fails with EACCES (root ignores chmod, so the refusal is simulated)."""
    root = _tree(tmp_path / "imgs")
    locked = root / "b" / "locked"
    locked.mkdir()
    Image.new("L", (6, 6), 1).save(locked / "x.png")
    real = os.scandir

    def scandir(path: object = ".") -> object:
        if os.fspath(path) == str(locked):  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", str(locked))
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.warns(FolderWarning, match=r"^1 sub-folder\(s\) of .* e\.g\. .*locked; fix their permissions"):
        scan = scan_folder(root)
    assert len(scan.files) == 6 and scan.unreadable == 1
