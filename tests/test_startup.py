"""Start-up: `babysit --help` and argument mistakes import no heavy library; lazy exports; --version.

Each check that looks at ``sys.modules`` runs in a fresh interpreter, since this one has long imported
torch for the other tests. They assert on the modules loaded, never on time.
"""

import importlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import babysit
from babysit.lazy import exports_of

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "kornia", "matplotlib", "sklearn", "scipy", "PIL", "tensorboard")
PACKAGES = ("babysit", "babysit.data", "babysit.models", "babysit.monitor", "babysit.review")


def fresh(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args, "-c", code] if code else [sys.executable, *args],
                          capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)


HELP_EVERYTHING = """
import contextlib, io, json, sys
from babysit.cli import main, make_parser

def walk(parser, path):
    yield path
    for name, sub in parser.commands.items():
        yield from walk(sub, [*path, name])

paths = list(walk(make_parser(), []))
shown = 0
for args in [[*p, "--help"] for p in paths] + [["--version"], ["train", "--epochs", "3"], ["train", "--optim.lrr=1"],
                                               ["train", "--optim.lr=abc"], ["trian"], ["data", "show", "x", "--frob"]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:
            code = e.code
    shown += "usage: babysit" in out.getvalue()
    print(json.dumps([args, code, err.getvalue()]), file=sys.stderr)
print(json.dumps({"commands": len(paths), "helps": shown, "modules": sorted(sys.modules)}))
"""


def test_help_and_argument_mistakes_import_no_heavy_library():
    res = fresh(HELP_EVERYTHING)
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout)
    assert seen["commands"] >= 15 and seen["helps"] == seen["commands"]  # every (sub-)command printed its help
    answers = [json.loads(line) for line in res.stderr.splitlines()]
    assert all(code == 2 and err.startswith("babysit: error: ") for args, code, err in answers[-5:])
    loaded = {name.split(".")[0] for name in seen["modules"]}
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    assert "numpy" not in loaded


def test_import_babysit_alone_imports_no_torch():
    res = fresh("import sys, babysit; print(sorted({m.split('.')[0] for m in sys.modules}))")
    assert res.returncode == 0, res.stderr
    assert "babysit" in res.stdout and "'torch'" not in res.stdout and "'sklearn'" not in res.stdout


def test_digits_file_is_found_without_importing_sklearn():
    res = fresh("import sys; from babysit.data.locate import find_dataset; p = find_dataset('digits'); "
                "print(p.name, 'sklearn' in sys.modules)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["digits.csv.gz", "False"]


@pytest.mark.parametrize("package", PACKAGES)
def test_lazy_exports_match_all_and_resolve(package):
    module = importlib.import_module(package)
    table = exports_of(module.__file__)
    assert sorted(table) == sorted(module.__all__)
    for name in module.__all__:
        value = getattr(module, name)
        where, original = table[name]
        assert value is getattr(importlib.import_module(where), original), name
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        module.nonesuch  # noqa: B018


def test_exported_names_win_over_submodules_whatever_the_import_order():
    # babysit.train, babysit.models.summary and babysit.monitor.gradcheck are both a submodule and an exported
    # function; with eager imports the function won, and it must still, even when the submodule comes first.
    code = ("from babysit.train.loop import fit; import babysit.models.summary, babysit.monitor.gradcheck; "
            "import babysit, babysit.models, babysit.monitor; "
            "print(babysit.train.__module__, babysit.models.summary.__module__, babysit.monitor.gradcheck.__module__, "
            "babysit.fit is fit)")
    res = fresh(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["babysit.experiment", "babysit.models.summary", "babysit.monitor.gradcheck", "True"]
    from babysit.experiment import train

    assert babysit.train is train


def test_version_is_one_number_everywhere():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert babysit.__version__ == declared
    res = fresh("", "-m", "babysit", "--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"babysit {declared}\n"


def test_python_dash_m_babysit_runs_the_cli():
    res = fresh("", "-m", "babysit", "schedule")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("schedules: constant, step,")
    res = fresh("", "-m", "babysit", "trian")
    assert res.returncode == 2
    assert res.stderr == ("babysit: error: unknown command 'trian'; `babysit --help` lists the commands; "
                          "did you mean `babysit train`?\n")
