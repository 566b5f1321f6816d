"""Reliability class 4: values that passed validation and broke later (NaN/inf floats, a meta device, labels
out of range) are refused up front, before a run folder exists."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from babysit import config as C
from babysit.cli import main
from babysit.data.npz import read_npz
from babysit.errors import BabysitError
from babysit.start import resolve_device

FLOAT_KEYS = [f"{sec.name}.{f.name}" for sec in fields(C.RunConfig) for f in fields(getattr(C.RunConfig(), sec.name))
              if isinstance(getattr(getattr(C.RunConfig(), sec.name), f.name), float)]


def test_there_are_float_options_to_check() -> None:
    assert {"model.init_bias", "optim.weight_decay", "schedule.warmup_epochs", "optim.lr"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize(("key", "value"), [("model.init_bias", "nan"), ("optim.weight_decay", "inf"),
                                            ("schedule.warmup_epochs", "inf"), ("optim.momentum", "nan"),
                                            ("data.val_fraction", "nan"), ("regularize.l1", "-inf")])
def test_named_non_finite_values_are_refused(key: str, value: str) -> None:
    with pytest.raises(BabysitError, match=rf"^{key} must be .*got -?{value.lstrip('-')}"):
        C.validate(C.apply_overrides(C.RunConfig(), {key: value}))


@given(st.sampled_from(FLOAT_KEYS), st.sampled_from([math.nan, math.inf, -math.inf]))
def test_every_float_option_refuses_nan_and_inf(key: str, value: float) -> None:
    with pytest.raises(BabysitError) as info:  # "must be a finite number", or its range's own sentence
        C.validate(C.apply_overrides(C.RunConfig(), {key: repr(value)}))
    assert key in str(info.value)  # the sentence names the option (or the pair it breaks)


def test_nan_init_bias_is_exit_2_not_a_divergence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model.init_bias=nan", "--train.threads=1", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "model.init_bias must be a finite number" in err and "learning rate" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("device", ["meta", "meta:0"])
def test_meta_device_is_refused(device: str) -> None:
    with pytest.raises(BabysitError, match=r"cannot train or evaluate .* use --train.device=auto, cpu or cuda"):
        resolve_device(device)


def test_meta_device_on_the_command_line_leaves_no_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--train.device=meta", "--train.threads=1", "--out", str(tmp_path / "runs")]) == 2
    assert "cannot train or evaluate" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def _npz(tmp_path: Path, y: np.ndarray) -> Path:
    path = tmp_path / "set.npz"
    np.savez(path, x=np.zeros((len(y), 4, 4), np.uint8), y=y)
    return path


@pytest.mark.parametrize("y", [np.array([0, 1, 1e20, 0]), np.array([0, 1, 2**63 + 5, 1], dtype=np.uint64),
                               np.array([0, 1, 100_000, 1], dtype=np.int64), np.array([0, 1, 2**40, 1])])
def test_huge_labels_are_refused_naming_the_file(tmp_path: Path, y: np.ndarray) -> None:
    path = _npz(tmp_path, y)
    with pytest.raises(BabysitError, match=rf"In {path}, 'y' has a label of .*; save class indices 0..K-1 with K"):
        read_npz(path)


@given(st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=8))
def test_uint64_labels_never_wrap(labels: list[int]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = _npz(Path(d), np.array(labels, dtype=np.uint64))
        try:
            data = read_npz(path)
        except BabysitError:
            return
        assert data.y.tolist() == labels and max(labels) < 100_000


def test_a_batch_of_one_into_batch_norm_is_refused_before_training(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--data.name=digits", "--data.limit=33", "--train.batch_size=32", "--train.threads=1",
            "--model.spec=conv3-4 bn relu pool2 fc", "--out", str(tmp_path / "runs")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "(33 training images, batch 32)" in err and "--train.batch_size=33 or --data.limit=32" in err
    assert not (tmp_path / "runs").exists()


def test_a_batch_of_one_without_batch_norm_is_fine() -> None:
    from babysit.start import plan_run

    cfg = C.apply_overrides(C.RunConfig(), {"data.limit": 33, "train.batch_size": 32, "model.spec": "conv3-4 relu fc"})
    assert plan_run(cfg).steps_per_epoch == 2
