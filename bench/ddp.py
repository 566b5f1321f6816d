"""1 process against N processes (DDP through torchrun, gloo on the CPU): training images/s and accuracy.

Runs the same ``babysit train`` config (data, spec, global batch, seed, epochs) as

    one process, T threads           python -m babysit train ... --train.threads=T
    one process, T/N threads         (what each DDP process gets: the per-core baseline)
    N processes, T/N threads each    python -m torch.distributed.run --standalone --nproc-per-node=N -m babysit ...

one after another, then reads each run directory: images/s = training images x epochs / the epochs' training
seconds (fit's own "seconds": the steps, no scoring, no start-up), best val and test accuracy, and the load
average before and after (on a shared machine other programs take cores too).

    python bench/ddp.py [--data mnist] [--epochs 2] [--processes 2] [--threads 2] [--limit 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: argparse.Namespace, out: Path, name: str, processes: int, threads: int) -> dict[str, float]:
    """Train once on ``processes`` x ``threads``; return images/s, accuracies and seconds."""
    options = [f"--data.name={args.data}", f"--model.spec={args.spec}", f"--train.epochs={args.epochs}",
               f"--train.batch_size={args.batch}", f"--optim.lr={args.lr}", f"--train.threads={threads}",
               "--train.seed=0", "--monitor.checks=false", "--monitor.stats_every=0", "--monitor.report=false",
               "--train.device=cpu", *([f"--data.limit={args.limit}"] if args.limit else []),
               "--out", str(out), "--name", name]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
                if processes > 1 else [sys.executable])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run([*launcher, "-m", "babysit", "train", *options], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{name} failed:\n{res.stderr[-3000:]}")
    lines = [json.loads(line) for line in (out / name / "history.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if r.get("kind") == "epoch"]
    meta = json.loads((out / name / "meta.json").read_text())
    result = json.loads((out / name / "result.json").read_text())
    seconds = sum(r["seconds"] for r in epochs)
    return {"images_s": meta["split_sizes"][0] * len(epochs) / seconds, "seconds": seconds,
            "val": result["best_val_acc"], "test": result["test_acc"], "n_train": meta["split_sizes"][0],
            "epoch_s": [round(r["seconds"], 1) for r in epochs]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="mnist")
    p.add_argument("--spec", default="conv3-16 relu pool2 conv3-32 relu pool2 fc-64 relu fc")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128, help="the global batch, the same in both runs")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="CPU threads in all; each process gets threads/processes")
    p.add_argument("--limit", type=int, default=0, help="train on a subset of this many images (0: all)")
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        each = max(1, args.threads // args.processes)
        rows = [(f"1 process x {args.threads} threads", run(args, Path(tmp), "one", 1, args.threads)),
                (f"1 process x {each} thread(s)", run(args, Path(tmp), "one-each", 1, each)),
                (f"{args.processes} processes x {each} thread(s) (gloo)",
                 run(args, Path(tmp), "ddp", args.processes, each))]
    print(f"load average after: {os.getloadavg()}")
    print(f"{args.data}, {rows[0][1]['n_train']} training images, spec {args.spec!r}, global batch {args.batch}, "
          f"lr {args.lr}, {args.epochs} epochs, seed 0")
    print(f"{'':34} {'images/s':>9} {'epoch s':>14} {'best val':>9} {'test':>7}")
    for name, r in rows:
        print(f"{name:34} {r['images_s']:9.0f} {str(r['epoch_s']):>14} {r['val']:9.4f} {r['test']:7.4f}")
    for name, r in rows[:2]:
        print(f"speed-up of DDP over {name}: {rows[2][1]['images_s'] / r['images_s']:.2f}x")


if __name__ == "__main__":
    main()
