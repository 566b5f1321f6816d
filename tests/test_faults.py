"""Faults: kills at any moment, signals, NaN, a full or read-only disk; each run resumes bit-identical.

The SIGKILL tests run `babysit train` in a subprocess under the fault hooks of
scripts/kill_resume_soak.py (the same code `make test-slow` and the soak use) and compare the
resumed run with an uninterrupted one: every tensor of the last checkpoint (weights, optimiser, RNG),
the best weights, the checkpoint metadata, the history and result.json.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from babysit import config as C
from babysit import writer
from babysit.cli import main
from babysit.errors import BabysitError, Diverged
from babysit.rundir import RunDir, atomic_write_bytes, read_history
from babysit.train.checkpoint import all_finite, load_checkpoint
from babysit.train.loop import TensorData, fit

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("kill_resume_soak", ROOT / "scripts" / "kill_resume_soak.py")
assert _spec is not None and _spec.loader is not None
soak = sys.modules["kill_resume_soak"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)


QUIET = ("--monitor.checks=false", "--monitor.report=false")  # halves the time; neither touches training state


def args(out: Path, name: str = "run") -> list[str]:
    return soak.train_args(out, name, QUIET)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every faulted run must match (trained in-process: same code, same threads)."""
    d = tmp_path_factory.mktemp("reference")
    assert main(args(d, "reference")) == 0
    return d / "reference"


# ---- SIGKILL in a real subprocess ----------------------------------------------------------------

@pytest.mark.parametrize("point", [
    soak.KillPoint("write-torn", 12),  # a checkpoint file half written when the process dies
    soak.KillPoint("step", 27),  # mid-epoch 2, one step after the checkpoint at step 25
], ids=str)
def test_killed_run_resumes_bit_identical(point, reference: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    res = soak.child(point, args(tmp_path), tmp_path)
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert soak.differences(tmp_path / "run", reference) == []


@pytest.mark.slow
def test_soak_20_seeded_kill_points(tmp_path: Path) -> None:
    """`make test-slow`: twenty random kill points of every kind (SIGTERM and timed kills too) resume exactly."""
    assert soak.soak(20, seed=2024, workdir=tmp_path, extra=QUIET) == 20


# ---- SIGINT, stateful callbacks ------------------------------------------------------------------

@contextlib.contextmanager
def signal_at_history_line(n: int, signum: int) -> Iterator[list[int]]:
    """Send ``signum`` to this process as history line ``n`` is written (lines come in blocks: the signal
    arrives with the block that holds line n); yields [the step of the last line of that block]."""
    append, seen, at_step = RunDir.append_history, [0], []

    def hooked(self: RunDir, records: dict | list[dict]) -> None:
        block = records if isinstance(records, list) else [records]
        append(self, records)
        if seen[0] < n <= seen[0] + len(block):
            at_step.append(block[-1]["step"])
            os.kill(os.getpid(), signum)
        seen[0] += len(block)

    RunDir.append_history = hooked  # type: ignore[method-assign]
    try:
        yield at_step
    finally:
        RunDir.append_history = append  # type: ignore[method-assign]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_saves_says_how_to_resume_and_exits_128_plus_signal(
        signum: int, code: int, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with signal_at_history_line(23, signum) as at_step:
        assert main(args(tmp_path)) == code
    err = capsys.readouterr().err
    name = signal.Signals(signum).name
    assert err == (f"babysit: error: stopped by {name} after saving a checkpoint; "
                   f"resume with `babysit train --resume {tmp_path / 'run'}`.\n")
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors")[1]["step"] == at_step[0]
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert soak.differences(tmp_path / "run", reference) == []


def digits(n_train: int = 200, n_val: int = 100) -> TensorData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) - 8.0) / 8.0
    y = torch.tensor(d.target)
    return TensorData(x[:n_train], y[:n_train], x[n_train:n_train + n_val], y[n_train:n_train + n_val])


def small_model(extra: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         extra or nn.Identity(), nn.Dropout(0.2), nn.Linear(4 * 16, 10))


def cfg(**over: object) -> C.RunConfig:
    return C.apply_overrides(C.RunConfig(), {"train.epochs": 4, "train.batch_size": 32, "train.progress": False,
                                             "checkpoint.every": 4, **over})


class EarlyStopping:
    """Stop when the val loss has not improved for ``patience`` epochs (state: best and counter)."""

    def __init__(self, patience: int = 1):
        self.patience, self.best, self.bad = patience, float("inf"), 0

    def on_epoch_end(self, state) -> None:
        loss = state.history[-1]["val_loss"]
        self.best, self.bad = (loss, 0) if loss < self.best else (self.best, self.bad + 1)
        state.stop = self.bad >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.bad = d["best"], d["bad"]


class EMA:
    """Exponential moving average of the weights (state: one tensor per parameter)."""

    def __init__(self, decay: float = 0.9):
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {}

    def on_batch_end(self, state) -> None:
        for k, v in state.model.state_dict().items():
            self.shadow[k] = v.clone() if k not in self.shadow else self.decay * self.shadow[k] + (1 - self.decay) * v

    def state_dict(self) -> dict:
        return {"shadow": self.shadow}

    def load_state_dict(self, d: dict) -> None:
        self.shadow = {k: v.clone() for k, v in d["shadow"].items()}


class CrashAt:
    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, state) -> None:
        if state.step == self.step:
            raise RuntimeError("simulated crash")


def test_callbacks_early_stopping_and_ema_resume_exactly(tmp_path: Path) -> None:
    data, c = digits(), cfg(**{"train.epochs": 8, "optim.lr": 0.2, "optim.nesterov": False, "schedule.name": "cosine",
                               "schedule.warmup_epochs": 1})  # a run whose val accuracy stalls for an epoch
    whole_ema = EMA()
    whole_stopper = EarlyStopping()
    whole_cbs: list[object] = [whole_stopper, whole_ema]
    torch.manual_seed(1)
    whole = fit(small_model(), data, c, RunDir.create(tmp_path / "whole"), callbacks=whole_cbs)
    run = RunDir.create(tmp_path / "cut")
    torch.manual_seed(1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(small_model(), data, c, run, callbacks=[EarlyStopping(), EMA(), CrashAt(10)])
    stopper, ema = EarlyStopping(), EMA()
    torch.manual_seed(7)  # what happens in between must not matter
    resumed = fit(small_model(), data, c, run, callbacks=[stopper, ema], resume=True)
    assert resumed.step == whole.step and resumed.stop == whole.stop
    assert stopper.state_dict() == whole_stopper.state_dict() and stopper.bad >= 1  # the counter mattered
    assert all(torch.equal(ema.shadow[k], v) for k, v in whole_ema.shadow.items())
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


# ---- NaN / Inf -----------------------------------------------------------------------------------

class _NanGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g * float("nan")


class PoisonGradientAt(nn.Module):
    """Identity whose backward turns the gradient to NaN at training forward number ``step``."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.calls = step, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += self.training
        return _NanGrad.apply(x) if self.training and self.calls == self.step else x


def test_nan_gradient_stops_at_the_next_sync_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    """A NaN gradient at step 10 makes the weights NaN, so step 11's loss is NaN; the losses are read back at
    step 12 (checkpoint.every=4), the run stops there and the model goes back to the state checked at step 8."""
    run = RunDir.create(tmp_path / "run")
    model = small_model(PoisonGradientAt(10))
    with pytest.raises(Diverged) as e:
        fit(model, digits(), cfg(), run)
    msg = str(e.value)
    assert e.value.exit_code == 3 and e.value.step == 11
    assert msg.startswith("the loss became nan at step 11 ")
    assert "learning rate is probably too high" in msg and f"step 8, is kept in {run.last}" in msg
    assert all_finite(model.state_dict())  # rolled back: NaN weights never outlive the sync that found them
    tensors, meta = load_checkpoint(run.last)
    assert meta["step"] == 8 and all_finite(tensors)
    assert [r["step"] for r in run.read_history() if r["kind"] == "step"][-1] == 10


def test_nan_gradient_in_the_last_step_before_a_sync_is_found_in_the_weights(tmp_path: Path) -> None:
    """Step 8's gradient is NaN and step 8 is a sync: its loss is finite, but the weights are not."""
    run = RunDir.create(tmp_path / "run")
    model = small_model(PoisonGradientAt(8))
    with pytest.raises(Diverged) as e:
        fit(model, digits(), cfg(), run)
    assert str(e.value).startswith("the weights became nan (a NaN or Inf update) at step 8 ")
    assert all_finite(model.state_dict())
    tensors, meta = load_checkpoint(run.last)
    assert meta["step"] == 7 and all_finite(tensors)  # the epoch-1 end (7 steps of 32 images)


def test_nan_loss_through_the_cli_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(args(tmp_path) + ["--optim.lr=1e9", "--schedule.name=constant",
                                                    "--schedule.warmup_epochs=0"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err and err.count("\n") == 1
    assert "learning rate is" in err and "too high: start a new run with --optim.lr ten times smaller" in err


# ---- atomic files, history, disk full, read-only ------------------------------------------------

def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoints" / "last.safetensors"
    atomic_write_bytes(path, b"good")
    real_fsync = os.fsync

    def full(fd: int) -> None:
        real_fsync(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(BabysitError, match=r"^cannot write .*last\.safetensors \(No space left on device\); free"):
        atomic_write_bytes(path, b"new" * 1000)
    assert path.read_bytes() == b"good"
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.safetensors"]


def test_history_torn_line_is_ignored_then_cut_before_the_next_append(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for step in (1, 2, 3):
        run.append_history({"kind": "step", "step": step})
    with open(run.history, "a") as f:
        f.write('{"kind": "step", "st')  # SIGKILL mid-append
    assert [r["step"] for r in read_history(run.history)] == [1, 2, 3]
    resumed = RunDir(tmp_path)
    resumed.append_history({"kind": "resume", "step": 2})
    resumed.append_history({"kind": "step", "step": 3})
    assert run.history.read_text().count("\n") == 5
    assert [(r["kind"], r["step"]) for r in read_history(run.history)] == [
        ("step", 1), ("step", 2), ("resume", 2), ("step", 3)]


def test_orphaned_temporary_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("")
    (tmp_path / "checkpoints").mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / "checkpoints" / f".last.safetensors.{dead.stdout.strip()}.abc123.tmp"
    live = tmp_path / "checkpoints" / f".last.safetensors.{os.getppid()}.def456.tmp"
    orphan.write_bytes(b"half")
    live.write_bytes(b"busy")
    RunDir.open(tmp_path, write=True)
    assert not orphan.exists() and live.exists()


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A small tmpfs at ``path``; skips the test where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*.tmp")]


def test_disk_full_at_the_start_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with tmpfs(tmp_path / "mnt", "size=8k") as mnt:
        assert main(args(mnt)) == 2
        err = capsys.readouterr().err
        assert "(No space left on device); free disk space" in err and "Traceback" not in err
        assert list(mnt.iterdir()) == []


def test_disk_full_mid_run_keeps_a_good_checkpoint_and_resumes(reference: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    with tmpfs(tmp_path / "mnt", "size=128k") as mnt:  # full around step 20 of 57
        assert main(args(mnt)) == 2
        err = capsys.readouterr().err
        assert "(No space left on device); free disk space" in err and "Traceback" not in err
        assert _leftovers(mnt) == []
        _, meta = load_checkpoint(mnt / "run" / "checkpoints" / "last.safetensors")  # the previous good one
        assert 0 < meta["step"] < 57
        subprocess.run(["mount", "-o", "remount,size=10m", str(mnt)], check=True)
        assert main(["train", "--resume", str(mnt / "run")]) == 0
        assert soak.differences(mnt / "run", reference) == []


def test_read_only_output_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with tmpfs(tmp_path / "mnt", "ro,size=1m") as mnt:
        assert main(args(mnt / "runs")) == 2
        err = capsys.readouterr().err
        assert "cannot create run directory" in err and "(Read-only file system); choose a writable --out." in err
        assert list(mnt.iterdir()) == []


def test_checkpoint_every_n_steps_or_each_epoch_whichever_first(tmp_path: Path) -> None:
    """At most checkpoint.every steps are lost: saves at steps 4, 7 (epoch end), 8, 12, 14 (epoch end)..."""
    run = RunDir.create(tmp_path / "run")
    saved: list[int] = []

    class Watch:
        def on_batch_end(self, state) -> None:
            writer.flush()  # checkpoints are written in the background: wait for them before reading
            if run.last.exists():
                step = json.loads(run.last.with_suffix(".json").read_text())["step"]
                if not saved or saved[-1] != step:
                    saved.append(step)

    fit(small_model(), digits(n_train=200), cfg(**{"train.epochs": 2}), run, callbacks=[Watch()])
    saved.append(load_checkpoint(run.last)[1]["step"])
    assert saved == [4, 7, 8, 12, 14]


def test_resume_may_raise_epochs_but_not_change_training(reference: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """train.epochs (and progress, device, eval sizes, checkpoint.every) may change; batch size, lr, spec... not."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    toml = (run / "config.toml").read_text()
    edited = toml.replace("\nepochs = 3\n", "\nepochs = 4\n").replace("\nevery = 5\n", "\nevery = 7\n")
    (run / "config.toml").write_text(edited.replace("stats_every = 50", "stats_every = 20"))
    assert main(["train", "--resume", str(run)]) == 0
    assert [r["epoch"] for r in read_history(run / "history.jsonl") if r["kind"] == "epoch"] == [1, 2, 3, 4]
    (run / "config.toml").write_text(toml.replace("\nlr = 0.2\n", "\nlr = 0.01\n"))
    assert main(["train", "--resume", str(run)]) == 2
    assert "(optim.lr: 0.2 -> 0.01); undo the edit" in capsys.readouterr().err
