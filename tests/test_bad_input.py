"""Every bad input gives one sentence (what is wrong and how to fix it), exit code 2 and no traceback.

Driven through the real CLI in-process (``babysit.cli.main``). Decisions the table pins down:
non-image files among images are skipped and counted (``data info`` shows them), a file with an
image extension that does not decode is an error; mixed grayscale / RGB / RGBA / palette images
are converted to one channel count (RGB when any is colour), not an error.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from babysit import config as C
from babysit.cli import main
from babysit.errors import BabysitError
from babysit.models.build import build

FAST = ["--train.epochs=1", "--data.limit=100", "--train.progress=false", "--model.spec=conv3-4 relu pool2 fc",
        "--monitor.checks=false", "--monitor.report=false"]


def _png(path: Path, size: tuple[int, int] = (8, 8), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128 if mode in ("L", "P") else (10, 200, 30, 255)[: len(mode)]).save(path)


def _folder(root: Path, classes: dict[str, int]) -> Path:
    for cls, n in classes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _png(root / cls / f"{i}.png")
    return root


def _npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bad data files, bad configs and damaged run directories, made once for the whole table."""
    d = tmp_path_factory.mktemp("bad")
    x, y = np.zeros((20, 8, 8), np.uint8), np.arange(20) % 2
    p: dict[str, Path] = {"d": d}
    (d / "empty").mkdir()
    p["empty"] = d / "empty"
    p["no_images"] = _folder(d / "no_images", {"a": 2})
    (d / "no_images" / "b").mkdir()
    p["one_class_dir"] = _folder(d / "one_class_dir", {"a": 3})
    p["corrupt"] = _folder(d / "corrupt", {"a": 2, "b": 2})
    (d / "corrupt" / "b" / "2.png").write_bytes((d / "corrupt" / "b" / "1.png").read_bytes()[:20])
    p["fake_png"] = _folder(d / "fake_png", {"a": 2, "b": 2})
    (d / "fake_png" / "a" / "notes.png").write_text("not an image")
    p["sizes"] = _folder(d / "sizes", {"a": 2, "b": 1})
    _png(d / "sizes" / "b" / "big.png", (12, 9))
    p["loose"] = d / "loose"
    _png(d / "loose" / "0.png")
    p["labels_range"] = _npz(d / "labels_range.npz", x=x, y=y + 5, classes=np.array(["a", "b"]))
    p["labels_float"] = _npz(d / "labels_float.npz", x=x, y=y + 0.5)
    p["labels_str"] = _npz(d / "labels_str.npz", x=x, y=np.array(["a", "b"] * 10))
    p["labels_negative"] = _npz(d / "labels_negative.npz", x=x, y=y - 1)
    p["length"] = _npz(d / "length.npz", x=x, y=y[:15])
    p["nan"] = _npz(d / "nan.npz", x=np.full((20, 8, 8), np.nan, np.float32), y=y)
    p["one_class_npz"] = _npz(d / "one_class_npz.npz", x=x, y=np.zeros(20, np.int64))
    p["no_x"] = _npz(d / "no_x.npz", images=x, y=y)
    p["x_ndim"] = _npz(d / "x_ndim.npz", x=np.zeros((20, 64), np.uint8), y=y)
    p["x_range"] = _npz(d / "x_range.npz", x=np.full((20, 8, 8), 300.0), y=y)
    p["objects"] = d / "objects.npz"
    np.savez(p["objects"], x=x, y=y, classes=np.array([{"a": 1}, None], dtype=object))
    p["not_zip"] = d / "not_zip.npz"
    p["not_zip"].write_text("x,y\n1,2\n")
    p["csv"] = d / "data.csv"
    p["csv"].write_text("x,y\n")
    p["txt"] = d / "data.txt"
    p["txt"].write_text("x,y\n")
    p["a_file"] = d / "a_file"
    p["a_file"].write_text("")
    for name, text in {"bad_toml": "[optim\nlr=", "unknown_section": "[optimizer]\nlr = 0.1\n",
                       "unknown_key": "[optim]\nlrr = 0.1\n", "wrong_type": "[train]\nepochs = 'ten'\n",
                       "not_table": "lr = 0.1\n", "bad_value": "[optim]\nlr = -1.0\n",
                       "list_value": "[train]\nbatch_size = [64]\n", "aug_number": "[augment]\npipeline = 3\n"}.items():
        p[name] = d / f"{name}.toml"
        p[name].write_text(text)
    out = d / "runs"
    assert main(["train", *FAST, "--out", str(out), "--name", "base"]) == 0
    assert main(["train", *FAST, "--model.spec=conv3-6 relu pool2 fc", "--out", str(out), "--name", "other"]) == 0
    base = p["base"] = out / "base"
    for name in ("truncated", "spec_edited", "batch_edited", "other_arch", "toml_broken", "no_weights",
                 "best_is_last", "pickled_meta"):
        p[name] = out / name
        shutil.copytree(base, p[name])
    last = Path("checkpoints/last.safetensors")
    (p["truncated"] / last).write_bytes((base / last).read_bytes()[:500])
    toml = (base / "config.toml").read_text()
    (p["spec_edited"] / "config.toml").write_text(toml.replace("conv3-4 relu pool2 fc", "conv3-16 relu pool2 fc"))
    (p["batch_edited"] / "config.toml").write_text(toml.replace("batch_size = 32", "batch_size = 16"))  # the auto batch
    shutil.copyfile(out / "other" / last, p["other_arch"] / last)
    (p["toml_broken"] / "config.toml").write_text(toml[: len(toml) // 2] + "\n[[[")
    (p["no_weights"] / last).unlink()
    (p["no_weights"] / "checkpoints" / "best.safetensors").unlink()
    shutil.copyfile(base / "checkpoints" / "best.safetensors", p["best_is_last"] / last)
    (p["pickled_meta"] / "meta.json").write_text("\x80\x04K\x01.")
    p["no_config"] = out / "no_config"
    (p["no_config"] / "checkpoints").mkdir(parents=True)
    return p


# (id, command line with {placeholders} from `paths`, phrase the sentence must contain)
CASES = [
    # data sources
    ("unknown data set", "train --data.name=nosuchset", "'nosuchset' is not a named set"),
    ("data path missing", "train --data.name={d}/missing/folder", "is not a named set"),
    ("data file neither npz nor folder", "train --data.name={txt}", "neither a .npz file, a .csv list nor a folder"),
    ("csv list without its header", "train --data.name={csv}", "first row must be the header path,label"),
    ("empty folder", "data info {empty}", "has no class folders"),
    ("images but no class folders", "data info {loose}", "found 1 images directly in it"),
    ("class folder with no images", "train --data.name={no_images}", "no images"),
    ("one class folder only", "data info {one_class_dir}", "only one class"),
    ("truncated image", "data info {corrupt}", "cannot be decoded"),
    ("text file named .png", "data info {fake_png}", "notes.png cannot be decoded"),
    ("images of different sizes", "train --data.name={sizes}", "pass --data.size=N"),
    ("npz labels out of range", "data info {labels_range}", "y"),
    ("npz non-integer labels", "data info {labels_float}", "y"),
    ("npz string labels", "data info {labels_str}", "y"),
    ("npz negative labels", "data info {labels_negative}", "y"),
    ("npz x/y length mismatch", "train --data.name={length}", "15"),
    ("npz NaN pixels", "data info {nan}", "contains NaN or Inf"),
    ("npz one class only", "data info {one_class_npz}", "class"),
    ("npz without x", "data info {no_x}", "has no array 'x'"),
    ("npz x of wrong shape", "data info {x_ndim}", "has shape (20, 64)"),
    ("npz pixels out of range", "data info {x_range}", "x"),
    ("npz object array", "data info {objects}", "needs pickle"),
    ("npz not a zip", "data info {not_zip}", "is not a .npz (zip) file"),
    ("data info bad channels", "data info digits --channels 2", "channels must be 0 (keep), 1"),
    ("data get unknown set", "data get nosuchset", "nosuchset"),
    # spec
    ("spec unknown token", "train '--model.spec=conv3-8 relu bogus fc'", "unknown token"),
    ("spec bad number", "train '--model.spec=conv3-x8 fc'", "conv3-x8"),
    ("spec empty", "train --model.spec=", "the architecture spec is empty"),
    ("spec impossible geometry", "train '--model.spec=conv3-8 pool16 fc'", "8x8 input"),
    ("spec conv after fc", "train '--model.spec=fc-10 conv3-8 fc'", "fc"),
    ("spec plain fc not last", "train '--model.spec=fc relu fc-10'", "fc"),
    ("spec dropout p = 1", "train '--model.spec=conv3-8 dropout-1 fc'", "dropout probability p must be in [0, 1)"),
    ("spec dropout p > 1", "train '--model.spec=conv3-8 dropout-1.5 fc'", "dropout probability p must be in [0, 1)"),
    ("spec zero channels", "train '--model.spec=conv3-0 fc'", "number of filters K must be at least 1"),
    ("spec zero fc outputs", "train '--model.spec=conv3-4 fc-0 fc'", "fc outputs N must be at least 1"),
    ("spec unclosed group", "train '--model.spec=[conv3-8 relu fc'", "never closed"),
    ("spec repeat zero", "train '--model.spec=[conv3-8 relu]*0 fc'", "repeat count must be at least 1"),
    ("spec no weights", "train --model.spec=relu", "no conv or fc layer"),
    ("summary bad input shape", "summary fc --input 7x7", "--input must look like CxHxW"),
    # config
    ("unknown config section", "train --optimizer.lr=0.1", "unknown config section 'optimizer'"),
    ("unknown config key", "train --optim.lrr=0.1", "unknown config key 'optim.lrr'"),
    ("unknown option", "train --frobnicate", "unknown option '--frobnicate'"),
    ("wrong type float", "train --optim.lr=fast", "optim.lr must be a float"),
    ("wrong type int", "train --train.epochs=2.5", "train.epochs must be a int"),
    ("wrong type bool", "train --optim.nesterov=maybe", "optim.nesterov must be a bool"),
    ("negative lr", "train --optim.lr=-0.1", "optim.lr must be a positive number"),
    ("zero lr", "train --optim.lr=0", "optim.lr must be a positive number"),
    ("nan lr", "train --optim.lr=nan", "optim.lr must be a positive number"),
    ("infinite lr", "train --optim.lr=inf", "optim.lr must be a positive number"),
    ("negative momentum", "train --optim.momentum=-1", "optim.momentum must be >= 0"),
    ("negative batch size", "train --train.batch_size=-1", "train.batch_size must be at least 1 (or 0 for auto)"),
    ("batch larger than data", "train --data.limit=30 --train.batch_size=64", "larger than the 30 training images"),
    ("epochs -1", "train --train.epochs=-1", "train.epochs must be at least 1 (or 0 for auto)"),
    ("checkpoint every 0", "train --checkpoint.every=0", "checkpoint.every must be at least 1"),
    ("val fraction above 1", "train --data.val_fraction=1.5", "data.val_fraction must be between 0 and 1"),
    ("channels 2", "train --data.channels=2", "data.channels must be 0"),
    ("negative seed", "train --train.seed=-1", "train.seed must be in 0 .. 2**32-1"),
    ("unknown device", "train --train.device=tpu", "unknown device 'tpu'"),
    ("unknown preprocessing", "train --data.preprocess=zca2", "unknown preprocessing 'zca2'"),
    ("pca into a conv net", "train --data.preprocess=pca", "data.preprocess=pca turns each image into a vector"),
    ("pca more components than pixels", "train --data.preprocess=pca --data.pca_components=65 "
     "--model.spec=fc-10", "pca_components"),
    ("unknown augmentation", "train --augment.pipeline=flip-h,spin-10", "unknown augmentation 'spin-10'"),
    ("augmentation argument out of range", "train --augment.pipeline=scale-2", "scale-S: zoom by a factor"),
    ("augmentation listed twice", "train --augment.pipeline=rotate-5,rotate-10", "listed twice"),
    ("mixup with the SVM loss", "train --augment.pipeline=mixup-0.2 --loss.name=svm", "cannot take"),
    ("unknown fill mode", "train --augment.fill=mirror", "augment.fill must be one of"),
    ("fill value beyond a pixel", "train --augment.fill_value=300", "augment.fill_value is a pixel value"),
    ("augment pipeline as a number in TOML", "train --config {aug_number}", "augment.pipeline must be a list"),
    ("eval unknown tta view", "eval {base} --tta spin", "unknown test-time augmentation 'spin'"),
    ("eval random tta without a pipeline", "eval {base} --tta random-4", "has no geometric or photometric"),
    ("unknown init", "train --model.init=magic", "unknown init scheme 'magic'"),
    ("unknown optimiser", "train --optim.name=lion", "unknown optim.name 'lion'"),
    ("unknown schedule", "train --schedule.name=wiggly", "unknown schedule.name 'wiggly'"),
    ("config file missing", "train --config {d}/nope.toml", "does not exist"),
    ("config file not TOML", "train --config {bad_toml}", "is not valid TOML"),
    ("config file unknown section", "train --config {unknown_section}", "unknown config section 'optimizer'"),
    ("config file unknown key", "train --config {unknown_key}", "unknown config key 'optim.lrr'"),
    ("config file wrong type", "train --config {wrong_type}", "train.epochs must be a int"),
    ("config file list value", "train --config {list_value}", "train.batch_size must be a int"),
    ("config file key outside a table", "train --config {not_table}", "must be a [section] table"),
    ("config file negative lr", "train --config {bad_value}", "optim.lr must be a positive number"),
    # resume and eval
    ("resume run directory missing", "train --resume {d}/no/such/run", "not a babysit run directory"),
    ("resume run killed before its config", "train --resume {no_config}", "start it again with its original"),
    ("resume with overrides", "train --resume {base} --optim.lr=0.1", "drop --config and the --section.key"),
    ("resume checkpoint of another architecture", "train --resume {other_arch}", "model.spec: 'conv3-6"),
    ("resume truncated checkpoint", "train --resume {truncated}", "is damaged (truncated or overwritten)"),
    ("resume spec edited in config.toml", "train --resume {spec_edited}", "was saved with another config"),
    ("resume batch size edited", "train --resume {batch_edited}", "train.batch_size: 32 -> 16"),
    ("resume config.toml broken", "train --resume {toml_broken}", "is not valid TOML"),
    ("resume from a best-weights file", "train --resume {best_is_last}", "holds weights only"),
    ("resume with damaged meta.json", "train --resume {pickled_meta}", "meta.json is missing or damaged"),
    ("eval split that does not exist", "eval {base} --split holdout", "there is no split 'holdout'"),
    ("eval run directory missing", "eval {d}/no/such/run", "not a babysit run directory"),
    ("eval run without weights", "eval {no_weights}", "does not exist"),
    # output
    ("output path is a file", "train --out {a_file}", "is a file"),
    ("run name already used", "train --out {base}/.. --name base", "already holds a run"),
]


@pytest.mark.parametrize(("command", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_sentence_and_exit_2(command: str, phrase: str, paths: dict[str, Path],
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # anything a case writes by mistake lands here
    argv = shlex.split(command.format(**paths))
    if argv[0] == "train" and "--resume" not in argv:
        argv[1:1] = FAST  # the case's own options come after, so they win
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("babysit: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert phrase in err
    assert not (tmp_path / "runs").exists()  # a failed start leaves no half-made run directory


def test_the_table_has_at_least_40_cases() -> None:
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


def test_non_image_files_are_skipped_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path / "imgs", {"a": 2, "b": 2})
    (root / "a" / "README.txt").write_text("notes")
    (root / "b" / "labels.csv").write_text("1,2")
    assert main(["data", "info", str(root)]) == 0
    assert "2 non-image files skipped" in capsys.readouterr().out


def test_mixed_image_modes_become_rgb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "mixed"
    for i, mode in enumerate(("L", "RGB", "RGBA", "P", "LA", "1")):
        _png(root / ("a" if i % 2 else "b") / f"{mode}.png", mode=mode)
    assert main(["data", "info", str(root)]) == 0
    assert "shape    3x8x8" in capsys.readouterr().out


# ---- fuzzing: any input gives a value or the project's own error ---------------------------------

TOKENS = ["conv3-4", "conv1-2-s2", "conv5-3-p0", "conv3-4-d2", "conv2-4-g2", "conv0-1", "pool2", "pool3-s1",
          "avgpool2", "gap", "fc", "fc-5", "fc-0", "bn", "relu", "lrelu-0.1", "maxout-2", "maxout-3", "dropout-0.5",
          "dropout-1", "[", "]*2", "]*0", "]", "tanh", "x", "-", "1e9", "conv99999-1"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=10), st.integers(0, 5), st.integers(0, 24), st.integers(0, 24),
       st.integers(0, 12))
def test_fuzz_spec_and_geometry(tokens: list[str], c: int, h: int, w: int, classes: int) -> None:
    """Parse, infer every shape and build: a model that runs, or a BabysitError, for any spec and input."""
    text = " ".join(tokens).replace("[ ", "[").replace(" ]", "]")
    try:
        model = build(text, (c, h, w), classes)
    except BabysitError as e:
        assert str(e) and "\n" not in str(e)
        return
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, c, h, w)).shape == (2, classes)


TOML_VALUES = st.one_of(st.integers(-2**70, 2**70), st.floats(), st.booleans(), st.text(max_size=8),
                        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                              max_size=2))
SECTIONS = st.sampled_from([*C.SECTIONS, "extra"])
KEYS = st.sampled_from(sorted({k.split(".")[1] for k, _, _ in C.option_table()}) + ["nope"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(SECTIONS, st.one_of(TOML_VALUES, st.dictionaries(KEYS, TOML_VALUES, max_size=4)), max_size=4))
def test_fuzz_config_files(tmp_path_factory: pytest.TempPathFactory, data: dict) -> None:
    """Structured TOML (known and unknown sections and keys, any value type) loads or raises BabysitError."""
    import tomli_w

    path = tmp_path_factory.mktemp("toml") / "c.toml"
    path.write_text(tomli_w.dumps(data))
    try:
        cfg = C.load_toml(path)
    except BabysitError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(cfg, C.RunConfig)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from([k for k, _, _ in C.option_table()] + ["optim.nope", "nope.lr"]),
                          st.text(max_size=6) | st.sampled_from(["0", "-1", "nan", "inf", "1e400", "true", "2.5"])),
                max_size=4))
def test_fuzz_cli_options(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                          options: list[tuple[str, str]]) -> None:
    """Any --section.key=value reaches the library as a valid config or exits 2 with one sentence."""
    import babysit.experiment

    monkeypatch.setattr(babysit.experiment, "train", lambda cfg, **kw: C.validate(cfg))
    code = main(["train", *(f"--{k}={v}" for k, v in options)])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    assert code == 0 or (err.startswith("babysit: error: ") and err.count("\n") == 1), err
