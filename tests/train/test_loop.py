"""The loop on real images (scikit-learn's digits), with a small hand-built model."""

import math

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from babysit import config as C
from babysit.errors import Diverged
from babysit.rundir import RunDir
from babysit.train.loop import TensorData, evaluate, fit


def digits_data(n_train=400, n_val=200) -> TensorData:
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x[:n_train].mean()) / x[:n_train].std()
    y = torch.tensor(d.target)
    return TensorData(x[:n_train], y[:n_train], x[n_train:n_train + n_val], y[n_train:n_train + n_val])


def small_model(seed=0, dropout=0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Dropout(dropout), nn.Linear(8 * 16, 10))


def cfg(**over) -> C.RunConfig:
    base = {"train.epochs": 2, "train.batch_size": 32, "train.progress": False, "checkpoint.every": 7}
    base.update(over)
    return C.apply_overrides(C.RunConfig(), base)


def test_initial_loss_is_log_num_classes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    nn.init.normal_(model[1].weight, std=1e-3)
    nn.init.zeros_(model[1].bias)
    data = digits_data()
    loss, _, _ = evaluate(model, data.x_train, data.y_train)
    assert loss == pytest.approx(math.log(10), abs=0.01)


def test_overfits_a_tiny_sample():
    """The lecture's sanity check: 20 examples, no regularisation -> 100% training accuracy."""
    data = digits_data(n_train=20)
    model = small_model()
    c = cfg(**{"train.epochs": 60, "train.batch_size": 20, "optim.weight_decay": 0.0, "schedule.name": "constant"})
    fit(model, data, c)
    _, acc, _ = evaluate(model, data.x_train, data.y_train)
    assert acc == 1.0


def test_learns_digits_and_keeps_best_val_weights(capsys):
    data = digits_data()
    model = small_model()
    state = fit(model, data, cfg(**{"train.epochs": 4}))
    out = capsys.readouterr().out
    assert "Finished epoch 4 / 4: cost " in out and ", train: " in out and ", val " in out and ", lr " in out
    _, val_acc, _ = evaluate(model, data.x_val, data.y_val)
    assert val_acc == pytest.approx(state.best_val_acc)
    assert state.best_val_acc > 0.75
    assert [r["epoch"] for r in state.history] == [1, 2, 3, 4]


def test_epoch_records_the_data_loss_and_the_regularisation_term_apart(capsys):
    """cost = data loss + R(W): the epoch record and line give both parts, so the val loss (no R) compares
    with the data loss; each step's R is lambda/2 * sum ||W||^2 over the decayed weights, by hand."""
    from babysit.train.loop import Update, train_step

    data = digits_data()
    c = cfg(**{"train.epochs": 1, "optim.weight_decay": 0.05})
    state = fit(small_model(), data, c)
    rec = state.history[-1]
    assert rec["reg"] > 0.01 and rec["data_loss"] == pytest.approx(rec["cost"] - rec["reg"])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("Finished epoch 1"))
    assert f"cost {rec['cost']:.6f} (data loss {rec['data_loss']:.6f}, reg {rec['reg']:.6f})" in line
    assert f"val loss {rec['val_loss']:.6f}" in line
    model = small_model()
    u = Update.from_config(model, c)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    by_hand = 0.5 * 0.05 * sum(float((w.detach() ** 2).sum()) for w in weights)  # R(W) before the step
    cost = train_step(u, data.x_train[:32], data.y_train[:32])
    assert cost.regularization().item() == pytest.approx(by_hand, rel=1e-5)
    assert cost.item() - cost.regularization().item() == pytest.approx(
        nn.functional.cross_entropy(small_model()(data.x_train[:32]), data.y_train[:32]).item(), rel=1e-5)
    plain = fit(small_model(), data, cfg(**{"train.epochs": 1, "optim.weight_decay": 0.0})).history[-1]
    assert plain["reg"] == 0.0 and plain["data_loss"] == plain["cost"]


def test_callbacks_count_epochs_from_one_like_the_epoch_line_and_best_epoch(capsys):
    """Bug 9: one convention. After "Finished epoch N" a callback sees state.epoch == N, the history's epoch."""
    seen = []

    class Spy:
        def on_epoch_start(self, state):
            seen.append(("start", state.epoch))

        def on_epoch_end(self, state):
            seen.append(("end", state.epoch, state.history[-1]["epoch"], state.best_epoch))

    state = fit(small_model(), digits_data(), cfg(**{"train.epochs": 2}), callbacks=[Spy()])
    assert [s[:3] for s in seen] == [("start", 0), ("end", 1, 1), ("start", 1), ("end", 2, 2)]
    assert all(1 <= s[3] <= s[1] for s in seen if s[0] == "end") and state.epoch == 2
    assert "Finished epoch 1 / 2" in capsys.readouterr().out


def test_two_seeded_runs_give_identical_weights():
    data = digits_data()
    a, b = small_model(dropout=0.3), small_model(dropout=0.3)
    torch.manual_seed(1)
    fit(a, data, cfg())
    torch.manual_seed(1)
    fit(b, data, cfg())
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


class StopAfter:
    """A callback that stops the run after ``n`` steps, as a crash would (no epoch-end save)."""

    def __init__(self, n: int):
        self.n = n

    def on_batch_end(self, state):
        if state.step == self.n:
            raise KeyboardInterrupt


def test_resume_equals_uninterrupted(tmp_path):
    """Stop mid-epoch, resume from the last checkpoint: the final weights are bit-identical."""
    data = digits_data()
    c = cfg(**{"train.epochs": 3})
    whole = small_model(dropout=0.3)
    torch.manual_seed(1)
    fit(whole, data, c, RunDir.create(tmp_path / "whole"))

    run = RunDir.create(tmp_path / "cut")
    cut = small_model(dropout=0.3)
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        fit(cut, data, c, run, callbacks=[StopAfter(17)])  # 13 steps/epoch: mid-epoch 2
    torch.manual_seed(99)  # whatever happens in between must not matter
    resumed = small_model(seed=5, dropout=0.3)
    state = fit(resumed, data, c, run, resume=True)
    for (k, va), vb in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(va, vb), k
    assert [r["epoch"] for r in state.history] == [1, 2, 3]
    steps = [r["step"] for r in run.read_history() if r["kind"] == "step"]
    assert steps == list(range(1, 3 * 13 + 1))


@pytest.mark.parametrize("over", [
    {"optim.name": "adam", "optim.lr": 0.01, "schedule.name": "onecycle"},
    # lr so small that the val loss stalls (< 1e-4 relative): with patience 0 every epoch after the first reduces
    {"optim.name": "rmsprop", "optim.lr": 1e-7, "schedule.name": "plateau", "schedule.patience": 0,
     "schedule.factor": 0.5, "regularize.max_norm": 1.0, "loss.name": "svm", "optim.clip_norm": 1.0},
])
def test_resume_equals_uninterrupted_with_adaptive_rules_and_schedules(tmp_path, over):
    """Adam's moments, the one-cycle position and reduce-on-plateau's state all survive a resume."""
    data = digits_data(n_train=200, n_val=100)  # 7 steps per epoch
    c = cfg(**{"train.epochs": 3, "checkpoint.every": 4, **over})
    whole = small_model(dropout=0.3)
    torch.manual_seed(1)
    full = fit(whole, data, c, RunDir.create(tmp_path / "whole"))
    run = RunDir.create(tmp_path / "cut")
    cut = small_model(dropout=0.3)
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        fit(cut, data, c, run, callbacks=[StopAfter(18)])  # mid-epoch 3
    resumed = small_model(seed=5, dropout=0.3)
    state = fit(resumed, data, c, run, resume=True)
    for (k, va), vb in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(va, vb), k
    assert [r["lr"] for r in state.history] == [r["lr"] for r in full.history]
    if over["schedule.name"] == "plateau":  # reduced after epoch 2 (before the cut) and after epoch 3
        assert [r["lr"] for r in state.history] == pytest.approx([1e-7, 1e-7, 0.5e-7])
        assert state.schedule.plateau.scale == 0.25


def test_nan_loss_stops_with_exit_code_3():
    data = digits_data()
    with pytest.raises(Diverged) as e:
        fit(small_model(), data, cfg(**{"optim.lr": 1e6, "schedule.name": "constant"}))
    assert e.value.exit_code == 3 and "learning rate is probably too high" in str(e.value)


def test_batch_larger_than_data_is_a_clear_error():
    from babysit.errors import BabysitError
    with pytest.raises(BabysitError, match="larger than the 20 training images"):
        fit(small_model(), digits_data(n_train=20), cfg(**{"train.batch_size": 64}))


def augmented_digits(n_train=200, n_val=100):
    """Raw uint8 digits, a fixed preprocessing, and an Augment making each training batch from the raw pixels."""
    from babysit.data.augment import Augment, parse_pipeline
    from babysit.data.sources import load_dataset

    ds = load_dataset("digits")
    raw, y = ds.train.x[: n_train + n_val], ds.train.y[: n_train + n_val]
    pre = lambda p: (p.float() / 255 - 0.3) / 0.4
    data = TensorData(pre(raw[:n_train]), y[:n_train], pre(raw[n_train:]), y[n_train:], x_raw=raw[:n_train])
    aug = Augment(parse_pipeline(["translate-1", "rotate-10", "noise-0.02", "cutout-2", "mixup-0.3"]), 10, seed=0,
                  preprocess=pre, mean_pixel=torch.tensor([40.0]))
    return data, aug


def test_resume_with_augmentation_equals_uninterrupted(tmp_path):
    """Augmented batches come from (seed, step): a resumed run draws exactly the batches it would have."""
    data, aug = augmented_digits()
    c = cfg(**{"train.epochs": 3, "checkpoint.every": 4})
    whole = small_model(dropout=0.3)
    torch.manual_seed(1)
    fit(whole, data, c, RunDir.create(tmp_path / "whole"), augment=aug)
    run = RunDir.create(tmp_path / "cut")
    cut = small_model(dropout=0.3)
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        fit(cut, data, c, run, callbacks=[StopAfter(18)], augment=aug)
    resumed = small_model(seed=5, dropout=0.3)
    fit(resumed, data, c, run, resume=True, augment=aug)
    for (k, va), vb in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(va, vb), k


class SeenBatches:
    """Records the inputs of every forward pass, and whether the model was in training mode."""

    def __init__(self, model):
        self.calls = []
        model.register_forward_hook(lambda m, inp, out: self.calls.append((m.training, inp[0].detach().clone())))


def test_augmentation_only_touches_training_batches():
    """Training batches differ from the stored tensors; every eval-mode forward sees the unaugmented data."""
    data, aug = augmented_digits()
    model = small_model()
    seen = SeenBatches(model)
    fit(model, data, cfg(**{"train.epochs": 1}), augment=aug)
    train_inputs = [x for training, x in seen.calls if training]
    eval_inputs = torch.cat([x for training, x in seen.calls if not training])
    stored = torch.cat([data.x_train, data.x_val])
    assert len(train_inputs) == 7
    assert not any(any(torch.equal(x, s) for s in data.x_train[: len(x)].split(len(x))) for x in train_inputs)
    assert eval_inputs.shape[0] == len(data.x_train) + len(data.x_val)
    assert torch.equal(eval_inputs, stored)  # train subset then val, untouched
    _, acc, _ = evaluate(model, data.x_val, data.y_val)
    _, acc_again, _ = evaluate(model, data.x_val, data.y_val)
    assert acc == acc_again  # and evaluation is deterministic


def test_augmentation_needs_the_raw_pixels():
    data, aug = augmented_digits()
    data.x_raw = None
    with pytest.raises(ValueError, match="x_raw"):
        fit(small_model(), data, cfg(), augment=aug)


def test_run_eta_is_seconds_per_step_so_far_times_the_steps_left():
    from babysit.train.loop import RunETA, format_duration

    eta = RunETA(start_step=100, total_steps=1000)  # resumed at step 100
    assert eta.seconds_left(100) is None and eta.text(100) == "step 100/1000, ETA ?"
    assert eta.seconds_left(150, now=eta.started + 10.0) == pytest.approx(10.0 / 50 * 850)
    assert eta.seconds_left(1000, now=eta.started + 10.0) == 0.0
    assert eta.text(150).startswith("step 150/1000, ETA ") and eta.text(150)[-1] == "s"
    assert [format_duration(s) for s in (7.4, 185, 3720)] == ["7s", "3m05s", "1h02m"]
