"""The CLI end to end in a temporary directory, on the bundled digits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from babysit.cli import main

FAST = ["--train.epochs=2", "--data.limit=300", "--train.progress=false",
        "--model.spec=conv3-8 relu pool2 fc"]


def run_cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-m", "babysit.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    res = run_cli(["train", *FAST, "--out", str(d), "--name", "r1"], d)
    assert res.returncode == 0, res.stderr
    return d / "r1", res


def test_train_writes_a_run_directory(trained):
    run, res = trained
    assert "Finished epoch 2 / 2: cost " in res.stdout
    for name in ("config.toml", "spec.txt", "meta.json", "history.jsonl", "preprocess.safetensors",
                 "result.json", "checkpoints/last.safetensors", "checkpoints/best.safetensors"):
        assert (run / name).is_file(), name
    assert "epochs = 2" in (run / "config.toml").read_text()
    assert (run / "spec.txt").read_text().strip() == "conv3-8 relu pool2 fc"
    kinds = [json.loads(line)["kind"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert kinds.count("epoch") == 2 and kinds.count("step") > 0
    assert json.loads((run / "result.json").read_text())["test_acc"] > 0.5


def test_eval_prints_accuracy_and_confusion(trained, capsys):
    run, _ = trained
    assert main(["eval", str(run), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("val: accuracy ") and "true \\ pred" in out
    assert len(out.strip().splitlines()) == 2 + 10  # header lines + one row per class


def test_resume_a_finished_run_changes_nothing(trained):
    run, _ = trained
    before = (run / "checkpoints" / "best.safetensors").read_bytes()
    res = run_cli(["train", "--resume", str(run)], run.parent)
    assert res.returncode == 0, res.stderr
    assert (run / "checkpoints" / "best.safetensors").read_bytes() == before


@pytest.mark.parametrize("args,phrase", [
    (["train", "--optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
    (["train", "--optimizer.lr=0.1"], "unknown config section 'optimizer'"),
    (["train", "--optim.lr=abc"], "optim.lr must be a float"),
    (["train", "--data.name=nosuchset"], "nosuchset"),
    (["train", "--model.spec=conv3-8 relu bogus fc", "--data.limit=50"], "bogus"),
    (["train", "--resume", "no/such/run"], "not a babysit run directory"),
    (["eval", "no/such/run"], "not a babysit run directory"),
    (["summary", "conv3-5-s3-p0", "--input", "1x7x7"], "(7-3)/3+1 = 2.33 is not an integer"),
    (["summary", "fc", "--input", "7x7"], "--input must look like CxHxW"),
    (["data", "info", "no/such/folder"], "no/such/folder"),
])
def test_user_mistakes_exit_2_with_one_sentence(tmp_path, args, phrase):
    res = run_cli(args, tmp_path)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert phrase in res.stderr
    assert res.stderr.startswith("babysit: error: ")


def test_eval_on_a_missing_split(trained):
    run, _ = trained
    res = run_cli(["eval", str(run), "--split", "holdout"], run.parent)
    assert res.returncode == 2 and "there is no split 'holdout'" in res.stderr


def test_help_lists_every_option_with_default(tmp_path):
    res = run_cli(["train", "--help"], tmp_path)
    assert res.returncode == 0
    from babysit.config import option_table
    for key, _, _ in option_table():
        assert f"--{key}" in res.stdout
    assert "(default: 0.05)" in res.stdout


def test_summary_prints_the_table(capsys):
    assert main(["summary", "conv5-5-p0", "--input", "3x32x32", "--classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "28x28x5" in out
