"""Kill `babysit train` with SIGKILL at random points, resume each run, and check it ends bit-identical.

    python scripts/kill_resume_soak.py [--kills 20] [--seed 0] [--workdir DIR] [--keep] [--augment] [--averages]
                                       [--early] [--train-arg=--train.deterministic=true ...]

One uninterrupted reference run comes first (it also counts the run's history appends and atomic
writes). Then, per kill, a seeded generator picks a kill point (each kind equally often, in random
order, at a random event), a fresh run is started in a subprocess and killed there, and
``babysit train --resume RUN`` finishes it. Kill points:

    step N          SIGKILL right after history line N (mid-epoch or at an epoch end)
    append-torn N   SIGKILL halfway through writing history line N (a torn last line)
    write-torn N    SIGKILL with the N-th atomic file half written and not yet fsynced
    before-rename N SIGKILL after the N-th temporary file is complete, before its rename
    after-rename N  SIGKILL right after the N-th rename, before the folder fsync
    sigterm N       SIGTERM after history line N: the run must save, exit 143 and resume
    timer T         SIGKILL from outside, T seconds after the run directory appears

The resumed run must match the reference exactly: every tensor of checkpoints/last.safetensors
(weights, optimiser, RNG, EMA and SWA state) and of every other checkpoint file (best, ema, swa,
snapshots, kept epochs) with its metadata, the last checkpoint's metadata (position, schedule, best
score, config; monitoring callbacks' counters aside), the logical history and result.json
(wall-clock seconds aside), with no temporary files left. A run killed before its
config.toml existed cannot be resumed (nothing says how it was configured); it is started again
with its original command, as the `--resume` error says. Prints ``N/N resumed bit-identical``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ARGS = ["--data.name=digits", "--data.limit=300", "--model.spec=conv3-8 relu pool2 dropout-0.3 fc",
              "--train.epochs=3", "--train.batch_size=16", "--checkpoint.every=5", "--train.progress=false"]
AUGMENT = "--augment.pipeline=translate-1,rotate-10,noise-0.02,cutout-2,mixup-0.2"
AVERAGES = ("--train.ema=0.9", "--train.swa_epochs=2", "--train.swa_lr=0.02", "--schedule.name=cosine-restarts",
            "--schedule.cycles=3", "--checkpoint.keep_last=2")
EARLY = ("--train.patience=1", "--train.monitor=val_loss", "--train.min_delta=10")  # stops after epoch 2 of 3
KINDS = ("step", "append-torn", "write-torn", "before-rename", "after-rename", "sigterm", "timer")

# Runs inside the killed process: counts history appends and atomic writes, and fires the fault.
CHILD = r"""
import json, os, signal, stat, sys
from babysit import rundir
kind, n, counts_file = sys.argv[1], float(sys.argv[2]), sys.argv[3]
seen = {"append": 0, "write": 0}
def die():
    os.kill(os.getpid(), signal.SIGKILL)
append, fsync, replace = rundir.RunDir.append_history, os.fsync, os.replace
def on_append(self, records):
    for record in records if isinstance(records, list) else [records]:  # a block of lines: count each line
        seen["append"] += 1
        if kind == "append-torn" and seen["append"] == n:
            line = json.dumps(record) + "\n"
            with open(self.history, "a") as f:
                f.write(line[: len(line) // 2])
            die()
        append(self, record)
        if kind == "step" and seen["append"] == n:
            die()
        if kind == "sigterm" and seen["append"] == n:
            os.kill(os.getpid(), signal.SIGTERM)
def on_fsync(fd):
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        seen["write"] += 1
        if kind == "write-torn" and seen["write"] == n:
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            die()
    fsync(fd)
def on_replace(src, dst):
    tmp = str(src).endswith(".tmp")
    if tmp and kind == "before-rename" and seen["write"] == n:
        die()
    replace(src, dst)
    if tmp and kind == "after-rename" and seen["write"] == n:
        die()
rundir.RunDir.append_history, os.fsync, os.replace = on_append, on_fsync, on_replace
from babysit.cli import main
code = main(sys.argv[4:])
if counts_file:
    with open(counts_file, "w") as f:
        json.dump(seen, f)
sys.exit(code)
"""


@dataclass(frozen=True)
class KillPoint:
    kind: str
    n: float  # history line / atomic write number, or seconds for "timer"

    def __str__(self) -> str:
        return f"{self.kind} {self.n:.2f}" if self.kind == "timer" else f"{self.kind} {int(self.n)}"


def child(point: KillPoint | None, args: list[str], cwd: Path, counts_file: str = "",
          timer_run: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``babysit`` with ``args`` under the fault hooks; for a timer point, kill it from here."""
    kind, n = (point.kind, point.n) if point else ("none", 0.0)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))
    cmd = [sys.executable, "-c", CHILD, kind, str(n), counts_file, *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kind == "timer" and timer_run is not None:
        while proc.poll() is None and not (timer_run / "config.toml").exists():
            time.sleep(0.005)
        time.sleep(n)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def train_args(out: Path, name: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["train", *TRAIN_ARGS, *extra, "--out", str(out), "--name", name]


def reference(workdir: Path, extra: tuple[str, ...] = ()) -> tuple[Path, dict[str, int], float]:
    """The uninterrupted run, how many appends/writes it made, and how long its training took."""
    counts = workdir / "counts.json"
    started = time.perf_counter()
    res = child(None, train_args(workdir, "reference", extra), workdir, str(counts))
    if res.returncode != 0:
        raise SystemExit(f"the reference run failed:\n{res.stderr}")
    seconds = json.loads((workdir / "reference" / "result.json").read_text())["seconds"]
    return workdir / "reference", json.loads(counts.read_text()), min(seconds, time.perf_counter() - started)


def draw(rng: random.Random, kind: str, counts: dict[str, int], train_seconds: float) -> KillPoint:
    """A seeded kill point of ``kind`` within the events the reference run actually had."""
    if kind == "timer":
        return KillPoint(kind, rng.uniform(0.0, train_seconds))
    events = counts["append"] if kind in ("step", "append-torn", "sigterm") else counts["write"]
    return KillPoint(kind, rng.randint(1, events))


def _run_state(run: Path) -> tuple[dict, dict, list, dict]:
    from babysit.rundir import RunDir, read_history
    from babysit.train.checkpoint import load_checkpoint

    tensors, meta = load_checkpoint(run / "checkpoints" / "last.safetensors")
    kept, kept_meta = {}, {}
    for path in sorted(RunDir(run).checkpoints.rglob("*.safetensors")):  # best, ema, swa, snapshots, epochs
        name = str(path.relative_to(run / "checkpoints"))
        if name != "last.safetensors":
            file_tensors, kept_meta[name] = load_checkpoint(path)
            kept |= {f"{name}:{k}": v for k, v in file_tensors.items()}
    for rec in meta.get("history", []):
        rec.pop("seconds", None)
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(run / "history.jsonl")
               if r.get("kind") != "resume"]
    result = json.loads((run / "result.json").read_text())
    result.pop("seconds", None)
    return {**tensors, **kept}, {**meta, "kept files": kept_meta}, history, result


def differences(run: Path, ref: Path) -> list[str]:
    """What differs between a resumed run and the reference (empty when bit-identical)."""
    import torch

    (ta, ma, ha, ra), (tb, mb, hb, rb) = _run_state(run), _run_state(ref)
    diffs = [f"tensor {k}" for k in sorted(ta.keys() | tb.keys())
             if k not in ta or k not in tb or not torch.equal(ta[k], tb[k])]
    # Callback state is left out: the layer probes deliberately take one extra sample after a restart.
    # Their tensors are still compared above, and tests/test_faults.py checks training callbacks exactly.
    diffs += [f"meta {k}" for k in sorted(ma.keys() | mb.keys()) if k != "callbacks" and ma.get(k) != mb.get(k)]
    diffs += ["history"] if ha != hb else []
    diffs += ["result.json"] if ra != rb else []
    diffs += [f"left behind {p.name}" for p in run.rglob("*.tmp")]
    return diffs


def kill_and_resume(point: KillPoint, workdir: Path, name: str, ref: Path,
                    extra: tuple[str, ...] = ()) -> tuple[bool, str]:
    """Start a run, fault it at ``point``, bring it to the end, compare with ``ref``: (ok, what happened)."""
    run = workdir / name
    res = child(point, train_args(workdir, name, extra), workdir, timer_run=run)
    expected = {"sigterm": 143}.get(point.kind, -signal.SIGKILL)
    if res.returncode not in (expected, 0):  # 0: a timer that fired after the run had finished
        return False, f"killed run exited {res.returncode}: {res.stderr.strip()[-300:]}"
    if point.kind == "sigterm" and "babysit train --resume" not in res.stderr:
        return False, f"SIGTERM did not say how to resume: {res.stderr.strip()[-300:]}"
    how = "finished before the kill" if res.returncode == 0 else "resumed"
    if res.returncode != 0:
        res = child(None, ["train", "--resume", str(run)], workdir)
        if res.returncode == 2 and "start it again with its original options" in res.stderr:
            how = "restarted (killed before config.toml existed)"
            res = child(None, train_args(workdir, name, extra), workdir)
        if res.returncode != 0:
            return False, f"resume exited {res.returncode}: {res.stderr.strip()[-300:]}"
    diffs = differences(run, ref)
    return not diffs, how if not diffs else f"{how}, but differs: {', '.join(diffs[:6])}"


def soak(kills: int, seed: int, workdir: Path, extra: tuple[str, ...] = ()) -> int:
    """Run ``kills`` seeded kill points (``extra``: more train options); returns how many resumed bit-identical."""
    started = time.perf_counter()
    ref, counts, train_seconds = reference(workdir, extra)
    print(f"reference: {counts['append']} history lines, {counts['write']} atomic writes, "
          f"training {train_seconds:.1f} s", flush=True)
    rng = random.Random(seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(kills)]  # every kind equally often, in random order
    rng.shuffle(kinds)
    good = 0
    for i, kind in enumerate(kinds):
        point = draw(rng, kind, counts, train_seconds)
        ok, how = kill_and_resume(point, workdir, f"kill{i:03d}", ref, extra)
        good += ok
        print(f"{i + 1:3d}. {str(point):<18} {'ok  ' if ok else 'FAIL'} {how}", flush=True)
    print(f"{good}/{kills} resumed bit-identical ({time.perf_counter() - started:.0f} s)")
    return good


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="number of random kill points")
    p.add_argument("--seed", type=int, default=0, help="seeds the choice of kill points")
    p.add_argument("--workdir", help="where the runs go (default: a temporary folder, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--augment", action="store_true", help=f"train with augmentation too ({AUGMENT})")
    p.add_argument("--train-arg", action="append", default=[], metavar="OPTION",
                   help="one more train option for every run, e.g. --train-arg=--train.deterministic=true")
    p.add_argument("--averages", action="store_true", help=f"with EMA, SWA, snapshots and kept epochs ({AVERAGES})")
    p.add_argument("--early", action="store_true", help=f"with early stopping ({EARLY})")
    args = p.parse_args(argv)
    if args.augment:
        TRAIN_ARGS.append(AUGMENT)
    TRAIN_ARGS.extend((AVERAGES if args.averages else ()) + (EARLY if args.early else ()))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="babysit-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        good = soak(args.kills, args.seed, workdir, tuple(args.train_arg))
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if good == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
