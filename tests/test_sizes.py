"""Reliability class 3 (issue 20): sizes that blow up.

Memory is estimated before anything is allocated and a run that cannot fit is refused with the numbers and the
fix (exit 2, no folder); every run file is read through limits.read_bounded (no FIFOs, devices or oversized
files); checkpoints are sized from their header before loading; .npz and IDX headers are checked against the
bytes their files hold; test-time views are bounded. Each refusal must come fast: a hang would time the test out.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from babysit import config as C
from babysit import limits
from babysit.ckptfile import load_checkpoint, save_checkpoint
from babysit.cli import main
from babysit.data.idx import read_idx, write_idx
from babysit.data.npz import check_sizes, read_npz
from babysit.data.sources import load_dataset
from babysit.errors import BabysitError
from babysit.models.build import build
from babysit.models.init import init_check
from babysit.models.spec import parse
from babysit.models.summary import PARAM_COPIES, SAVED_PER_ACTIVATION, memory_estimate, summary
from babysit.rundir import RunDir, read_history
from babysit.start import plan_run
from babysit.train.tta import MAX_VIEWS, parse_tta

FAST = ["--train.epochs=1", "--data.limit=100", "--train.progress=false", "--model.spec=conv3-4 relu pool2 fc",
        "--monitor.checks=false", "--monitor.report=false", "--train.threads=1"]
GB = 10**9


@pytest.fixture
def small_memory(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pretend the machine has 1 GB available, so refusals do not depend on this machine's memory."""
    monkeypatch.setattr(limits, "available_memory", lambda: GB)
    return GB


# --- the helpers ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1 KB"), (1_500_000, "1.5 MB"),
                                         (3.76e12, "3.76 TB"), (2e18, "2e+03 PB")])
def test_human_bytes(n: float, text: str) -> None:
    assert limits.human_bytes(n) == text


def test_available_memory_is_positive_and_honours_ulimit() -> None:
    import subprocess
    import sys

    have = limits.available_memory()
    assert 0 < have < 2**62
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, resource.RLIM_INFINITY)); "
            "from babysit.limits import available_memory; print(available_memory())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}).stdout
    assert int(out) <= 3 * 2**30


def test_check_memory_gives_both_numbers_and_the_fix(small_memory: int) -> None:
    limits.check_memory(0.8 * GB, "x", "y")  # exactly the headroom: allowed
    with pytest.raises(BabysitError, match=r"^this run needs about 2 GB of memory but this machine has 1 GB "
                                           r"available; use less\.$"):
        limits.check_memory(2 * GB, "this run", "use less")
    with pytest.raises(BabysitError, match="GPU cuda:0 has 1 KB"):
        limits.check_memory(2000, "x", "y", have=1000, where="GPU cuda:0")


@given(size=st.integers(0, 5000), limit=st.integers(0, 5000))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_read_bounded_returns_the_file_up_to_its_limit(tmp_path: Path, size: int, limit: int) -> None:
    p = tmp_path / "f.json"
    data = os.urandom(size)
    p.write_bytes(data)
    if size <= limit:
        assert limits.read_bounded(p, limit) == data
    else:
        with pytest.raises(BabysitError, match=r"more than the .* such a file can have"):
            limits.read_bounded(p, limit)


@pytest.mark.parametrize("kind", ["fifo", "devzero", "folder", "sparse"])
def test_read_bounded_refuses_special_and_huge_files(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "meta.json"
    if kind == "fifo":
        os.mkfifo(p)  # opening it blocking would hang until a writer comes
    elif kind == "devzero":
        p.symlink_to("/dev/zero")  # never ends
    elif kind == "folder":
        p.mkdir()
    else:
        with open(p, "wb") as f:
            f.truncate(64 * 2**30)  # 64 GiB, sparse: no disk used
    words = {"fifo": "a FIFO", "devzero": "a device", "folder": "a folder", "sparse": "holds 68.7 GB"}[kind]
    with pytest.raises(BabysitError, match=words):
        limits.read_bounded(p)


def test_missing_file_keeps_its_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        limits.read_bounded(tmp_path / "none")


# --- run files -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sizes")
    assert main(["train", *FAST, "--out", str(d), "--name", "run"]) == 0
    return d / "run"


def _copy(run: Path, tmp: Path) -> Path:
    import shutil

    dst = tmp / "copy"
    shutil.copytree(run, dst)
    RunDir(dst).lock.unlink(missing_ok=True)
    return dst


@pytest.mark.parametrize("which", ["meta", "config", "history", "checks"])
@pytest.mark.parametrize("kind", ["devzero", "fifo"])
def test_a_run_file_replaced_by_a_special_file_is_refused(trained: Path, tmp_path: Path, which: str, kind: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(trained, tmp_path)
    p = getattr(RunDir(run), which)
    p.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(p)
    else:
        p.symlink_to("/dev/zero")
    command = ["diagnose", str(run)] if which in ("history", "checks", "meta") else ["eval", str(run)]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "not a regular file" in err and str(p) in err


def test_history_over_its_bound_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import babysit.rundir as rundir

    p = tmp_path / "history.jsonl"
    p.write_text('{"kind": "step", "step": 1}\n' * 100)
    assert len(read_history(p)) == 100
    monkeypatch.setattr(rundir, "HISTORY_FILE", 1000)
    with pytest.raises(BabysitError, match="more than the 1 KB"):
        read_history(p)


def test_config_file_that_never_ends_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.symlink_to("/dev/zero")
    with pytest.raises(BabysitError, match="a device, not a regular file"):
        C.load_toml(p)
    assert main(["train", "--config", str(p)]) == 2


# --- checkpoints -----------------------------------------------------------------------------------------------

def _header_file(path: Path, shape: list[int], pad_to: int | None = None) -> None:
    """A safetensors file whose header declares one float32 tensor of ``shape``, sparse to ``pad_to`` bytes."""
    n = math.prod(shape) * 4
    header = json.dumps({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, n]},
                         "__metadata__": {"babysit": "{}"}}).encode()
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + n if pad_to is None else pad_to)


def test_sparse_64gb_checkpoint_is_damaged_not_read(tmp_path: Path) -> None:
    p = tmp_path / "last.safetensors"
    with open(p, "wb") as f:
        f.truncate(64 * 2**30)  # zeros: header length 0
    with pytest.raises(BabysitError, match="is damaged"):
        load_checkpoint(p)


def test_checkpoint_declaring_64gb_is_refused_for_memory(tmp_path: Path, small_memory: int) -> None:
    p = tmp_path / "last.safetensors"
    _header_file(p, [16, 2**30])  # 64 GiB of float32, sparse: consistent size, no disk used
    with pytest.raises(BabysitError, match=r"loading checkpoint .* needs about 137 GB of memory but this machine "
                                           r"has 1 GB available"):
        load_checkpoint(p)


@given(extra=st.integers(-100, 100).filter(lambda e: e != 0))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_checkpoint_of_another_size_than_its_header_says_is_damaged(tmp_path: Path, extra: int) -> None:
    p = tmp_path / "c.safetensors"
    save_checkpoint(p, {"w": torch.arange(50.0)}, {"step": 3})
    size = p.stat().st_size
    assert load_checkpoint(p)[1] == {"step": 3}
    with open(p, "r+b") as f:
        f.truncate(size + extra)
    with pytest.raises(BabysitError, match="is damaged"):
        load_checkpoint(p)


def test_checkpoint_fifo_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "c.safetensors"
    os.mkfifo(p)
    with pytest.raises(BabysitError, match="not a regular file"):
        load_checkpoint(p)


# --- data files ------------------------------------------------------------------------------------------------

def _npz(path: Path, shape: tuple[int, ...], held: int, dtype: str = "|u1") -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", buf.getvalue() + b"\0" * held)
        y = io.BytesIO()
        np.save(y, np.arange(shape[0] if shape else 1) % 2)
        z.writestr("y.npy", y.getvalue())


@given(shape=st.lists(st.integers(1, 10**6), min_size=3, max_size=4).map(tuple), held=st.integers(0, 4096))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_npz_header_is_checked_against_its_bytes(tmp_path: Path, shape: tuple[int, ...], held: int) -> None:
    p = tmp_path / "d.npz"
    _npz(p, shape, held)
    need = math.prod(shape)
    if need > held:
        with pytest.raises(BabysitError, match=rf"declares an array of shape {re.escape(str(shape))}"):
            check_sizes(p)
    else:
        check_sizes(p)


def test_npz_declaring_a_terabyte_is_refused_before_allocating(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "huge.npz"
    _npz(p, (10**6, 1, 1000, 1000), 100)
    assert main(["data", "info", str(p)]) == 2
    assert "declares an array of shape (1000000, 1, 1000, 1000) (1 TB) but holds only 100 B" in capsys.readouterr().err


def test_npz_that_fits_no_memory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) % 2)
    assert read_npz(p).x.shape == (10, 1, 8, 8)
    monkeypatch.setattr(limits, "available_memory", lambda: 1000)
    with pytest.raises(BabysitError, match=r"loading .*d\.npz \(\d+ B of arrays\) needs about"):
        read_npz(p)


@given(shape=st.lists(st.integers(1, 60000), min_size=1, max_size=3).map(tuple), held=st.integers(0, 2000))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_idx_header_is_checked_against_the_file(tmp_path: Path, shape: tuple[int, ...], held: int) -> None:
    p = tmp_path / "d-idx"
    p.write_bytes(struct.pack(">HBB", 0, 8, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + b"\1" * held)
    need = math.prod(shape)
    if need > held:
        with pytest.raises(BabysitError, match=f"needs {need} bytes of data but only {held} are there"):
            read_idx(p)
    elif need < held:
        with pytest.raises(BabysitError, match="has bytes after"):
            read_idx(p)
    else:
        assert read_idx(p).shape == shape


def test_gzip_idx_too_large_for_memory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_idx(tmp_path / "d-idx.gz", np.zeros((100, 8, 8), np.uint8))
    assert read_idx(p).shape == (100, 8, 8)
    monkeypatch.setattr(limits, "available_memory", lambda: 10_000)
    with pytest.raises(BabysitError, match=r"shape \(100, 8, 8\), 6.4 KB\) needs about 32 KB"):
        read_idx(p)


def test_huge_data_size_is_refused_before_resizing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(BabysitError, match=r"1,797 images of 1x100000x100000 \(C x H x W\) needs about 89.8 TB"):
        load_dataset("digits", size=100000)
    assert main(["train", *FAST, "--data.size=100000", "--out", str(tmp_path)]) == 2
    assert "--data.size" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no half-made run folder


# --- networks --------------------------------------------------------------------------------------------------

SPECS = st.lists(st.sampled_from(["conv3-4", "conv3-8-s2", "conv5-6-p0", "relu", "pool2", "bn", "fc-16", "dropout"]),
                 min_size=0, max_size=5).map(lambda t: " ".join(t + ["fc"]))


@given(spec=SPECS, batch=st.integers(1, 64))
@settings(max_examples=30, deadline=None)
def test_memory_estimate_is_the_formula_over_the_real_parameters(spec: str, batch: int) -> None:
    """params: PARAM_COPIES x 4 bytes x the built model's numel; activations: SAVED_PER_ACTIVATION x the table's
    bytes (the conv / pool / fc outputs of the batch, INPUT included)."""
    try:
        s = summary(spec, (1, 16, 16), 10, batch_size=batch)
    except BabysitError:
        return  # a geometry the lecture's arithmetic refuses
    model = build(parse(spec), (1, 16, 16), 10)
    n_params = sum(p.numel() for p in model.parameters())
    est = memory_estimate(s)
    assert est.params_bytes == PARAM_COPIES * 4 * n_params
    assert est.activation_bytes == SAVED_PER_ACTIVATION * 4 * batch * sum(r.activations for r in s.rows)
    fwd = memory_estimate(s, training=False)
    assert fwd.params_bytes == 4 * n_params and fwd.activation_bytes <= s.total_memory_bytes


@pytest.mark.parametrize(("spec", "words"), [
    ("conv3-100000000 fc", "for the parameters and their copies"),
    ("conv3-8-p100000 fc", "for the activations of one mini-batch"),
    ("[conv3-4096 relu]*40 fc", "this run"),
])
def test_a_network_that_cannot_fit_is_refused_before_building(tmp_path: Path, spec: str, words: str,
                                                              small_memory: int) -> None:
    cfg = C.apply_overrides(C.RunConfig(), {"data.name": "digits", "model.spec": spec, "train.threads": "1"})
    with pytest.raises(BabysitError, match=rf"{words}.* but this machine has 1 GB available; use a smaller network"):
        plan_run(cfg)


def test_huge_network_exits_2_and_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", *FAST, "--model.spec=conv3-100000000 fc", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "TB" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_fits_is_not_refused() -> None:
    cfg = C.apply_overrides(C.RunConfig(), {"data.name": "digits", "train.threads": "1"})
    assert plan_run(cfg).steps_per_epoch > 0


@pytest.mark.parametrize("shape", [(1, 1, 10**9), (3, 20000, 20000)])
def test_init_check_on_a_huge_input_is_refused(shape: tuple[int, int, int]) -> None:
    with pytest.raises(BabysitError, match=r"init-check of .* needs about .* TB of memory"):
        init_check("[fc-500 relu]*10 fc" if shape[1] == 1 else "conv3-64 relu fc", shape)


# --- test-time views -------------------------------------------------------------------------------------------

TOKENS = ["flip", "flip-v", "translate", "translate-2", "random-3", "random-50", "random-100000000"]


@given(tokens=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_tta_views_are_bounded(tokens: list[str]) -> None:
    text = ",".join(tokens)
    seen: set[str] = set()
    first_error = None  # the tokens are checked in order: the first mistake is the one reported
    for t in tokens:
        kind = "flip-h" if t == "flip" else t.split("-")[0] if t.startswith(("translate", "random")) else t
        if kind in seen:
            first_error = first_error or "is given twice"
        if kind == "random" and int(t.split("-")[1]) > MAX_VIEWS:
            first_error = first_error or f"use 1 to {MAX_VIEWS}"
        seen.add(kind)
    fixed = math.prod({"flip-h": 2, "flip-v": 2, "translate": 5}.get(k, 1) for k in seen)
    draws = next((int(t.split("-")[1]) for t in tokens if t.startswith("random")), 0)
    if first_error:
        with pytest.raises(BabysitError, match=first_error):
            parse_tta(text)
    elif fixed + draws > MAX_VIEWS:
        with pytest.raises(BabysitError, match=f"makes {fixed + draws} views, .* use at most {MAX_VIEWS}"):
            parse_tta(text)
    else:
        views, n = parse_tta(text)
        assert (len(views), n) == (fixed, draws)

