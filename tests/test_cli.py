"""The CLI end to end in a temporary directory, on the bundled digits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from babysit.cli import main
from babysit.clihelp import option_help
from babysit.errors import BabysitError

FAST = ["--train.epochs=2", "--data.limit=300", "--train.progress=false",
        "--model.spec=conv3-8 relu pool2 fc", "--optim.lr=0.05"]  # no BN: the default lr 0.2 is for BN nets


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
    # the confusion matrix (header + one row per class), then precision / recall / F1 (header, rows, macro avg)
    assert len(out.strip().splitlines()) == 2 + 10 + 1 + 10 + 1 and ", top-5 accuracy " in out


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
    assert "(default: 0.2)" in res.stdout


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
    warning, *lines = capsys.readouterr().out.splitlines()
    assert warning.startswith("warning: test-time augmentation: flip-h on digits: a mirrored digit")  # as train says
    assert lines[0].startswith("test: accuracy ")
    assert lines[1].startswith("test with test-time augmentation (flip,translate: 10 views averaged): accuracy ")
    plain, averaged = float(lines[0].split()[2]), float(lines[1].split("accuracy ")[1].split()[0])
    delta = float(lines[1].split("), ")[1].split(";")[0])
    assert delta == pytest.approx(averaged - plain, abs=2e-4)  # each printed to 4 places
    assert main(["eval", str(run), "--tta", "translate"]) == 0
    assert "warning" not in capsys.readouterr().out  # a shift keeps a digit's meaning


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
    quick = [*FAST, "--monitor.report=false", "--out", str(tmp_path)]  # in process; the report is tested elsewhere
    assert main(["train", *quick, "--data.preprocess=patch-white", "--name", "pw"]) == 0
    assert json.loads((tmp_path / "pw" / "result.json").read_text())["test_acc"] > 0.5
    assert main(["train", *quick, "--data.preprocess=pca-white", "--data.pca_components=20",
                 "--model.spec=fc-64 relu fc", "--name", "pca"]) == 0
    assert main(["eval", str(tmp_path / "pca")]) == 0


def test_augmented_report_loads_in_headless_chromium(augmented, tmp_path):
    from babysit.review.htmlcheck import check_html, find_chromium

    if find_chromium() is None:
        pytest.skip("chromium is not installed (make test installs it where apt-get can)")
    run, _ = augmented
    result = check_html(run / "report.html", tmp_path / "shot.png")
    assert result.console == [], result.console
    assert result.distinct_colours > 50


# --- help that explains, and the nearest name for a misspelt one -------------------------------------

def registry_names(module: str, *attrs: str) -> list[str]:
    """The names a registry accepts, sorted: a Registry's ``.names()``, else a dict's keys, a ``list_...()``
    function's result or a tuple of names (the first of ``attrs`` the module has)."""
    import importlib

    mod = importlib.import_module(module)
    for attr in attrs:
        obj = getattr(mod, attr, None)
        if obj is None:
            continue
        if hasattr(obj, "names"):
            return sorted(obj.names())
        return sorted(obj() if callable(obj) else obj)
    raise AssertionError(f"{module} has none of {attrs}")


def comment_choices(meaning: str) -> list[str]:
    """``"update rule: sgd | adam (Kingma) | adamw"`` -> ``["adam", "adamw", "sgd"]``."""
    import re

    listed = re.sub(r"\([^)]*\)", "", meaning.rpartition(": ")[2])
    return sorted(item.split()[0] for item in listed.split("|"))


CHOICES = {
    "optim.name": ("babysit.train.optim", "OPTIMIZERS"),
    "schedule.name": ("babysit.train.schedules", "SCHEDULES", "list_schedules"),
    "loss.name": ("babysit.train.losses", "LOSSES"),
    "data.preprocess": ("babysit.data.preprocess", "KINDS"),
    "model.init": ("babysit.models.init", "SCHEMES"),
    "augment.fill": ("babysit.config", "FILL_MODES"),
    "data.stream": ("babysit.config", "STREAM_MODES"),
    "train.precision": ("babysit.config", "PRECISIONS"),
    "train.compile": ("babysit.config", "COMPILE_MODES"),
    "train.monitor": ("babysit.config", "MONITORS"),
    "baseline.distance": ("babysit.baseline.knn", "DISTANCES"),
    "baseline.features": ("babysit.baseline.features", "FEATURES"),
    "baseline.loss": ("babysit.baseline.linear", "LINEAR_LOSSES"),
    "search.sampler": ("babysit.config", "SAMPLERS"),
    "search.pruner": ("babysit.config", "PRUNERS"),
    "recipe.baselines": ("babysit.baseline.run", "BASELINES"),
    "transfer.strategy": ("babysit.config", "STRATEGIES"),
    "transfer.unfreeze": ("babysit.config", "UNFREEZE"),
}


def test_every_option_has_a_meaning_in_help(capsys):
    from babysit.config import option_table

    meanings = option_help()
    assert [k for k, _, _ in option_table()] == list(meanings)
    assert all(len(m) >= 20 and "#" not in m for m in meanings.values()), meanings  # a sentence, continuations joined
    with pytest.raises(SystemExit) as stop:
        main(["train", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for key, meaning in meanings.items():
        assert f"--{key} " in text and f"{meaning} (default: " in text, key
    assert ("--optim.name STR update rule: sgd | adagrad | rmsprop | adam | almost-adam | adamw (default: 'sgd')"
            in text)
    assert "--optim.lr FLOAT learning rate per step, before the schedule (onecycle: its peak) (default: 0.2)" in text


def test_choice_options_list_exactly_the_names_the_code_accepts():
    meanings = option_help()
    assert {k for k, m in meanings.items() if " | " in m} == {*CHOICES, "schedule.unit"}
    for key, (module, *attrs) in CHOICES.items():
        assert comment_choices(meanings[key]) == registry_names(module, *attrs), key
    # schedule.unit has no table: the listed units pass validation and a near miss does not
    assert comment_choices(meanings["schedule.unit"]) == ["epoch", "step"]
    from babysit import config as C

    for unit in ("epoch", "step"):
        assert C.apply_overrides(C.RunConfig(), {"schedule.unit": unit}).schedule.unit == unit
    with pytest.raises(BabysitError, match="schedule.unit must be epoch or step"):
        C.apply_overrides(C.RunConfig(), {"schedule.unit": "steps"})


@pytest.mark.parametrize("args,message", [
    (["train", "--epochs", "3"], "unknown option '--epochs'; run `babysit train --help` for the options; "
                                 "did you mean --train.epochs?"),
    (["train", "--optim.lrr=0.1"], "unknown config key 'optim.lrr'; keys in [optim] are: name, lr, momentum, "
                                   "nesterov, betas, decay_rate, eps, weight_decay, decoupled, decay_bias, clip_norm, "
                                   "layer_decay; did you mean --optim.lr?"),
    (["check", "--optm.lr=0.1"], "unknown config section 'optm' in 'optm.lr'; sections are: data, augment, model, "
                                 "optim, schedule, train, checkpoint, loss, regularize, lr_find, monitor, distill, "
                                 "baseline, search, recipe, transfer; did you mean --optim.lr?"),
    (["data", "show", "digits", "--confg", "x.toml"], "unknown option '--confg'; run `babysit data show --help` for "
                                                       "the options; did you mean --config?"),
    (["summary", "--batch_size", "4"], "did you mean --batch-size?"),
    (["train", "--frobnicate"], "unknown option '--frobnicate'; run `babysit train --help` for the options."),
    (["trian", "--train.epochs=1"], "unknown command 'trian'; `babysit --help` lists the commands; "
                                    "did you mean `babysit train`?"),
    (["data", "inf", "digits"], "unknown command 'inf'; `babysit data --help` lists the commands; "
                                "did you mean `babysit data info`?"),
    (["frobnicate"], "unknown command 'frobnicate'; `babysit --help` lists the commands."),
])
def test_misspelt_names_get_one_line_with_the_nearest(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.endswith(message + "\n") and err.startswith("babysit: error: ")
    assert err.count("\n") == 1


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    from babysit import __version__

    assert capsys.readouterr().out == f"babysit {__version__}\n"
