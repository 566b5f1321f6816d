"""Multi-task vs single-task: Fashion-MNIST class (10) + coarse group (tops / bottoms / footwear / bags).

One net with two heads on a shared trunk (``--model.heads=class:10,group:4``) against two single-task nets of the
same architecture: each trained for the same epochs (twice the multi-task net's compute together), and each for
half of them (the same total budget as the multi-task net). Same subset of --limit training images, split and
seed everywhere; test accuracy of each task on the official test split (10,000 images).

    python bench/multitask.py --limit 5000 --epochs 4 --seeds 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
from pathlib import Path

import numpy as np

from babysit import config as C
from babysit.data.sources import load_dataset
from babysit.experiment import train

GROUPS = {"tops": ("T-shirt/top", "Pullover", "Dress", "Coat", "Shirt"), "bottoms": ("Trouser",),
          "footwear": ("Sandal", "Sneaker", "Ankle boot"), "bags": ("Bag",)}


def make_npz(path: Path, group_only: Path) -> None:
    """Fashion-MNIST as a .npz with the coarse group as a second label column (y_group, y_group_test), and one
    labelled by the group alone (for the single-task group net)."""
    ds = load_dataset("fashion-mnist")
    names = list(GROUPS)
    to_group = np.array([next(names.index(g) for g, members in GROUPS.items() if c in members)
                         for c in ds.train.classes])
    assert ds.test is not None
    y, y_test = ds.train.y.numpy(), ds.test.y.numpy()
    np.savez(path, x=ds.train.x.numpy(), y=y, x_test=ds.test.x.numpy(), y_test=y_test,
             classes=np.array(ds.train.classes), y_group=to_group[y], y_group_test=to_group[y_test])
    np.savez(group_only, x=ds.train.x.numpy(), y=to_group[y], x_test=ds.test.x.numpy(), y_test=to_group[y_test],
             classes=np.array(names))


def run(npz: Path, out: str, seed: int, epochs: int, limit: int, threads: int, **over: str) -> tuple[dict, float]:
    cfg = C.apply_overrides(C.RunConfig(), {"data.name": str(npz), "data.limit": limit, "train.seed": seed,
                                            "train.epochs": epochs, "train.threads": threads,
                                            "train.progress": "false", "monitor.report": "false",
                                            "monitor.stats_every": 0, "monitor.checks": "false", **over})
    with contextlib.redirect_stdout(io.StringIO()):
        res = train(cfg, out=out)
    assert res.run is not None
    return json.loads(res.run.result.read_text()), res.seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench-multitask")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    npz, group_npz = Path(args.out) / "fashion-groups.npz", Path(args.out) / "fashion-group-only.npz"
    if not group_npz.exists():
        make_npz(npz, group_npz)
    rows: dict[str, list[tuple[float, float, float]]] = {}
    e, half = args.epochs, max(args.epochs // 2, 1)
    for seed in range(args.seeds):
        r, s = run(npz, args.out, seed, e, args.limit, args.threads, **{"model.heads": "class:10,group:4"})
        rows.setdefault(f"multi-task, {e} epochs", []).append((r["test_acc_tasks"]["class"],
                                                                r["test_acc_tasks"]["group"], s))
        for epochs in (e, half):
            rc, sc = run(npz, args.out, seed, epochs, args.limit, args.threads)
            rg, sg = run(group_npz, args.out, seed, epochs, args.limit, args.threads)  # split stratified by group
            rows.setdefault(f"two single-task nets, {epochs} epochs each", []).append(
                (rc["test_acc"], rg["test_acc"], sc + sg))
    print(f"Fashion-MNIST, {args.limit} training images, seeds 0..{args.seeds - 1}; test accuracy (10,000 images)")
    print(f"{'setting':<38}{'class':>8}{'group':>8}{'seconds':>9}")
    for name, vals in rows.items():
        c, g, s = (statistics.mean(v[i] for v in vals) for i in range(3))
        print(f"{name:<38}{c:8.4f}{g:8.4f}{s:9.1f}")


if __name__ == "__main__":
    main()
