"""Reliability: the run directory as an attack surface (class 5), two processes on one run (class 6), and
running out of space or inodes before training (class 7).

Names must stay inside --out; run files babysit appends to are not followed through symlinks; checkpoint
metadata is validated like user input; a second trainer of a run is refused naming the first's PID; a
failed start leaves no half-made folder.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from babysit import config as C
from babysit.ckptfile import load_checkpoint, save_checkpoint
from babysit.cli import main
from babysit.errors import BabysitError
from babysit.rundir import RunDir, named_dir
from tests.test_faults import tmpfs

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--train.epochs=1", "--data.limit=100", "--train.progress=false", "--model.spec=conv3-4 relu pool2 fc",
        "--monitor.checks=false", "--monitor.report=false", "--train.threads=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("attack")
    assert main(["train", *FAST, "--out", str(d), "--name", "run"]) == 0
    return d / "run"


def _copy(run: Path, to: Path) -> Path:
    subprocess.run(["cp", "-a", str(run), str(to)], check=True)
    return to


# ---- class 5: names stay inside --out ----

@pytest.mark.parametrize("name", ["../escaped", "/tmp/abs-escaped", "a/../../escaped", ".", "..", " ", "a\0b",
                                  "ok/../.."])
def test_names_that_leave_out_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(BabysitError, match=r"would not name a folder inside .*; give a plain name"):
        named_dir(tmp_path / "runs", name)


@pytest.mark.parametrize("name", ["exp1", "exp/run1", "caf\u00e9", "a..b", ".hidden-ok"])
def test_plain_names_and_sub_folders_are_kept(tmp_path: Path, name: str) -> None:
    assert named_dir(tmp_path / "runs", name) == tmp_path / "runs" / name


@settings(max_examples=200)
@given(st.lists(st.sampled_from(["a", ".", "/", "..", "\\", " ", "\0", "é"]), max_size=12).map("".join))
def test_any_accepted_name_resolves_inside_out(name: str) -> None:
    out = Path("/srv/out")
    try:
        path = named_dir(out, name)
    except BabysitError:
        return
    resolved = Path(os.path.normpath(path))
    assert resolved != out and out in resolved.parents


@pytest.mark.parametrize("command", [
    ["train", *FAST],
    ["check", "--data.limit=100", "--model.spec=conv3-4 relu pool2 fc", "--train.threads=1"],
    ["baseline", "knn", "--data.limit=100"],
    ["ensemble", "RUN", "RUN"],
    ["search", "--search.name=../escaped", "--search.space=optim.lr=loguniform(1e-4,1)", *FAST],
    ["recipe", "--budget=1m", "--train.threads=1"],
])
def test_every_command_refuses_a_name_outside_out(tmp_path: Path, trained: Path, command: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    command = [str(trained) if a == "RUN" else a for a in command]
    name = [] if command[0] == "search" else ["--name", "../escaped"]
    assert main([*command, "--out", str(out), *name]) == 2
    err = capsys.readouterr().err
    assert "would not name a folder inside" in err and "Traceback" not in err
    assert not (tmp_path / "escaped").exists()


# ---- class 5: run files are not followed through links ----

def test_history_replaced_by_a_symlink_is_refused_and_the_target_untouched(trained: Path, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]
                                                                           ) -> None:
    run = _copy(trained, tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious data without a trailing newline")
    history = RunDir(run).history
    history.unlink()
    history.symlink_to(victim)
    assert main(["train", "--resume", str(run)]) == 2
    assert "is a symbolic link, not the run's own file" in capsys.readouterr().err
    assert victim.read_bytes() == b"precious data without a trailing newline"


def test_append_through_a_symlink_is_refused(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    (tmp_path / "elsewhere.jsonl").write_text("")
    run.history.symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(BabysitError, match="symbolic link"):
        run.append_history({"step": 1})
    assert (tmp_path / "elsewhere.jsonl").read_text() == ""


# ---- class 5: checkpoint metadata validated like user input ----

@pytest.mark.parametrize(("key", "value", "why"), [
    ("epoch", "3", "epoch is '3', not a whole number from 0"),
    ("epoch", -1, "epoch is -1"),
    ("batch", -5, "batch is -5"),
    ("batch", 10**9, "batch is 1000000000, not a whole number from 0 to"),
    ("step", True, "step is True"),
    ("step", 2.5, "step is 2.5"),
    ("lr", "nan", "lr is 'nan', not a finite number"),
    ("lr", -0.1, "lr is -0.1, not a finite number >= 0"),
    ("loss_sum", None, "loss_sum is None"),
    ("best_epoch", -2, "best_epoch is -2"),
    ("best_score", "high", "best_score is 'high'"),
    ("history", {"a": 1}, "history is not a list of records"),
])
def test_crafted_checkpoint_position_is_refused_in_one_sentence(trained: Path, tmp_path: Path, key: str,
                                                                value: object, why: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(trained, tmp_path / "run")
    last = RunDir(run).last
    tensors, meta = load_checkpoint(last)
    meta[key] = value
    save_checkpoint(last, tensors, meta)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"has an invalid position ({why}" in err and "Traceback" not in err


def test_nan_float_in_checkpoint_metadata_is_refused(trained: Path, tmp_path: Path) -> None:
    from babysit.train.record import check_position

    _, meta = load_checkpoint(RunDir(trained).last)
    check_position(meta, Path("last"), 10**6)  # the run's own metadata passes
    with pytest.raises(BabysitError, match=r"best_val_acc is nan"):
        check_position({**meta, "best_val_acc": math.nan}, Path("last"), 10**6)


# ---- class 6: two processes on one run ----

HOLDER = ("import sys; from babysit.rundir import RunDir; RunDir(sys.argv[1]).take_lock(); "
          "print('locked', flush=True); "
          "sys.stdin.read()")


def _holder(run: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout is not None and p.stdout.readline().strip() == "locked"
    return p


def test_a_second_process_resuming_is_refused_with_the_first_pid(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "run")
    first = _holder(run)
    try:
        out = subprocess.run([sys.executable, "-m", "babysit", "train", "--resume", str(run)], capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
        assert out.returncode == 2, out.stderr[-1500:]
        assert f"is being trained by another process (PID {first.pid})" in out.stderr
        assert "Traceback" not in out.stderr
    finally:
        first.communicate("")
    assert first.returncode == 0


def test_the_lock_dies_with_a_killed_process(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "run")
    first = _holder(run)
    with pytest.raises(BabysitError, match=f"PID {first.pid}"):
        RunDir(run).take_lock()
    first.send_signal(signal.SIGKILL)
    first.wait()
    RunDir(run).take_lock()  # the kernel released it: no stale lock after kill -9
    assert RunDir(run).lock.read_text().strip() == str(os.getpid())
    RunDir(run).release_lock()


@pytest.mark.slow
def test_two_concurrent_resumers_one_trains(trained: Path, tmp_path: Path) -> None:
    """Two real `babysit train --resume` at once on an unfinished run: exactly one trains, the other exits 2."""
    run = _copy(trained, tmp_path / "run")
    cfg = C.load_toml(RunDir(run).config)
    (RunDir(run).config).write_text(C.dumps_toml(C.apply_overrides(cfg, {"train.epochs": 3})))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "babysit", "train", "--resume", str(run)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [o[1][-800:] for o in outs]
    refused = next(o for p, o in zip(procs, outs, strict=True) if p.returncode == 2)
    winner = next(p for p in procs if p.returncode == 0)
    assert f"(PID {winner.pid})" in refused[1]
    steps = [r["step"] for r in RunDir(run).read_history() if r.get("kind") == "step" or "loss" in r and "step" in r]
    assert len(steps) == len(set(steps))  # no step logged twice


def test_the_same_process_may_take_its_own_lock_again(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.take_lock()
    run.take_lock()
    assert run.lock.read_text() == f"{os.getpid()}\n"
    run.release_lock()
    run.release_lock()


# ---- class 7: out of space / inodes before training ----

@pytest.mark.parametrize("command", [
    ["train", *FAST, "--name", "run"],
    ["check", "--data.limit=100", "--model.spec=conv3-4 relu pool2 fc", "--train.threads=1", "--name", "run"],
    ["baseline", "knn", "--data.limit=100", "--name", "run"],
])
def test_out_of_inodes_leaves_no_half_made_folder(tmp_path: Path, command: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with tmpfs(tmp_path / "mnt", "size=1m,nr_inodes=4") as mnt:  # the root, runs/, run/ and one more
        assert main([*command, "--out", str(mnt / "runs")]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and ("No space left on device" in err or "cannot" in err)
        assert list(mnt.rglob("*")) in ([], [mnt / "runs"])
        assert not (mnt / "runs" / "run").exists()


def test_failed_first_write_removes_new_search_and_recipe_folders(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from babysit.recipe import run as recipe_run
    from babysit.tune import search as search_mod

    def full(path: Path, text: str) -> None:
        raise BabysitError(f"cannot write {path} (No space left on device); free disk space.")

    monkeypatch.setattr(recipe_run, "atomic_write_text", full)
    cfg = C.apply_overrides(C.RunConfig(), {"recipe.name": "r1"})
    with pytest.raises(BabysitError, match="No space left"):
        recipe_run._new(cfg, tmp_path / "recipes")
    assert not (tmp_path / "recipes").exists()

    def no_inodes(self: Path, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", no_inodes)
    with pytest.raises(BabysitError, match=r"cannot write .*s1 \(No space left on device\)"):
        search_mod._folder(C.apply_overrides(C.RunConfig(), {"search.name": "s1"}), tmp_path / "search")
    assert not (tmp_path / "search").exists()
