"""`babysit finetune` end to end on real images: a digits run fine-tuned to a new task (digit >= 5, a .npz), from
the CLI and from Python. Frozen layers keep the source's weights, the head has the new shape, the run directory
names its origin and works with eval / predict / export, a gradual-unfreezing run resumes bit-identically, `auto`
says which cell of the table it chose, and mistakes are one sentence with exit code 2."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import babysit
from babysit import config as C
from babysit.ckptfile import load_checkpoint
from babysit.experiment import evaluate_run, train
from babysit.rundir import RunDir
from babysit.transfer import finetune, finetune_config
from tests.monitor.conftest import run_main
from tests.train.test_loop import StopAfter

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"train.threads": 1, "train.progress": "false", "monitor.checks": "false", "monitor.report": "false",
        "monitor.stats_every": 0, "train.epochs": 2}
SPEC = "conv3-8 bn relu pool2 conv3-16 bn relu pool2 fc-32 relu fc"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A small conv net trained on digits (8x8 grey), and a .npz of digits labelled by digit >= 5."""
    out = tmp_path_factory.mktemp("finetune")
    cfg = C.apply_overrides(C.RunConfig(), {**FAST, "data.name": "digits", "model.spec": SPEC,
                                            "train.batch_size": 64})
    src = train(cfg, out=out, name="src").run
    d = load_digits()
    x = (d.images * 16).clip(0, 255).astype(np.uint8)
    np.savez(out / "big.npz", x=x, y=(d.target >= 5).astype(np.int64), classes=np.array(["0-4", "5-9"]))
    return src, out


def weights(path):
    tensors, _ = load_checkpoint(path)
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def test_top_strategy_keeps_frozen_layers_replaces_the_head_and_works_with_eval(source, capsys):
    src, out = source
    res = finetune(src.path, {**FAST, "data.name": str(out / "big.npz"), "transfer.strategy": "top",
                              "transfer.layers": 1}, out=out, name="top")
    run = res.run
    before, after = weights(src.best), weights(run.best)
    assert after["10.weight"].shape == (2, before["10.weight"].shape[1])  # the new head: 2 classes
    for k, v in before.items():
        if not k.startswith("10."):  # every layer below the head: weights, biases, BN statistics unchanged
            assert torch.equal(after[k], v), k
    assert not torch.equal(after["10.weight"][:2], before["10.weight"][:2])
    cfg = C.load_toml(run.config)
    assert cfg.transfer.source == str(src.path.resolve()) and cfg.transfer.strategy == "top"
    assert cfg.optim.lr == pytest.approx(C.load_toml(src.config).optim.lr * 0.1)  # the notes' smaller lr
    info = json.loads(run.transfer.read_text())
    assert info["source_data"] == "digits" and info["strategy"] == "top" and info["auto"] is None
    ev = evaluate_run(run.path, "test")
    assert ev.classes == ["0-4", "5-9"] and ev.accuracy == pytest.approx(res.test_acc)
    assert ev.accuracy > 0.8
    probs = babysit.load_model(run.path)(np.load(out / "big.npz")["x"][:5])
    assert probs.shape == (5, 2)
    assert "epoch 1 trains the top 1 of 4 weight layers" in capsys.readouterr().out


def test_linear_probe_from_the_cli_trains_only_the_head(source):
    src, out = source
    args = [f"--{k}={v}" for k, v in FAST.items()]
    code, text, _ = run_main(["finetune", str(src.path), f"--data.name={out / 'big.npz'}",
                              "--transfer.strategy=linear-probe", "--out", str(out), "--name", "probe", *args])
    assert code == 0 and "strategy linear-probe" in text and "best val" in text
    run = RunDir.open(out / "probe")
    before, after = weights(src.best), weights(run.best)
    assert all(torch.equal(after[k], v) for k, v in before.items() if not k.startswith("10."))


def test_gradual_unfreezing_resumes_exactly(source):
    src, out = source
    over = {**FAST, "data.name": str(out / "big.npz"), "transfer.strategy": "full", "transfer.unfreeze": "gradual",
            "train.epochs": 3, "checkpoint.every": 5, "train.batch_size": 128}
    cfg, _ = finetune_config(src.path, over)
    whole = train(cfg, out=out, name="whole").run
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=out, name="cut", callbacks=[StopAfter(12)])  # epoch 2 of 3, after the checkpoint at 10
    resumed = train(C.RunConfig(), resume=out / "cut").run
    for k, v in weights(whole.last).items():
        assert torch.equal(weights(resumed.last)[k], v), k
    lines = [r for r in resumed.read_history() if r.get("kind") == "epoch"]
    assert [r["epoch"] for r in lines][-3:] == [1, 2, 3]


def test_auto_says_which_cell_it_chose(source):
    src, out = source
    res = finetune(src.path, {**FAST, "data.name": str(out / "big.npz"), "transfer.strategy": "auto",
                              "data.limit": 200, "train.epochs": 1}, out=out, name="auto")
    c = res.choice
    assert c is not None and c.small and c.n_train == 200  # 200 < transfer.small = 1000
    assert c.strategy == {True: "linear-probe", False: "top"}[c.similar]
    assert c.similar == ((1 - c.probe_val_acc) <= 0.5 * (1 - c.random_val_acc))
    info = json.loads(res.run.transfer.read_text())
    assert info["auto"]["cell"] == c.cell and info["strategy"] == c.strategy
    assert C.load_toml(res.run.config).transfer.strategy == c.strategy  # the run's config names what was chosen


@pytest.mark.parametrize(("extra", "message"), [
    (["--data.size=16"], "resize the images to the source's with --data.size"),
    (["--transfer.strategy=linear-probe", "--augment.pipeline=translate-1"], "cannot augment them"),
    (["--transfer.strategy=sideways"], "transfer.strategy must be one of linear-probe, top, full, auto"),
    (["--optim.layer_decay=2"], "optim.layer_decay must be in (0, 1]"),
])
def test_mistakes_are_one_sentence_exit_2(source, extra, message):
    src, out = source
    args = [f"--{k}={v}" for k, v in FAST.items()]
    code, _, err = run_main(["finetune", str(src.path), "--data.name=digits", "--out", str(out), *args, *extra])
    assert code == 2
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_not_a_run_and_auto_outside_finetune_are_refused(source, tmp_path):
    code, _, err = run_main(["finetune", str(tmp_path), "--data.name=digits"])
    assert code == 2 and "cannot fine-tune from" in err
    src, _ = source
    code, _, err = run_main(["train", "--data.name=digits", f"--transfer.source={src.path}",
                             "--transfer.strategy=auto", "--out", str(tmp_path)])
    assert code == 2 and "`babysit finetune SOURCE --transfer.strategy=auto`" in err
