"""Learning-rate schedules: boundary values by hand, and torch's own schedulers side by side."""

import math

import pytest
import torch

from babysit.cli import main
from babysit.config import ScheduleConfig
from babysit.errors import BabysitError
from babysit.train import schedules as S


def sched(**kw) -> ScheduleConfig:
    kw.setdefault("warmup_epochs", 0.0)
    return ScheduleConfig(**kw)


def curve(cfg: ScheduleConfig, lr: float = 0.1, epochs: int = 10, spe: int = 10) -> list[float]:
    return S.lr_curve(cfg, lr, epochs, spe)


def torch_curve(make, lr: float = 0.1, steps: int = 100, per: int = 1) -> list[float]:
    """lr of each step under a torch scheduler stepped every ``per`` steps."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sch = make(opt)
    out = []
    for s in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if (s + 1) % per == 0:
            sch.step()
    return out


def test_step_decay_boundaries():
    assert S.step_decay(0, 0.1, 0.1, 20) == 0.1
    assert S.step_decay(19.99, 0.1, 0.1, 20) == 0.1
    assert S.step_decay(20, 0.1, 0.1, 20) == pytest.approx(0.01)
    assert S.step_decay(40, 0.1, 0.1, 20) == pytest.approx(0.001)
    assert S.step_decay(4.9, 1.0, 0.5, 5) == 1.0 and S.step_decay(5, 1.0, 0.5, 5) == 0.5  # x0.5 every 5 epochs
    lrs = curve(sched(name="step", step_size=1, gamma=0.97))  # x0.97 every epoch
    assert [lrs[10 * e] for e in range(4)] == pytest.approx([0.1, 0.097, 0.1 * 0.97**2, 0.1 * 0.97**3])
    assert lrs[9] == 0.1  # the whole first epoch at a0
    by_steps = curve(sched(name="step", unit="step", step_size=30, gamma=0.1))  # every 30 mini-batches
    assert by_steps[29] == 0.1 and by_steps[30] == pytest.approx(0.01)
    assert torch_curve(lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5), steps=100, per=10) == \
        pytest.approx(curve(sched(name="step", step_size=3, gamma=0.5)))


def test_exponential_and_inverse_decays():
    assert S.exponential(0, 0.1, 0.5) == 0.1 and S.exponential(2, 0.1, 0.5) == pytest.approx(0.1 / math.e)
    assert S.inverse_time(0, 0.1, 0.5) == 0.1 and S.inverse_time(2, 0.1, 0.5) == pytest.approx(0.05)
    assert S.inverse_sqrt(0, 0.1, 1.0) == 0.1 and S.inverse_sqrt(3, 0.1, 1.0) == pytest.approx(0.05)
    k = 0.2
    ours = curve(sched(name="exp", k=k))[::10]  # at each epoch start
    ref = torch_curve(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, math.exp(-k)), steps=10)
    assert ours == pytest.approx(ref)
    per_step = curve(sched(name="inv-time", unit="step", k=0.01))
    assert per_step[100 - 1] == pytest.approx(0.1 / (1 + 0.01 * 99))


def test_linear_sqrt_and_cosine_from_a0_to_zero():
    T = 100
    for name, half in (("linear", 0.05), ("sqrt", 0.1 * math.sqrt(0.5)), ("cosine", 0.05)):
        lrs = curve(sched(name=name))
        assert lrs[0] == 0.1 and lrs[T // 2] == pytest.approx(half), name
        assert S.lr_at(T, 0.1, sched(name=name), 10, T) == pytest.approx(0.0, abs=1e-12), name
    assert S.sqrt_decay(0.75, 0.1) == pytest.approx(0.05)
    assert curve(sched(name="cosine")) == pytest.approx(
        torch_curve(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=T)))
    assert curve(sched(name="linear")) == pytest.approx(
        torch_curve(lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.0, total_iters=T)))
    assert curve(sched(name="sqrt")) == pytest.approx(
        torch_curve(lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=T, power=0.5)))


def test_warmup_multiplies_any_schedule():
    cfg = ScheduleConfig(name="cosine", warmup_epochs=2)
    lrs = curve(cfg, spe=10)
    plain = curve(sched(name="cosine"), spe=10)
    assert lrs[0] == pytest.approx(plain[0] / 20) and lrs[9] == pytest.approx(plain[9] / 2)
    assert lrs[19:] == plain[19:]
    assert S.warmup_factor(0, 0) == 1.0


def test_cyclical_triangular_matches_torch_cycliclr():
    cfg = sched(name="cyclical", unit="step", half_cycle=7, min_lr=0.01)
    ours = curve(cfg)
    ref = torch_curve(lambda o: torch.optim.lr_scheduler.CyclicLR(
        o, base_lr=0.01, max_lr=0.1, step_size_up=7, mode="triangular", cycle_momentum=False))
    assert ours == pytest.approx(ref)
    assert ours[0] == 0.01 and ours[7] == pytest.approx(0.1) and ours[14] == pytest.approx(0.01)
    assert S.triangular(3.5, 0.0, 1.0, 7) == pytest.approx(0.5)


def test_one_cycle_matches_torch_onecyclelr():
    ours = curve(sched(name="onecycle", pct_start=0.3))
    ref = torch_curve(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.1, total_steps=100, pct_start=0.3, cycle_momentum=False))
    assert ours == pytest.approx(ref)
    assert ours[0] == pytest.approx(0.1 / 25) and max(ours) == pytest.approx(0.1)
    assert ours[-1] == pytest.approx(0.1 / 25 / 1e4)
    low = curve(sched(name="onecycle", min_lr=0.02))
    assert low[0] == pytest.approx(0.02) and low[-1] == pytest.approx(0.02 / 1e4)


def test_one_cycle_momentum_matches_torch_cycle_momentum():
    # momentum mirrors the lr: high -> low while the lr rises (peak at step pct*T - 1), low -> high after;
    # each half is end + (start - end)/2 * (1 + cos(pi * pct)), as the lr's halves
    s = S.LRSchedule(0.1, sched(name="onecycle", momentum_low=0.85, momentum_high=0.95), 10, 100, momentum=0.9)
    ours = [s.momentum(k) for k in range(100)]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    ref_sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=100, pct_start=0.3,
                                                    base_momentum=0.85, max_momentum=0.95)
    ref = []
    for _ in range(100):
        ref.append(opt.param_groups[0]["momentum"])
        opt.step()
        ref_sched.step()
    assert ours == pytest.approx(ref)
    assert ours[0] == pytest.approx(0.95) and ours[29] == pytest.approx(0.85) and ours[-1] == pytest.approx(0.95)
    by_hand = 0.85 + (0.95 - 0.85) / 2 * (1 + math.cos(math.pi * 10 / 29))  # step 10, rising lr
    assert ours[10] == pytest.approx(by_hand)


def test_momentum_is_left_alone_unless_onecycle_cycles_it():
    assert S.LRSchedule(0.1, sched(name="onecycle"), 10, 100, momentum=0.9).momentum(0) == pytest.approx(0.95)
    assert S.LRSchedule(0.1, sched(name="onecycle", momentum_low=0), 10, 100, momentum=0.9).momentum(5) is None
    assert S.LRSchedule(0.1, sched(name="cosine"), 10, 100, momentum=0.9).momentum(5) is None
    # vanilla SGD (momentum 0) stays vanilla under one-cycle
    assert S.LRSchedule(0.1, sched(name="onecycle"), 10, 100).momentum(5) is None


def test_momentum_range_is_validated():
    from babysit import config as C

    for bad in ({"momentum_low": 1.0}, {"momentum_low": -0.1}, {"momentum_high": 1.0},
                {"momentum_low": 0.9, "momentum_high": 0.8}):
        with pytest.raises(BabysitError, match="momentum_"):
            C.validate(C.RunConfig(schedule=sched(**bad)))
    C.validate(C.RunConfig(schedule=sched(momentum_low=0, momentum_high=0.5)))  # off: high unused


@pytest.mark.parametrize("rule,key", [("sgd", "momentum"), ("adam", "betas")])
def test_cycled_momentum_reaches_the_optimiser(rule, key):
    from babysit import config as C
    from babysit.train.loop import Update, train_step

    cfg = C.RunConfig(optim=C.OptimConfig(name=rule, momentum=0.9, betas=(0.9, 0.999)), train=C.TrainConfig(epochs=6),
                      schedule=sched(name="onecycle", momentum_low=0.85, momentum_high=0.95))
    schedule = S.LRSchedule.from_config(cfg, 10)
    model = torch.nn.Linear(4, 3)
    u = Update.from_config(model, cfg)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    seen = []
    for step in range(cfg.train.epochs * 10):
        train_step(u, x, y, schedule.lr(step), momentum=schedule.momentum(step))
        m = u.optimizer.param_groups[0][key]
        seen.append(m[0] if key == "betas" else m)
    assert seen[0] == pytest.approx(0.95) and min(seen) == pytest.approx(0.85, abs=1e-3)
    assert seen == pytest.approx([schedule.momentum(k) for k in range(len(seen))])


def test_plateau_matches_torch_reduce_on_plateau():
    losses = [1.0, 0.9, 0.9, 0.95, 0.91, 0.8, 0.8, 0.8, 0.80001, 0.7, 0.7, 0.7, 0.7]
    plateau = S.Plateau(factor=0.5, patience=2)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    for loss in losses:
        plateau.step(loss)
        ref.step(loss)
        assert plateau.scale == pytest.approx(opt.param_groups[0]["lr"])
    assert plateau.scale == 0.125  # three reductions: after 0.91, 0.80001 and the last 0.7


def test_lr_schedule_keeps_plateau_state_for_resume():
    cfg = sched(name="plateau", factor=0.1, patience=0)
    s = S.LRSchedule(0.5, cfg, 10, 100)
    s.epoch_end(1.0)
    s.epoch_end(1.0)  # no improvement, patience 0: x0.1
    assert s.lr(50) == pytest.approx(0.05)
    again = S.LRSchedule(0.5, cfg, 10, 100)
    again.load_state_dict(s.state_dict())
    assert again.lr(50) == pytest.approx(0.05) and again.plateau.best == 1.0
    fresh = S.LRSchedule(0.5, cfg, 10, 100)
    fresh.load_state_dict(S.LRSchedule(0.5, cfg, 10, 100).state_dict())  # best = inf survives JSON as None
    assert fresh.plateau.best == math.inf
    assert S.LRSchedule(0.5, sched(name="cosine"), 10, 100).state_dict() == {"plateau": None}


def test_names_and_unknown_schedule():
    assert S.list_schedules() == ["constant", "step", "exp", "inv-time", "inv-sqrt", "linear", "sqrt", "cosine",
                                  "cosine-restarts", "cyclical", "onecycle", "plateau"]
    with pytest.raises(BabysitError, match="^unknown schedule.name 'poly'; choose one of constant, step"):
        S.lr_at(0, 0.1, sched(name="poly"), 10, 100)


def test_cli_prints_and_plots_a_schedule(tmp_path, capsys):
    png = tmp_path / "s.png"
    assert main(["schedule", "step", "--schedule.step_size=2", "--schedule.gamma=0.5", "--train.epochs=4",
                 "--schedule.warmup_epochs=0", "--optim.lr=0.4", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "epoch   1: lr 0.4 " in out and "epoch   3: lr 0.2 " in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["schedule"]) == 0 and "onecycle" in capsys.readouterr().out
    assert main(["schedule", "nope"]) == 2
    assert "unknown schedule.name 'nope'" in capsys.readouterr().err


def test_cosine_restarts_is_sgdr_with_equal_cycles():
    """a0/2 (1 + cos(pi (t mod L)/L)), L = T/M steps: written out, and torch's CosineAnnealingWarmRestarts."""
    cfg = sched(name="cosine-restarts", cycles=4)
    got = curve(cfg, lr=0.1, epochs=8, spe=10)  # T = 80 steps, L = 20
    assert got == pytest.approx([0.05 * (1 + math.cos(math.pi * (t % 20) / 20)) for t in range(80)])
    assert [got[t] for t in (0, 20, 40, 60)] == [0.1] * 4  # a restart at every cycle start
    assert got[19] == pytest.approx(0.05 * (1 + math.cos(math.pi * 19 / 20)))  # near zero at a cycle's end
    ref = torch_curve(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=20, T_mult=1,
                                                                                      eta_min=0.0), steps=80)
    assert got == pytest.approx(ref, abs=1e-12)
    assert curve(sched(name="cosine-restarts", cycles=1), epochs=8, spe=10) == pytest.approx(
        curve(sched(name="cosine"), epochs=8, spe=10))  # one cycle is the plain cosine


def test_cycle_ends_and_the_swa_hold():
    s = S.LRSchedule(0.1, sched(name="cosine-restarts", cycles=3), 10, 90)
    assert [s.cycle_end(e) for e in range(1, 10)] == [0, 0, 1, 0, 0, 2, 0, 0, 3]
    assert [S.LRSchedule(0.1, sched(name="cosine"), 10, 90).cycle_end(e) for e in range(1, 10)] == [0] * 9
    held = S.LRSchedule(0.1, sched(name="cosine"), 10, 90, hold_lr=0.02, hold_from=70)
    assert [held.lr(t) for t in (0, 69)] == [s.lr(0), S.lr_at(69, 0.1, sched(name="cosine"), 10, 90)]
    assert [held.lr(t) for t in (70, 89)] == [0.02, 0.02]


def test_cycles_must_divide_the_epochs():
    from babysit import config as C

    with pytest.raises(BabysitError, match=r"schedule.cycles=3 must divide train.epochs=10, .* --train.epochs=9"):
        C.apply_overrides(C.RunConfig(), {"schedule.name": "cosine-restarts", "schedule.cycles": 3,
                                          "train.epochs": 10})
