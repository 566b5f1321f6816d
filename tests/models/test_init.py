"""Init schemes: the lecture's 10-layer picture as a test, orthogonality, LSUV and data-dependent init."""

import pytest
import torch
from torch import nn

from babysit.cli import main
from babysit.config import RunConfig, apply_overrides
from babysit.errors import BabysitError
from babysit.models import build
from babysit.models.init import SCHEMES, activation_stats, init_check, init_weights, needs_data, parse_scheme
from babysit.start import make_model

DEEP = "[fc-500 relu]*10 fc"  # the lecture's 10-layer net of 500 units
INPUT = (1, 1, 1000)


@pytest.fixture(scope="module")
def deep_stats():
    return init_check(DEEP, INPUT, ("normal-0.01", "he", "lsuv"), batch_size=100)


@pytest.mark.parametrize("scheme", ["he", "lsuv"])
def test_activations_keep_their_scale_through_10_relu_layers(deep_stats, scheme):
    stds = [s.std for s in deep_stats[scheme]]
    assert len(stds) == 10
    assert all(stds[0] / 2 <= s <= stds[0] * 2 for s in stds), stds


def test_small_random_init_collapses_the_activations(deep_stats):
    stds = [s.std for s in deep_stats["normal-0.01"]]
    assert all(b < a / 4 for a, b in zip(stds, stds[1:]))  # each layer shrinks them: 0.01 * sqrt(500/2) = 0.16
    assert stds[-1] < 1e-6 * stds[0]


def test_orthogonal_rows_are_orthonormal_times_the_gain():
    torch.manual_seed(0)
    net = build("fc-100 relu fc-50 tanh fc", (1, 1, 200), 10)
    init_weights(net, "orthogonal")
    w0, w2 = net.get_submodule("0").weight, net.get_submodule("2").weight  # (100, 200), (50, 100)
    torch.testing.assert_close(w0 @ w0.T, 2.0 * torch.eye(100), atol=1e-4, rtol=0)  # ReLU gain sqrt(2)
    torch.testing.assert_close(w2 @ w2.T, torch.eye(50), atol=1e-4, rtol=0)  # tanh: gain 1


def test_lsuv_gives_unit_variance_outputs_on_the_batch():
    torch.manual_seed(0)
    net = build("conv3-16 relu pool2 conv3-32 relu fc-64 relu fc", (3, 16, 16), 10)
    x = torch.randn(128, 3, 16, 16) * 5 + 2
    init_weights(net, "lsuv", batch=x)
    outputs: dict[int, torch.Tensor] = {}
    for i in (0, 3, 5, 7):  # every conv / fc output
        net.get_submodule(str(i)).register_forward_hook(lambda m, a, o, i=i: outputs.__setitem__(i, o))
    net.eval()
    net(x)
    for i, out in outputs.items():
        assert out.var().item() == pytest.approx(1.0, abs=0.1), i
    assert len(outputs) == 4


def test_data_dependent_init_normalises_every_unit():
    torch.manual_seed(0)
    net = build("conv3-8 relu fc-16 relu fc", (1, 8, 8), 10)
    x = torch.rand(256, 1, 8, 8) * 3
    init_weights(net, "data", batch=x, bias=0.1)
    out = []
    h = net.get_submodule("2").register_forward_hook(lambda m, a, o: out.append(o))
    net(x)
    h.remove()
    torch.testing.assert_close(out[0].mean(0), torch.full((16,), 0.1), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[0].std(0), torch.ones(16), atol=1e-4, rtol=0)


def test_bias_constant_and_data_schemes_need_a_batch():
    net = build("fc-8 relu fc", (1, 1, 4), 2)
    init_weights(net, "he", bias=0.01)
    assert torch.all(net.get_submodule("0").bias == 0.01)
    assert needs_data("lsuv") and needs_data("data") and not needs_data("he")
    with pytest.raises(BabysitError, match="init scheme 'lsuv' measures a batch of training images"):
        init_weights(net, "lsuv")
    known = "choose one of auto, he, xavier, normal-STD, orthogonal, lsuv, data"
    with pytest.raises(BabysitError, match=known):
        init_weights(net, "kaiming")


def test_make_model_uses_the_config_and_the_batch():
    cfg = apply_overrides(RunConfig(), {"model.spec": "conv3-4 relu fc", "model.init": "lsuv",
                                        "model.init_bias": "0.02"})
    x = torch.randn(64, 1, 8, 8)
    a = make_model(cfg, (1, 8, 8), 10, batch=x)
    b = make_model(cfg, (1, 8, 8), 10, batch=x)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # seeded
    assert activation_stats(a, x)[0].std > 0


def test_activation_stats_falls_back_to_linear_outputs():
    net = nn.Sequential(nn.Linear(3, 2))
    x = torch.randn(5, 3)
    (stat,) = activation_stats(net, x)
    out = net(x)
    assert stat.layer == "0" and stat.kind == "Linear"
    assert (stat.mean, stat.std) == pytest.approx((out.mean().item(), out.std().item()))


def test_cli_init_check_prints_the_table_and_draws_it(tmp_path, capsys):
    png = tmp_path / "init.png"
    assert main(["init-check", "[fc-50 relu]*3 fc", "--input", "1x1x100", "--schemes", "normal-0.01,he",
                 "--plot", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["layer", "std", "normal-0.01", "std", "he"] and len(out) == 1 + 3 + 1
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_auto_init_starts_at_chance_loss_on_digits():
    """The notes: a fresh 10-class softmax model should score loss ln(10) = 2.302 (scores near 0)."""
    import math

    import torch.nn.functional as F

    from babysit import config as C
    from babysit.data import Preprocessor, load_dataset
    from babysit.start import make_model

    ds = load_dataset("digits")
    x = Preprocessor.fit(ds.train.x, "channel-mean-std")(ds.train.x[:500])
    lecture = C.apply_overrides(C.RunConfig(), {"model.spec": "lecture"})  # no BN to rescale the scores
    model = make_model(lecture, (1, 8, 8), 10).eval()
    loss = F.cross_entropy(model(x), ds.train.y[:500]).item()
    assert abs(loss - math.log(10)) < 0.01
    he = make_model(C.apply_overrides(lecture, {"model.init": "he"}), (1, 8, 8), 10).eval()
    assert F.cross_entropy(he(x), ds.train.y[:500]).item() > math.log(10) + 0.1  # why auto scales the scores


def test_parse_scheme_reads_the_number_of_normal_std():
    assert parse_scheme("normal-0.01") == (SCHEMES.get("normal-STD"), 0.01)
    assert parse_scheme("lsuv") == (SCHEMES.get("lsuv"), None) and SCHEMES.get("lsuv").needs_data
    assert [n for n, s in SCHEMES.items() if s.by_activation] == ["auto", "orthogonal", "lsuv", "data"]
