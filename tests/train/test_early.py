"""Early stopping and the kept (best) weights on digits: the run stops at the epoch its patience allows."""

import copy
import math

import pytest
import torch

from babysit.rundir import RunDir, read_history
from babysit.train.early import improved
from babysit.train.loop import fit
from tests.train.test_loop import StopAfter, cfg, digits_data, small_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_improved_by_more_than_min_delta():
    assert improved("val_acc", 0.5, None) and improved("val_loss", 3.0, None)  # the first epoch is the best so far
    assert improved("val_acc", 0.91, 0.9) and not improved("val_acc", 0.9, 0.9)  # equal is no improvement
    assert not improved("val_acc", 0.905, 0.9, min_delta=0.01) and improved("val_acc", 0.911, 0.9, min_delta=0.01)
    assert improved("val_loss", 0.4, 0.5) and not improved("val_loss", 0.45, 0.5, min_delta=0.1)
    assert not improved("val_loss", float("nan"), 0.5) and not improved("val_acc", float("nan"), None)


class EpochWeights:
    def __init__(self):
        self.weights = []

    def on_epoch_end(self, state):
        self.weights.append(copy.deepcopy(state.model.state_dict()))


# After epoch 2 the lr is 0.05 * 1e-10: the weights no longer move, so val accuracy stops improving.
FREEZE = {"train.epochs": 10, "schedule.name": "step", "schedule.step_size": 2, "schedule.gamma": 1e-10,
          "schedule.warmup_epochs": 0, "train.patience": 3}


def test_patience_stops_at_the_right_epoch_and_keeps_the_best(tmp_path):
    data = digits_data()
    seen = EpochWeights()
    model = small_model()
    run = RunDir.create(tmp_path / "run")
    state = fit(model, data, cfg(**FREEZE), run, callbacks=[seen])
    accs = [r["val_acc"] for r in state.history]
    best = accs.index(max(accs)) + 1  # the first epoch with the highest val accuracy
    assert best <= 3 and accs[2:] == [accs[2]] * len(accs[2:])  # frozen from epoch 3 on
    assert state.epoch == len(accs) == best + 3 < 10  # stopped once 3 epochs in a row did not improve
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in seen.weights[best - 1].items())
    stop = [r for r in read_history(run.history) if r["kind"] == "early_stop"]
    assert stop == [{"kind": "early_stop", "step": state.step, "epoch": best + 3, "monitor": "val_acc", "patience": 3,
                     "min_delta": 0.0, "best_epoch": best, "best": accs[best - 1], "epochs_saved": 10 - best - 3}]
    # resuming a run that stopped early trains nothing more
    again = fit(small_model(seed=3), data, cfg(**FREEZE), run, resume=True)
    assert again.epoch == state.epoch and again.step == state.step


def test_val_loss_monitor_with_min_delta(capsys):
    """No later epoch lowers the val loss by 10: epoch 1 stays the best and patience 2 ends the run at epoch 3."""
    data = digits_data()
    seen = EpochWeights()
    model = small_model()
    state = fit(model, data, cfg(**{"train.epochs": 6, "train.monitor": "val_loss", "train.min_delta": 10.0,
                                    "train.patience": 2}), callbacks=[seen])
    assert state.epoch == 3 and state.best_epoch == 1 and state.best_score == state.history[0]["val_loss"]
    assert state.best_val_acc == state.history[0]["val_acc"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in seen.weights[0].items())
    assert ("Early stopping after epoch 3: val_loss has not improved by more than 10 for 2 epochs (best "
            in capsys.readouterr().out)


def test_stop_survives_a_kill_in_the_stopping_epoch(tmp_path):
    """Killed mid-epoch before the stop, the resumed run stops at the same epoch with the same weights."""
    data = digits_data()
    c = cfg(**{**FREEZE, "train.patience": 1, "checkpoint.every": 5})
    whole = fit(small_model(), data, c, RunDir.create(tmp_path / "whole"))
    run = RunDir.create(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        fit(small_model(), data, c, run, callbacks=[StopAfter(whole.step - 3)])
    model = small_model(seed=4)
    resumed = fit(model, data, c, run, resume=True)
    assert (resumed.epoch, resumed.best_epoch, resumed.step) == (whole.epoch, whole.best_epoch, whole.step)
    assert [r for r in run.read_history() if r["kind"] == "early_stop"] == \
        [r for r in RunDir(tmp_path / "whole").read_history() if r["kind"] == "early_stop"]


def test_a_val_accuracy_tie_goes_to_the_lower_val_loss():
    from babysit.train.early import better_epoch

    best = {"epoch": 4, "val_acc": 0.9832, "val_loss": 0.0538}
    later = {"epoch": 20, "val_acc": 0.9832, "val_loss": 0.0340}  # the digits demo: same 176 of 179, lower loss
    assert better_epoch("val_acc", later, best) and not better_epoch("val_acc", best, later)
    assert better_epoch("val_acc", {**later, "val_acc": 0.99, "val_loss": 9.0}, best)  # accuracy first
    assert not better_epoch("val_acc", later, best, min_delta=0.001)  # a min_delta asks for a real gain
    assert not better_epoch("val_loss", {**later, "val_loss": 0.0538}, best)  # val_loss: no tie-break needed
    assert better_epoch("val_acc", best, None) and not better_epoch("val_acc", {**best, "val_acc": math.nan}, None)
