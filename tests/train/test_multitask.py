"""Multi-task learning (babysit.train.multitask): the summed, weighted loss against the equation and torch's
cross-entropy, and on real digits a shared trunk that learns the digit and its >= 5 group at once (a task whose
weight is 0 stays at chance, so the second head learns from its own loss); per-task accuracy in eval; mistakes."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from babysit import config as C
from babysit.errors import BabysitError
from babysit.experiment import evaluate_run, train
from babysit.train.multitask import MultiTaskLoss, parse_heads, parse_task_weights, task_accuracies
from tests.monitor.conftest import run_main

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"train.threads": 1, "train.progress": "false", "monitor.report": "false", "monitor.stats_every": 0,
        "train.epochs": 3, "train.batch_size": 64, "model.spec": "conv3-8 bn relu pool2 conv3-16 bn relu pool2 fc"}


def test_loss_is_the_weighted_sum_of_each_heads_cross_entropy():
    torch.manual_seed(0)
    s, y = torch.randn(6, 12), torch.stack([torch.randint(0, 10, (6,)), torch.randint(0, 2, (6,))], 1)
    heads = parse_heads("digit:10,big:2")
    loss = MultiTaskLoss(lambda a, b: F.cross_entropy(a, b), heads, parse_task_weights("big=0.5", heads))

    def ce(scores, labels):  # -log softmax of the right class, averaged: the notes' softmax loss
        return (torch.logsumexp(scores, 1) - scores.gather(1, labels[:, None])[:, 0]).mean()

    assert float(loss(s, y)) == pytest.approx(float(ce(s[:, :10], y[:, 0]) + 0.5 * ce(s[:, 10:], y[:, 1])), 1e-6)
    acc = task_accuracies(s, y, heads)
    assert acc["big"] == pytest.approx(float((s[:, 10:].argmax(1) == y[:, 1]).float().mean()))


@pytest.mark.parametrize(("text", "message"), [
    ("digit:10", "two or more tasks"), ("digit:10,digit:2", "different names"), ("digit:10,big:1", "at least 2"),
    ("digit=10,big:2", "NAME:CLASSES"),
])
def test_bad_heads_are_one_sentence(text, message):
    with pytest.raises(BabysitError, match=message):
        parse_heads(text)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    out = tmp_path_factory.mktemp("multitask")
    d = load_digits()
    np.savez(out / "digits.npz", x=(d.images * 16).clip(0, 255).astype(np.uint8), y=d.target,
             y_big=(d.target >= 5).astype(np.int64))
    return out


def test_a_shared_trunk_learns_both_tasks_and_a_zero_weight_task_does_not(npz):
    cfg = C.apply_overrides(C.RunConfig(), {**FAST, "data.name": str(npz / "digits.npz"),
                                            "model.heads": "digit:10,big:2"})
    both = train(cfg, out=npz, name="both")
    result = json.loads(both.run.result.read_text())
    assert result["test_acc_tasks"]["digit"] > 0.85 and result["test_acc_tasks"]["big"] > 0.85
    assert result["test_acc"] == result["test_acc_tasks"]["digit"]
    ev = evaluate_run(both.run.path, "test")
    assert ev.tasks == pytest.approx(result["test_acc_tasks"])
    alone = train(C.apply_overrides(cfg, {"loss.task_weights": "big=0"}), out=npz, name="alone")
    tasks = json.loads(alone.run.result.read_text())["test_acc_tasks"]
    assert tasks["digit"] > 0.85 and abs(tasks["big"] - 0.5) < 0.2  # no loss, no learning: near chance
    code, text, _ = run_main(["eval", str(both.run.path)])
    assert code == 0 and "test: task big accuracy" in text


@pytest.mark.parametrize(("heads", "message"), [
    ("digit:10,odd:2", "has no labels y_odd (it has y_big)"),
    ("digit:9,big:2", "which have 10 classes, not 9; use digit:10"),
    ("digit:10,big:2 --augment.pipeline=translate-1", "without distillation or augmentation"),
])
def test_multitask_mistakes_exit_2(npz, heads, message):
    args = [f"--{k}={v}" for k, v in FAST.items()]
    head, *extra = heads.split(" ")
    code, _, err = run_main(["train", f"--data.name={npz / 'digits.npz'}", f"--model.heads={head}", *extra,
                             "--out", str(npz), *args])
    assert code == 2 and message in err and "Traceback" not in err
