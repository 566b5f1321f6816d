"""DDP through real torchrun (``python -m torch.distributed.run``), gloo, 2 processes on the CPU.

One 2-process run must end with the weights of a 1-process run with the same global batch (float tolerance:
the gradient is summed in another order); a 2-process run killed with SIGKILL (the whole torchrun group) after
an epoch's checkpoint and resumed must end bit-identical to the uninterrupted one; only rank 0 writes.

Which files each rank writes is recorded by a Python audit hook (``sys.addaudithook``: every ``open`` for
writing, mkdir, rename, replace, remove) installed through a sitecustomize.py on PYTHONPATH: nothing in babysit
or torch is replaced.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from babysit import config as C
from babysit.ckptfile import load_checkpoint
from babysit.errors import BabysitError
from babysit.experiment import train
from babysit.train import distributed as ddp
from babysit.train.loop import TensorData, fit

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("kill_resume_soak", ROOT / "scripts" / "kill_resume_soak.py")
assert _spec is not None and _spec.loader is not None
soak = sys.modules["kill_resume_soak"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)

# a small net without batch norm or dropout: the 2-process run computes the 1-process run's gradients
OPTIONS = {"data.name": "digits", "model.spec": "fc-32 relu fc", "train.threads": "1", "train.epochs": "3",
           "train.batch_size": "96",  # 1259 training images: 13 full batches (48 rows a process) and 11 (6 + 5)
           "monitor.checks": "false", "monitor.stats_every": "0", "monitor.report": "false"}

AUDIT = '''
import os, sys
_watch, _log = os.environ.get("AUDIT_WATCH"), os.environ.get("AUDIT_LOG")
if _watch and _log and "RANK" in os.environ:
    _seen, _on, _pause = [], [True], [os.environ.get("PAUSE_AFTER") if os.environ["RANK"] == "0" else None]
    _w = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    def _hook(event, args):
        if not _on[0] or not args:
            return
        if _pause[0] == "now":  # the event after the checkpoint's rename: hold here until killed
            import time
            time.sleep(600)
        if event == "open":
            mode, flags = args[1], args[2]
            writes = isinstance(mode, str) and any(c in mode for c in "wax+")
            if not (writes or (isinstance(flags, int) and flags & _w)):
                return
        elif event not in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.truncate"):
            return
        paths = args[:2] if event in ("os.rename", "os.replace") else args[:1]
        for p in paths:
            path = os.path.abspath(os.fsdecode(p)) if isinstance(p, (str, bytes, os.PathLike)) else ""
            if path.startswith(_watch):
                _seen.append(event + " " + os.path.relpath(path, _watch))
                if _pause[0] and event in ("os.rename", "os.replace") and path.endswith(_pause[0]):
                    _pause[0] = "now"
    def _dump():
        _on[0] = False
        with open(f"{_log}.rank{os.environ['RANK']}", "w") as f:
            f.write("\\n".join(_seen))
    import atexit
    atexit.register(_dump)
    sys.addaudithook(_hook)
'''


def torchrun(args: list[str], tmp: Path, pause_after: str = "") -> subprocess.Popen[str]:
    """``python -m torch.distributed.run --nproc-per-node=2 -m babysit ARGS`` in its own process group, each rank's
    writes under ``tmp``/runs logged to ``tmp``/writes.rankN. With ``pause_after`` rank 0 stops (sleeps) at its
    first file event after the first rename onto a path ending so: the run cannot end before the test kills it."""
    hooks = tmp / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(AUDIT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), str(ROOT)]), "OMP_NUM_THREADS": "1",
           "AUDIT_WATCH": str(tmp / "runs"), "AUDIT_LOG": str(tmp / "writes"), "PAUSE_AFTER": pause_after}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone", "-m", "babysit", *args]
    p = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    if not pause_after:
        p.wait(timeout=240)
    return p


def kill_tree(pid: int) -> None:
    """SIGKILL torchrun and every process below it: its workers run in sessions of their own, so killing
    torchrun's process group alone would leave them running (as after a machine's power cut: all die at once)."""
    def below(p: int) -> list[int]:
        kids = [int(c) for t in Path(f"/proc/{p}/task").glob("*")
                for c in (t / "children").read_text().split()] if Path(f"/proc/{p}").exists() else []
        return kids + [g for k in kids for g in below(k)]

    for p in [pid, *below(pid)]:
        os.kill(p, signal.SIGKILL)


def options(out: Path, name: str) -> list[str]:
    return ["train", *(f"--{k}={v}" for k, v in OPTIONS.items()), "--out", str(out), "--name", name]


def weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(run / "checkpoints" / "last.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 1-process run (in this process: no torchrun, no process group)."""
    out = tmp_path_factory.mktemp("one")
    train(C.apply_overrides(C.RunConfig(), OPTIONS), out=out, name="one")
    return out / "one"


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[int, list[str]]]:
    """An uninterrupted 2-process run: its directory, stdout and each rank's writes under the output folder."""
    tmp = tmp_path_factory.mktemp("two")
    p = torchrun(options(tmp / "runs", "two"), tmp)
    out, err = p.communicate()
    assert p.returncode == 0, err[-2000:]
    writes = {r: (tmp / f"writes.rank{r}").read_text().split("\n") for r in (0, 1)}
    return tmp / "runs" / "two", out, {r: [w for w in ws if w] for r, ws in writes.items()}


def test_two_processes_end_with_the_weights_of_one_with_the_same_global_batch(one: Path, two: tuple) -> None:
    run, out, _ = two
    a, b = weights(one), weights(run)
    assert a.keys() == b.keys() and len(a) == 4
    for k in a:  # same steps, same lr: only the summation order of the gradient differs
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5)
    assert "DDP: 2 processes (gloo), global batch 96 (about 48 per process)" in out
    assert out.count("Finished epoch 1 / 3") == 1  # rank 1 prints nothing
    h1 = [r for r in map(json.loads, (one / "history.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]
    h2 = [r for r in map(json.loads, (run / "history.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]
    assert [r["step"] for r in h2] == [r["step"] for r in h1] == [14, 28, 42]
    for r1, r2 in zip(h1, h2):  # the recorded cost is the global batch's: the mean of the ranks' weighted losses
        assert r2["cost"] == pytest.approx(r1["cost"], rel=1e-5)
        assert r2["val_acc"] == r1["val_acc"]


def test_only_rank_0_writes(two: tuple) -> None:
    run, _, writes = two
    assert writes[1] == []
    written = " ".join(writes[0])
    for name in ("config.toml", "history.jsonl", "checkpoints/last.safetensors", "result.json"):
        assert name in written


def test_killed_two_process_run_resumes_bit_identical(two: tuple, tmp_path: Path) -> None:
    """kill -9 of torchrun and its workers after the first epoch's checkpoint (rank 0 held at its next file write,
    in epoch 2), then --resume on 2 processes."""
    last = tmp_path / "runs" / "run" / "checkpoints" / "last.safetensors"
    p = torchrun(options(tmp_path / "runs", "run"), tmp_path, pause_after="checkpoints/last.safetensors")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and p.poll() is None:
        if last.exists() and load_checkpoint(last)[1]["epoch"] >= 1:
            kill_tree(p.pid)
            break
        time.sleep(0.01)
    _, err = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL, f"the run ended before the kill: {err[-1000:]}"
    assert not (tmp_path / "runs" / "run" / "result.json").exists()
    assert load_checkpoint(last)[1]["epoch"] == 1
    r = torchrun(["train", "--resume", str(tmp_path / "runs" / "run")], tmp_path)
    assert r.returncode == 0, r.stderr.read()[-2000:] if r.stderr else ""
    assert (tmp_path / "writes.rank1").read_text() == ""
    assert soak.differences(tmp_path / "runs" / "run", two[0]) == []


def test_resume_on_another_number_of_processes_is_refused(two: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(BabysitError, match=r"saved by 2 process\(es\) and this resume runs 1: .* resume on the same "
                                           r"number, `torchrun --nproc-per-node=2 -m babysit train --resume"):
        train(C.RunConfig(), resume=two[0])


def test_shard_weights_make_the_global_mean() -> None:
    """rows_r * N / B: the mean over ranks of the weighted shard means is the mean over all B rows."""
    x, y = torch.arange(11.0).view(11, 1), torch.arange(11)
    parts = [ddp.shard(x, y, ddp.Ranks(r, 2, r, 2)) for r in (0, 1)]
    assert [len(p[0]) for p in parts] == [6, 5] and torch.equal(torch.cat([p[1] for p in parts]), y)
    mean = sum(w * xs.mean() for xs, _, w in parts) / 2
    torch.testing.assert_close(mean, x.mean())
    assert ddp.shard(x, y, ddp.Ranks())[2] == 1.0


@pytest.mark.parametrize(("env", "sentence"), [
    ({"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}, "is not a whole number"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}, "environment is inconsistent"),
])
def test_a_broken_torchrun_environment_is_one_sentence(env: dict, sentence: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(BabysitError, match=sentence):
        ddp.ranks()


def test_too_small_a_batch_for_the_processes_is_refused() -> None:
    r = ddp.Ranks(0, 4, 0, 4)
    ddp.check_shards(r, 100, 10, batch_norm=False)  # 10 batches of 10: fine
    with pytest.raises(BabysitError, match=r"a mini-batch of 3 images split over 4 processes leaves a process with "
                                           r"no images .* hold at least 4 images"):
        ddp.check_shards(r, 103, 10, batch_norm=False)  # the last batch holds 3
    with pytest.raises(BabysitError, match="fewer than 2 images"):
        ddp.check_shards(r, 100, 6, batch_norm=True)


def test_threads_split_the_cores_between_the_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    from babysit.start import cpu_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for k, v in {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    cores = len(os.sched_getaffinity(0))
    assert cpu_threads() == max(1, cores // 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3  # OMP_NUM_THREADS wins (torchrun sets 1 when it is unset)
    assert cpu_threads(5) == 5  # and --train.threads over both


def test_alone_the_loop_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without torchrun every DDP call is a no-op: fit() gives the same weights as before (no process group)."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ddp.ranks() == ddp.Ranks() and not ddp.ranks().active
    x = torch.randn(40, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(40) % 3
    cfg = C.apply_overrides(C.RunConfig(), {"model.spec": "fc", "train.epochs": "1", "train.batch_size": "8",
                                            "train.progress": "false"})
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    state = fit(model, TensorData(x, y, x[:8], y[:8]), cfg)
    assert state.step == 5 and not torch.distributed.is_initialized()


def test_sync_bn_on_the_cpu_is_refused_before_anything_is_written(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's SyncBatchNorm runs on CUDA only (the CUDA path is read, not run, here: no GPU)."""
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    cfg = C.apply_overrides(C.RunConfig(), {**OPTIONS, "train.sync_bn": "true", "train.device": "cpu"})
    with pytest.raises(BabysitError, match=r"--train.sync_bn=true needs GPUs .* on the CPU leave it off"):
        train(cfg, out=tmp_path, name="x")
    assert not (tmp_path / "x").exists()
    assert ddp.device_for(torch.device("cpu"), sync_bn=False) == torch.device("cpu")


def test_scale_lr_is_the_linear_scaling_rule_made_concrete(monkeypatch: pytest.MonkeyPatch) -> None:
    from babysit.start import resolve_auto

    cfg = C.apply_overrides(C.RunConfig(), {"train.batch_size": "32", "optim.lr": "0.05", "train.scale_lr": "true",
                                            "model.spec": "fc"})
    alone = resolve_auto(cfg, (1, 8, 8), 1000)
    assert (alone.train.batch_size, alone.optim.lr) == (32, 0.05)  # one process: nothing to scale
    for k, v in {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(k, v)
    four = resolve_auto(cfg, (1, 8, 8), 1000)
    # global batch = 32 x 4, lr = 0.05 x 4; config.toml records the concrete values (a resume does not rescale)
    assert (four.train.batch_size, four.optim.lr, four.train.scale_lr) == (128, 0.2, False)
