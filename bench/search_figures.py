"""The search figures: best val/test accuracy of N random trials against the default config, and pruning
(median, successive halving) against none at the same trials, with wall time.

Every arm draws the same N points (the random sampler is seeded by train.seed, the stage and the trial's
position), so the pruned arms differ from the unpruned one only in the trials they stop early.

    python bench/search_figures.py [--data fashion-mnist] [--limit 10000] [--trials 10] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from babysit import config as C
from babysit.experiment import train
from babysit.tune.search import search

SPACE = ["optim.lr=loguniform(1e-3,1)", "optim.weight_decay=loguniform(1e-6,1e-2)"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--spec", default="conv3-16 relu pool2 fc-64 relu fc")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pruners", default="none,median,asha")
    args = ap.parse_args()
    base = C.apply_overrides(C.RunConfig(), {
        "data.name": args.data, "data.limit": args.limit, "model.spec": args.spec, "train.epochs": args.epochs,
        "train.threads": args.threads, "train.progress": False, "monitor.checks": False, "monitor.stats_every": 0,
        "monitor.report": False, "search.stages": "fine", "search.trials": args.trials})
    out = tempfile.mkdtemp(prefix="babysit-search-figures-")
    lines = []
    started = time.perf_counter()
    res = train(base, out=out, name="default")
    lines.append(f"default config (lr {base.optim.lr:g}, weight decay {base.optim.weight_decay:g}): "
                 f"val {res.state.best_val_acc:.4f}, test {res.test_acc:.4f}, {time.perf_counter() - started:.0f} s")
    for pruner in args.pruners.split(","):
        cfg = C.apply_overrides(base, {"search.pruner": pruner, "search.name": f"random-{pruner}"})
        started = time.perf_counter()
        found = search(cfg, SPACE, out=out)
        wall = time.perf_counter() - started
        states = {s: sum(r.state == s for r in found.trials) for s in ("COMPLETE", "PRUNED", "KILLED", "FAIL")}
        epochs = sum(r.epochs for r in found.trials)
        b = found.best
        lines.append(f"{args.trials} random trials, pruner {pruner}: best val {b.val_acc:.4f}, test {b.test_acc:.4f} "
                     f"(lr {b.params['optim.lr']:.3g}, weight decay {b.params['optim.weight_decay']:.3g}); "
                     f"{wall:.0f} s, {epochs} epochs trained; " + ", ".join(f"{n} {s.lower()}" for s, n in
                                                                             states.items() if n))
    print("\n".join([f"search figures ({args.data}, {args.limit} training images, {args.spec}, {args.epochs} "
                     f"epochs, {args.threads} thread(s)); folders in {out}", *lines]), flush=True)


if __name__ == "__main__":
    main()
