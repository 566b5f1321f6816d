"""Update rules: the notes' equations written out in numpy, run next to our optimisers step by step."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from babysit.config import OptimConfig, RunConfig, apply_overrides
from babysit.errors import BabysitError
from babysit.train.optim import (
    AlmostAdam,
    check_choices,
    clip_gradients,
    describe_groups,
    list_optimizers,
    make_optimizer,
    param_groups,
)

X0 = np.array([[1.5, -2.0, 0.3], [0.01, 4.0, -0.7]])  # a (2, 3) "weight", so weight decay applies to it
A = np.array([[1.0, 10.0, 0.1], [3.0, 0.5, 50.0]])  # very different curvatures: adaptive rules matter
STEPS = 8


def f_torch(x: torch.Tensor) -> torch.Tensor:
    """A non-quadratic bowl: sum 0.5*a*x^2 + 0.1*x^4 (its gradient changes from step to step)."""
    return (0.5 * torch.as_tensor(A) * x**2 + 0.1 * x**4).sum()


def grad(x: np.ndarray) -> np.ndarray:
    return A * x + 0.4 * x**3


class Weight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(X0, dtype=torch.float64))


def run_ours(steps: int = STEPS, lrs: list[float] | None = None, **optim) -> list[np.ndarray]:
    """Our optimiser (through the registry and the config) on f; the weights after each step."""
    optim.setdefault("weight_decay", 0.0)
    optim.setdefault("nesterov", False)  # the plain rules unless a test asks for the look-ahead
    model = Weight()
    opt = make_optimizer(model, RunConfig(optim=OptimConfig(**optim)))
    out = []
    for t in range(steps):
        if lrs is not None:
            for g in opt.param_groups:
                g["lr"] = lrs[t]
        opt.zero_grad()
        f_torch(model.w).backward()
        opt.step()
        out.append(model.w.detach().numpy().copy())
    return out


def assert_same(ours: list[np.ndarray], ref: list[np.ndarray]) -> None:
    for t, (a, b) in enumerate(zip(ours, ref)):
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), msg=f"step {t + 1}")


def test_vanilla_sgd():
    lr, x, ref = 0.01, X0.copy(), []
    for _ in range(STEPS):
        x += -lr * grad(x)  # x += - learning_rate * dx
        ref.append(x.copy())
    assert_same(run_ours(name="sgd", lr=lr, momentum=0.0), ref)


def test_momentum_both_forms_of_the_notes():
    lr, mu = 0.01, 0.9
    x, v, cs231n = X0.copy(), np.zeros_like(X0), []
    for _ in range(STEPS):
        v = mu * v - lr * grad(x)  # integrate velocity
        x += v  # integrate position
        cs231n.append(x.copy())
    w, v2, slides = X0.copy(), np.zeros_like(X0), []
    for _ in range(STEPS):
        v2 = mu * v2 + grad(w)  # v_t = gamma v_{t-1} + grad J(w)
        w = w - lr * v2  # w = w - alpha v_t
        slides.append(w.copy())
    assert_same(run_ours(name="sgd", lr=lr, momentum=mu), cs231n)
    assert_same(slides, cs231n)  # same rule at a constant lr: the slides' v is the notes' v / (-lr)


def test_momentum_forms_differ_once_the_lr_changes():
    """cs231n's velocity keeps steps taken at the old lr; torch's (the slides') rescales them at once."""
    lrs, mu = [0.01] * 4 + [0.001] * 4, 0.9
    x, v, cs231n = X0.copy(), np.zeros_like(X0), []
    for lr in lrs:
        v = mu * v - lr * grad(x)
        x += v
        cs231n.append(x.copy())
    ours = run_ours(name="sgd", lr=0.01, momentum=mu, lrs=lrs)
    assert_same(ours[:4], cs231n[:4])
    assert not np.allclose(ours[5], cs231n[5])


def test_nesterov_practical_form_and_the_look_ahead_form():
    lr, mu = 0.01, 0.9
    x, v, practical = X0.copy(), np.zeros_like(X0), []
    for _ in range(STEPS):
        v_prev = v  # back this up
        v = mu * v - lr * grad(x)  # velocity update stays the same
        x += -mu * v_prev + (1 + mu) * v  # position update changes form
        practical.append(x.copy())
    assert_same(run_ours(name="sgd", lr=lr, momentum=mu, nesterov=True), practical)
    # the look-ahead form, in the original variable: the practical x is its x_ahead = x + mu * v
    x, v, ahead = X0.copy(), np.zeros_like(X0), []
    for _ in range(STEPS):
        x_ahead = x + mu * v
        v = mu * v - lr * grad(x_ahead)  # evaluate dx at x_ahead instead of at x
        x += v
        ahead.append(x + mu * v)
    assert_same(ahead, practical)


def test_adagrad():
    lr, eps, x, cache, ref = 0.5, 1e-8, X0.copy(), np.zeros_like(X0), []
    for _ in range(STEPS):
        dx = grad(x)
        cache += dx**2
        x += -lr * dx / (np.sqrt(cache) + eps)
        ref.append(x.copy())
    assert_same(run_ours(name="adagrad", lr=lr, eps=eps), ref)


def test_rmsprop_with_its_decay_rate():
    lr, decay_rate, eps, x, cache, ref = 0.01, 0.9, 1e-8, X0.copy(), np.zeros_like(X0), []
    for _ in range(STEPS):
        dx = grad(x)
        cache = decay_rate * cache + (1 - decay_rate) * dx**2
        x += -lr * dx / (np.sqrt(cache) + eps)
        ref.append(x.copy())
    assert_same(run_ours(name="rmsprop", lr=lr, decay_rate=decay_rate, eps=eps), ref)


def adam_reference(lr: float, beta1: float, beta2: float, eps: float, bias_correction: bool,
                   weight_decay: float = 0.0) -> list[np.ndarray]:
    x, m, v, ref = X0.copy(), np.zeros_like(X0), np.zeros_like(X0), []
    for t in range(1, STEPS + 1):  # t is your iteration counter going from 1 to infinity
        dx = grad(x)
        x = x - lr * weight_decay * x  # AdamW: decay decoupled from the adaptive step
        m = beta1 * m + (1 - beta1) * dx
        v = beta2 * v + (1 - beta2) * (dx**2)
        mt, vt = (m / (1 - beta1**t), v / (1 - beta2**t)) if bias_correction else (m, v)
        x += -lr * mt / (np.sqrt(vt) + eps)
        ref.append(x.copy())
    return ref


def test_adam_with_bias_correction():
    ref = adam_reference(0.1, 0.9, 0.999, 1e-8, bias_correction=True)
    assert_same(run_ours(name="adam", lr=0.1, betas=(0.9, 0.999), eps=1e-8), ref)


def test_almost_adam_has_no_bias_correction():
    ref = adam_reference(0.1, 0.9, 0.999, 1e-8, bias_correction=False)
    ours = run_ours(name="almost-adam", lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    assert_same(ours, ref)
    # the first step: Adam moves every weight by lr; without correction by lr*(1-b1)/sqrt(1-b2) = 3.16*lr
    np.testing.assert_allclose(abs(run_ours(name="adam", lr=0.1)[0] - X0), 0.1, rtol=1e-5)
    np.testing.assert_allclose(abs(ours[0] - X0), 0.1 * 0.1 / math.sqrt(0.001), rtol=1e-4)


def test_adamw_decoupled_weight_decay():
    ref = adam_reference(0.1, 0.9, 0.999, 1e-8, bias_correction=True, weight_decay=0.1)
    assert_same(run_ours(name="adamw", lr=0.1, weight_decay=0.1), ref)
    torch_ref = Weight()
    opt = torch.optim.AdamW(torch_ref.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(STEPS):
        opt.zero_grad()
        f_torch(torch_ref.w).backward()
        opt.step()
    torch.testing.assert_close(torch_ref.w.detach(), torch.as_tensor(ref[-1]))


def test_decoupled_decay_with_sgd_is_l2_for_vanilla_sgd():
    """Without momentum, w -= lr*lambda*w inside the step is the same as lambda/2*||W||^2 in the loss."""
    lr, lam, x, ref = 0.01, 0.3, X0.copy(), []
    for _ in range(STEPS):
        x += -lr * (grad(x) + lam * x)
        ref.append(x.copy())
    assert_same(run_ours(name="sgd", lr=lr, momentum=0.0, weight_decay=lam, decoupled=True), ref)


def test_almost_adam_state_round_trips():
    model = Weight()
    opt = AlmostAdam(model.parameters(), lr=0.1)
    f_torch(model.w).backward()
    opt.step()
    again = AlmostAdam(Weight().parameters(), lr=0.1)
    again.load_state_dict(opt.state_dict())
    assert torch.equal(again.state[again.param_groups[0]["params"][0]]["m"], opt.state[model.w]["m"])


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 10))


def test_no_decay_on_biases_and_norm_parameters_by_default():
    cfg = RunConfig()
    groups = param_groups(net(), cfg)
    decayed = [g for g in groups if g["decay"] > 0]
    assert len(decayed) == 1 and {p.ndim for p in decayed[0]["params"]} == {2, 4}
    rest = [p for g in groups if g["decay"] == 0 for p in g["params"]]
    assert len(rest) == 4 and all(p.ndim == 1 for p in rest)  # conv bias, bn weight + bias, fc bias
    assert all(g["weight_decay"] == g["decay"] for g in groups)  # sgd: the rule adds lambda*W to the gradient
    line = describe_groups(make_optimizer(net(), cfg), cfg)
    assert line == ("optimizer sgd: 2 tensors (1,476 values) weight decay 0.0005; 4 tensors (22 values) "
                    "no decay (biases, norm parameters) [L2, its gradient lambda*W added in the step]")
    off = apply_overrides(cfg, {"optim.weight_decay": 0})  # the weights are undecayed, but they are weights
    assert describe_groups(make_optimizer(net(), off), off) == (
        "optimizer sgd: 6 tensors (1,498 values) no decay (2 weight tensors, biases, norm parameters) "
        "[L2, its gradient lambda*W added in the step]")
    almost = apply_overrides(cfg, {"optim.name": "almost-adam"})  # no weight_decay of its own: L2 in the loss
    assert all(g["weight_decay"] == 0 for g in param_groups(net(), almost))
    assert describe_groups(make_optimizer(net(), almost), almost).endswith("[as L2 in the loss]")
    with_bias = param_groups(net(), apply_overrides(cfg, {"optim.decay_bias": "true"}))
    assert len(with_bias) == 1 and len(with_bias[0]["params"]) == 6


def test_adamw_groups_carry_their_decay_and_per_layer_strengths():
    cfg = apply_overrides(RunConfig(), {"optim.name": "adamw", "optim.weight_decay": "0.01",
                                        "regularize.layer_weight_decay": "4=0.1"})
    opt = make_optimizer(net(), cfg)
    by_decay = {g["weight_decay"]: [tuple(p.shape) for p in g["params"]] for g in opt.param_groups}
    assert by_decay[0.1] == [(10, 144)] and by_decay[0.01] == [(4, 1, 3, 3)] and len(by_decay[0.0]) == 4


def test_clip_gradients_by_global_norm():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    assert clip_gradients([a, b], 1.0) == pytest.approx(5.0)
    assert math.hypot(*a.grad.tolist(), *b.grad.tolist()) == pytest.approx(1.0)
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.0]))
    assert clip_gradients([a, b], 10.0) == pytest.approx(1.0)
    torch.testing.assert_close(b.grad, torch.tensor([0.8]))  # below the threshold: untouched
    assert clip_gradients([a, b], 0.0) == 0.0


def test_names_and_errors():
    assert list_optimizers() == ["sgd", "adagrad", "rmsprop", "adam", "almost-adam", "adamw"]
    with pytest.raises(BabysitError, match=r"^unknown optim.name 'adamax'; choose one of sgd, adagrad"):
        check_choices(apply_overrides(RunConfig(), {"optim.name": "adamax"}))
    with pytest.raises(BabysitError, match=r"^unknown optim.name 'sgdd'; choose one of .*adamw; did you mean 'sgd'\?$"):
        make_optimizer(net(), apply_overrides(RunConfig(), {"optim.name": "sgdd"}))
    vanilla = make_optimizer(net(), apply_overrides(RunConfig(), {"optim.nesterov": "true", "optim.momentum": "0"}))
    assert vanilla.param_groups[0]["nesterov"] is False  # momentum 0 alone is the vanilla update
    with pytest.raises(BabysitError, match="optim.betas needs 2 numbers"):
        apply_overrides(RunConfig(), {"optim.betas": "0.9"})
    assert apply_overrides(RunConfig(), {"optim.betas": "0.8, 0.99"}).optim.betas == (0.8, 0.99)
