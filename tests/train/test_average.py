"""EMA and SWA of the weights, cosine-restarts snapshots and kept epochs: their equations, torch's
swa_utils side by side, and a digits run that keeps them all and resumes bit-identical."""

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from babysit.ckptfile import load_checkpoint
from babysit.rundir import RunDir, read_history
from babysit.train.average import EMAWeights
from babysit.train.loop import fit
from tests.train.test_loop import StopAfter, cfg, digits_data

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def bn_model(seed: int = 0) -> nn.Module:
    """An fc net with batch norm right after its first layer (so its statistics can be written out) and dropout."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(16, 10))


def sgd_steps(model: nn.Module, n: int, after_step) -> None:
    """n SGD steps on digits batches, calling ``after_step(t)`` after step t = 1..n."""
    data = digits_data(n_train=200, n_val=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for t in range(1, n + 1):
        idx = torch.arange(t * 16, t * 16 + 16) % 200
        opt.zero_grad()
        nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
        opt.step()
        after_step(t)


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def test_ema_update_matches_its_equation():
    """ema_t = d_t ema_{t-1} + (1 - d_t) w_t with d_t = min(decay, (1+t)/(10+t)), ema_0 = w_0; buffers too."""
    model = bn_model()
    ema = EMAWeights(model, 0.8)
    expect = float_state(model)  # ema_0 = w_0
    decays = []

    def step(t):
        ema.update(t)
        d = min(0.8, (1 + t) / (10 + t))
        decays.append(d)
        for k, w in float_state(model).items():
            expect[k] = d * expect[k] + (1 - d) * w

    sgd_steps(model, 60, step)
    got = float_state(ema.model)
    assert got.keys() == expect.keys() and "2.running_mean" in got  # BN statistics are averaged too
    for k in expect:
        torch.testing.assert_close(got[k], expect[k], rtol=1e-5, atol=1e-6)
    assert decays[:3] == pytest.approx([2 / 11, 3 / 12, 4 / 13]) and decays[-1] == 0.8  # the warm-up, then decay
    assert ema.model.state_dict()["2.num_batches_tracked"] == model.state_dict()["2.num_batches_tracked"] == 60
    assert not torch.equal(got["1.weight"], model.state_dict()["1.weight"])


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_equals_torch_averaged_model(warmup):
    """Without warm-up: torch's get_ema_multi_avg_fn; with it: AveragedModel with the same d_t as its avg_fn."""
    model = bn_model()
    ema = EMAWeights(model, 0.9, warmup=warmup)
    if warmup:
        ref = AveragedModel(model, avg_fn=lambda e, w, n: min(0.9, (1 + n) / (10 + n)) * e
                            + (1 - min(0.9, (1 + n) / (10 + n))) * w, use_buffers=True)
    else:
        ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    ref.update_parameters(model)  # torch copies on its first call: ema_0 = w_0

    def step(t):
        ema.update(t)
        ref.update_parameters(model)

    sgd_steps(model, 30, step)
    mine, theirs = float_state(ema.model), float_state(ref.module)
    for k in mine:
        torch.testing.assert_close(mine[k], theirs[k], rtol=1e-5, atol=1e-6)


KEEP = {"train.epochs": 6, "train.batch_size": 40, "checkpoint.every": 4, "train.ema": 0.9, "train.swa_epochs": 2,
        "train.swa_lr": 0.02, "schedule.name": "cosine-restarts", "schedule.cycles": 3, "checkpoint.keep_last": 2,
        "optim.lr": 0.1}


class EpochWeights:
    """Copies of the weights at every epoch end."""

    def __init__(self):
        self.weights = []

    def on_epoch_end(self, state):
        self.weights.append(copy.deepcopy(state.model.state_dict()))


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory):
    """6 epochs of a BN net on digits: EMA, SWA over the last 2 epochs, 3 cosine cycles, the last 2 epochs kept."""
    data = digits_data(n_train=400, n_val=200)  # 10 steps per epoch
    run = RunDir.create(tmp_path_factory.mktemp("kept") / "whole")
    seen = EpochWeights()
    torch.manual_seed(1)
    model = bn_model()
    state = fit(model, data, cfg(**KEEP), run, callbacks=[seen])
    return run, state, seen.weights, data, model


def test_snapshot_count_equals_cycles_and_each_is_its_cycle_end(kept_run):
    run, _, weights, _, _ = kept_run
    snaps = RunDir.numbered(run.snapshots)
    assert [n for n, _ in snaps] == [1, 2, 3]
    for (cycle, path), epoch in zip(snaps, (2, 4, 6)):
        tensors, meta = load_checkpoint(path)
        assert meta["cycle"] == cycle and meta["epoch"] == epoch
        assert all(torch.equal(tensors[f"model.{k}"], v) for k, v in weights[epoch - 1].items())
    assert [n for n, _ in RunDir.numbered(run.epochs)] == [5, 6]  # checkpoint.keep_last=2


def test_swa_is_the_mean_of_the_last_epochs_with_batch_norm_recomputed(kept_run):
    run, _, weights, data, _ = kept_run
    tensors, meta = load_checkpoint(run.swa)
    assert meta["epochs"] == [5, 6] and meta["averaged"] == 2
    for k in ("1.weight", "1.bias", "2.weight", "5.weight"):
        torch.testing.assert_close(tensors[f"model.{k}"], (weights[4][k] + weights[5][k]) / 2)
    # BN right after the first fc layer: over 10 equal batches the recomputed running mean is the mean of
    # W x + b over the training images, and the variance the mean of the batches' unbiased variances
    h = data.x_train.flatten(1) @ tensors["model.1.weight"].T + tensors["model.1.bias"]
    torch.testing.assert_close(tensors["model.2.running_mean"], h.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tensors["model.2.running_var"], torch.stack([b.var(0) for b in h.split(40)]).mean(0),
                               rtol=1e-4, atol=1e-5)
    assert not torch.allclose(tensors["model.2.running_mean"], weights[5]["2.running_mean"], atol=1e-3)
    lrs = [r["lr"] for r in read_history(run.history) if r.get("kind") == "step"]
    assert lrs[40:] == [0.02] * 20 and lrs[39] != 0.02  # train.swa_lr over the SWA epochs


def test_ema_is_scored_every_epoch_and_its_best_kept(kept_run):
    run, state, _, _, _ = kept_run
    epochs = [r for r in state.history]
    assert all(0 < r["ema_val_acc"] <= 1 and r["ema_val_loss"] > 0 for r in epochs)
    best = max(range(6), key=lambda i: (epochs[i]["ema_val_acc"], -i))
    _, meta = load_checkpoint(run.best_ema)
    assert meta["epoch"] == best + 1 and meta["val_acc"] == epochs[best]["ema_val_acc"]


def test_resume_with_averages_and_snapshots_is_bit_identical(kept_run, tmp_path):
    whole, _, _, data, model = kept_run
    run = RunDir.create(tmp_path / "cut")
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        fit(bn_model(), data, cfg(**KEEP), run, callbacks=[StopAfter(47)])  # mid-epoch 5, SWA begun
    torch.manual_seed(99)
    resumed = bn_model(seed=5)
    fit(resumed, data, cfg(**KEEP), run, resume=True)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in model.state_dict().items())
    files = sorted(p.relative_to(whole.path) for p in whole.checkpoints.rglob("*.safetensors"))
    assert len(files) == 9  # last, best, ema, swa, 3 snapshots, epochs 5 and 6
    assert files == sorted(p.relative_to(run.path) for p in run.checkpoints.rglob("*.safetensors"))
    for rel in files:
        a, b = load_checkpoint(whole.path / rel)[0], load_checkpoint(run.path / rel)[0]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rel


def test_a_distillation_resumes_bit_identical(tmp_path):
    """Soft targets travel with the batch as (labels, teacher probabilities); a cut run resumes exactly."""
    data = digits_data(n_train=200, n_val=100)
    torch.manual_seed(3)
    data.soft_train = torch.softmax(torch.randn(200, 10) * 2, 1)
    c = cfg(**{"train.epochs": 2, "checkpoint.every": 4, "distill.teacher": "some/ensemble", "train.ema": 0.9})
    whole = bn_model()
    fit(whole, data, c, RunDir.create(tmp_path / "whole"))
    run = RunDir.create(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        fit(bn_model(), data, c, run, callbacks=[StopAfter(10)])
    resumed = bn_model(seed=7)
    fit(resumed, data, c, run, resume=True)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in whole.state_dict().items())
    plain = bn_model()
    fit(plain, digits_data(n_train=200, n_val=100), cfg(**{"train.epochs": 2}))
    assert not torch.equal(plain.state_dict()["1.weight"], whole.state_dict()["1.weight"])  # the teacher mattered
    with pytest.raises(ValueError, match="data.soft_train"):
        fit(bn_model(), digits_data(n_train=200, n_val=100), c)


def test_the_ema_best_breaks_a_val_accuracy_tie_by_the_val_loss_as_the_run_does():
    from babysit import config as C
    from babysit.train.average import Averages

    avg = Averages(nn.Linear(2, 2), C.apply_overrides(C.RunConfig(), {"train.ema": 0.9}))
    rec = {"step": 10, "ema_val_acc": 0.9832, "ema_val_loss": 0.054}
    assert [k for k, _, _ in avg.epoch_end(nn.Linear(2, 2), {**rec, "epoch": 1})] == ["ema"]
    assert avg.epoch_end(nn.Linear(2, 2), {**rec, "epoch": 2, "ema_val_loss": 0.06}) == []  # tie, higher loss
    assert [k for k, _, _ in avg.epoch_end(nn.Linear(2, 2), {**rec, "epoch": 3, "ema_val_loss": 0.034})] == ["ema"]
    assert avg.best_ema_epoch == 3
    old = {**avg.state_dict(), "best_ema": 0.99}  # a checkpoint from before: the monitor's score alone
    avg.load_state_dict(old)
    assert avg.epoch_end(nn.Linear(2, 2), {**rec, "epoch": 4, "ema_val_acc": 0.99}) == []  # no loss to break a tie
