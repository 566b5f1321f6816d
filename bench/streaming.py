"""Streaming vs in-memory: images/s of the first and later epochs, and peak memory, on MNIST written out as PNGs.

    python bench/streaming.py [--root /tmp/babysit-stream-bench] [--copies 3] [--cap-gb 1.6] [--epochs 2]

Writes MNIST (train + test, 70,000 images) ``--copies`` times as 28x28 PNGs into ROOT/mnist/<class>/ (3 copies:
210,000 files; each copy shifted by one pixel more, so no two files are identical - but they are near-duplicates,
so the accuracy of this set says nothing; only the throughput counts) and a CSV listing the first copy's 60,000
training images (ROOT/mnist60k.csv), then runs ``babysit train`` in child processes:

1. in memory, the 60,000-image list (fits): decode seconds, epoch images/s, peak resident memory -> the in-memory
   factor (peak memory over the uint8 size) that ``data.stream=auto`` uses; then the same list streamed;
2. in memory, the whole folder, under an address-space cap (``setrlimit(RLIMIT_AS)``, what ``ulimit -v`` sets): it
   should fail for lack of memory;
3. streamed, the whole folder, under the same cap, from an empty cache: decode pass images/s, epoch 1 and later
   epochs' images/s;
4. streamed again: the cache is reused (start-up seconds, no decoding).

The machine is shared: the load average is printed before and after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RUNS = ("fits", "fits-stream", "capped-memory", "stream", "stream-again")
CHILD = """
import resource, sys
from babysit.cli import main
rc = main(sys.argv[1:])
print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
print('vm_peak_kb', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmPeak')][0], flush=True)
sys.exit(rc)
"""


def write_pngs(root: Path, copies: int) -> tuple[Path, Path]:
    """ROOT/mnist/<class>/<copy>-<i>.png for every MNIST image, and ROOT/mnist60k.csv (copy 0's training images)."""
    from PIL import Image

    from babysit.data.sources import load_dataset

    folder, csv = root / "mnist", root / "mnist60k.csv"
    done = root / f"written-{copies}"
    if done.exists():
        return folder, csv
    shutil.rmtree(folder, ignore_errors=True)
    ds = load_dataset("mnist")
    assert ds.test is not None
    x = np.concatenate([ds.train.x.numpy(), ds.test.x.numpy()])[:, 0]
    y = np.concatenate([ds.train.y.numpy(), ds.test.y.numpy()])
    for k in range(10):
        (folder / str(k)).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = ["path,label"]
    for c in range(copies):
        shifted = np.roll(x, c, axis=2)  # copy c: c pixels to the right (wrapping the empty border)
        for i in range(len(x)):
            rel = f"mnist/{y[i]}/{c}-{i:05d}.png"
            Image.fromarray(shifted[i]).save(root / rel, compress_level=1)
            if c == 0 and i < 60_000:
                rows.append(f"{rel},{y[i]}")
    csv.write_text("\n".join(rows) + "\n")
    done.touch()
    print(f"wrote {copies * len(x):,} PNGs in {time.perf_counter() - started:.0f} s to {folder}", flush=True)
    return folder, csv


def train(name: str, args: argparse.Namespace, data: Path, stream: str, cap: int | None) -> dict[str, object]:
    """One ``babysit train`` in a child process (under an address-space cap when given); its figures."""
    out = Path(args.root) / "runs"
    cmd = [sys.executable, "-c", CHILD, "train", f"--data.name={data}", f"--data.stream={stream}",
           f"--data.cache={Path(args.root) / 'cache'}", f"--data.workers={args.workers}", f"--out={out}",
           f"--name={name}-{time.strftime('%H%M%S')}", f"--train.epochs={args.epochs}", "--train.threads=1",
           "--train.batch_size=256", "--model.spec=conv3-8 relu pool2 fc", "--monitor.checks=false",
           "--monitor.report=false", "--train.progress=false"]

    def limit() -> None:
        if cap is not None:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit, env={**os.environ,
                          "PYTHONPATH": str(Path(__file__).resolve().parents[1])}, timeout=3600)
    seconds = time.perf_counter() - started
    text = proc.stdout + proc.stderr
    res: dict[str, object] = {"run": name, "rc": proc.returncode, "seconds": round(seconds, 1),
                              "load": f"{load:.2f} -> {os.getloadavg()[0]:.2f}"}
    if m := re.search(r"peak_rss_kb (\d+)", text):
        res["peak_rss_mb"] = round(int(m.group(1)) / 1024)
    if m := re.search(r"vm_peak_kb (\d+)", text):
        res["vm_peak_mb"] = round(int(m.group(1)) / 1024)
    if m := re.search(r"cache filled in ([\d.]+) s \(([\d,]+) images/s\)", text):
        res["decode_s"], res["decode_img_s"] = float(m.group(1)), int(m.group(2).replace(",", ""))
    if m := re.search(r"run (\S+): ", text):
        run = Path(m.group(1))
        meta = json.loads((run / "meta.json").read_text())
        n_train = meta["split_sizes"][0]
        epochs = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()
                  if '"kind": "epoch"' in line]
        res["n_train"] = n_train
        res["epoch_img_s"] = [round(n_train / e["seconds"]) for e in epochs]
        res["val_acc"] = [round(e["val_acc"], 4) for e in epochs]
        res["setup_s"] = round(seconds - sum(e["seconds"] for e in epochs), 1)  # start, decode or map, test, exit
    if proc.returncode != 0:
        res["error"] = (text.strip().splitlines() or ["?"])[-1][:200]
    print(json.dumps(res), flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/babysit-stream-bench")
    p.add_argument("--copies", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cap-gb", type=float, default=1.6, help="address-space cap (ulimit -v) of the capped runs")
    p.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(RUNS))
    args = p.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    folder, csv = write_pngs(root, args.copies)
    cap = int(args.cap_gb * 2**30)
    only = set(args.only.split(",")) if args.only else set(RUNS)
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()}, cap {args.cap_gb} GiB address space", flush=True)
    if "fits" in only:
        fits = train("fits", args, csv, "off", None)
        if "peak_rss_mb" in fits:
            base = train("baseline", args, Path("digits"), "off", None)  # the process without a big data set
            uint8_mb = 60_000 * 784 / 2**20
            factor = (fits["peak_rss_mb"] - base["peak_rss_mb"]) / uint8_mb  # type: ignore[operator]
            print(f"in-memory factor: ({fits['peak_rss_mb']} - {base['peak_rss_mb']} MB) / {uint8_mb:.0f} MB uint8 "
                  f"= {factor:.1f}", flush=True)
    if "fits-stream" in only:  # the same 60,000 images streamed: per-epoch cost of reading the memory map
        train("fits-stream", args, csv, "on", None)
    if "capped-memory" in only:
        train("capped-memory", args, folder, "off", cap)
    if "stream" in only:
        shutil.rmtree(root / "cache", ignore_errors=True)
        train("stream", args, folder, "on", cap)
    if "stream-again" in only:
        train("stream-again", args, folder, "on", cap)


if __name__ == "__main__":
    main()
