"""`babysit baseline` and babysit.baseline(name, cfg): result directories, the table, and user mistakes (exit 2)."""

from __future__ import annotations

import csv
import json

import pytest

import babysit
from babysit.cli import main
from babysit.config import RunConfig, apply_overrides, load_toml
from babysit.errors import BabysitError
from babysit.rundir import RunDir

QUIET = {"train.progress": "false", "train.threads": "1"}
TINY = ["--data.limit=300", "--train.epochs=1", "--baseline.cv_size=200", "--baseline.k=1,3", "--baseline.folds=2",
        "--baseline.l2=0", "--baseline.hidden=20", "--monitor.checks=false", "--monitor.report=false",
        "--monitor.stats_every=0", "--train.threads=1", "--train.progress=false"]


def test_knn_from_python_writes_its_result_directory(tmp_path, cache_home):
    cfg = apply_overrides(RunConfig(), {**QUIET, "baseline.cv_size": "300", "baseline.k": "1,3", "baseline.folds": "3"})
    res = babysit.baseline("knn", cfg, out=tmp_path)
    assert isinstance(res, babysit.BaselineResult) and res.name == "knn" and res.data == "digits"
    assert res.chosen["k"] in (1, 3) and res.chosen["distance"] in ("l1", "l2")
    assert res.test_acc > 0.95 and res.val_acc > 0.95 and res.seconds > 0  # kNN on 8 x 8 digits: ~98 %
    run = RunDir(res.path)
    assert res.path.parent == tmp_path and res.path.name.startswith("baseline-knn-digits-")
    assert not run.checkpoints.exists()  # no weights to keep
    saved = json.loads(run.baseline.read_text())
    assert saved["test_acc"] == res.test_acc and saved["chosen"] == res.chosen and saved["cv"]["folds"] == 3
    assert saved["cv"]["images"] == 300
    rows = list(csv.DictReader(run.cv_table.open()))
    assert len(rows) == 2 * 2 * 3 and set(rows[0]) == {"distance", "k", "fold", "accuracy"}
    mean = sum(float(r["accuracy"]) for r in rows if r["distance"] == res.chosen["distance"]
               and int(r["k"]) == res.chosen["k"]) / 3
    assert mean == pytest.approx(res.cv.mean(res.chosen["distance"])[res.cv.ks.index(res.chosen["k"])])
    assert run.cv_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_toml(run.config).baseline.k == (1, 3)


def test_linear_on_hog_features_from_python(tmp_path, cache_home):
    cfg = apply_overrides(RunConfig(), {**QUIET, "baseline.features": "hog", "baseline.l2": "0",
                                        "train.epochs": "2"})
    res = babysit.baseline("linear", cfg, out=tmp_path, dir_name="lin")
    assert res.path == tmp_path / "lin" and res.chosen == {"loss": "svm", "lambda": 0.0} and res.features == "hog"
    assert res.test_acc > 0.7
    assert json.loads(RunDir(res.path).baseline.read_text())["features"] == "hog"
    assert list((cache_home / "babysit" / "features").glob("hog-*.safetensors"))
    with pytest.raises(BabysitError, match="already holds a result"):
        babysit.baseline("linear", cfg, out=tmp_path, dir_name="lin")


def test_all_prints_one_table(tmp_path, capsys, cache_home):
    assert main(["baseline", "all", "--out", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out
    table = out[out.index("baseline   features"):].splitlines()
    assert [line.split()[0] for line in table[2:]] == ["knn", "linear", "two-layer"]
    dirs = sorted(p.name.rsplit("-", 3)[0] for p in tmp_path.iterdir())
    assert dirs == ["baseline-knn", "baseline-linear", "baseline-two-layer"]
    two = next(tmp_path.glob("baseline-two-layer-*"))
    assert RunDir(two).result.is_file() and RunDir(two).baseline.is_file()  # a training run plus the baseline file
    assert (RunDir(two).spec.read_text().strip()) == "fc-20 relu fc"


@pytest.mark.parametrize("args,message", [
    (["baseline", "knnn"], "unknown baseline 'knnn'; choose one of knn, linear, two-layer (or all: every one, one "
                           "table); did you mean 'knn'?"),
    (["baseline", "knn", "--baseline.distance=l1,l3"], "unknown baseline.distance 'l3'; choose one of l1, l2."),
    (["baseline", "linear", "--baseline.features=hogg"], "unknown baseline.features 'hogg'; choose one of pixels, "
                                                         "color-hist, hog, bovw, pca; did you mean 'hog'?"),
    (["baseline", "linear", "--baseline.loss=hinge"], "baseline.loss must be one of svm, softmax, got 'hinge'."),
    (["baseline", "knn", "--baseline.k=0,3"], "baseline.k must be numbers of neighbours >= 1, got (0, 3)"),
    (["baseline", "knn", "--baseline.folds=1"], "baseline.folds must be at least 2"),
    (["baseline", "all", "--name=x"], "--name names one result directory"),
    (["baseline", "knn", "--baseline.kk=3"], "did you mean --baseline.k?"),
])
def test_mistakes_exit_2_with_one_sentence(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("babysit: error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # refused before any directory is made
