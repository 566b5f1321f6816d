"""Spec -> torch modules, and the notes' weight initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from babysit.errors import BabysitError
from babysit.models import MaxoutUnit, build, infer_shapes, init_weights, layer_module, parse, summary

SPECS = [
    ("fc", (3, 8, 8), 10),  # INPUT -> FC: a linear classifier
    ("conv3-16 relu fc", (3, 8, 8), 10),
    ("[conv3-16 relu]*2 pool2 [conv3-32 relu]*2 pool2 fc-64 relu dropout-0.5 fc", (3, 32, 32), 10),
    ("conv5-6-p0 bn tanh avgpool2 conv5-16-p0 sigmoid pool2 fc-120 bn elu fc-84 lrelu fc", (1, 32, 32), 10),
    ("conv7-16-s2 lrelu-0.2 pool3-s2 conv3-32-g4 maxout-2 conv3-16-d2 gap fc", (3, 33, 33), 5),
    ("conv3-8 relu conv1-10 gap", (1, 8, 8), 10),  # all-conv: ends in a 1x1x10 volume
    ("fc-40 maxout-4 fc", (2, 4, 4), 3),
]


@pytest.mark.parametrize(("text", "shape", "classes"), SPECS)
def test_output_is_one_score_per_class(text: str, shape: tuple[int, int, int], classes: int) -> None:
    torch.manual_seed(0)
    model = build(text, shape, classes)
    scores = model(torch.randn(4, *shape))
    assert scores.shape == (4, classes)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize(("text", "shape", "classes"), SPECS)
def test_param_count_equals_the_summary(text: str, shape: tuple[int, int, int], classes: int) -> None:
    model = build(text, shape, classes)
    assert sum(p.numel() for p in model.parameters()) == summary(text, shape, classes).total_params


@pytest.mark.parametrize(("text", "shape", "classes"), SPECS)
def test_every_layer_output_matches_infer_shapes(text: str, shape: tuple[int, int, int], classes: int) -> None:
    model = build(text, shape, classes).eval()
    seen: dict[int, tuple[int, ...]] = {}
    for info in infer_shapes(text, shape, classes):
        module = layer_module(model, info.index)
        module.register_forward_hook(lambda m, i, out, j=info.index: seen.__setitem__(j, tuple(out.shape[1:])))
    model(torch.randn(2, *shape))
    assert seen == {info.index: info.out_shape for info in infer_shapes(text, shape, classes)}


def test_modules_are_named_by_flat_layer_index() -> None:
    text = "[conv3-8 bn relu]*2 pool2 fc-16 bn dropout-0.1 fc"
    model = build(text, (3, 8, 8), 4)
    assert getattr(model, "spec") == text  # noqa: B009
    assert getattr(model, "input_shape") == (3, 8, 8) and getattr(model, "num_classes") == 4  # noqa: B009
    expected = [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d,
                nn.Linear, nn.BatchNorm1d, nn.Dropout, nn.Linear]
    for i, kind in enumerate(expected):
        assert type(layer_module(model, i)) is kind
    assert [name for name, _ in model.named_children()] == [*map(str, range(7)), "flatten", *map(str, range(7, 11))]
    assert "7.weight" in model.state_dict() and layer_module(model, 7).in_features == 4 * 4 * 8


def test_conv_hyperparameters_reach_torch() -> None:
    conv = layer_module(build("conv5-12-s2-p1-d2-g3 fc", (6, 17, 17), 2), 0)
    assert isinstance(conv, nn.Conv2d)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (6, 12, (5, 5), (2, 2))
    assert (conv.padding, conv.dilation, conv.groups) == ((1, 1), (2, 2), 3)


def test_maxout_takes_the_max_over_groups_of_k_channels() -> None:
    x = torch.tensor([[1.0, 5.0, -2.0, 3.0, 0.5, 0.25]])  # (N=1, C=6)
    assert torch.equal(MaxoutUnit(2)(x), torch.tensor([[5.0, 3.0, 0.5]]))
    assert torch.equal(MaxoutUnit(3)(x), torch.tensor([[5.0, 3.0]]))
    volume = torch.arange(2 * 4 * 3 * 3, dtype=torch.float32).reshape(2, 4, 3, 3)  # (N, C, H, W)
    out = MaxoutUnit(2)(volume)
    assert out.shape == (2, 2, 3, 3)
    assert torch.equal(out, torch.maximum(volume[:, 0::2], volume[:, 1::2]))


def test_maxout_net_trains_one_step() -> None:
    torch.manual_seed(0)
    model = build("conv3-8 maxout-2 pool2 fc-8 maxout-4 fc", (1, 4, 4), 3)
    x, y = torch.randn(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_vgg16_builds_on_the_meta_device_with_138m_params() -> None:
    vgg = ("[conv3-64 relu]*2 pool2 [conv3-128 relu]*2 pool2 [conv3-256 relu]*3 pool2 [conv3-512 relu]*3 pool2 "
           "[conv3-512 relu]*3 pool2 fc-4096 relu fc-4096 relu fc")
    with torch.device("meta"):  # no 550MB allocation
        model = build(vgg, (3, 224, 224), 1000)
    assert sum(p.numel() for p in model.parameters()) == 138_357_544


BUILD_ERRORS = [
    ("conv3-8-s3-p0 fc", (3, 7, 7), "(7-3)/3+1 = 2.33 is not an integer"),
    ("conv3-6-g3 fc", (4, 8, 8), "4 input channels cannot be split into 3 groups"),
    ("conv3-6 maxout-4 fc", (3, 8, 8), "not divisible by 4"),
    ("conv3-8 pool2 pool2 pool2 fc", (3, 12, 12), "(3-2)/2+1 = 1.5 is not an integer"),
    ("fc-10 conv3-8 fc", (3, 8, 8), "already flattened"),
    ("relu", (3, 8, 8), "no conv or fc layer"),
    ("conv3-8 relu", (3, 8, 8), "end the spec with a plain 'fc'"),
    ("bogus fc", (3, 8, 8), "unknown token 'bogus'"),
]


@pytest.mark.parametrize(("text", "shape", "message"), BUILD_ERRORS)
def test_build_mistakes_raise_babysit_error(text: str, shape: tuple[int, int, int], message: str) -> None:
    with pytest.raises(BabysitError) as err:
        build(text, shape, 10)
    assert message in str(err.value)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.sampled_from(["conv3-4", "conv1-4-s2", "conv5-4-p0", "conv3-4-d2", "conv2-4-p0", "pool2", "pool3-s1",
                         "avgpool2", "bn", "relu", "maxout-2", "conv3-8-g2"]),
        min_size=1, max_size=6,
    ),
    st.integers(6, 20),
)
def test_random_conv_stacks_agree_with_torch(tokens: list[str], side: int) -> None:
    text = " ".join([*tokens, "fc"])
    try:
        infos = infer_shapes(text, (2, side, side), 3)
    except BabysitError:
        assume(False)
        return
    model = build(text, (2, side, side), 3).eval()
    x = torch.randn(1, 2, side, side)
    for info in infos:
        module = layer_module(model, info.index)
        x = module(x.flatten(1) if isinstance(module, nn.Linear) else x)
        assert tuple(x.shape[1:]) == info.out_shape


# ---- initialisation ----------------------------------------------------------------------------


def _weighted(module: nn.Module) -> nn.Conv2d | nn.Linear:
    assert isinstance(module, nn.Conv2d | nn.Linear)
    return module


def _std(model: nn.Module, index: int) -> float:
    return _weighted(layer_module(model, index)).weight.std().item()


def _fan_in(model: nn.Module, index: int) -> int:
    return _weighted(layer_module(model, index)).weight[0].numel()


@pytest.mark.parametrize(("scheme", "gain"), [("he", math.sqrt(2.0)), ("xavier", 1.0)])
def test_he_and_xavier_scale_with_fan_in(scheme: str, gain: float) -> None:
    torch.manual_seed(0)
    model = build("conv3-64 relu conv3-64 relu fc-256 relu fc", (32, 8, 8), 10)
    init_weights(model, scheme)
    for i in (0, 2, 4, 6):  # W = randn(n) * gain / sqrt(n), n = fan-in
        expected = gain / math.sqrt(_fan_in(model, i))
        assert _std(model, i) == pytest.approx(expected, rel=0.05)
        bias = _weighted(layer_module(model, i)).bias
        assert bias is not None and torch.count_nonzero(bias) == 0


def test_small_random_normal() -> None:
    torch.manual_seed(0)
    model = build("conv3-64 relu fc", (32, 8, 8), 10)
    init_weights(model, "normal-0.01")
    assert _std(model, 0) == pytest.approx(0.01, rel=0.05)
    assert _std(model, 2) == pytest.approx(0.01, rel=0.05)


def test_auto_follows_the_activation_of_each_layer() -> None:
    torch.manual_seed(0)
    model = build("conv3-64 bn relu conv3-64 tanh conv3-64 lrelu-0.5 pool2 conv3-64 maxout-2 fc-512 sigmoid fc",
                  (64, 8, 8), 10)
    init_weights(model)
    he = lambda i, a=0.0: math.sqrt(2.0 / ((1 + a * a) * _fan_in(model, i)))  # noqa: E731
    xavier = lambda i: 1.0 / math.sqrt(_fan_in(model, i))  # noqa: E731
    # the score layer: Xavier scaled by SCORE_LAYER_GAIN so the initial loss is ln(C)
    expected = {0: he(0), 3: xavier(3), 5: he(5, 0.5), 8: he(8), 10: xavier(10), 12: 0.01 * xavier(12)}
    for i, std in expected.items():
        assert _std(model, i) == pytest.approx(std, rel=0.05), f"layer {i}"


def test_auto_without_a_spec_treats_the_last_linear_as_scores() -> None:
    torch.manual_seed(0)
    hidden, scores = nn.Linear(1000, 1000), nn.Linear(1000, 500)
    init_weights(nn.Sequential(hidden, nn.ReLU(), scores))
    assert hidden.weight.std().item() == pytest.approx(math.sqrt(2 / 1000), rel=0.05)
    assert scores.weight.std().item() == pytest.approx(0.01 / math.sqrt(1000), rel=0.05)
    assert torch.count_nonzero(hidden.bias) == 0


@pytest.mark.parametrize(("scheme", "message"), [
    ("kaiming", "unknown init scheme 'kaiming'; choose one of auto, he, xavier, normal-STD"),
    ("normal", "unknown init scheme 'normal'; choose one of auto, he, xavier, normal-STD, orthogonal, lsuv, data "
               "(e.g. normal-0.01); did you mean 'normal-STD'?"),
    ("normal-STD", "needs a positive number after 'normal-'"),
    ("normal-x", "needs a positive number after 'normal-'"),
    ("normal--1", "needs a positive number"),
])
def test_unknown_init_scheme(scheme: str, message: str) -> None:
    with pytest.raises(BabysitError) as err:
        init_weights(build("fc", (1, 2, 2), 2), scheme)
    assert message in str(err.value)


def test_parse_accepts_a_spec_object() -> None:
    spec = parse("conv3-4 relu fc")
    assert build(spec, (1, 4, 4), 2)(torch.zeros(1, 1, 4, 4)).shape == (1, 2)
