"""The run directory is the wall between training and reviewing a run (issue 10, item 2).

(a) Only babysit/rundir.py spells the name of a run file or folder; everyone else asks ``RunDir``
    (``run.meta``, ``run.layers``, ...). (b) babysit.review imports nothing of training, not even under
    TYPE_CHECKING. (c) Importing babysit.review and building a report from a run directory, in a fresh
    interpreter, loads no module of babysit.train or babysit.monitor.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from babysit.rundir import EnsembleDir, RunDir

PACKAGE = Path(__file__).resolve().parents[1] / "babysit"

LAYOUT = RunDir.layout()
WHOLE = set(LAYOUT.values()) | {rel.split("/")[0] for rel in LAYOUT.values()} | set(EnsembleDir.layout().values())
"""Spelled anywhere, these name a run entry: config.toml, stats, stats/layers.json, checkpoints/last.safetensors ..."""
NESTED = {rel.rsplit("/", 1)[1] for rel in LAYOUT.values() if "/" in rel}
"""Names inside a run folder (layers.json, last.safetensors): a run entry when joined onto a path with ``/``.
Alone they may name something else (`babysit augment preview --out augment.png` writes to the current folder)."""

REVIEW_MAY_NOT_IMPORT = ("babysit.train", "babysit.monitor", "babysit.experiment", "babysit.tune", "babysit.cli",
                         "babysit.start", "babysit.commands")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that stand alone as statements: docstrings and attribute docstrings."""
    return {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}


def _names_run_entry(value: str, joined: bool) -> bool:
    if any(value == name or value.endswith("/" + name) for name in WHOLE):
        return True
    return joined and value.strip("/") in NESTED


def run_file_names(source: str) -> list[tuple[int, str]]:
    """(line, literal) for every string literal in ``source`` that spells a run file's or folder's name."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    joined = {id(side) for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)
              for side in (n.left, n.right)}
    joined |= {id(a) for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr in ("joinpath", "with_name") for a in n.args}
    hits = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in skip and _names_run_entry(n.value, id(n) in joined)]
    return [(n.lineno, n.value) for n in sorted(hits, key=lambda n: (n.lineno, n.col_offset))]


def test_the_layout_declares_every_run_file():
    assert {"config", "spec", "meta", "result", "history", "preprocess", "checkpoints", "last", "best", "checks",
            "findings", "report", "stats", "layers", "histograms", "filters", "filters_initial", "confusion",
            "confused", "augment", "events", "best_ema", "swa", "snapshots", "epochs", "teacher"} <= set(LAYOUT)
    assert EnsembleDir.layout() == {"ensemble": "ensemble.json", "figure": "ensemble.png"}
    run = RunDir("/r")
    assert run.last == Path("/r/checkpoints/last.safetensors") and run.confused == Path("/r/stats/confused.npz")
    assert run.events == Path("/r/events") and RunDir.of(run) is run and RunDir.of("/r").path == Path("/r")


def test_the_scan_finds_spelled_names():
    src = ('"""Reads RUN/meta.json."""\n'
           'a = run.path / "checks.json"\n'
           'b = run.path / "stats" / "augment.png"\n'
           'c = f"{run.path / \'findings.json\'}"\n'
           'd = base / "last.safetensors"\n'
           'e = p.add_argument("--out", default="augment.png", help="write RUN/report.html now")\n'
           'f = "stats/layers.json"\n')
    assert run_file_names(src) == [(2, "checks.json"), (3, "stats"), (3, "augment.png"), (4, "findings.json"),
                                   (5, "last.safetensors"), (7, "stats/layers.json")]


def test_only_rundir_spells_run_file_names():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "rundir.py":
            continue
        found += [f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r}"
                  for line, value in run_file_names(path.read_text())]
    assert found == [], "ask RunDir for these paths (add a property in babysit/rundir.py for a new file):\n" + \
        "\n".join(found)


def babysit_imports(source: str, package: str = "babysit.review") -> list[tuple[int, str]]:
    """(line, module) of every babysit import in the source of a module of ``package``: top level, in
    functions and under TYPE_CHECKING; relative imports resolved."""
    out: list[tuple[int, str]] = []
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:  # relative: from .x / from ..train
                parent = package.rsplit(".", n.level - 1)[0] if n.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            if base == "babysit" or base.startswith("babysit."):
                out += [(n.lineno, f"{base}.{a.name}") for a in n.names]
        elif isinstance(n, ast.Import):
            out += [(n.lineno, a.name) for a in n.names if a.name == "babysit" or a.name.startswith("babysit.")]
    return out


def test_review_imports_nothing_of_training():
    review = sorted((PACKAGE / "review").glob("*.py"))
    assert len(review) >= 6
    wrong = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
             for path in review for line, module in babysit_imports(path.read_text())
             if module == "babysit" or module.startswith(REVIEW_MAY_NOT_IMPORT)]
    assert wrong == []


def test_review_import_check_can_fail():
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from babysit.train.loop import fit\n"
           "def f():\n    import babysit.monitor.probes\n    from ..tune import lr_find\n    from .stats import x\n")
    found = babysit_imports(src)
    assert found == [(3, "babysit.train.loop.fit"), (5, "babysit.monitor.probes"), (6, "babysit.tune.lr_find"),
                     (7, "babysit.review.stats.x")]
    assert [m for _, m in found if m.startswith(REVIEW_MAY_NOT_IMPORT)] == [m for _, m in found[:3]]


def _small_run(path: Path) -> RunDir:
    """A run directory as training leaves it, written by hand: config, meta, history, layer records."""
    run = RunDir(path)
    run.stats.mkdir(parents=True)
    run.config.write_text("[optim]\nlr = 0.1\n[data]\npreprocess = \"channel\"\n")
    run.meta.write_text(json.dumps({"data": "digits", "classes": [str(i) for i in range(10)]}))
    steps = [{"kind": "step", "step": s, "epoch": 1 + s // 20, "loss": 2.3 - 0.02 * s, "lr": 0.1} for s in range(1, 41)]
    epochs = [{"kind": "epoch", "epoch": e, "step": 20 * e, "train_acc": 0.5 + 0.1 * e, "val_acc": 0.5 + 0.08 * e}
              for e in (1, 2)]
    run.history.write_text("".join(json.dumps(r) + "\n" for r in steps + epochs))
    layers = {"0": {"kind": "conv", "update_ratio": 1e-3, "act_std": 1.0, "grad_norm": 0.1}}
    run.layers.write_text(json.dumps({"records": [{"step": s, "lr": 0.1, "layers": layers} for s in (1, 10, 20)]}))
    return run


def test_importing_review_loads_nothing_of_training():
    res = subprocess.run([sys.executable, "-c", "import sys, babysit.review.report; "
                          "print(sorted(m for m in sys.modules if m.startswith('babysit')))"],
                         capture_output=True, text=True, timeout=300, cwd=PACKAGE.parent)
    assert res.returncode == 0, res.stderr
    loaded = ast.literal_eval(res.stdout.strip())
    assert "babysit.review.report" in loaded
    assert [m for m in loaded if m.startswith(REVIEW_MAY_NOT_IMPORT)] == []


def test_a_report_is_built_from_the_run_directory_alone(tmp_path):
    """In a fresh interpreter: write a report of a hand-made run, and list the babysit modules it loaded."""
    run = _small_run(tmp_path / "run")
    code = (f"import sys, babysit.review as R; out = R.write_report({str(run.path)!r}); "
            "print(sorted(m for m in sys.modules if m.startswith('babysit')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=PACKAGE.parent)
    assert res.returncode == 0, res.stderr
    loaded = ast.literal_eval(res.stdout.strip().splitlines()[-1])
    assert "babysit.review.report" in loaded and "babysit.review.plots" in loaded  # the figures were drawn
    assert [m for m in loaded if m.startswith(REVIEW_MAY_NOT_IMPORT)] == []
    page = run.report.read_text()
    assert '<img alt="loss curve"' in page and '<img alt="update/weight ratio"' in page
    assert run.findings.is_file()
