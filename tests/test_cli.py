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


@pytest.fixture(scope="module")
def augmented(tmp_path_factory):
    """A digits run trained with augmentation (and a flip that the config check warns about)."""
    d = tmp_path_factory.mktemp("aug")
    res = run_cli(["train", *FAST, "--augment.pipeline=flip-h,translate-1,cutout-2,mixup-0.2", "--out", str(d),
                   "--name", "a"], d)
    assert res.returncode == 0, res.stderr
    return d / "a", res


def test_train_with_augmentation_says_so_and_warns_about_flipped_digits(augmented):
    run, res = augmented
    assert "augmentation, training batches only: Augment(flip-h, translate-1, cutout-2, mixup-0.2" in res.stdout
    assert "warning: flip-h on digits: a mirrored digit is not the same digit" in res.stdout
    assert 'pipeline = [\n    "flip-h",' in (run / "config.toml").read_text()
    page = (run / "report.html").read_text()
    assert "augmentation (training batches only): <code>flip-h, translate-1, cutout-2, mixup-0.2</code>" in page
    assert 'alt="augmented training images"' in page and "channel-mean-std" in page
    assert json.loads((run / "result.json").read_text())["test_acc"] > 0.3


def test_eval_with_tta_reports_both_accuracies(augmented, capsys):
    run, _ = augmented
    assert main(["eval", str(run), "--tta", "flip,translate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("test: accuracy ")
    assert lines[1].startswith("test with test-time augmentation (flip,translate: 10 views averaged): accuracy ")
    plain, averaged = float(lines[0].split()[2]), float(lines[1].split("accuracy ")[1].split()[0])
    delta = float(lines[1].split("), ")[1].split(";")[0])
    assert delta == pytest.approx(averaged - plain, abs=2e-4)  # each printed to 4 places


def test_augment_preview_and_data_show_write_pictures(tmp_path, capsys):
    from PIL import Image

    assert main(["augment", "preview", "--data", "digits", "--out", str(tmp_path / "aug.png"), "--count", "4",
                 "--draws", "3", "--augment.pipeline=rotate-10,noise-0.05"]) == 0
    assert "first column: original, then 3 training draws" in capsys.readouterr().out
    with Image.open(tmp_path / "aug.png") as img:
        assert img.width > img.height > 0  # 4 rows of 1 + 3 cells
    assert main(["data", "show", "digits", "--preprocess", "zca", "--out", str(tmp_path / "zca.png")]) == 0
    assert "zca: 64 dims" in capsys.readouterr().out
    assert (tmp_path / "zca.png").stat().st_size > 0
    assert main(["augment", "list"]) == 0
    assert "cutmix" in capsys.readouterr().out


def test_training_with_patch_whitening_and_pca(tmp_path):
    res = run_cli(["train", *FAST, "--data.preprocess=patch-white", "--out", str(tmp_path), "--name", "pw"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "pw" / "result.json").read_text())["test_acc"] > 0.5
    res = run_cli(["train", *FAST, "--data.preprocess=pca-white", "--data.pca_components=20",
                   "--model.spec=fc-64 relu fc", "--out", str(tmp_path), "--name", "pca"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert main(["eval", str(tmp_path / "pca")]) == 0


def test_augmented_report_loads_in_headless_chromium(augmented, tmp_path):
    from babysit.monitor.htmlcheck import check_html, find_chromium

    if find_chromium() is None:
        pytest.skip("chromium is not installed (make test installs it where apt-get can)")
    run, _ = augmented
    result = check_html(run / "report.html", tmp_path / "shot.png")
    assert result.console == [], result.console
    assert result.distinct_colours > 50
