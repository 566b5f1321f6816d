"""The mechanics of transfer learning inside a run (babysit.train.transfer): weight layers, the gradual-unfreezing
schedule, freezing (no change at all, batch-norm statistics included), discriminative learning rates reaching the
optimiser's groups and the step, the first conv adapted grey <-> RGB, the linear probe's head-only model."""

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from babysit import config as C
from babysit.errors import BabysitError
from babysit.models.build import build
from babysit.train.loop import Update, train_step
from babysit.train.optim import make_optimizer, param_groups
from babysit.train.transfer import (
    HeadOnly,
    adapt_first_conv,
    apply_freezing,
    layer_lr_scales,
    probe_features,
    trainable_layers,
    weight_blocks,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = "conv3-4 bn relu pool2 conv3-8 bn relu fc-16 relu dropout-0.5 fc"


def digits_batch(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.images[:n], dtype=torch.float32).unsqueeze(1) / 16 - 0.5
    return x, torch.tensor(d.target[:n])


def net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return build(SPEC, (1, 8, 8), 10)


def test_weight_blocks_group_each_conv_fc_with_what_follows():
    blocks = weight_blocks(net())
    # conv3-4 bn relu pool2 | conv3-8 bn relu flatten | fc-16 relu dropout | fc
    assert blocks == [["0", "1", "2", "3"], ["4", "5", "6", "flatten"], ["7", "8", "9"], ["10"]]


@pytest.mark.parametrize(("strategy", "layers", "unfreeze", "expected"), [
    ("linear-probe", 2, "none", [1, 1, 1, 1, 1]),
    ("top", 2, "none", [2, 2, 2, 2, 2]),
    ("full", 2, "none", [4, 4, 4, 4, 4]),
    ("full", 2, "gradual", [1, 2, 3, 4, 4]),  # ULMFiT: the head first, then one more layer each epoch
    ("top", 3, "gradual", [1, 2, 3, 3, 3]),
    ("top", 9, "none", [4, 4, 4, 4, 4]),  # more than the net has: all of them
])
def test_gradual_unfreezing_schedule(strategy, layers, unfreeze, expected):
    assert [trainable_layers(strategy, layers, unfreeze, e, 4) for e in range(1, 6)] == expected


def test_frozen_layers_do_not_change_and_the_top_ones_do():
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = apply_freezing(model, 2)  # the fc-16 block and the head train
    assert frozen == ["0", "1", "2", "3", "4", "5", "6", "flatten"]
    cfg = C.apply_overrides(C.RunConfig(), {"optim.lr": 0.1, "train.channels_last": "false"})
    u = Update.from_config(model, cfg)
    x, y = digits_batch()
    model.train()
    for _ in range(3):
        train_step(u, x, y, 0.1)
    after = model.state_dict()
    for k, v in before.items():
        layer = k.partition(".")[0]
        if layer in frozen:  # weights, biases and batch-norm running statistics alike
            assert torch.equal(after[k], v), k
        elif k.endswith("weight"):
            assert not torch.equal(after[k], v), k
    apply_freezing(model, 4)  # unfrozen again: batch norm back in train mode, gradients flow
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    model(x)
    assert model[1].training and not torch.equal(model[1].running_mean, before["1.running_mean"])


def test_layer_lr_multipliers_reach_the_groups_and_the_step():
    model = net()
    decay = 0.5
    scales = layer_lr_scales(model, decay)
    # lr x decay^d, d = weight layers below the head: conv1 3, conv2 2, fc-16 1, head 0
    assert scales["0.weight"] == pytest.approx(0.125) and scales["1.weight"] == pytest.approx(0.125)
    assert scales["4.weight"] == pytest.approx(0.25) and scales["7.bias"] == pytest.approx(0.5)
    assert scales["10.weight"] == 1.0
    cfg = C.apply_overrides(C.RunConfig(), {"optim.layer_decay": decay, "optim.lr": 0.2})
    groups = param_groups(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            assert g["lr_scale"] == pytest.approx(scales[names[id(p)]])
            assert g["decay"] == (cfg.optim.weight_decay if p.ndim > 1 else 0.0)
    opt = make_optimizer(model, cfg)
    assert sorted({g["lr_scale"] for g in opt.param_groups}) == [0.125, 0.25, 0.5, 1.0]
    u = Update.from_config(model, replace_channels_last(cfg), opt)
    x, y = digits_batch()
    train_step(u, x, y, 0.03)  # the schedule's lr times each group's multiplier
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.03 * g["lr_scale"])
    assert all(g.get("lr_scale", 1.0) == 1.0 for g in make_optimizer(net(), C.RunConfig()).param_groups)


def test_a_layer_at_a_quarter_lr_moves_a_quarter_as_far_with_plain_sgd():
    """Vanilla SGD (no momentum, no decay): w' = w - lr * s * dL/dw, checked against the gradient by hand."""
    model = net()
    cfg = C.apply_overrides(C.RunConfig(), {"optim.layer_decay": 0.5, "optim.momentum": 0.0,
                                           "optim.weight_decay": 0.0, "train.channels_last": "false"})
    x, y = digits_batch()
    model.eval()  # no dropout / batch statistics drift between the two passes
    w0 = model[4].weight.detach().clone()
    F.cross_entropy(model(x), y).backward()
    grad = model[4].weight.grad.clone()
    model.zero_grad()
    u = Update.from_config(model, cfg)
    train_step(u, x, y, 0.1)
    assert torch.allclose(model[4].weight.detach(), w0 - 0.1 * 0.25 * grad, atol=1e-6)


def replace_channels_last(cfg: C.RunConfig) -> C.RunConfig:
    return C.apply_overrides(cfg, {"train.channels_last": "false"})


def test_first_conv_grey_to_rgb_and_back_keeps_the_responses():
    torch.manual_seed(0)
    w = torch.randn(4, 1, 3, 3)
    grey = torch.rand(2, 1, 8, 8)
    rgb_w = adapt_first_conv(w, 3)
    assert rgb_w.shape == (4, 3, 3, 3)
    assert torch.allclose(F.conv2d(grey.repeat(1, 3, 1, 1), rgb_w), F.conv2d(grey, w), atol=1e-6)
    w3 = torch.randn(4, 3, 3, 3)
    assert torch.allclose(F.conv2d(grey, adapt_first_conv(w3, 1)), F.conv2d(grey.repeat(1, 3, 1, 1), w3), atol=1e-5)
    with pytest.raises(BabysitError, match="only grey <-> RGB"):
        adapt_first_conv(torch.randn(4, 2, 3, 3), 3)


def test_head_only_model_trains_on_features_and_scores_images_like_the_net():
    model = net()
    x, _ = digits_batch()
    feats = probe_features(model, x)
    model.eval()
    with torch.no_grad():
        trunk_out = model[:-1](x)
    assert feats.shape == (64, 16) and torch.allclose(feats, trunk_out)
    head_only = HeadOnly.of(model)
    assert list(head_only.state_dict()) == list(model.state_dict())  # the run's checkpoints keep their keys
    head_only.eval()
    with torch.no_grad():
        assert torch.allclose(head_only(feats), model(x), atol=1e-6)  # features -> head; images -> everything
        assert torch.allclose(head_only(x), model(x))
