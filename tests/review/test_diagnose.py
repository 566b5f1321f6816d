"""Each diagnosis rule on a constructed history that must trigger it and one that must not."""

import json
import math
import random

import pytest

from babysit.review import diagnose as D
from babysit.review.findings import Evidence, format_findings


def steps(losses, lr=0.01):
    return [{"kind": "step", "step": i + 1, "epoch": 1, "loss": v, "lr": lr} for i, v in enumerate(losses)]


def epochs(train, val):
    return [{"kind": "epoch", "epoch": i + 1, "step": 10 * (i + 1), "train_acc": t, "val_acc": v, "cost": 1.0}
            for i, (t, v) in enumerate(zip(train, val))]


def healthy_losses(n=300, noise=0.02, seed=0):
    rng = random.Random(seed)
    return [2.3 * math.exp(-i / 40) + 0.05 + rng.gauss(0, noise) for i in range(n)]


def ev(losses=None, train=None, val=None, layers=None, config=None, **kw):
    history = steps(losses or []) + epochs(train or [], val or [])
    return Evidence.from_history(history, layers=layers or [], config=config or {"optim": {"lr": 0.01}}, **kw)


def rules(evidence):
    return {f.rule for f in D.diagnose(evidence)}


def layer_records(stat_by_layer, n=6, lr=0.01):
    """``n`` probe records with the same per-layer stats: {name: {"kind": ..., stat: value}}."""
    return [{"step": 10 * (i + 1), "epoch": 1, "lr": lr, "layers": stat_by_layer} for i in range(n)]


def test_healthy_run_has_no_findings():
    e = ev(healthy_losses(), [0.6, 0.96, 0.97], [0.6, 0.95, 0.95])
    assert D.diagnose(e) == []
    assert "none" in format_findings([])


def test_nan_loss_is_lr_too_high_and_stops_everything_else():
    history = steps([2.3, 2.31]) + [{"kind": "diverged", "step": 3, "loss": "nan", "lr": 1e6, "checkpoint": None}]
    found = D.diagnose(Evidence.from_history(history, config={"optim": {"lr": 0.01}}))
    assert [f.rule for f in found] == ["lr_too_high"] and found[0].severity == "error"
    assert "nan at step 3" in found[0].observation and "--optim.lr=0.001" in found[0].action


def test_failed_sanity_checks_lead_and_the_explosion_does_not_blame_the_lr_first():
    """--model.init=normal-1: the checks fail before training, then the loss explodes; the init is the suspect."""
    checks = [{"name": "initial_loss_check", "title": "initial loss", "passed": False,
               "summary": "loss 41.2, expected 2.30",
               "advice": "check the initialisation", "numbers": {"loss": 41.2}},
              {"name": "overfit_check", "title": "overfit a tiny sample", "passed": True, "summary": "ok",
               "numbers": {}}]
    history = steps([41.2, 45.0]) + [{"kind": "diverged", "step": 3, "loss": "nan", "lr": 0.1, "checkpoint": None}]
    found = D.diagnose(Evidence.from_history(history, checks=checks, config={"optim": {"lr": 0.1}}))
    assert [f.rule for f in found] == ["check_initial_loss_check", "lr_too_high"]
    assert found[0].severity == "error" and found[1].title == "loss exploded — after failed sanity checks"
    assert "the sanity checks failed before training (initial loss)" in found[1].cause
    plain = D.diagnose(Evidence.from_history(history, config={"optim": {"lr": 0.1}}))
    assert plain[0].title == "loss exploded — LR too high"  # no failed checks: the lr is the suspect


def test_loss_sustained_above_three_times_initial_is_lr_too_high():
    """The notes' 3x rule read over the trend: a spike that recovers is a warm-up, a plateau up there is not."""
    assert "lr_too_high" not in rules(ev([2.3, 2.5, 7.2, 9.0, 8.0] + [2.0] * 30))  # a transient spike
    assert "lr_too_high" in rules(ev([2.3, 2.5] + [7.5] * 40))  # smoothed > 6.9 for 30 steps and more
    assert "lr_too_high" not in rules(ev([2.3, 2.5] + [6.8] * 40))  # never above 3x
    assert "lr_too_high" in rules(ev([2.3, 2.5, 80.0] + [2.0] * 30))  # one loss > 30x stops at once


def test_the_notes_flat_loss_is_lr_too_low():
    notes = [2.302576, 2.302582, 2.302558, 2.302519, 2.302517, 2.302518, 2.302466, 2.302452, 2.302459, 2.302420]
    losses = [v for v in notes for _ in range(5)]
    found = D.diagnose(ev(losses, config={"optim": {"lr": 1e-6, "weight_decay": 1e-6}}))
    flat = [f for f in found if f.rule == "loss_flat"]
    assert flat and flat[0].title == "loss barely changes — LR too low" and "--optim.lr=1e-05" in flat[0].action
    assert "loss_flat" not in rules(ev(healthy_losses()))


def test_flat_loss_quotes_the_lr_the_steps_really_had():
    """The schedule's lr, not only optim.lr: a cosine run's flat tail was at 0.0003..0.0075, not at 0.05."""
    history = [{"kind": "step", "step": i + 1, "epoch": 1, "loss": 2.3, "lr": 0.0075 - 0.0072 * i / 49}
               for i in range(50)]
    found = D.diagnose(Evidence.from_history(history, config={"optim": {"lr": 0.05}}))
    (flat,) = [f for f in found if f.rule == "loss_flat"]
    assert "at lr 0.0003..0.0075 (the schedule's; optim.lr 0.05)" in flat.observation
    steady = D.diagnose(ev([2.3] * 50))  # one lr throughout: just that number
    assert any(f.observation.endswith("over 50 steps at lr 0.01") for f in steady)


def test_flat_loss_with_strong_regularisation_blames_regularisation():
    found = D.diagnose(ev([2.3] * 50, config={"optim": {"lr": 0.01, "weight_decay": 0.1}}))
    assert any(f.title == "loss barely changes — regularisation too high" for f in found)


def test_rising_loss():
    assert "loss_rising" in rules(ev([2.3 + 0.01 * i for i in range(50)]))


def test_linear_decrease_is_lr_too_low():
    assert "loss_linear" in rules(ev([2.3 - 0.001 * i for i in range(300)]))
    assert "loss_linear" not in rules(ev(healthy_losses(noise=0.0)))


def test_noisy_curve_asks_for_a_bigger_batch():
    found = D.diagnose(ev(healthy_losses(noise=0.8), config={"optim": {"lr": 0.01}, "train": {"batch_size": 8}}))
    noisy = [f for f in found if f.rule == "noisy"]
    assert noisy and "--train.batch_size=32" in noisy[0].action
    assert "noisy" not in rules(ev(healthy_losses(noise=0.05)))


def test_overfitting_advice_names_an_augmentation_pipeline():
    gap = {"train": [0.8, 0.95, 0.99], "val": [0.7, 0.75, 0.76]}
    plain = next(f for f in D.diagnose(ev(**gap)) if f.rule == "overfitting")
    assert "--augment.pipeline=translate-2,cutout-8" in plain.action
    some = ev(**gap, config={"optim": {"lr": 0.01}, "augment": {"pipeline": ["flip-h", "cutout-4"]}})
    stronger = next(f for f in D.diagnose(some) if f.rule == "overfitting")
    assert "add mixup-0.2 to augment.pipeline=flip-h,cutout-4" in stronger.action


def test_big_gap_is_overfitting_and_no_gap_low_accuracy_is_underfitting():
    assert "overfitting" in rules(ev(train=[0.8, 0.95, 0.99], val=[0.7, 0.75, 0.76]))
    assert "overfitting" not in rules(ev(train=[0.8, 0.95, 0.97], val=[0.8, 0.93, 0.95]))
    assert "underfitting" in rules(ev(train=[0.4, 0.5, 0.55], val=[0.4, 0.5, 0.55]))
    assert "underfitting" not in rules(ev(train=[0.8, 0.95, 0.97], val=[0.8, 0.93, 0.95]))
    # a flat loss already explains low accuracy: no "add capacity" advice on top
    assert "underfitting" not in rules(ev([2.3] * 50, train=[0.19, 0.19], val=[0.19, 0.19]))
    grads = layer_records({"0": {"kind": "fc", "grad_norm": 1e-6, "w_norm": 1.0},
                           "2": {"kind": "fc", "grad_norm": 0.1, "w_norm": 1.0},
                           "4": {"kind": "fc", "grad_norm": 0.1, "w_norm": 1.0}})
    assert "underfitting" not in rules(ev(train=[0.4, 0.5], val=[0.4, 0.5], layers=grads))


def test_chance_accuracy_is_not_learning_rather_than_underfitting():
    found = rules(ev(train=[0.1, 0.11], val=[0.1, 0.1], num_classes=10))
    assert "not_learning" in found and "underfitting" not in found


def test_val_still_rising_means_train_longer():
    found = D.diagnose(ev(train=[0.5, 0.7, 0.8, 0.9], val=[0.5, 0.7, 0.8, 0.88], config={"train": {"epochs": 4}}))
    assert any(f.rule == "still_improving" and "--train.epochs=8" in f.action for f in found)
    assert "still_improving" not in rules(ev(train=[0.5, 0.9, 0.91, 0.91], val=[0.5, 0.9, 0.91, 0.905]))


def test_update_ratio_outside_the_band_names_the_layers():
    low = layer_records({"0": {"kind": "conv", "update_ratio": 1e-6}, "3": {"kind": "fc", "update_ratio": 2e-6}})
    found = [f for f in D.diagnose(ev(layers=low)) if f.rule == "update_ratio_low"]
    assert found and "layer 0: 1.0e-06" in found[0].observation and "raise the learning rate" in found[0].action
    high = layer_records({"0": {"kind": "conv", "update_ratio": 1e-3}, "3": {"kind": "fc", "update_ratio": 0.1}})
    found = [f for f in D.diagnose(ev(layers=high)) if f.rule == "update_ratio_high"]
    assert found and "layer 3" in found[0].observation and "layer 0" not in found[0].observation
    good = layer_records({"0": {"kind": "conv", "update_ratio": 1e-3}, "3": {"kind": "fc", "update_ratio": 3e-3}})
    assert not {"update_ratio_low", "update_ratio_high"} & rules(ev(layers=good))
    named = ev(layers=low, config={"optim": {"lr": 0.01}, "model": {"spec": "conv3-8 relu pool2 fc"}})
    found = [f for f in D.diagnose(named) if f.rule == "update_ratio_low"]  # named by spec token when known
    assert "layer 0 conv3-8: 1.0e-06, layer 3 fc: 2.0e-06" in found[0].observation


def test_high_update_ratio_spares_bn_fed_layers_and_is_information_when_the_loss_fell_well():
    bn_net = layer_records({"0": {"kind": "conv", "update_ratio": 0.05}, "1": {"kind": "bn"},
                            "4": {"kind": "fc", "update_ratio": 0.05}})
    (found,) = [f for f in D.diagnose(ev(layers=bn_net)) if f.rule == "update_ratio_high"]
    assert "layer 4" in found.observation and "layer 0" not in found.observation  # BN undoes layer 0's scale
    assert found.severity == "warning"
    fell = [f for f in D.diagnose(ev(healthy_losses(), layers=bn_net)) if f.rule == "update_ratio_high"]
    assert fell[0].severity == "info" and fell[0].action.startswith("nothing to change while the loss keeps falling")


def test_update_ratio_ignores_warm_up_and_annealed_steps():
    warm = layer_records({"0": {"kind": "conv", "update_ratio": 1e-7}}, n=5, lr=1e-5)
    full = layer_records({"0": {"kind": "conv", "update_ratio": 1e-3}}, n=5, lr=0.1)
    assert "update_ratio_low" not in rules(ev(layers=warm + full))


def test_dead_relus():
    assert "dead_relu" in rules(ev(layers=layer_records({"1": {"kind": "relu", "dead": 0.7}})))
    assert "dead_relu" not in rules(ev(layers=layer_records({"1": {"kind": "relu", "dead": 0.1}})))


def test_saturated_tanh():
    assert "saturation" in rules(ev(layers=layer_records({"1": {"kind": "tanh", "saturated": 0.6}})))
    assert "saturation" not in rules(ev(layers=layer_records({"1": {"kind": "tanh", "saturated": 0.01}})))


@pytest.mark.parametrize("first_grad,rule", [(1e-6, "vanishing_gradients"), (1e3, "exploding_gradients")])
def test_gradients_across_depth(first_grad, rule):
    def rec(g0):
        return layer_records({"0": {"kind": "conv", "grad_norm": g0, "w_norm": 1.0},
                              "5": {"kind": "fc", "grad_norm": 0.1, "w_norm": 1.0},
                              "7": {"kind": "fc", "grad_norm": 0.1, "w_norm": 1e-3}})  # the score layer
    assert rule in rules(ev(layers=rec(first_grad)))
    assert rule not in rules(ev(layers=rec(0.05)))


def test_small_score_layer_alone_is_not_vanishing():
    """A tiny score layer (auto init) has a huge relative gradient; it must not count as depth."""
    recs = layer_records({"0": {"kind": "conv", "grad_norm": 0.05, "w_norm": 1.0},
                          "5": {"kind": "fc", "grad_norm": 0.05, "w_norm": 1.0},
                          "7": {"kind": "fc", "grad_norm": 0.1, "w_norm": 1e-4}})
    assert "vanishing_gradients" not in rules(ev(layers=recs))


def test_failed_sanity_checks_become_findings():
    check = {"name": "overfit_tiny", "title": "overfit a tiny sample", "passed": False, "summary": "acc 40%",
             "advice": "learning rate too low", "numbers": {}}
    assert "check_overfit_tiny" in rules(ev(checks=[check]))
    assert "check_overfit_tiny" not in rules(ev(checks=[{**check, "passed": True}]))


def test_best_on_border():
    f = D.best_on_border("lr", 1.1e-6, 1e-6, 1e-1)
    assert f is not None and "lower edge" in f.observation and "1e-07" in f.action
    assert D.best_on_border("lr", 1e-3, 1e-6, 1e-1) is None
    assert D.best_on_border("weight_decay", 0.95, 0.0, 1.0, log=False) is not None


def test_diagnose_run_writes_findings_json(tmp_path):
    (tmp_path / "config.toml").write_text("[optim]\nlr = 1e-06\n")
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps([2.3026] * 40, lr=1e-6)))
    found = D.diagnose_run(tmp_path)
    saved = json.loads((tmp_path / "findings.json").read_text())["findings"]
    assert [f["rule"] for f in saved] == [f.rule for f in found] == ["loss_flat"]
    assert D.read_findings(tmp_path) == found


def test_a_recorded_one_cycle_run_is_not_called_linear():
    """The default MNIST run (one-cycle, H100): the loss falls 2.36 -> 0.12 in the warm-up, then creeps down at
    the peak lr. Its full-lr steps alone look linear (0.1175 -> 0.0763, thirds dropping 0.023 then 0.018), which
    the rule once reported as "LR too low" on a run that ended at 99.24 % test."""
    from pathlib import Path

    trace = json.loads((Path(__file__).parents[1] / "traces" / "defaults_mnist_h100.json").read_text())
    history = [{"kind": "step", "step": s, "epoch": 1, "loss": loss, "lr": lr} for s, loss, lr in trace["steps"]]
    evidence = Evidence.from_history(history, layers=[], config={"optim": {"lr": 0.2}})
    assert "loss_linear" not in rules(evidence)
    full = [float(r["loss"]) for r in evidence.full_lr_steps()]
    n = len(full) // 3
    thirds = [sum(full[i * n:(i + 1) * n]) / n for i in range(2)] + [sum(full[2 * n:]) / len(full[2 * n:])]
    assert (thirds[1] - thirds[2]) / (thirds[0] - thirds[1]) > D.LINEAR_SLOWDOWN  # the shape alone would fire
    # a run that starts slow and stays slow at the same lr schedule is still called linear
    slow = [{**r, "loss": 2.3 - 0.001 * i} for i, r in enumerate(history)]
    assert "loss_linear" in rules(Evidence.from_history(slow, layers=[], config={"optim": {"lr": 0.2}}))
