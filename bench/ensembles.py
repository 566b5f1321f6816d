"""The closing figures of the ensembles issue: what ensembles, weight averages, snapshots, distillation and
early stopping buy, as means over seeds with their spread.

    python bench/ensembles.py fashion [--limit 5000] [--epochs 10] [--seeds 5] [--students 3] [--out DIR]
    python bench/ensembles.py early [--seeds 5] [--epochs 100] [--patience 10] [--out DIR]

fashion (Fashion-MNIST, a training subset of --limit images; the official 10k test set; val 6k), every run
--epochs epochs of the same small ConvNet (SPEC), RECIPE (SGD momentum 0.9, lr 0.05, cosine after a 1-epoch
warm-up, batch 64), one thread, monitoring off, all on one split (data.split_seed=0):

  single      the --seeds runs of `babysit ensemble --seeds=N` (train.seed 0..N-1), each scored alone
  ensemble    those runs' probabilities averaged (N times one run's compute)
  EMA         the same runs' moving average of the weights (train.ema=0.99), scored beside the raw weights
  snapshots   cosine-restarts with 5 cycles over the same epochs, its 5 snapshots averaged (one run's compute);
              one run per seed
  student     a smaller net (STUDENT) from the labels, and distilled from the ensemble (T=4, alpha=0.9)

early (digits): a wide fc net without regularisation and a constant lr, which overfits, trained --epochs
epochs with and without --train.patience (train.monitor val_loss): epochs run, wall time, and the test
accuracy of the kept (best-val) weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from babysit import config as C  # noqa: E402

SPEC = "conv3-16 relu pool2 conv3-32 relu pool2 fc-64 relu dropout-0.3 fc"
STUDENT = "conv3-8 relu pool2 fc"
QUIET = {"train.threads": 1, "train.progress": False, "monitor.checks": False, "monitor.report": False,
         "monitor.stats_every": 0}
# The recipe the figures were measured with, pinned (the defaults moved since: one-cycle lr 0.2, auto batch size)
RECIPE = {"optim.lr": 0.05, "optim.nesterov": False, "schedule.name": "cosine", "schedule.warmup_epochs": 1.0,
          "train.batch_size": 64, "train.channels_last": False}


def spread(values: list[float]) -> str:
    """mean ± std (min..max) in percent; the std is the sample std over seeds."""
    pct = [100 * v for v in values]
    std = statistics.stdev(pct) if len(pct) > 1 else 0.0
    return f"{statistics.mean(pct):.2f} ± {std:.2f} ({min(pct):.2f}..{max(pct):.2f}, n={len(pct)})"


def result(run: Path) -> dict[str, Any]:
    return json.loads((run / "result.json").read_text())


def fashion(args: argparse.Namespace) -> dict[str, Any]:
    from babysit.ensemble import distill, ensemble
    from babysit.experiment import train

    out = Path(args.out)
    base = C.apply_overrides(C.RunConfig(), {**QUIET, **RECIPE, "data.name": "fashion-mnist", "data.limit": args.limit,
                                             "model.spec": SPEC, "train.epochs": args.epochs, "train.ema": 0.99,
                                             "data.split_seed": 0})
    t0 = time.perf_counter()
    five = ensemble(seeds=args.seeds, cfg=base, out=out, name="seeds")
    runs = [out / "seeds" / f"seed-{s}" for s in range(args.seeds)]
    singles = [result(r) for r in runs]
    figures: dict[str, Any] = {
        "single test": [r["test_acc"] for r in singles], "single val": [r["best_val_acc"] for r in singles],
        "ema test": [r["ema"]["test_acc"] for r in singles], "ema val": [r["ema"]["val_acc"] for r in singles],
        "single seconds": [r["seconds"] for r in singles],
        f"{args.seeds}-seed ensemble test": [five.test_acc], f"{args.seeds}-seed ensemble val": [five.val_acc]}
    snap_cfg = C.apply_overrides(base, {"schedule.name": "cosine-restarts", "schedule.cycles": 5, "train.ema": 0.0})
    for s in range(args.seeds):
        name = f"snap-{s}"
        train(C.apply_overrides(snap_cfg, {"train.seed": s}), out=out, name=name)
        snaps = ensemble(snapshots=out / name, out=out, name=f"snapshots-{s}")
        figures.setdefault("snapshot ensemble test", []).append(snaps.test_acc)
        figures.setdefault("snapshot run alone test", []).append(result(out / name)["test_acc"])
        figures.setdefault("snapshot seconds", []).append(result(out / name)["seconds"])
    labels_cfg = C.apply_overrides(base, {"model.spec": STUDENT, "train.ema": 0.0})
    for s in range(args.students):
        train(C.apply_overrides(labels_cfg, {"train.seed": s}), out=out, name=f"labels-{s}")
        figures.setdefault("student from labels test", []).append(result(out / f"labels-{s}")["test_acc"])
        distill(out / "seeds", overrides={"model.spec": STUDENT, "train.ema": 0.0, "train.seed": s,
                                          "distill.temperature": 4, "distill.alpha": 0.9}, out=out, name=f"student-{s}")
        figures.setdefault("student distilled test", []).append(result(out / f"student-{s}")["test_acc"])
    figures["wall seconds"] = time.perf_counter() - t0
    return figures


def early(args: argparse.Namespace) -> dict[str, Any]:
    from babysit.experiment import train

    out = Path(args.out)
    base = C.apply_overrides(C.RunConfig(), {**QUIET, **RECIPE, "data.name": "digits",
                                             "model.spec": "fc-512 relu fc-512 relu fc",
                                             "optim.weight_decay": 0.0, "schedule.name": "constant",
                                             "schedule.warmup_epochs": 0, "train.epochs": args.epochs,
                                             "train.monitor": "val_loss"})
    figures: dict[str, Any] = {}
    for s in range(args.seeds):
        for label, extra in (("full", {}), ("early", {"train.patience": args.patience})):
            cfg = C.apply_overrides(base, {**extra, "train.seed": s})
            res = train(cfg, out=out, name=f"{label}-{s}")
            r = result(res.run.path)
            figures.setdefault(f"{label} test", []).append(r["test_acc"])
            figures.setdefault(f"{label} epochs", []).append(r["epochs"])
            figures.setdefault(f"{label} seconds", []).append(r["seconds"])
            figures.setdefault(f"{label} best epoch", []).append(r["best_epoch"])
            if label == "full":
                history = [h for h in res.run.read_history() if h.get("kind") == "epoch"]
                figures.setdefault("full last/best val loss ratio", []).append(
                    history[-1]["val_loss"] / min(h["val_loss"] for h in history))
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("fashion", "early"))
    p.add_argument("--limit", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=0, help="default: 10 (fashion), 100 (early)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--students", type=int, default=3)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--out", default="bench-ensembles")
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args(argv)
    args.epochs = args.epochs or (10 if args.what == "fashion" else 100)
    figures = fashion(args) if args.what == "fashion" else early(args)
    for key, values in figures.items():
        if isinstance(values, list) and key.endswith((" test", " val")):
            print(f"{key:<34} {spread(values)}")
        elif isinstance(values, list):
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"{key:<34} {statistics.mean(values):.2f} ± {std:.2f} ({min(values):.2f}..{max(values):.2f})")
        else:
            print(f"{key:<34} {values:.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
