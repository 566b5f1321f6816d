"""train_step (the one SGD step fit, the LR range test and the sanity checks share) and the recorders."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.errors import Diverged
from babysit.rundir import RunDir
from babysit.train.loop import NonFinite, Update, fit, next_batch, train_step
from babysit.train.regularize import Regularizer
from tests.train.test_loop import cfg, digits_data, small_model


def _linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def test_train_step_is_the_notes_momentum_update_with_l2():
    """v = mu*v - lr*(dL/dW + lambda*W); W += v, written out by hand over three steps."""
    data = digits_data(n_train=64)
    x, y = data.x_train, data.y_train
    lr, mu, lam = 0.1, 0.9, 1e-2
    c = cfg(**{"optim.lr": lr, "optim.momentum": mu, "optim.nesterov": False, "optim.weight_decay": lam,
               "schedule.name": "constant"})
    model = _linear()
    update = Update.from_config(model, c)
    w = model[1].weight.detach().clone()
    b = model[1].bias.detach().clone()
    vw, vb = torch.zeros_like(w), torch.zeros_like(b)
    for _ in range(3):
        loss = train_step(update, x, y, lr)
        # the same step by hand: data loss gradient + lambda*W on the weights (biases are not decayed)
        wh, bh = w.clone().requires_grad_(), b.clone().requires_grad_()
        hand = F.cross_entropy(x.flatten(1) @ wh.T + bh, y) + lam / 2 * (wh**2).sum()
        hand.backward()
        assert loss.item() == pytest.approx(hand.item(), rel=1e-6)
        vw, vb = mu * vw - lr * wh.grad, mu * vb - lr * bh.grad
        w, b = w + vw, b + vb
    torch.testing.assert_close(model[1].weight.detach(), w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].bias.detach(), b, rtol=1e-5, atol=1e-6)


def test_train_step_matches_a_plain_torch_step():
    data = digits_data(n_train=64)
    a, b = _linear(1), _linear(1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)
    update = Update(a, torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.9), F.cross_entropy)
    for _ in range(4):
        train_step(update, data.x_train, data.y_train)
        opt_b.zero_grad()
        F.cross_entropy(b(data.x_train), data.y_train).backward()
        opt_b.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_non_finite_loss_is_caught_before_the_update():
    model = _linear()
    before = [p.detach().clone() for p in model.parameters()]
    update = Update(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), F.cross_entropy)
    x = torch.full((4, 1, 8, 8), float("nan"))
    with pytest.raises(NonFinite) as e:
        train_step(update, x, torch.zeros(4, dtype=torch.long), check_finite=True)
    assert math.isnan(e.value.loss)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert update.optimizer.state_dict()["state"] == {}  # no momentum buffer was made either


def test_clip_norm_bounds_the_step():
    data = digits_data(n_train=64)
    model = _linear()
    before = [p.detach().clone() for p in model.parameters()]
    update = Update(model, torch.optim.SGD(model.parameters(), lr=1.0), F.cross_entropy, clip_norm=1e-3)
    train_step(update, data.x_train * 100, data.y_train)
    moved = torch.cat([(p.detach() - q).flatten() for p, q in zip(model.parameters(), before)]).norm()
    assert 0 < moved.item() <= 1e-3 * (1 + 1e-5)


def test_max_norm_is_applied_after_the_step():
    data = digits_data(n_train=64)
    model = _linear()
    c = cfg(**{"regularize.max_norm": 0.05, "optim.weight_decay": 0.0})
    update = Update(model, torch.optim.SGD(model.parameters(), lr=1.0), F.cross_entropy,
                    Regularizer.from_config(model, c))
    train_step(update, data.x_train * 10, data.y_train)
    assert model[1].weight.norm(dim=1).max().item() <= 0.05 + 1e-6


def test_next_batch_without_augmentation_indexes_the_tensors():
    data = digits_data(n_train=50)
    idx = torch.tensor([3, 1, 4])
    xb, yb = next_batch(data, idx, step=0)
    assert torch.equal(xb, data.x_train[idx]) and torch.equal(yb, data.y_train[idx])
    with pytest.raises(ValueError, match="raw training pixels"):
        next_batch(data, idx, 0, augment=lambda x, y, s: (x, y))


def test_fit_in_memory_ends_where_fit_with_a_run_directory_ends(tmp_path, capsys):
    """The in-memory recorder and the run directory keep the same best weights and the same history."""
    data = digits_data()
    c = cfg(**{"train.epochs": 3})
    a, b = small_model(), small_model()
    sa = fit(a, data, c)
    sb = fit(b, data, c, run=RunDir.create(tmp_path / "run"))
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)
    timeless = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert timeless(sa.history) == timeless(sb.history) and sa.best_epoch == sb.best_epoch
    assert list(tmp_path.iterdir()) == [tmp_path / "run"]  # the in-memory fit wrote nothing


def test_diverged_carries_step_loss_and_lr(tmp_path):
    data = digits_data()
    run = RunDir.create(tmp_path / "run")
    with pytest.raises(Diverged) as e:
        fit(small_model(), data, cfg(**{"optim.lr": 1e6, "schedule.name": "constant", "schedule.warmup_epochs": 0}),
            run=run)
    err = e.value
    assert err.exit_code == 3 and err.lr == 1e6 and err.step >= 1
    assert not math.isfinite(err.loss) or err.loss > 2.3
    steps = [r for r in run.read_history() if r.get("kind") == "step"]
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1)) and len(steps) <= err.step <= 4
    assert all(math.isfinite(r["loss"]) for r in steps)  # a NaN loss never becomes a record
    assert f"at step {err.step} (lr 1e+06)" in str(err)


@pytest.mark.parametrize("rule", ["sgd", "adam"])
def test_weight_snapshot_restores_weights_buffers_and_optimizer_state_exactly(rule):
    """The divergence rollback: the snapshot is refreshed in place (fused copies), so check it against the state
    itself, including a snapshot taken before the optimiser made any state."""
    from babysit.train.record import WeightSnapshot

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if rule == "sgd"
           else torch.optim.Adam(model.parameters(), lr=0.01))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    snap = WeightSnapshot(model, opt)  # no optimiser state yet
    start = {k: v.clone() for k, v in model.state_dict().items()}
    step()
    snap.restore()
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items()) and not opt.state
    for _ in range(2):
        step()
    snap.take()
    kept = copy.deepcopy(opt.state_dict()), {k: v.clone() for k, v in model.state_dict().items()}
    for g in opt.param_groups:
        g["lr"] = 123.0
    step()
    step()
    snap.restore()
    assert all(torch.equal(v, kept[1][k]) for k, v in model.state_dict().items())
    now = opt.state_dict()
    assert now["param_groups"] == kept[0]["param_groups"]
    for i, st in kept[0]["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(now["state"][i][k]), torch.as_tensor(v)), (i, k)
