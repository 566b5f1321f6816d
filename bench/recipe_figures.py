"""The recipe's figures (issue 17): `babysit recipe` with defaults against `babysit train` with defaults.

    python bench/recipe_figures.py --data digits --budget 3m --seeds 0,1,2 [--same-time]
    python bench/recipe_figures.py --data mnist --budget 10m --seeds 0

For each seed: the recipe's test accuracy and wall time, and `babysit train` with the default config (6 epochs) on
the same seed (so the same split). ``--same-time`` adds a default run whose epochs fill the recipe's wall time
(from the default run's seconds per epoch, at most --max-epochs): the best one default run can do in that time.
Prints one row per run and the load average before and after each, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _babysit(args: list[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-m", "babysit", *args], check=True, stdout=f, stderr=subprocess.STDOUT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - started


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--budget", default="3m")
    p.add_argument("--seeds", default="0")
    p.add_argument("--same-time", action="store_true")
    p.add_argument("--max-epochs", type=int, default=60)
    p.add_argument("--out", default="")
    a = p.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="recipe-figures-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"data {a.data}, budget {a.budget}, seeds {a.seeds}, torch threads default; folder {out}", flush=True)
    for seed in (int(s) for s in a.seeds.split(",")):
        load = _load()
        name = f"{a.data}-s{seed}"
        wall = _babysit(["recipe", f"--data.name={a.data}", f"--budget={a.budget}", f"--train.seed={seed}",
                         "--out", str(out / "recipes"), "--name", name], out / f"{name}.recipe.log")
        state = json.loads((out / "recipes" / name / "recipe.json").read_text())
        test = state["steps"]["test"]["outputs"]
        print(f"seed {seed}: recipe test {test['test_acc']:.4f} ({test['model']}), wall {wall:.0f} s, load "
              f"{load} -> {_load()}", flush=True)
        load = _load()
        _babysit(["train", f"--data.name={a.data}", f"--train.seed={seed}", "--out", str(out / "runs"), "--name",
                  f"{name}-default"], out / f"{name}.default.log")
        res = json.loads((out / "runs" / f"{name}-default" / "result.json").read_text())
        print(f"seed {seed}: train defaults ({res['epochs']} epochs) test {res['test_acc']:.4f}, "
              f"{res['seconds']:.0f} s, load {load} -> {_load()}", flush=True)
        if a.same_time:
            epochs = min(a.max_epochs, max(res["epochs"], int(wall / (res["seconds"] / res["epochs"]))))
            load = _load()
            _babysit(["train", f"--data.name={a.data}", f"--train.seed={seed}", f"--train.epochs={epochs}", "--out",
                      str(out / "runs"), "--name", f"{name}-same-time"], out / f"{name}.same.log")
            res = json.loads((out / "runs" / f"{name}-same-time" / "result.json").read_text())
            print(f"seed {seed}: train defaults, {epochs} epochs (the recipe's time) test {res['test_acc']:.4f}, "
                  f"{res['seconds']:.0f} s, load {load} -> {_load()}", flush=True)


if __name__ == "__main__":
    main()
