"""Regularisers by hand, the max-norm constraint in the loop, and dropout's expected activation."""

import numpy as np
import pytest
import torch
from torch import nn

from babysit.config import RunConfig, apply_overrides
from babysit.errors import BabysitError
from babysit.models import build
from babysit.train.loop import fit
from babysit.train.regularize import (
    Regularizer,
    decay_table,
    decoupled_weight_decay_,
    elastic_net_penalty,
    l1_penalty,
    l2_penalty,
    max_norm_,
    parse_layer_strengths,
)
from tests.train.test_loop import cfg as loop_cfg
from tests.train.test_loop import digits_data

W = torch.tensor([[1.0, -2.0], [3.0, -4.0]], requires_grad=True)


def test_l2_l1_and_elastic_net_by_hand():
    l2 = l2_penalty([W], 0.1)
    assert l2.item() == pytest.approx(0.05 * 30)  # lambda/2 * (1 + 4 + 9 + 16)
    (g,) = torch.autograd.grad(l2, W)
    torch.testing.assert_close(g, 0.1 * W.detach())  # dL/dW = lambda W
    l1 = l1_penalty([W], 0.1)
    assert l1.item() == pytest.approx(1.0)  # lambda * (1 + 2 + 3 + 4)
    (g,) = torch.autograd.grad(l1, W)
    torch.testing.assert_close(g, 0.1 * torch.sign(W.detach()))
    assert elastic_net_penalty([W], 0.1, 0.2).item() == pytest.approx(1.0 + 0.1 * 30)
    assert l2_penalty([], 0.1).item() == 0 and l1_penalty([W], 0.0).item() == 0


def model() -> nn.Module:
    torch.manual_seed(0)
    return build("conv3-4 relu pool2 fc-8 relu fc", (1, 8, 8), 10)  # layers 0, 3, 5 have weights


def test_biases_are_left_out_unless_asked_and_per_layer_strengths():
    table = {name: lam for name, _, lam in decay_table(model(), 0.01)}
    assert table == {"0.weight": 0.01, "0.bias": 0.0, "3.weight": 0.01, "3.bias": 0.0, "5.weight": 0.01,
                     "5.bias": 0.0}
    assert all(lam == 0.01 for _, _, lam in decay_table(model(), 0.01, decay_bias=True))
    per_layer = {n: lam for n, _, lam in decay_table(model(), 0.01, layer_weight_decay="0=0.1, 5=0")}
    assert per_layer["0.weight"] == 0.1 and per_layer["3.weight"] == 0.01 and per_layer["5.weight"] == 0.0
    with pytest.raises(BabysitError, match="names layer '4', which has no parameters; layers with parameters are "
                                           "0, 3, 5"):
        decay_table(model(), 0.01, layer_weight_decay="4=0.1")
    with pytest.raises(BabysitError, match="must look like LAYER=LAMBDA"):
        parse_layer_strengths("0:0.1")


def test_regularizer_penalty_is_the_sum_of_its_terms():
    m = model()
    cfg = apply_overrides(RunConfig(), {"optim.weight_decay": "0.01", "regularize.l1": "0.001",
                                        "regularize.layer_weight_decay": "5=0.5"})
    weights = {n: p for n, p in m.named_parameters() if n.endswith("weight")}
    expected = (l2_penalty([weights["0.weight"], weights["3.weight"]], 0.01) + l2_penalty([weights["5.weight"]], 0.5)
                + l1_penalty(list(weights.values()), 0.001))
    l1 = l1_penalty(list(weights.values()), 0.001)
    almost = apply_overrides(cfg, {"optim.name": "almost-adam"})  # L2 in the loss: penalty() holds both terms
    torch.testing.assert_close(Regularizer.from_config(m, almost).penalty(), expected)
    sgd = Regularizer.from_config(m, cfg)  # the rule applies L2: penalty() is L1, l2_value() the L2 term's value
    torch.testing.assert_close(sgd.penalty(), l1)
    torch.testing.assert_close(sgd.l2_value() + sgd.penalty(), expected)
    adamw = apply_overrides(cfg, {"optim.name": "adamw"})  # decoupled: no L2 term in the loss
    torch.testing.assert_close(Regularizer.from_config(m, adamw).penalty(), l1)
    assert Regularizer.from_config(m, adamw).l2_value() is None


@pytest.mark.parametrize("rule", ["sgd", "adagrad", "rmsprop", "adam"])
def test_l2_in_the_step_is_the_l2_term_in_the_loss(rule):
    """The rule's weight_decay (gradient + lambda*W) trains exactly like lambda/2*||W||^2 added to the loss,
    per-layer strengths included; torch's own update rule on both sides."""
    from babysit.train.loop import Update, train_step
    from babysit.train.optim import make_optimizer

    cfg = apply_overrides(RunConfig(), {"optim.name": rule, "optim.lr": "0.01", "optim.weight_decay": "0.05",
                                        "regularize.layer_weight_decay": "5=0.2"})
    torch.manual_seed(1)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    in_step, in_loss = model(), model()
    a = Update.from_config(in_step, cfg)
    assert a.reg.l2_step and all(g["weight_decay"] == g["decay"] for g in a.optimizer.param_groups)
    opt_b = make_optimizer(in_loss, cfg)
    for g in opt_b.param_groups:
        g["weight_decay"] = 0.0  # the same rule without its decay ...
    reg_b = Regularizer.from_config(in_loss, cfg)
    reg_b.l2_step = False  # ... and the L2 term in the loss instead
    b = Update(in_loss, opt_b, a.criterion, reg_b)
    for _ in range(5):
        cost_a = train_step(a, x, y)
        cost_b = train_step(b, x, y)
        # the reported cost includes L2 either way, and so does the regularisation term alone
        torch.testing.assert_close(cost_a.total(), cost_b.total(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(cost_a.regularization(), cost_b.regularization(), rtol=1e-5, atol=1e-7)
        assert cost_a.l2_norms is not None and cost_b.l2_norms is None  # in the step: kept as norms till read back
    for p, q in zip(in_step.parameters(), in_loss.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_max_norm_projects_each_unit_onto_the_ball():
    torch.manual_seed(0)
    w = torch.randn(6, 3, 2, 2) * torch.tensor([0.1, 1, 3, 0.2, 5, 0.5]).view(6, 1, 1, 1)
    ref = w.numpy().reshape(6, -1).copy()
    norms = np.linalg.norm(ref, axis=1, keepdims=True)
    ref = ref * np.minimum(1.0, 2.0 / norms)  # w <- w * min(1, c / ||w||)
    max_norm_([w], 2.0)
    np.testing.assert_allclose(w.numpy().reshape(6, -1), ref, rtol=1e-5)
    assert w.flatten(1).norm(dim=1).max() <= 2.0 + 1e-5


def test_max_norm_holds_after_every_step_of_fit():
    class Check:
        worst = 0.0

        def on_batch_end(self, state):
            for p in state.model.parameters():
                if p.ndim > 1:
                    Check.worst = max(Check.worst, p.detach().flatten(1).norm(dim=1).max().item())

    data = digits_data(n_train=128, n_val=64)
    torch.manual_seed(0)
    net = build("conv3-8 relu pool2 fc", (1, 8, 8), 10)
    fit(net, data, loop_cfg(**{"train.epochs": 1, "regularize.max_norm": 0.5, "optim.lr": 0.5}), callbacks=[Check()])
    assert 0.45 < Check.worst <= 0.5 + 1e-5  # the constraint was active and held


def test_decoupled_weight_decay_by_hand():
    w = torch.tensor([1.0, -2.0])
    decoupled_weight_decay_([w], lr=0.1, weight_decay=0.5)
    torch.testing.assert_close(w, torch.tensor([0.95, -1.9]))  # w - lr*lambda*w


def test_inverted_dropout_keeps_the_expected_activation():
    """The spec's dropout-p is inverted dropout: E[h] is the same in training and at test time."""
    torch.manual_seed(0)
    net = build("fc-64 dropout-0.5 fc", (1, 1, 4), 2)
    drop = net.get_submodule("1")
    h = torch.rand(4000, 64) + 0.5
    drop.train()
    trained = drop(h)
    assert (trained == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert trained.mean().item() == pytest.approx(h.mean().item(), rel=0.01)  # E[h] unchanged
    drop.eval()
    assert torch.equal(drop(h), h)  # and no scaling at test time


def test_non_inverted_dropout_needs_the_test_time_scaling():
    """The lecture's form: H *= (rand < p) when training, so E[h] = p*h; predict() must scale by p."""
    p = 0.5  # probability of keeping a unit active
    gen = torch.Generator().manual_seed(0)
    h = torch.rand(4000, 64, generator=gen) + 0.5
    trained = h * (torch.rand(h.shape, generator=gen) < p)  # drop!
    assert trained.mean().item() == pytest.approx(p * h.mean().item(), rel=0.01)  # E[h] = p h + (1-p) 0
    assert h.mean().item() == pytest.approx(2 * trained.mean().item(), rel=0.01)  # unscaled test: twice too big
    assert (h * p).mean().item() == pytest.approx(trained.mean().item(), rel=0.01)  # NOTE: scale the activations
