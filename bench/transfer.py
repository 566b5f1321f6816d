"""Transfer-learning figures: a source network reused on little labelled data, against training from scratch.

For each (source run, target data) pair and seed: scratch (the source's architecture, randomly initialised,
the source's learning rate), linear probe, top (transfer.layers=2) and full fine-tuning (optim.layer_decay=0.5),
each trained for --epochs on --limit labelled training images (the split, the subset and the initialisation
follow the seed; every strategy of one seed sees the same images), scored on the target's test split; and what
``transfer.strategy=auto`` chooses (and scores). Prints accuracy per seed and mean +- std.

    python bench/transfer.py --pair runs/mnist-src:digits --pair runs/fashion-src:mnist --seeds 3 --limit 100

Train the sources first, e.g. ``babysit train --data.name=mnist --name mnist-src`` (6 epochs, ~4 min at one
thread). The digits images (8x8) are resized to the source's 28x28 by data.size.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from babysit import config as C
from babysit.experiment import train
from babysit.transfer import finetune, finetune_config

STRATEGIES = ("scratch", "linear-probe", "top", "full", "auto")


def one(source: str, data: str, strategy: str, seed: int, args: argparse.Namespace) -> tuple[float, str]:
    """Test accuracy of one strategy for one seed, and what auto chose ("" otherwise)."""
    over = {"data.name": data, "data.limit": args.limit, "train.seed": seed, "train.epochs": args.epochs,
            "train.threads": args.threads, "train.progress": "false", "monitor.checks": "false",
            "monitor.report": "false", "monitor.stats_every": 0,
            "transfer.strategy": "full" if strategy == "scratch" else strategy}
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        if strategy == "scratch":
            cfg, src = finetune_config(source, over)
            src_optim = C.load_toml(src.config).optim
            cfg = replace(cfg, transfer=C.TransferConfig(), optim=src_optim)  # the source's own lr, one for all
            res = train(cfg, out=args.out)
            acc, chose = res.test_acc, ""
        else:
            ft = finetune(source, over, out=args.out)
            acc, chose = ft.test_acc, (ft.choice.cell + " -> " + ft.strategy if ft.choice else "")
    assert acc is not None
    return acc, chose


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", action="append", required=True, help="SOURCE_RUN:TARGET_DATA (repeatable)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--limit", type=int, default=100, help="labelled training images of the target")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--out", default="runs/bench-transfer")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for pair in args.pair:
        source, _, data = pair.rpartition(":")
        print(f"\n{source} -> {data}: {args.limit} labelled training images, {args.epochs} epochs, "
              f"seeds 0..{args.seeds - 1}", flush=True)
        print(f"{'strategy':<14}{'test accuracy per seed':<30}{'mean +- std':<18}{'s/run':>6}  auto chose", flush=True)
        for strategy in args.strategies.split(","):
            accs, chosen, started = [], [], time.perf_counter()
            for seed in range(args.seeds):
                acc, chose = one(source, data, strategy, seed, args)
                accs.append(acc)
                chosen.append(chose)
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            per_run = (time.perf_counter() - started) / args.seeds
            print(f"{strategy:<14}{' '.join(f'{a:.4f}' for a in accs):<30}{statistics.mean(accs):.4f} +- {sd:.4f}"
                  f"   {per_run:6.1f}  {'; '.join(sorted(set(c for c in chosen if c)))}", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
