"""Issue 18: a user's own nn.Module through train, eval, report and predict (the README's example).

``babysit.train(cfg, model=MyNet())`` trains the module with babysit's checks, probes, findings and report;
meta.json names its class, and eval / predict / resume take a fresh instance back (babysit never runs code from a
run's files); the CLI, which cannot, says how in one sentence.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import babysit
from babysit import config as C
from babysit.cli import main
from babysit.errors import BabysitError
from babysit.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")


class MyNet(nn.Module):
    """A user's own network for 8x8 grey digits: not expressible as one babysit spec line (two heads summed)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8 * 4 * 4, 10)
        self.skip = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        h = nn.functional.max_pool2d(h, 2)
        return self.head(h.flatten(1)) + self.skip(x.flatten(1))


CFG = {"data.name": "digits", "data.limit": "400", "train.epochs": "2", "train.progress": "false", "train.threads": "1"}
QUICK = {**CFG, "train.epochs": "1", "monitor.checks": "false", "monitor.report": "false"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> babysit.TrainResult:
    torch.manual_seed(0)
    cfg = C.apply_overrides(C.RunConfig(), QUICK)
    return babysit.train(cfg, out=tmp_path_factory.mktemp("user"), name="mine", model=MyNet())


def test_meta_names_the_module(run: babysit.TrainResult) -> None:
    r = RunDir(run.run.path)
    assert isinstance(run.model, MyNet) and run.test_acc is not None and run.test_acc > 0.5
    assert json.loads(r.meta.read_text())["module"] == "tests.test_user_module.MyNet"
    assert main(["diagnose", str(r.path)]) == 0


@pytest.mark.slow
def test_trains_with_checks_probes_findings_and_report(tmp_path: Path) -> None:
    torch.manual_seed(0)
    run = babysit.train(C.apply_overrides(C.RunConfig(), CFG), out=tmp_path, name="mine", model=MyNet())
    r = RunDir(run.run.path)
    assert isinstance(run.model, MyNet)
    assert run.test_acc is not None and run.test_acc > 0.5
    meta = json.loads(r.meta.read_text())
    assert meta["module"] == "tests.test_user_module.MyNet"
    assert r.spec.read_text() == "module tests.test_user_module.MyNet\n"
    assert json.loads(r.checks.read_text())["checks"]  # the sanity checks ran on the module
    assert r.report.is_file() and "conv" in r.report.read_text()  # probes name its layers
    assert main(["report", str(r.path)]) == 0
    assert main(["diagnose", str(r.path)]) == 0


def test_eval_and_predict_take_a_fresh_instance(run: babysit.TrainResult) -> None:
    res = babysit.evaluate_run(run.run.path, "test", model=MyNet())
    assert res.accuracy == pytest.approx(run.test_acc)
    pred = babysit.predict(run.run.path, torch.zeros(3, 8, 8, dtype=torch.uint8).numpy(), model=MyNet())
    assert pred.probabilities.shape == (3, 10)


def test_without_the_module_the_sentence_says_how(run: babysit.TrainResult,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(run.run.path)]) == 2
    err = capsys.readouterr().err
    assert "trained with your own nn.Module tests.test_user_module.MyNet" in err
    assert "babysit.evaluate_run(RUN, model=MyNet())" in err
    with pytest.raises(BabysitError, match="own nn.Module"):
        babysit.load_model(run.run.path)
    with pytest.raises(BabysitError, match="own nn.Module"):
        babysit.train(C.RunConfig(), resume=run.run.path)


def test_a_spec_run_refuses_a_module(tmp_path: Path) -> None:
    cfg = C.apply_overrides(C.RunConfig(), {**QUICK, "train.epochs": "1", "data.limit": "100",
                                            "model.spec": "conv3-4 relu pool2 fc"})
    spec_run = babysit.train(cfg, out=tmp_path, name="spec")
    with pytest.raises(BabysitError, match="built from its spec"):
        babysit.evaluate_run(spec_run.run.path, model=MyNet())


class WrongOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_a_module_with_the_wrong_output_is_refused_in_one_sentence(tmp_path: Path) -> None:
    cfg = C.apply_overrides(C.RunConfig(), QUICK)
    with pytest.raises(BabysitError, match=r"gives \(2, 7\) for a batch of 2 images; it must give one score per "
                                           r"class, \(2, 10\)"):
        babysit.train(cfg, out=tmp_path, name="wrong", model=WrongOutput())
