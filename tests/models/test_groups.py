"""Residual groups res[...] and branch groups cat[a | b]: grammar, sizes, build, summary and init.

The built modules are checked against the formulas written out with torch.nn.functional: a residual
block computes body(x) + x (or + bn(conv1x1_S(x))), a cat block torch.cat of its branches along depth.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.errors import BabysitError
from babysit.models import build, init_weights, summary
from babysit.models.shapes import infer_shapes, walk
from babysit.models.spec import BatchNorm, Branch, Conv, Pool, Residual, parse

pytestmark = pytest.mark.usefixtures("one_thread")

INCEPTION = "cat[conv1-64 | conv1-96 conv3-128 | conv1-16 conv5-32 | pool3-s1-p1 conv1-32]"
BASIC = "res[conv3-64 bn relu conv3-64 bn]"


@pytest.mark.parametrize("text", [
    f"{BASIC} relu gap fc",
    f"conv3-192 {INCEPTION} gap fc",
    "conv3-16 [res[conv3-16 bn relu conv3-16 bn] relu]*3 res[conv3-32-s2-floor bn relu conv3-32 bn] relu gap fc",
    "conv3-8 res[[conv3-8 relu]*2 cat[conv1-4 | res[conv3-4] conv1-4]] gap fc",  # groups nest
    "conv7-64-s2-floor pool3-s2-p1-floor avgpool3-s1-p1 fc",
])
def test_canonical_text_round_trips(text: str) -> None:
    assert str(parse(text)) == text
    assert parse(str(parse(text))) == parse(text)


def test_a_group_is_one_layer_with_its_insides() -> None:
    layers = parse(f"conv3-192 {INCEPTION} {BASIC} relu gap fc").layers()
    assert [type(layer).__name__ for layer in layers] == ["Conv", "Branch", "Residual", "Activation",
                                                          "GlobalAvgPool", "FC"]
    cat, res = layers[1], layers[2]
    assert isinstance(cat, Branch) and isinstance(res, Residual)
    assert [[str(x) for x in b] for b in cat.branch_layers()] == [["conv1-64"], ["conv1-96", "conv3-128"],
                                                                  ["conv1-16", "conv5-32"], ["pool3-s1-p1", "conv1-32"]]
    assert cat.branch_layers()[3][0] == Pool(3, 1, padding=1)
    assert [str(x) for x in res.layers()] == ["conv3-64", "bn", "relu", "conv3-64", "bn"]
    assert parse("conv7-64-s2-floor fc").layers()[0] == Conv(7, 64, stride=2, floor=True)


@pytest.mark.parametrize("text, message", [
    ("res[conv3-8]*2 fc", r"to repeat it write \[res\[ ... \]\]\*2"),
    ("cat[conv3-8] fc", "has one branch; a cat"),
    ("conv3-8 | fc", "'|' separates the branches of a cat"),
    ("cat[conv1-8 | | conv1-8] fc", "branch 2 of the cat"),
    ("cat[conv1-8 | ] fc", "branch 2 of the cat"),
    ("res[] fc", r"res\[ \] group opened at word 1 is empty"),
    ("res[conv3-8 fc", r"'res\[' at word 1 is never closed; close the group with \]"),
    ("res[fc-10] fc", "holds the fc layer 'fc-10'"),
    ("fc-10 res[conv3-8] fc", "already flattened"),
    ("pool3-p2 fc", "pool padding P must be between 0 and F/2 = 1"),
    ("pool3-floor-s2 fc", "pool suffixes go in the order -s -p -floor"),
    ("conv3-8-floor-s2 fc", "conv suffixes go in the order -s -p -d -g -floor"),
])
def test_grammar_mistakes_are_one_sentence(text: str, message: str) -> None:
    with pytest.raises(BabysitError, match=message):
        parse(text)


def test_residual_shapes_identity_and_projection() -> None:
    infos = infer_shapes(f"conv3-64 {BASIC} relu res[conv3-128-s2-floor bn relu conv3-128 bn] relu gap fc",
                         (3, 56, 56), 10)
    identity, projected = infos[1], infos[3]
    assert identity.out_shape == (64, 56, 56) and [i.name for i in identity.inner] == [f"1.body.{j}" for j in range(5)]
    # (56 - 3 + 2*1)/2 + 1 = 28.5 -> 28 (floor); the 1x1 stride-2 shortcut: floor((56 - 1)/2) + 1 = 28
    assert projected.out_shape == (128, (56 - 3 + 2) // 2 + 1, 28) == (128, (56 - 1) // 2 + 1, 28)
    shortcut = [i for i in projected.inner if ".shortcut." in i.name]
    assert [(i.name, i.layer) for i in shortcut] == [("3.shortcut.0", Conv(1, 128, stride=2, floor=True)),
                                                     ("3.shortcut.1", BatchNorm())]
    # no bn in the body: the projection is a bare 1x1 conv; depth changes alone: stride 1
    plain = infer_shapes("res[conv3-16 relu conv3-32] gap fc", (8, 10, 10), 10)[0]
    assert [str(i.layer) for i in plain.inner if ".shortcut." in i.name] == ["conv1-32"]


def test_cat_stacks_depth() -> None:
    info = infer_shapes(f"{INCEPTION} gap fc", (192, 28, 28), 10)[0]
    assert info.out_shape == (64 + 128 + 32 + 32, 28, 28)
    assert [i.name for i in info.inner] == ["0.0.0", "0.1.0", "0.1.1", "0.2.0", "0.2.1", "0.3.0", "0.3.1"]


def test_size_mistakes_in_the_lecture_words() -> None:
    with pytest.raises(BabysitError) as err:
        infer_shapes("cat[conv1-64 | pool3-s1 conv1-32] gap fc", (192, 28, 28), 10)
    assert ("cat[ ] stacks its branches' volumes along depth, so every branch must give the same H x W, but branch 0 "
            "gives 28x28x64 and branch 1 gives 26x26x32") in str(err.value)
    with pytest.raises(BabysitError, match=r"the block maps 8x8x3 to 6x6x8, but its shortcut, a 1x1 conv with the "
                                           r"block's stride 1, gives 8x8"):
        infer_shapes("res[conv3-8-p0] gap fc", (3, 8, 8), 10)
    with pytest.raises(BabysitError, match=r"layer 0.body.0 'conv3-8-s2': 8x8 input, 3x3 filter, stride 2: "
                                           r"\(8-3\+2\*1\)/2\+1 = 4.5 is not an integer; .* or add -floor"):
        infer_shapes("res[conv3-8-s2] gap fc", (3, 8, 8), 10)


def _bn(x: torch.Tensor, m: nn.Module) -> torch.Tensor:
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


@torch.no_grad()
def test_residual_block_is_body_plus_shortcut() -> None:
    torch.manual_seed(0)
    model = build("res[conv3-8-s2-floor bn relu conv3-8 bn] relu gap fc", (3, 9, 9), 5).eval()
    for m in model.modules():  # non-trivial running statistics, so eval-mode bn is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(4, 3, 9, 9)
    get = model.get_submodule
    h = F.relu(_bn(F.conv2d(x, get("0.body.0").weight, get("0.body.0").bias, stride=2, padding=1), get("0.body.1")))
    body = _bn(F.conv2d(h, get("0.body.3").weight, get("0.body.3").bias, padding=1), get("0.body.4"))
    short = _bn(F.conv2d(x, get("0.shortcut.0").weight, get("0.shortcut.0").bias, stride=2), get("0.shortcut.1"))
    assert get("0.shortcut.0").weight.shape == (8, 3, 1, 1)
    torch.testing.assert_close(model[0](x), body + short)
    identity = build("res[conv3-3 relu conv3-3] gap fc", (3, 6, 6), 5)
    blk = identity[0]
    torch.testing.assert_close(blk(x[:, :, :6, :6]), blk.body(x[:, :, :6, :6]) + x[:, :, :6, :6])
    assert sum(p.numel() for p in blk.shortcut.parameters()) == 0


@torch.no_grad()
def test_cat_block_is_depth_concatenation() -> None:
    torch.manual_seed(0)
    model = build(f"{INCEPTION} gap fc", (16, 7, 7), 5)
    x = torch.randn(2, 16, 7, 7)
    get = model.get_submodule

    def conv(name: str, v: torch.Tensor, pad: int = 0) -> torch.Tensor:
        return F.conv2d(v, get(name).weight, get(name).bias, padding=pad)

    branches = [conv("0.0.0", x), conv("0.1.1", conv("0.1.0", x), 1), conv("0.2.1", conv("0.2.0", x), 2),
                conv("0.3.1", F.max_pool2d(x, 3, 1, 1))]
    torch.testing.assert_close(model[0](x), torch.cat(branches, dim=1))
    assert model(x).shape == (2, 5)


@pytest.mark.parametrize("text, shape", [
    ("conv3-16 bn relu [res[conv3-16 bn relu conv3-16 bn] relu]*2 res[conv3-32-s2-floor bn relu conv3-32 bn] relu "
     "gap fc", (3, 32, 32)),
    (f"conv3-32 {INCEPTION} pool3-s2-floor fc-20 relu fc", (1, 12, 12)),
    ("res[conv3-8 relu conv3-16 maxout-2 cat[conv1-4 | res[conv3-4] conv1-4]] gap fc", (8, 10, 10)),
])
def test_summary_counts_every_parameter_once(text: str, shape: tuple[int, int, int]) -> None:
    s = summary(text, shape, 10)
    assert s.total_params == sum(p.numel() for p in build(text, shape, 10).parameters())
    groups = [r for r in s.rows if r.token in ("res[...]", "cat[...]")]
    assert groups and all(r.weights == r.params == 0 and r.level >= 0 for r in groups)
    assert all(r.level >= 1 for r in s.rows if "." in r.path)


def test_summary_rows_of_a_projected_block() -> None:
    s = summary("res[conv3-32-s2-floor bn relu conv3-32 bn] gap", (16, 32, 32), 10)
    assert [(r.token, r.path, r.level) for r in s.rows] == [
        ("INPUT", "", 0), ("res[...]", "0", 0),
        ("conv3-32-s2-floor", "0.body.0", 1), ("bn", "0.body.1", 1), ("conv3-32", "0.body.3", 1),
        ("bn", "0.body.4", 1), ("shortcut conv1-32-s2-floor", "0.shortcut.0", 1), ("shortcut bn", "0.shortcut.1", 1),
        ("gap", "1", 0)]
    rows = {r.path: r for r in s.rows}
    assert rows["0.shortcut.0"].weights_formula == f"(1*1*16)*32 = {16 * 32:,}"
    assert rows["0"].activations == 32 * 16 * 16  # the sum body(x) + shortcut(x) is a new volume
    assert rows["0"].weights_formula == f"0 (its layers below: {3 * 3 * 16 * 32 + 3 * 3 * 32 * 32 + 16 * 32:,})"
    assert rows["0.shortcut.0"].flops == 2 * 16 * 32 * 16 * 16  # 2 * K * C * H_out * W_out for a 1x1 conv


def test_summary_marks_the_branches() -> None:
    tokens = [r.token for r in summary(INCEPTION, (192, 28, 28), 10).rows]
    assert tokens == ["INPUT", "cat[...]", "conv1-64", "| conv1-96", "conv3-128", "| conv1-16", "conv5-32",
                      "| pool3-s1-p1", "conv1-32"]


def test_auto_init_reads_the_activation_after_the_group() -> None:
    torch.manual_seed(0)
    # first body conv -> relu: He; last body conv and the shortcut -> (bn, end of block) tanh: Xavier
    model = build("res[conv3-64 bn relu conv3-128 bn] tanh gap fc", (64, 8, 8), 10)
    init_weights(model, "auto")
    fan_in = 64 * 3 * 3
    std = {name: model.get_submodule(name).weight.std().item() for name in ("0.body.0", "0.body.3", "0.shortcut.0")}
    assert std["0.body.0"] == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    assert std["0.body.3"] == pytest.approx(1 / math.sqrt(fan_in), rel=0.03)  # its input: body.0's 64 maps
    assert std["0.shortcut.0"] == pytest.approx(1 / math.sqrt(64), rel=0.05)
    # the score layer: Xavier times 0.01
    assert model.get_submodule("3").weight.std().item() == pytest.approx(0.01 / math.sqrt(128), rel=0.1)


def test_data_dependent_init_reaches_inside_groups() -> None:
    torch.manual_seed(0)
    spec = f"conv3-16 relu {INCEPTION} relu res[conv3-256 relu conv3-256] relu gap fc"
    model = build(spec, (1, 8, 8), 10)
    x = torch.randn(64, 1, 8, 8)
    init_weights(model, "lsuv", batch=x)
    out: dict[str, float] = {}

    def record(_m: nn.Module, _i: object, o: torch.Tensor) -> None:
        out["v"] = o.var().item()

    hook = model.get_submodule("2.1.1").register_forward_hook(record)
    model.eval()(x)
    hook.remove()
    assert abs(out["v"] - 1) < 0.1  # LSUV's target: unit variance of each conv's output, inside the branch too
    assert "2.1.1" in [info.name for info in walk(infer_shapes(spec, (1, 8, 8), 10))]


def test_init_check_names_the_layers_inside_groups() -> None:
    from babysit.models.init import format_init_check, init_check

    table = format_init_check(init_check("conv3-8 relu res[conv3-8 bn relu conv3-8 bn] relu gap fc", (1, 8, 8),
                                         ("he",), batch_size=8))
    assert [line.split()[:2] for line in table.splitlines()[1:]] == [["1", "ReLU"], ["2.body.2", "ReLU"],
                                                                     ["3", "ReLU"]]


def test_the_probes_see_the_layers_inside_groups() -> None:
    from babysit.monitor.probes import probe_layers

    spec = "conv3-8 relu res[conv3-8 bn relu conv3-16-s2-floor bn] relu cat[conv1-8 | pool3-s1-p1 conv1-8] gap fc"
    model = build(spec, (1, 8, 8), 10)
    assert [(name, kind) for name, _, kind in probe_layers(model)] == [
        ("0", "conv"), ("1", "relu"), ("2.body.0", "conv"), ("2.body.1", "bn"), ("2.body.2", "relu"),
        ("2.body.3", "conv"), ("2.body.4", "bn"), ("2.shortcut.0", "conv"), ("2.shortcut.1", "bn"), ("3", "relu"),
        ("4.0.0", "conv"), ("4.1.1", "conv"), ("6", "fc")]


@torch.no_grad()
def test_bn_folding_and_fc_to_conv_through_groups() -> None:
    from babysit.models.auto import resolve_spec
    from babysit.models.convert import fully_conv, total_stride
    from babysit.models.fold import count_bn, fold_bn

    torch.manual_seed(0)
    model = build(resolve_spec("resnet20", (3, 16, 16)), (3, 16, 16), 10)
    for m in model.modules():  # trained-looking statistics, so folding has something to fold
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(4, 3, 16, 16)
    folded = fold_bn(model)
    assert folded.folded_bn == 1 + 9 * 2 + 2 and count_bn(folded) == 0  # stem, two per block, two shortcuts
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=0)
    assert total_stride(model.spec) == 1 * 2 * 2  # the strides inside the blocks count
    assert total_stride(resolve_spec("resnet18", (3, 224, 224))) == 32
    converted = fully_conv(model, keep_flatten=True).eval()
    torch.testing.assert_close(converted(x), model(x), atol=1e-5, rtol=0)


def test_layer_labels_name_the_layers_inside_groups() -> None:
    from babysit.models.spec import layer_labels

    labels = layer_labels("conv3-8 res[conv3-8 bn] cat[conv1-4 | pool3-s1-p1 conv1-4] gap fc")
    assert labels["1"] == "1 res[...]" and labels["1.body.0"] == "1.body.0 conv3-8"
    assert labels["1.body.1"] == "1.body.1 bn"
    assert labels["2.1.0"] == "2.1.0 pool3-s1-p1" and labels["2.1.1"] == "2.1.1 conv1-4" and labels["4"] == "4 fc"
