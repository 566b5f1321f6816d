"""The grammar: the lecture's size arithmetic, errors in words, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from babysit.errors import BabysitError
from babysit.models.shapes import infer_shapes, volume_str
from babysit.models.spec import (
    ACTIVATIONS,
    FC,
    MAX_LAYERS,
    Activation,
    BatchNorm,
    Branch,
    Conv,
    Dropout,
    GlobalAvgPool,
    LeakyReLU,
    Maxout,
    Node,
    Pool,
    Repeat,
    Residual,
    Spec,
    parse,
)


def out_volume(spec: str, input_shape: tuple[int, int, int]) -> str:
    """Output volume of the first layer, as the notes write it (H x W x D)."""
    return volume_str(infer_shapes(spec + " fc", input_shape, 10)[0].out_shape)


# ---- the lecture's worked examples: W2 = (W1 - F + 2P)/S + 1 --------------------------------


def test_32x32x3_input_5_filters_5x5_stride_1_pad_0_gives_28x28x5() -> None:
    assert out_volume("conv5-5-p0", (3, 32, 32)) == "28x28x5"  # (32-5)/1+1 = 28


def test_stride_3_gives_10x10x5() -> None:
    assert out_volume("conv5-5-s3-p0", (3, 32, 32)) == "10x10x5"  # (32-5)/3+1 = 10


@pytest.mark.parametrize(("stride", "side"), [(1, 5), (2, 3)])
def test_7x7_input_3x3_filter(stride: int, side: int) -> None:
    spec = "conv3-1-p0" if stride == 1 else f"conv3-1-s{stride}-p0"
    assert out_volume(spec, (1, 7, 7)) == f"{side}x{side}x1"


def test_7x7_input_3x3_filter_stride_3_does_not_fit_in_the_lecture_words() -> None:
    with pytest.raises(BabysitError) as err:
        infer_shapes("conv3-1-s3-p0 fc", (1, 7, 7), 10)
    msg = str(err.value)
    assert "7x7 input, 3x3 filter, stride 3: (7-3)/3+1 = 2.33 is not an integer" in msg
    assert "layer 0 'conv3-1-s3-p0'" in msg and "padding or stride" in msg


def test_padding_appears_in_the_formula() -> None:
    with pytest.raises(BabysitError, match=r"\(7-3\+2\*2\)/3\+1 = 3\.67 is not an integer"):
        infer_shapes("conv3-1-s3-p2 fc", (1, 7, 7), 10)


def test_pool2_on_7x7_is_refused() -> None:
    with pytest.raises(BabysitError) as err:
        infer_shapes("conv3-8 relu pool2 fc", (3, 7, 7), 10)
    assert "layer 2 'pool2': 7x7 input, 2x2 pool, stride 2: (7-2)/2+1 = 3.5 is not an integer" in str(err.value)


def test_filter_larger_than_input_is_refused() -> None:
    with pytest.raises(BabysitError, match=r"\(3-5\)/1\+1 = -1 is less than 1"):
        infer_shapes("conv5-8-p0 fc", (3, 3, 3), 10)


SAME = ["conv1-8", "conv3-8", "conv5-8", "conv7-8", "conv3-8-d2", "conv5-8-d3", "conv3-8-g4"]


@pytest.mark.parametrize("token", SAME)
def test_same_padding_keeps_the_size(token: str) -> None:
    assert out_volume(token, (4, 13, 17)) == "13x17x8"


def test_dilated_filter_uses_the_effective_size() -> None:
    assert out_volume("conv3-2-p0-d2", (1, 9, 9)) == "5x5x2"  # F_eff = 2*(3-1)+1 = 5


def test_shapes_through_a_small_net() -> None:
    infos = infer_shapes("[conv3-16 relu]*2 pool2 conv3-32-g2 maxout-2 gap fc-64 bn dropout-0.5 fc", (3, 32, 32), 7)
    assert [i.out_shape for i in infos] == [
        (16, 32, 32), (16, 32, 32), (16, 32, 32), (16, 32, 32), (16, 16, 16),
        (32, 16, 16), (16, 16, 16), (16, 1, 1), (64,), (64,), (64,), (7,),
    ]
    assert [i.index for i in infos] == list(range(12))
    assert infos[8].in_shape == (16, 1, 1) and infos[8].token == "fc-64"


def test_pool_with_own_stride() -> None:
    assert out_volume("pool3-s2", (8, 7, 7)) == "3x3x8"  # (7-3)/2+1 = 3
    assert out_volume("avgpool2", (8, 6, 6)) == "3x3x8"


# ---- printing and the flat list --------------------------------------------------------------

CANONICAL = [
    "fc",
    "conv3-32 relu pool2 fc",
    "[conv3-64 relu]*2 pool2 [conv3-128 relu]*2 pool2 fc-256 relu dropout-0.5 fc",
    "[[conv3-64 bn relu]*2 pool2]*3 gap fc",
    "conv7-64-s2 lrelu pool3-s2 conv5-16-p0-d2-g4 lrelu-0.2 avgpool2 fc-100 maxout-2 tanh fc",
    "conv3-8-s2-p0 elu sigmoid dropout-0 fc-10",
    "dropout-1e-05 fc",
]


@pytest.mark.parametrize("text", CANONICAL)
def test_canonical_text_round_trips(text: str) -> None:
    assert str(parse(text)) == text


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("conv3-32-p1", "conv3-32"),  # padding 1 is "same" for F=3
        ("conv7-64-s2-p3", "conv7-64-s2"),
        ("conv3-64-p2-d2", "conv3-64-d2"),
        ("conv3-8-s1-d1-g1 fc", "conv3-8 fc"),
        ("pool2-s2 fc", "pool2 fc"),
        ("lrelu-0.01 fc", "lrelu fc"),
        ("dropout-.5 dropout-0.50 fc", "dropout-0.5 dropout-0.5 fc"),
        ("conv03-032 fc", "conv3-32 fc"),
        ("  [conv3-8\trelu ]*2\n[ fc-4 ]*1  fc ", "[conv3-8 relu]*2 [fc-4]*1 fc"),
        ("[conv3-8 relu]*2[pool2]*1 fc", "[conv3-8 relu]*2 [pool2]*1 fc"),
    ],
)
def test_printing_is_canonical(text: str, canonical: str) -> None:
    assert str(parse(text)) == canonical


def test_flat_list_expands_nested_groups() -> None:
    spec = parse("[[conv3-8 relu]*2 pool2]*2 fc")
    assert [str(layer) for layer in spec.layers()] == ["conv3-8", "relu", "conv3-8", "relu", "pool2"] * 2 + ["fc"]
    assert spec.nodes[0] == Repeat((Repeat((Conv(3, 8), Activation("relu")), 2), Pool(2)), 2)


def test_parsed_layers_carry_the_numbers() -> None:
    conv = parse("conv5-16-s2-p0-d2-g4 fc").layers()[0]
    assert conv == Conv(5, 16, stride=2, padding=0, dilation=2, groups=4)
    assert (conv.pad, conv.f_eff) == (0, 9)
    assert parse("pool3-s2 fc").layers()[0] == Pool(3, 2)
    assert parse("avgpool2 fc").layers()[0] == Pool(2, mode="avg")
    assert parse("lrelu-0.2 dropout-0.3 maxout-4 fc-7").layers() == (LeakyReLU(0.2), Dropout(0.3), Maxout(4), FC(7))


# ---- mistakes, each one BabysitError sentence --------------------------------------------------

ERRORS = [
    ("", "empty"),
    ("   \n ", "empty"),
    ("conv3-x", "'conv3-x' is not a valid conv token; write conv{F}-{K}"),
    ("conv3", "is not a valid conv token"),
    ("pool2-sx fc", "is not a valid pool token"),
    ("fc-", "is not a valid fc token"),
    ("dropout-half fc", "is not a valid dropout token"),
    ("foo fc", "unknown token 'foo'; the known tokens are conv{F}-{K}"),
    ("Conv3-8 fc", "tokens are lower case"),
    ("conv3-8-p1-s2 fc", "order -s -p -d -g"),
    ("[conv3-8 relu fc", "never closed"),
    ("conv3-8 relu]*2 fc", "never opened"),
    ("[conv3-8 relu] fc", "must be followed by *N"),
    ("[conv3-8 relu]*0 fc", "repeat count must be at least 1"),
    ("[]*2 fc", "is empty"),
    ("conv3-0 fc", "number of filters K must be at least 1"),
    ("conv0-8 fc", "filter size F must be at least 1"),
    ("conv3-8-s0 fc", "stride S must be at least 1"),
    ("conv3-8-g0 fc", "number of groups G must be at least 1"),
    ("pool0 fc", "pool size F must be at least 1"),
    ("fc-0", "number of fc outputs N must be at least 1"),
    ("maxout-0 fc", "maxout group size k must be at least 1"),
    ("dropout-1 fc", "dropout probability p must be in [0, 1), not 1"),
    ("dropout-1.5 fc", "must be in [0, 1)"),
    ("conv3-10-g4 fc", "10 filters cannot be split into 4 groups"),
    ("fc-10 conv3-8 fc", "comes after the fc layer 0, where the volume is already flattened"),
    ("fc-10 pool2 fc", "already flattened"),
    ("fc relu fc", "plain 'fc' (one output per class) but it is not the last conv/fc layer"),
    ("relu pool2 dropout-0.5", "no conv or fc layer"),
    ("[[conv3-8]*1000]*1000 fc", f"more than {MAX_LAYERS:,} layers"),
    ("conv3-1234567890 fc", "at most 9 digits"),
    ("[" * 40 + "fc" + "]*1" * 40, "more than 32 deep"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_mistakes_raise_one_helpful_sentence(text: str, message: str) -> None:
    with pytest.raises(BabysitError) as err:
        parse(text)
    msg = str(err.value)
    assert message in msg
    assert "\n" not in msg and ". " not in msg.replace("e.g. ", "").replace("... ", "")  # one sentence


def test_word_position_is_named() -> None:
    with pytest.raises(BabysitError, match=r"^word 3: in 'conv3-0', "):
        parse("conv3-8 relu conv3-0 fc")


SHAPE_ERRORS = [
    ("conv3-6-g3 fc", (4, 8, 8), "4 input channels cannot be split into 3 groups"),
    ("conv3-6 maxout-4 fc", (3, 8, 8), "layer 1 'maxout-4': a depth of 6 is not divisible by 4"),
    ("fc-20 maxout-3 fc", (3, 8, 8), "a depth of 20 is not divisible by 3"),
    ("conv3-8", (3, 8, 8), "ends with volume 8x8x8 but there are 10 classes"),
    ("fc-5", (3, 8, 8), "ends with volume 1x1x5 but there are 10 classes"),
    ("fc", (3, 0, 8), "input shape must be (C, H, W)"),
    ("fc", (3, 8), "input shape must be (C, H, W)"),
]


@pytest.mark.parametrize(("text", "shape", "message"), SHAPE_ERRORS)
def test_shape_mistakes(text: str, shape: tuple[int, int, int], message: str) -> None:
    with pytest.raises(BabysitError) as err:
        infer_shapes(text, shape, 10)
    assert message in str(err.value)


def test_zero_classes_is_refused() -> None:
    with pytest.raises(BabysitError, match="number of classes"):
        infer_shapes("fc", (3, 8, 8), 0)


# ---- property tests ----------------------------------------------------------------------------


@st.composite
def convs(draw: st.DrawFn) -> Conv:
    groups = draw(st.integers(1, 4))
    return Conv(
        draw(st.integers(1, 11)),
        groups * draw(st.integers(1, 64)),
        stride=draw(st.integers(1, 4)),
        padding=draw(st.none() | st.integers(0, 6)),
        dilation=draw(st.integers(1, 3)),
        groups=groups,
        floor=draw(st.booleans()),
    )


ELEMENTWISE = st.one_of(
    st.builds(BatchNorm),
    st.builds(Dropout, st.floats(0.0, 1.0, exclude_max=True)),
    st.sampled_from(ACTIVATIONS).map(Activation),
    st.builds(LeakyReLU, st.floats(0.0, 10.0) | st.just(0.01)),
    st.builds(Maxout, st.integers(1, 4)),
)
POOLS = st.integers(1, 5).flatmap(lambda f: st.builds(
    Pool, st.just(f), st.none() | st.integers(1, 5), st.sampled_from(["max", "avg"]), st.integers(0, f // 2),
    st.booleans()))
FEATURE_LAYERS = st.one_of(convs(), POOLS, st.builds(GlobalAvgPool), ELEMENTWISE)
FC_LAYERS = st.one_of(st.builds(FC, st.integers(1, 5000)), ELEMENTWISE)


def trees(leaves: st.SearchStrategy[Node], volumes: bool = False) -> st.SearchStrategy[Node]:
    """Layers in [ ]*N groups; with ``volumes`` also in res[ ] and cat[ a | b ] groups (which hold no fc)."""
    def groups(kids: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        bodies = st.lists(kids, min_size=1, max_size=3).map(tuple)
        repeat = st.builds(Repeat, bodies, st.integers(1, 3))
        if not volumes:
            return repeat
        return repeat | st.builds(Residual, bodies) | st.builds(Branch, st.lists(bodies, min_size=2, max_size=3)
                                                                .map(tuple))
    return st.recursive(leaves, groups, max_leaves=6)


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    """Canonical spec trees: feature layers, then fc layers, then maybe the class-count fc."""
    nodes = draw(st.lists(trees(FEATURE_LAYERS, volumes=True), max_size=4))
    nodes += draw(st.lists(trees(FC_LAYERS), max_size=3))
    if draw(st.booleans()) or not _has_weights(nodes):
        nodes.append(FC())
    try:
        return Spec(tuple(nodes))
    except BabysitError:  # e.g. repeats that expand past MAX_LAYERS
        assume(False)
        raise


def _has_weights(nodes: list[Node]) -> bool:
    return any(_has_weights(list(n.body)) if isinstance(n, Repeat) else n.has_weights for n in nodes)


@settings(max_examples=200, deadline=None)
@given(specs())
def test_round_trip_of_random_specs(spec: Spec) -> None:
    text = str(spec)
    assert parse(text) == spec
    assert str(parse(text)) == text
    assert "  " not in text and text == text.strip()


GRAMMAR_PIECES = [
    "conv", "pool", "avgpool", "gap", "fc", "bn", "dropout", "relu", "lrelu", "elu", "tanh", "sigmoid", "maxout",
    "res[", "cat[", "|", "-floor",
    "-", "-s", "-p", "-d", "-g", "0", "1", "2", "3", "7", "64", ".", "5", "e", "e-", " ", " ", "[", "]", "]*", "*",
    "\t", "CONV", "٣", "\u00a0", "99999999999",
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(GRAMMAR_PIECES), max_size=25).map("".join) | st.text(max_size=60))
def test_parse_never_crashes(text: str) -> None:
    try:
        spec = parse(text)
    except BabysitError as err:
        assert str(err)  # a message, never an empty error
        return
    assert isinstance(spec, Spec)
    assert parse(str(spec)) == spec
