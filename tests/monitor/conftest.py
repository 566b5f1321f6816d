"""Small real data for the monitor tests: the bundled digits, preprocessed, and a tiny ConvNet."""

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from babysit import config as C
from babysit.train.loop import TensorData


def digits(n_train: int = 300, n_val: int = 100) -> TensorData:
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x[:n_train].mean()) / x[:n_train].std()
    y = torch.tensor(d.target)
    return TensorData(x[:n_train], y[:n_train], x[n_train:n_train + n_val], y[n_train:n_train + n_val])


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10))


def cfg(**over) -> C.RunConfig:
    base = {"train.epochs": 2, "train.batch_size": 32, "train.progress": False, "schedule.name": "constant",
            "schedule.warmup_epochs": 0}
    base.update(over)
    return C.apply_overrides(C.RunConfig(), base)


@pytest.fixture(scope="module")
def data() -> TensorData:
    return digits()


TINY_RUN = ["--data.limit=300", "--model.spec=conv3-8 relu pool2 fc", "--train.epochs=2", "--train.batch_size=16",
            "--train.progress=false"]


def run_main(args: list[str]) -> tuple[int, str, str]:
    """``babysit ARGS`` in-process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    from babysit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


_TRAINED: list[tuple] = []  # tests/review/conftest.py shares the fixture: one training per session, not two


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny `babysit train` on digits with TensorBoard and frequent probes: (run path, stdout)."""
    if not _TRAINED:
        d = tmp_path_factory.mktemp("monitor-run")
        code, out, err = run_main(["train", *TINY_RUN, "--tensorboard", "--monitor.stats_every=3", "--out", str(d),
                                   "--name", "tiny"])
        assert code == 0, err
        _TRAINED.append((d / "tiny", out))
    return _TRAINED[0]
