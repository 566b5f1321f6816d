"""Loading a run never executes code: a crafted pickle in a run directory is refused, not run.

Checkpoints are safetensors (tensors) with JSON metadata, preprocessing statistics likewise, and
.npz data is read with ``allow_pickle=False``. The payload below creates a marker file when it is
unpickled; each test first proves the payload works, then that babysit refuses it and the marker
never appears.
"""

from __future__ import annotations

import ast
import io
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from babysit.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--train.epochs=1", "--data.limit=100", "--train.progress=false", "--model.spec=conv3-4 relu pool2 fc",
        "--monitor.checks=false", "--monitor.report=false"]


class Payload:
    """Unpickling this opens ``marker`` for writing, i.e. runs code chosen by whoever wrote the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps({"model.0.weight": Payload(marker)})


def torch_save_bytes(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"model.0.weight": Payload(marker)}, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sec")
    assert main(["train", *FAST, "--out", str(d), "--name", "run"]) == 0
    return d / "run"


def test_the_payload_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    pickle.loads(pickle_bytes(marker))
    assert marker.exists()
    marker.unlink()
    with zipfile.ZipFile(io.BytesIO(torch_save_bytes(marker))) as z:  # torch.save = zip around a pickle
        pickle.loads(next(z.read(n) for n in z.namelist() if n.endswith(".pkl")))
    assert marker.exists()


@pytest.mark.parametrize("make", [pickle_bytes, torch_save_bytes], ids=["pickle", "torch.save"])
@pytest.mark.parametrize(("target", "command"), [
    ("checkpoints/last.safetensors", "resume"),
    ("checkpoints/best.safetensors", "eval"),
    ("preprocess.safetensors", "eval"),
    ("preprocess.safetensors", "resume"),
])
def test_crafted_file_in_a_run_directory_is_refused_not_executed(
        make, target: str, command: str, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = tmp_path / "run"
    shutil.copytree(run, victim)
    marker = tmp_path / "pwned"
    (victim / target).write_bytes(make(marker))
    argv = ["train", "--resume", str(victim)] if command == "resume" else ["eval", str(victim)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is damaged (truncated or overwritten) or not a babysit checkpoint" in err and "Traceback" not in err
    assert not marker.exists()


def test_pickled_object_array_in_npz_data_is_refused_not_executed(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1, 0, 1]),
             classes=np.array([Payload(marker), "b"], dtype=object))
    assert main(["data", "info", str(path)]) == 2
    assert "holds an object array, which needs pickle" in capsys.readouterr().err
    assert not marker.exists()


PICKLERS = ("pickle", "cPickle", "dill", "joblib", "cloudpickle")


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _unsafe_calls(tree: ast.AST) -> list[str]:
    """Calls that can unpickle: pickle-like loads, torch.load without weights_only=True, np.load(allow_pickle=True)."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        name, kw = node.func.attr, {k.arg: k.value for k in node.keywords}
        unpickles = owner in PICKLERS and name in ("load", "loads", "Unpickler")
        torch_load = owner == "torch" and name == "load" and not _is_true(kw.get("weights_only"))
        np_load = owner in ("np", "numpy") and name == "load" and _is_true(kw.get("allow_pickle"))
        if unpickles or torch_load or np_load:
            found.append(f"{owner}.{name} at line {node.lineno}")
    return found


def test_no_code_path_in_the_package_can_unpickle() -> None:
    bad = {str(p.relative_to(ROOT)): calls for p in sorted((ROOT / "babysit").rglob("*.py"))
           if (calls := _unsafe_calls(ast.parse(p.read_text())))}
    assert bad == {}
    assert _unsafe_calls(ast.parse("torch.load(f)\npickle.loads(b)\nnp.load(f, allow_pickle=True)")) == [
        "torch.load at line 1", "pickle.loads at line 2", "np.load at line 3"]
    assert _unsafe_calls(ast.parse("torch.load(f, weights_only=True)\nnp.load(f, allow_pickle=False)")) == []
