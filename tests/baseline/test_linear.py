"""Linear classifiers: the SVM loss of the linear baseline on the lecture's worked example, standardisation,
and training through fit() with lambda chosen on the validation split."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from babysit.baseline.linear import LINEAR_LOSSES, linear_config, standardise, train_linear
from babysit.config import RunConfig, apply_overrides
from babysit.start import make_model
from babysit.train.losses import make_loss

# The lecture's worked example (cs231n lecture 3; tests/train/test_losses.py uses it too): three images,
# cat / car / frog, Delta = 1. The course notes here give the loss L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + Delta).
SCORES = torch.tensor([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
LABELS = torch.tensor([0, 1, 2])


def test_the_linear_svm_loss_matches_the_worked_example():
    cfg = apply_overrides(RunConfig(), {"baseline.loss": "svm"})
    loss = make_loss(linear_config(cfg, 0.0).loss)
    per_image = [loss(SCORES[i : i + 1], LABELS[i : i + 1]).item() for i in range(3)]
    # cat: max(0, 5.1 - 3.2 + 1) + max(0, -1.7 - 3.2 + 1) = 2.9; car: 0; frog: 6.3 + 6.6 = 12.9
    assert per_image == pytest.approx([2.9, 0.0, 12.9])
    assert loss(SCORES, LABELS).item() == pytest.approx((2.9 + 0 + 12.9) / 3)  # 5.27
    # the same numbers from the linear model itself: f(x) = W x + b with x one-hot, W = the scores transposed
    model = make_model(linear_config(cfg, 0.0), (3, 1, 1), 3)
    with torch.no_grad():
        model.get_submodule("0").weight.copy_(SCORES.T)
        model.get_submodule("0").bias.zero_()
    assert loss(model(torch.eye(3).view(3, 3, 1, 1)), LABELS).item() == pytest.approx(5.2667, abs=1e-4)
    # the notes' other example: scores [13, -7, 11], first class right, Delta = 10 -> 0 + 8
    wide = make_loss(replace(linear_config(cfg, 0.0).loss, delta=10.0))
    assert wide(torch.tensor([[13.0, -7.0, 11.0]]), torch.tensor([0])).item() == pytest.approx(8.0)


def test_the_linear_config_is_one_fc_layer_with_the_chosen_loss_and_lambda():
    cfg = apply_overrides(RunConfig(), {"baseline.loss": "softmax"})
    run = linear_config(cfg, 1e-3)
    assert (run.model.spec, run.loss.name, run.optim.weight_decay) == ("fc", "softmax", 1e-3)
    assert LINEAR_LOSSES == ("svm", "softmax")


def test_standardise_uses_the_training_statistics():
    g = torch.Generator().manual_seed(0)
    train, test = torch.rand(50, 4, generator=g) * 3 + 1, torch.rand(7, 4, generator=g)
    train[:, 2] = 5.0  # never varies: only centred (std 0 -> the floor, 10 % of the mean std)
    train[:, 3] = 2.0
    train[0, 3] = 2.01  # varies a little: divided by the floor, not by its own tiny std
    a, b = standardise(train, test)
    mean, std = train.mean(0), train.std(0)
    floor = 0.1 * std.mean()
    written = (test - mean) / torch.stack([std[0], std[1], floor, floor])  # (x - mean) / max(std, 0.1 mean std)
    torch.testing.assert_close(b, written)
    torch.testing.assert_close(a.mean(0), torch.zeros(4), atol=1e-6, rtol=0)
    assert a[:, 2].abs().max() == 0 and a[:, 3].abs().max() < 0.5  # its own std would give ~7


@pytest.mark.parametrize("loss", ["svm", pytest.param("softmax", marks=pytest.mark.slow)])
def test_train_linear_on_digits_keeps_the_best_lambda_on_val(digits, loss):
    cfg = apply_overrides(RunConfig(), {"baseline.loss": loss, "baseline.l2": "0,0.5", "train.epochs": "3",
                                        "train.progress": "false", "train.threads": "1"})
    x = [part.x.flatten(1).float() / 255 for part in (digits.train, digits.val, digits.test)]
    y = [digits.train.y, digits.val.y, digits.test.y]
    res = train_linear(cfg, x, y, 10)
    assert set(res.val_acc) == {0.0, 0.5} and res.best_val_acc == max(res.val_acc.values())
    assert res.l2 == min(lam for lam, a in res.val_acc.items() if a == res.best_val_acc)
    assert res.best_val_acc > 0.9 and res.test_acc > 0.88  # a linear classifier on 8 x 8 digits: ~95 %
    assert isinstance(res.model.get_submodule("0"), torch.nn.Linear) and res.model.get_submodule("0").in_features == 64
