"""Layer statistics during fit(): values against hand computation, bounded storage, resume, images."""

import json

import pytest
import torch
from torch import nn

from babysit.monitor import probes as P
from babysit.monitor.store import Thinned
from babysit.review.stats import read_histograms, read_layer_records
from babysit.rundir import RunDir
from babysit.train.loop import fit
from tests.monitor.conftest import cfg, tiny_model


def vanilla(**over):
    return cfg(**{"optim.momentum": 0.0, "optim.weight_decay": 0.0, "optim.lr": 0.1, **over})


def test_update_ratio_is_lr_times_gradient_over_weight_for_vanilla_sgd(data):
    probes = P.LayerProbes(every=1, live=False)
    fit(tiny_model(), data, vanilla(**{"train.epochs": 1}), callbacks=[probes])
    recs = probes.records.items
    assert [r["step"] for r in recs[:3]] == [1, 2, 3]
    for before, now in zip(recs[1:5], recs[2:6]):
        for name in ("0", "4"):
            expected = 0.1 * now["layers"][name]["grad_norm"] / before["layers"][name]["w_norm"]
            assert now["layers"][name]["update_ratio"] == pytest.approx(expected, rel=1e-4)
    layers = recs[-1]["layers"]
    assert set(layers) == {"0", "1", "4"}  # conv, relu, fc: pooling and flatten are not probed
    assert layers["1"]["kind"] == "relu" and 0 <= layers["1"]["dead"] <= 1
    assert layers["0"]["act_std"] > 0 and layers["4"]["grad_rms"] > 0


def test_dead_relus_and_saturated_tanh_are_measured(data):
    model = tiny_model()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every pre-activation negative: every unit dead
    probes = P.LayerProbes(every=1, live=False)
    fit(model, data, vanilla(**{"train.epochs": 1, "optim.lr": 1e-9}), callbacks=[probes])
    assert probes.latest["layers"]["1"]["dead"] == 1.0
    torch.manual_seed(0)
    hot = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    with torch.no_grad():
        hot[1].weight.mul_(50)
    probes = P.LayerProbes(every=1, live=False)
    fit(hot, data, vanilla(**{"train.epochs": 1, "optim.lr": 1e-9}), callbacks=[probes])
    assert probes.latest["layers"]["2"]["saturated"] > 0.8


def test_probes_only_every_n_steps_and_prints_the_live_line(data, capsys):
    probes = P.LayerProbes(every=4, live=True)
    fit(tiny_model(), data, vanilla(), callbacks=[probes])  # 10 steps per epoch, 2 epochs
    assert [r["step"] for r in probes.records.items] == [1, 4, 8, 12, 16, 20]
    out = capsys.readouterr().out
    assert "  layers @ step 8: update/weight 0:" in out and "dead ReLU 1:" in out


def test_thinned_store_stays_bounded_and_spread_over_the_run():
    store = Thinned(capacity=16)
    for step in range(10_000):
        store.offer({"step": step})
    steps = [it["step"] for it in store.items]
    assert len(steps) <= 16 and steps[0] == 0 and steps[-1] > 10_000 * 0.8
    assert len({b - a for a, b in zip(steps, steps[1:])}) == 1  # evenly spaced


def test_stats_files_are_bounded_whatever_the_run_length(data, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "RECORDS_CAPACITY", 8)
    monkeypatch.setattr(P, "HISTOGRAMS_CAPACITY", 3)
    run = RunDir.create(tmp_path / "run")
    probes = P.LayerProbes(every=1, run=run, live=False)
    fit(tiny_model(), data, vanilla(**{"train.epochs": 3}), run=run, callbacks=[probes])
    records = read_layer_records(run.path)
    assert 4 <= len(records) <= 8 and records[-1]["step"] > 20
    hists = read_histograms(run.path)
    assert 1 <= len(hists) <= 3
    lo, hi, counts, below, above, vmin, vmax = hists[-1]["layers"]["0"]["act"]
    assert vmin <= lo < hi <= vmax and sum(counts) == min(32 * 8 * 8 * 8, P.HISTOGRAM_SAMPLE)  # a sample of
    # batch x channels x 8 x 8 values
    assert 0 < below + above <= 0.011 * sum(counts)  # about 0.5 % each side sits in the edge bins
    assert (run.path / "stats" / "filters.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run.path / "stats" / "filters_initial.png").is_file()


def test_resume_drops_records_after_the_checkpoint(data, tmp_path):
    run = RunDir.create(tmp_path / "run")
    probes = P.LayerProbes(every=2, run=run, live=False)
    fit(tiny_model(), data, vanilla(**{"train.epochs": 1}), run=run, callbacks=[probes])
    sd = json.loads(json.dumps(probes.state_dict()))
    fit(tiny_model(), data, vanilla(**{"train.epochs": 2}), run=run, callbacks=[probes])  # more records on disk
    assert max(r["step"] for r in read_layer_records(run.path)) > sd["step"]
    again = P.LayerProbes(every=2, run=run, live=False)
    again.load_state_dict(sd)
    assert again.records.items and max(r["step"] for r in again.records.items) <= sd["step"]
    assert again.records.offered == sd["records"]["offered"]


def test_first_layer_image_for_conv_filters_and_fc_templates():
    img = P.first_layer_image(tiny_model())
    assert img.dtype == "uint8" and img.ndim == 3 and img.shape[2] == 3 and img.std() > 0
    from babysit.models import build
    linear = build("fc", (3, 8, 8), 10)
    assert P.first_layer_image(linear).shape[2] == 3
    assert P.first_layer_image(nn.Sequential(nn.Linear(5, 3))) is None


def test_histogram_spans_the_robust_range_and_counts_outliers_in_the_edge_bins():
    np = pytest.importorskip("numpy")
    g = torch.Generator().manual_seed(0)
    t = torch.cat([torch.randn(9990, generator=g), torch.full((10,), 1000.0)])  # a few huge gradients
    lo, hi, counts, extra = P.histogram(t, bins=32, sample=len(t))  # every value, to compare with numpy
    q_lo, q_hi = np.quantile(t.numpy(), [0.005, 0.995])  # numpy's linear interpolation
    assert lo.item() == pytest.approx(q_lo, rel=1e-5) and hi.item() == pytest.approx(q_hi, rel=1e-5)
    assert hi.item() < 4  # [min, max] would be [-4, 1000]: every normal value in one bin
    expected, _ = np.histogram(np.clip(t.numpy(), q_lo, q_hi), bins=32, range=(q_lo, q_hi))
    assert np.abs(counts.numpy() - expected).sum() <= 2 and counts.sum().item() == 10_000
    below, above, vmin, vmax = extra.tolist()
    assert below == (t < lo).sum().item() and above == (t > hi).sum().item() and above >= 10
    assert vmin == t.min().item() and vmax == 1000.0
    dead = torch.zeros(1000)
    dead[:3] = 1.0  # a ReLU output that is 0 almost everywhere: the quantiles coincide, so [min, max]
    lo, hi, _, _ = P.histogram(dead)
    assert (lo.item(), hi.item()) == (0.0, 1.0)


def test_histograms_of_many_samples_at_once_equal_each_one_alone_in_their_order():
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(5000, generator=g) * 3, torch.rand(300, generator=g), torch.randn(4096, generator=g),
          torch.relu(torch.randn(64, 8, 8, generator=g)), torch.randn(300, generator=g) + 10]
    samples = [P.histogram_sample(x) for x in xs]  # lengths 4096, 300, 4096, 4096, 300: three groups of one length
    table = P.histograms(samples)
    assert table.shape == (5, 6 + P.HISTOGRAM_BINS)
    for row, x in zip(table, xs):
        lo, hi, counts, extra = P.histogram(x)
        torch.testing.assert_close(row, torch.cat([lo.view(1), hi.view(1), extra, counts.float()]))
    spread = P.histogram_sample(torch.arange(10_000.0))  # over the whole tensor, not its start
    assert len(spread) == P.HISTOGRAM_SAMPLE and spread[0] < 10 and spread[-1] > 9990
    planes = torch.arange(576.0).repeat(128 * 16)  # 128 x 16 planes of 24 x 24: a stride of 288 sees 2 pixels
    assert len(P.histogram_sample(planes).unique()) > 500  # random positions see (nearly) every pixel of a plane
    torch.testing.assert_close(P.histogram_sample(planes), P.histogram_sample(planes))  # the same positions
    cl = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)  # the logical order, not memory's
    torch.testing.assert_close(P.histogram_sample(cl), P.histogram_sample(cl.contiguous()))


def test_histogram_reads_nothing_back_to_the_host():
    """The robust range keeps probes at one read-back each: no .item() and no data-dependent shapes inside
    (on a GPU either would stall the launch queue once per histogram). Counted with a dispatch mode on CPU."""
    from torch.utils._python_dispatch import TorchDispatchMode

    syncing = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
               torch.ops.aten.masked_select.default, torch.ops.aten.bincount.default}

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in syncing:
                self.seen.append(func)
            return func(*args, **(kwargs or {}))

    t = torch.randn(64, 8, 8, 8)
    with Count() as mode:
        P.histogram(t)
        P.histogram(torch.relu(t))
        P.histograms([P.histogram_sample(x) for x in (t, torch.relu(t), torch.randn(300), torch.randn(5, 7))])
    assert mode.seen == []
    with Count() as mode:
        torch.randn(3).sum().item()  # the counter can fail
    assert mode.seen == [torch.ops.aten._local_scalar_dense.default]
