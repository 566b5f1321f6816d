"""The gradient check: catches a wrong hand-written backward, passes correct ones, flags kinks."""

import pytest
import torch
from torch import nn

import babysit
from babysit.monitor.gradcheck import BAND_HAPPY, BAND_UNCOMFORTABLE, BAND_WRONG, band, gradcheck, relative_error


class Square(torch.autograd.Function):
    """y = (x W)^2 with its backward written by hand."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return (x @ w) ** 2

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        dy = g * 2 * (x @ w)
        return dy @ w.T, x.T @ dy


class SquareWrongBackward(Square):
    """The same forward; the input gradient forgets the factor 2 of d(u^2)/du."""

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return (g * (x @ w)) @ w.T, x.T @ (g * 2 * (x @ w))


def test_relative_error_and_bands_follow_the_notes():
    assert relative_error(1.0, 1.0) == 0.0
    assert relative_error(2.0, 1.0) == pytest.approx(0.5)
    assert relative_error(0.0, 0.0) == 0.0
    assert band(0.5) == "probably wrong" and band(BAND_WRONG * 2) == "probably wrong"
    assert band(BAND_WRONG / 2) == "uncomfortable"
    assert band(BAND_UNCOMFORTABLE / 2) == "ok with kinks"
    assert band(BAND_HAPPY / 2) == "happy"
    assert band(float("nan")) == "probably wrong"


def test_a_correct_custom_function_is_happy():
    torch.manual_seed(0)
    result = gradcheck(Square, (torch.randn(3, 4), torch.randn(4, 5)))
    assert result.passed
    assert [t.name for t in result.tensors] == ["input0", "input1"]
    assert all(t.band == "happy" for t in result.tensors), result.format()


def test_a_wrong_backward_is_caught_on_the_tensor_it_breaks():
    torch.manual_seed(0)
    result = gradcheck(SquareWrongBackward, (torch.randn(3, 4), torch.randn(4, 5)))
    assert not result.passed
    x_check, w_check = result.tensors
    assert x_check.band == "probably wrong" and x_check.max_rel_error == pytest.approx(0.5, rel=1e-6)
    assert w_check.band == "happy"  # the weight gradient was right
    assert "FAIL" in result.format()


def test_module_is_checked_in_float64_with_dropout_off_and_left_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = babysit.gradcheck(model, torch.randn(5, 4))
    assert result.passed and result.max_rel_error < BAND_HAPPY, result.format()
    assert [t.name for t in result.tensors] == ["0.weight", "0.bias", "3.weight", "3.bias", "input"]
    assert model[0].weight.dtype == torch.float32 and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_random_layer_is_made_deterministic_by_reseeding():
    def noisy(x):  # dropout-like: a fresh random mask every call unless the generator is reseeded
        return x * (torch.rand_like(x) > 0.3) * 2.0
    assert gradcheck(noisy, torch.randn(4, 6)).passed


def test_crossing_a_relu_kink_is_reported_and_not_judged():
    x = torch.tensor([[1e-7, -2.0, 3.0]])  # the first entry sits within h of the ReLU's kink
    result = gradcheck(nn.ReLU(), x)
    assert result.tensors[0].kinks == 1
    assert any("kink" in w for w in result.warnings)
    assert result.passed


def test_smooth_objective_has_no_kinks():
    torch.manual_seed(0)
    result = gradcheck(nn.Sequential(nn.Linear(3, 4), nn.Sigmoid()), torch.randn(2, 3))
    assert sum(t.kinks for t in result.tensors) == 0 and not result.warnings


def test_labels_pass_through_and_nothing_to_check_is_an_error():
    loss = nn.CrossEntropyLoss()
    result = gradcheck(loss, (torch.randn(4, 3), torch.tensor([0, 2, 1, 0])))
    assert result.passed and [t.name for t in result.tensors] == ["input0"]
    with pytest.raises(TypeError, match="nothing to check"):
        gradcheck(lambda y: y.float().sum(), torch.tensor([1, 2]))
