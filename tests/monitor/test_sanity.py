"""The notes' sanity checks on the digits with a tiny ConvNet: each must pass when things are right
and fail, naming the suspect, when they are not."""

import math

import pytest
import torch

from babysit.config import LossConfig
from babysit.monitor.sanity import (
    expected_initial_loss,
    format_checks,
    initial_loss_check,
    overfit_tiny,
    regularization_check,
    run_checks,
    zero_input_check,
)
from tests.monitor.conftest import cfg, tiny_model


def test_expected_initial_loss_is_the_loss_of_zero_scores():
    assert expected_initial_loss("softmax", 10) == pytest.approx(2.302585, abs=1e-6)
    assert expected_initial_loss("svm", 10) == 9.0
    assert expected_initial_loss(LossConfig(name="svm", delta=2.0), 5) == 8.0
    zero = torch.zeros(7, 10)
    y = torch.arange(7) % 10
    from babysit.train.losses import make_loss
    for name in ("softmax", "svm", "squared-hinge", "attribute-hinge", "bce"):
        assert float(make_loss(LossConfig(name=name))(zero, y)) == pytest.approx(expected_initial_loss(name, 10))


def test_initial_loss_passes_for_small_weights_and_fails_for_huge_ones(data):
    model = tiny_model()
    torch.nn.init.normal_(model[4].weight, std=1e-4)
    ok = initial_loss_check(model, data.x_train, data.y_train, LossConfig(), 10)
    assert ok.passed and ok.numbers["loss"] == pytest.approx(math.log(10), abs=0.01)
    assert "expected 2.3026" in ok.line()
    torch.nn.init.normal_(model[4].weight, std=10.0)
    bad = initial_loss_check(model, data.x_train, data.y_train, LossConfig(), 10)
    assert not bad.passed and "bad init" in bad.advice and bad.line().startswith("FAIL")


def test_svm_initial_loss_is_c_minus_one_at_tiny_weights(data):
    model = tiny_model()
    torch.nn.init.normal_(model[4].weight, std=1e-4)
    res = initial_loss_check(model, data.x_train, data.y_train, LossConfig(name="svm"), 10)
    assert res.passed and res.numbers["loss"] == pytest.approx(9.0, abs=0.01)


def test_cranking_up_regularisation_raises_the_loss(data):
    res = regularization_check(tiny_model(), data.x_train[:64], data.y_train[:64], LossConfig())
    assert res.passed and res.numbers["loss_reg"] > res.numbers["loss"] + 100


def test_overfit_tiny_reaches_100_percent(data):
    res = overfit_tiny(tiny_model(), data.x_train[:20], data.y_train[:20], cfg(**{"optim.lr": 0.1}))
    assert res.passed and res.numbers["train_acc"] == 1.0 and res.numbers["steps"] <= 300


@pytest.mark.parametrize("lr,suspect", [(1e-6, "learning rate too low"), (1e6, "learning rate too high")])
def test_overfit_tiny_names_the_knob_when_it_fails(data, lr, suspect):
    res = overfit_tiny(tiny_model(), data.x_train[:20], data.y_train[:20], cfg(**{"optim.lr": lr}), max_steps=40)
    assert not res.passed and suspect in res.advice


def test_overfit_tiny_blames_capacity_when_the_loss_falls_but_accuracy_does_not(data):
    from torch import nn
    torch.manual_seed(0)
    one_feature = nn.Sequential(nn.Flatten(), nn.Linear(64, 1), nn.Linear(1, 10))  # a 1-d bottleneck
    res = overfit_tiny(one_feature, data.x_train[:20], data.y_train[:20], cfg(**{"optim.lr": 0.1}), max_steps=150)
    assert not res.passed and "capacity" in res.advice


def test_zero_inputs_do_worse_than_real_ones(data):
    c = cfg(**{"optim.lr": 0.05})
    res = zero_input_check(tiny_model(), data.x_train, data.y_train, c, steps=30)
    assert res.passed and res.numbers["loss_real"] < 0.9 * res.numbers["loss_zero"]
    shuffled = data.y_train[torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(0))]
    res = zero_input_check(tiny_model(), data.x_train[:64], shuffled[:64], cfg(**{"optim.lr": 1e-6}), steps=10)
    assert not res.passed and "inputs and labels" in res.advice


def test_run_checks_leaves_the_model_and_the_random_state_alone(data):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    results = run_checks(model, data, cfg(**{"optim.lr": 0.1}), 10)
    assert torch.equal(torch.rand(3), expected_next)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [r.name for r in results] == ["initial_loss_check", "regularization_check", "overfit_tiny",
                                         "zero_input_check"]
    assert all(r.passed for r in results), format_checks(results)
    assert format_checks(results).startswith("sanity checks (4/4 passed):")
