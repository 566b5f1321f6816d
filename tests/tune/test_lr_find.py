"""The LR range test: the ramp, the early stop, the suggestions, and exact restoration afterwards."""

import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from babysit.cli import main
from babysit.config import RunConfig, apply_overrides, load_toml
from babysit.train.optim import make_optimizer
from babysit.tune.lr_find import LRFindResult, apply_bounds, format_result, lr_range_test, smooth, steepest_lr
from tests.train.test_loop import digits_data

DATA = digits_data(n_train=256, n_val=64)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(8 * 16, 10))


def cfg(**over) -> RunConfig:
    base = {"lr_find.steps": 40, "lr_find.seeds": 2, "lr_find.start_lr": 1e-4, "lr_find.end_lr": 10.0,
            "train.batch_size": 32}
    base.update(over)
    return apply_overrides(RunConfig(), base)


def test_model_optimizer_and_rng_are_restored_exactly():
    model = small_net()
    c = cfg()
    opt = make_optimizer(model, c)
    for _ in range(3):  # give the optimiser momentum buffers and the BN layer running statistics
        opt.zero_grad()
        nn.functional.cross_entropy(model(DATA.x_train[:32]), DATA.y_train[:32]).backward()
        opt.step()
    model.eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    buffers = [s["momentum_buffer"].clone() for s in opt.state.values()]
    lr_before = opt.param_groups[0]["lr"]
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    expected = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)

    result = lr_range_test(model, DATA, c, optimizer=opt)

    assert len(result.losses) == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k  # weights and BN buffers identical
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert not model.training  # the mode it was in
    assert opt.param_groups[0]["lr"] == lr_before
    assert len(opt.state) == len(buffers)
    assert all(torch.equal(s["momentum_buffer"], b) for s, b in zip(opt.state.values(), buffers))
    got = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_the_ramp_the_curves_and_the_early_stop():
    c = cfg(**{"lr_find.steps": 60, "lr_find.end_lr": 1e4})  # far too large at the end: must stop early
    result = lr_range_test(small_net(), DATA, c)
    assert (result.lrs[0], result.lrs[-1]) == pytest.approx((1e-4, 1e4))
    ratios = np.diff(np.log(result.lrs))
    np.testing.assert_allclose(ratios, ratios[0])  # exponential
    for raw, curve in zip(result.losses, result.smoothed):
        assert len(raw) < 60  # stopped once the smoothed loss passed 4x its best
        assert curve == pytest.approx(smooth(raw, c.lr_find.smoothing))
        assert curve[-1] > 4 * min(curve) and all(v <= 4 * min(curve[: i + 1]) for i, v in enumerate(curve[:-1]))
    assert result.losses[0] != result.losses[1]  # two seeds, two batch orders
    assert 1e-4 < result.suggestion < result.min_loss_lr < 1e4


def test_smoothing_and_steepest_descent_by_hand():
    assert smooth([1.0, 2.0], 0.5) == pytest.approx([1.0, (0.25 + 1.0) / 0.75])  # bias-corrected average
    lrs = list(np.geomspace(1e-5, 1, 101))
    loss = [2 - math.tanh(math.log10(lr) + 2.5) + (0.01 * (math.log10(lr) + 1) ** 2 * 100 if lr > 0.1 else 0)
            for lr in lrs]  # falls fastest at 10^-2.5, smallest near 10^-1
    assert steepest_lr(lrs, loss, skip=5) == pytest.approx(10**-2.5, rel=0.15)


def test_bounds_feed_onecycle_and_the_report():
    result = LRFindResult([1e-3, 1e-2, 1e-1, 1.0], [[2.0, 1.5, 1.0, 9.0]] * 3, [[2.0, 1.5, 1.0, 9.0]] * 3,
                          [0.01, 0.02, 0.03], [0.1, 0.2, 0.4])
    assert result.suggestion == 0.02 and result.min_loss_lr == 0.2 and result.bounds == pytest.approx((0.02, 0.2))
    tuned = apply_bounds(RunConfig(), result)
    assert (tuned.schedule.name, tuned.optim.lr, tuned.schedule.min_lr) == ("onecycle", 0.2, pytest.approx(0.02))
    assert apply_bounds(RunConfig(), result, "cyclical").schedule.name == "cyclical"
    text = format_result(result)
    assert "suggested lr (steepest descent, median over seeds): 0.02 [0.01 .. 0.03]" in text
    assert "min-loss lr / 10: 0.02" in text and "--optim.lr=0.2 --schedule.min_lr=0.02" in text


def test_cli_lr_find_writes_plot_numbers_and_a_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["lr-find", "--data.limit=300", "--model.spec=conv3-8 relu pool2 fc", "--lr_find.steps=30",
            "--lr_find.seeds=2", "--lr_find.start_lr=1e-4", "--plot", "lr.png", "--write-config", "tuned.toml"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("seed ") for line in out.splitlines()) == 2
    assert "cyclical / onecycle bounds: --optim.lr=" in out and "your optim.lr=0.2 (babysit's default) is " in out
    assert out.index("lr-find repeat 1/2") < out.index("lr-find repeat 2/2") < out.index("seed 0:")
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    numbers = json.loads((tmp_path / "lr.json").read_text())
    assert len(numbers["lrs"]) == 30 and len(numbers["smoothed"]) == 2
    tuned = load_toml(tmp_path / "tuned.toml")
    assert tuned.schedule.name == "onecycle" and tuned.optim.lr == pytest.approx(numbers["bounds"][1])


def test_the_ramp_trains_on_augmented_batches_when_the_run_augments():
    """lr-find sees the batches training would see: raw pixels through the run's augmentation."""
    from tests.train.test_loop import augmented_digits

    data, aug = augmented_digits(n_train=256, n_val=64)
    calls = []

    def counting(x, y, step):
        calls.append((x.dtype, step))
        return aug(x, y, step)

    result = lr_range_test(small_net(), data, cfg(**{"lr_find.seeds": 2}), augment=counting)
    assert calls and all(dtype == torch.uint8 for dtype, _ in calls)  # made from the raw pixels
    assert len({step for _, step in calls}) == len(calls)  # each repeat draws its own augmentation
    assert all(math.isfinite(v) for v in result.losses[0])


def test_defaults_are_one_short_repeat_and_the_text_relates_the_suggestion_to_the_lr(capsys):
    from babysit.config import LRFindConfig
    from babysit.tune.lr_find import relate_to_lr

    f = LRFindConfig()
    assert f.seeds == 1 and 100 <= f.steps <= 200
    assert f.steps / (1 / (1 - f.smoothing)) == pytest.approx(300 / 50)  # the same lag, as a share of the ramp
    lrs = [float(v) for v in np.geomspace(1e-4, 10, 50)]
    res = LRFindResult(lrs, [[2.3] * 50], [[2.3] * 50], [0.01], [0.2])
    assert "between the steepest descent 0.01 and the min-loss lr 0.2" in relate_to_lr(res, 0.1, default=True)
    assert "(babysit's default)" in relate_to_lr(res, 0.1, default=True)
    assert "above the min-loss lr 0.2" in relate_to_lr(res, 0.5) and "--optim.lr=0.02 " in relate_to_lr(res, 0.5)
    assert "10x below the steepest descent 0.01" in relate_to_lr(res, 0.001)
    assert "--lr_find.seeds=3" in relate_to_lr(res, 0.1)  # one repeat: says how to see the spread
    assert format_result(res, 0.1).endswith(relate_to_lr(res, 0.1))
    lr_range_test(small_net(), DATA, cfg(**{"lr_find.steps": 20}), progress=True)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["lr-find repeat 1/2 (seed 0)", "lr-find repeat 2/2 (seed 1)"]
    assert all(line.endswith(" s") and "mini-batches" in line for line in out)
