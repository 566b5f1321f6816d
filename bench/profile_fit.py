"""Where fit()'s time goes: cProfile over ``fit`` (monitoring at defaults) for a few epochs, top functions.

On a GPU a small net is launch-bound: every microsecond of Python per step is a microsecond of the
step, so this is how to find what fit() adds to the lean loop (bench/loop_overhead.py gives the ratio).

    python bench/profile_fit.py [--data mnist] [--epochs 2] [--device cuda] [--set KEY=VALUE ...] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time

from babysit import config as C
from babysit.monitor.session import RunMonitor
from babysit.rundir import RunDir
from babysit.start import fresh_start, plan_run
from babysit.train.loop import fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    over = {"data.name": args.data, "train.epochs": args.epochs, "train.device": args.device,
            "train.progress": False, "monitor.checks": False, "monitor.report": False}
    over.update(item.split("=", 1) for item in args.set)
    plan = plan_run(C.apply_overrides(C.RunConfig(), over))
    cfg = plan.cfg
    model, data, augment = fresh_start(plan)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(f"{tmp}/run")
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        state = fit(model, data, cfg, run, callbacks=RunMonitor(cfg, run).callbacks(), augment=augment)
        prof.disable()
        wall = time.perf_counter() - t0
    print(f"{state.step} steps in {wall:.2f} s: {1000 * wall / state.step:.3f} ms per step (epoch ends included); "
          f"spec {cfg.model.spec}, batch {cfg.train.batch_size}, device {plan.device}")
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
    print("babysit's own functions by cumulative time (what each adds, the torch calls inside included):")
    pstats.Stats(prof).sort_stats("cumulative").print_stats("babysit/", args.top)


if __name__ == "__main__":
    main()
