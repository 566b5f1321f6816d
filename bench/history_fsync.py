"""What an fsync policy for history.jsonl costs: appends of step records with no fsync, one fsync per checkpoint
(babysit's policy: RunDir.sync_history before each last.safetensors) and one fsync per line.

    PYTHONPATH=. python bench/history_fsync.py [--dir FOLDER] [--records 2000] [--every 50] [--repeats 3]

``--every``: records between checkpoints (one epoch of digits at batch 32 logs ~45 steps). Prints the median
microseconds per record of each policy and its spread over the repeats. The folder decides the answer: use the
disk your runs go to (a tmpfs makes fsync free).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from babysit.rundir import RunDir


def one(folder: Path, records: int, every: int, policy: str) -> float:
    """Microseconds per record for one policy, in a fresh run folder."""
    run = RunDir(folder)
    run.path.mkdir(parents=True)
    rec = {"kind": "step", "step": 0, "epoch": 1, "loss": 2.302585, "lr": 0.05}
    started = time.perf_counter()
    for i in range(records):
        run.append_history({**rec, "step": i + 1})
        if policy == "line" or (policy == "checkpoint" and (i + 1) % every == 0):
            run.sync_history()
    return (time.perf_counter() - started) / records * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=".", help="folder on the disk to measure (a temporary folder is made in it)")
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for policy in ("none", "checkpoint", "line"):
            times = [one(Path(tmp) / f"{policy}-{r}", args.records, args.every, policy) for r in range(args.repeats)]
            print(f"fsync {policy:<10}: {statistics.median(times):8.1f} us per record "
                  f"(min {min(times):.1f}, max {max(times):.1f}; {args.records} records, {args.repeats} repeats)")


if __name__ == "__main__":
    main()
