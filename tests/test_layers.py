"""Imports point downstream only (docs/ARCHITECTURE.md): the layers of the package and no circles.

Read from the source with ``ast`` (imports inside functions and under TYPE_CHECKING count too), and
checked for real by importing every module alone, in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "babysit"

LAYERS: dict[str, int] = {
    # base: no babysit imports above them
    "errors": 0, "figures": 0, "log": 0,  # log: the babysit logger (stdout handler, -q / -v)
    "registry": 1, "ema": 1, "lazy": 1,
    "limits": 1,  # memory estimates checked before allocating; bounded reads of run files
    "config": 2, "rundir": 2, "divergence": 2,
    "ckptfile": 3,  # the checkpoint file format, written through rundir's atomic writes
    "writer": 3,  # checkpoints and statistics files put on disk by a background thread (rundir's atomic writes)
    # the stages of the data flow
    "data": 3, "models": 3,
    "train": 4, "review": 4,  # review reads finished runs; it imports nothing of training
    "monitor": 5,  # before and during training: checks, probes, guards (uses review's rules live)
    "start": 6,  # one run setup below every entry point
    "experiment": 7, "commands": 7,  # entry points
    "clihelp": 7,  # the CLI's help and did-you-mean (config only)
    "ensemble": 8,  # trains members and students through experiment.train; reads runs through start
    "baseline": 8,  # classical baselines; two-layer trains through experiment.train
    "transfer": 8,  # fine-tuning from a finished run (trains through experiment.train; auto measures via start)
    "tune": 8,  # many runs: the LR range test, hyper-parameter search (trains its trials through experiment)
    "recipe": 9,  # the whole process: checks, lr-find, search, final training, ensemble, baselines, test
    "deploy": 9,  # using a trained run from its directory alone: predict, export, convert (reads ensembles too)
    "cli": 10, "__init__": 10,
    "__main__": 11,  # python -m babysit runs cli
}
"""A unit may import units of a lower rank, and itself; never one of the same rank or above."""


def _unit(module: str) -> str:
    """babysit.train.loop -> train; babysit.start -> start; babysit -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported babysit module, line, under TYPE_CHECKING) for every import in the file."""
    tree = ast.parse(path.read_text())
    out: list[tuple[str, int, bool]] = []
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("babysit"):
            names = [f"{node.module}.{a.name}" for a in node.names]
            out += [(n, node.lineno, id(node) in typing_only) for n in [node.module, *names]]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in typing_only) for a in node.names if a.name.startswith("babysit")]
    return out


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in _modules()}
    assert units - set(LAYERS) == set(), "add the new module or package to LAYERS (and docs/ARCHITECTURE.md)"


def test_imports_point_downstream_only():
    known = _modules()
    wrong = []
    for module, path in known.items():
        src = _unit(module)
        for target, line, _ in _imports(path):
            while target not in known and "." in target:  # `from babysit.x import name`: the module is x
                target = target.rsplit(".", 1)[0]
            dst = _unit(target)
            if target == "babysit" or dst == src:
                continue
            if LAYERS[dst] >= LAYERS[src]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({src}, layer {LAYERS[src]}) imports "
                             f"{target} ({dst}, layer {LAYERS[dst]})")
    assert wrong == []


def test_no_import_circle_between_modules():
    """The module graph (TYPE_CHECKING imports aside, they never run) has no cycle."""
    known = _modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for target, _, typing_only in _imports(path):
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            # a module's own packages are imported before it anyway: an edge to them is no circle
            if not typing_only and target in known and not (module + ".").startswith(target + "."):
                graph[module].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            raise AssertionError(" -> ".join(cycle))


def test_each_module_imports_alone():
    """Every module imports on its own (babysit's modules forgotten between them), so none relies on
    another having been imported first (what a circle hidden by import order does)."""
    code = (
        "import importlib, sys\n"
        f"mods = {sorted(m for m in _modules() if not m.endswith('__main__'))!r}\n"
        "bad = []\n"
        "for m in mods:\n"
        "    for k in [k for k in sys.modules if k == 'babysit' or k.startswith('babysit.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{m}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=PACKAGE.parent)
    assert res.returncode == 0, res.stdout + res.stderr
