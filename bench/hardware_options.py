"""Seconds per epoch of ``babysit train`` under each hardware option, side by side in one process.

Each option set runs the same config (data, seed, epochs) through ``babysit.experiment.train`` with the
sanity checks and report off; the table gives each epoch's training seconds (fit's own "seconds": the
steps, probes included, no scoring), the first epoch apart (it carries cuDNN autotuning and any
torch.compile), the mean of the rest, its ratio to the first option set, and the test accuracy.

    python bench/hardware_options.py [--data mnist] [--epochs 3] [--device cuda]
        [--option "" --option "train.deterministic=true" --option "train.precision=bf16" ...]

An option is "key=value[,key=value...]"; "" is babysit's defaults. Run on one machine, one after another.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from typing import Any

import torch

from babysit import config as C
from babysit.experiment import train

DEFAULT_OPTIONS = ["", "train.channels_last=false", "train.deterministic=true", "train.precision=bf16",
                   "train.compile=default", "train.compile=reduce-overhead"]


class EpochSeconds:
    """fit callback: each epoch's training seconds as fit records them."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_epoch_end(self, state: Any) -> None:
        self.seconds.append(float(state.history[-1]["seconds"]))


def run(base: dict[str, Any], option: str) -> tuple[list[float], float, float]:
    over = dict(base)
    for item in filter(None, option.split(",")):
        key, _, value = item.partition("=")
        over[key.strip()] = value.strip()
    cfg = C.apply_overrides(C.RunConfig(), over)
    timer = EpochSeconds()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        res = train(cfg, out=tmp, name="run", callbacks=[timer])
    return timer.seconds, res.test_acc, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every option set")
    ap.add_argument("--option", action="append", default=None, help="an option set (repeatable)")
    args = ap.parse_args()
    base: dict[str, Any] = {"data.name": args.data, "train.epochs": args.epochs, "train.device": args.device,
                            "train.progress": False, "monitor.checks": False, "monitor.report": False}
    if args.limit:
        base["data.limit"] = args.limit
    base.update(item.split("=", 1) for item in args.set)
    options = args.option if args.option is not None else DEFAULT_OPTIONS
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    print(f"{args.data}, {args.epochs} epochs, babysit defaults plus each option; device {dev}, "
          f"torch {torch.__version__}")
    print(f"{'option':<34} {'epoch 1 s':>9} {'later s/epoch':>13} {'ratio':>6} {'test acc':>8} {'wall s':>7}")
    ref = None
    for option in options:
        try:
            secs, acc, wall = run(base, option)
        except Exception as e:  # an option this machine lacks (bf16 on CPU): say so and go on
            print(f"{option or '(defaults)':<34} failed: {str(e).splitlines()[0][:80]}")
            continue
        later = statistics.fmean(secs[1:]) if len(secs) > 1 else secs[0]
        ref = ref or later
        print(f"{option or '(defaults)':<34} {secs[0]:>9.2f} {later:>13.3f} {later / ref:>6.2f} {acc:>8.4f} "
              f"{wall:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
