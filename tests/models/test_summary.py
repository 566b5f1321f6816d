"""The summary table against the notes' VGGNet table, and the small counting rules."""

from __future__ import annotations

import pytest
import torch

from babysit.errors import BabysitError
from babysit.models import build, format_summary, summary
from babysit.models.summary import human

VGG16 = ("[conv3-64 relu]*2 pool2 [conv3-128 relu]*2 pool2 [conv3-256 relu]*3 pool2 [conv3-512 relu]*3 pool2 "
         "[conv3-512 relu]*3 pool2 fc-4096 relu fc-4096 relu fc")

# The notes' table, row by row: (layer, volume, memory, weights). Written out, not computed.
NOTES_VGG16 = [
    ("INPUT", "224x224x3", 224 * 224 * 3, "0"),
    ("conv3-64", "224x224x64", 224 * 224 * 64, "(3*3*3)*64 = 1,728"),
    ("conv3-64", "224x224x64", 224 * 224 * 64, "(3*3*64)*64 = 36,864"),
    ("pool2", "112x112x64", 112 * 112 * 64, "0"),
    ("conv3-128", "112x112x128", 112 * 112 * 128, "(3*3*64)*128 = 73,728"),
    ("conv3-128", "112x112x128", 112 * 112 * 128, "(3*3*128)*128 = 147,456"),
    ("pool2", "56x56x128", 56 * 56 * 128, "0"),
    ("conv3-256", "56x56x256", 56 * 56 * 256, "(3*3*128)*256 = 294,912"),
    ("conv3-256", "56x56x256", 56 * 56 * 256, "(3*3*256)*256 = 589,824"),
    ("conv3-256", "56x56x256", 56 * 56 * 256, "(3*3*256)*256 = 589,824"),
    ("pool2", "28x28x256", 28 * 28 * 256, "0"),
    ("conv3-512", "28x28x512", 28 * 28 * 512, "(3*3*256)*512 = 1,179,648"),
    ("conv3-512", "28x28x512", 28 * 28 * 512, "(3*3*512)*512 = 2,359,296"),
    ("conv3-512", "28x28x512", 28 * 28 * 512, "(3*3*512)*512 = 2,359,296"),
    ("pool2", "14x14x512", 14 * 14 * 512, "0"),
    ("conv3-512", "14x14x512", 14 * 14 * 512, "(3*3*512)*512 = 2,359,296"),
    ("conv3-512", "14x14x512", 14 * 14 * 512, "(3*3*512)*512 = 2,359,296"),
    ("conv3-512", "14x14x512", 14 * 14 * 512, "(3*3*512)*512 = 2,359,296"),
    ("pool2", "7x7x512", 7 * 7 * 512, "0"),
    ("fc-4096", "1x1x4096", 4096, "7*7*512*4096 = 102,760,448"),
    ("fc-4096", "1x1x4096", 4096, "4096*4096 = 16,777,216"),
    ("fc", "1x1x1000", 1000, "4096*1000 = 4,096,000"),
]


def test_vgg16_matches_the_notes_row_by_row() -> None:
    s = summary(VGG16, (3, 224, 224), 1000)
    assert [(r.token, r.volume, r.activations, r.weights_formula) for r in s.rows] == NOTES_VGG16
    for row, (_, _, _, formula) in zip(s.rows, NOTES_VGG16, strict=True):
        assert row.weights == int(formula.split("= ")[-1].replace(",", ""))
    assert s.rows[11].weights == 1_179_648  # CONV3-512 at 28x28: (3*3*256)*512
    # the notes' memory column, rounded as they round it
    assert [r.memory_formula for r in s.rows[:4]] == ["224*224*3=150K", "224*224*64=3.2M", "224*224*64=3.2M",
                                                      "112*112*64=800K"]


def test_vgg16_totals() -> None:
    s = summary(VGG16, (3, 224, 224), 1000)
    assert s.total_weights == 138_344_128  # the notes' weights column, no biases
    assert s.total_params == 138_357_544  # with the 13,416 biases: the notes' "138M parameters"
    # The notes' rows add up to 15,237,608 (~15.2M) numbers per image, but their TOTAL line says
    # "24M * 4 bytes ~= 93MB": an arithmetic slip in the notes. We print the true sum of the rows.
    assert s.total_activations == sum(memory for _, _, memory, _ in NOTES_VGG16) == 15_237_608
    assert s.total_memory_bytes == 15_237_608 * 4
    # FLOPs = 2 * multiply-adds: each conv does 3*3*C_in*K per output pixel, each fc in*out
    convs = [(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56), *[(256, 256, 56)] * 2,
             (256, 512, 28), *[(512, 512, 28)] * 2, *[(512, 512, 14)] * 3]
    macs = sum(9 * c * k * side * side for c, k, side in convs) + 25088 * 4096 + 4096 * 4096 + 4096 * 1000
    assert s.total_flops == 2 * macs  # about 31G: VGG-16's well-known 15.5G multiply-adds


def test_vgg16_params_match_the_built_model() -> None:
    with torch.device("meta"):  # sizes without allocating 550MB
        model = build(VGG16, (3, 224, 224), 1000)
    assert sum(p.numel() for p in model.parameters()) == summary(VGG16, (3, 224, 224), 1000).total_params


def test_vgg16_table_text() -> None:
    text = format_summary(summary(VGG16, (3, 224, 224), 1000))
    lines = text.splitlines()
    assert lines[0].split() == ["INPUT:", "[224x224x3]", "memory:", "224*224*3=150K", "weights:", "0", "FLOPs:", "0"]
    assert lines[11].split()[:6] == ["conv3-512:", "[28x28x512]", "memory:", "28*28*512=400K", "weights:",
                                     "(3*3*256)*512"]
    assert "TOTAL memory: 15.2M * 4 bytes ~= 61MB / image (only forward! ~*2 for bwd)" in lines
    assert any(line.startswith("TOTAL params: 138M parameters (138,344,128 weights + 13,416 biases") for line in lines)
    assert "TOTAL FLOPs: 30.9G / image (2 * multiply-adds of conv and fc layers)" in lines


def test_small_net_rows_and_counting_rules() -> None:
    s = summary("conv5-6-p0 bn relu maxout-2 pool2 conv3-12-g3 dropout-0.5 fc-10 bn tanh fc", (3, 32, 32), 4,
                batch_size=8)
    assert [r.token for r in s.rows] == ["INPUT", "conv5-6-p0", "bn", "maxout-2", "pool2", "conv3-12-g3", "fc-10",
                                         "bn", "fc"]
    rows = {r.token: r for r in s.rows}
    conv = rows["conv5-6-p0"]
    assert conv.volume == "28x28x6" and conv.activations == 28 * 28 * 6
    assert (conv.weights, conv.params) == (5 * 5 * 3 * 6, 5 * 5 * 3 * 6 + 6)
    assert conv.flops == 2 * (5 * 5 * 3 * 6) * 28 * 28 * 8  # 2 * MACs * batch
    assert conv.memory_bytes == 28 * 28 * 6 * 4 * 8
    grouped = rows["conv3-12-g3"]  # each filter sees 3/3 = 1 input channel
    assert grouped.weights_formula == "(3*3*3/3)*12 = 108" and grouped.params == 120
    bn = s.rows[2]  # in place: params (a scale and shift) but no weights and no activations, as the notes count
    assert (bn.activations, bn.memory_formula, bn.weights, bn.params) == (0, "-", 0, 12)
    maxout = s.rows[3]  # not in place: max over pairs of channels makes a new volume of half the depth
    assert maxout.volume == "28x28x3" and maxout.activations == 28 * 28 * 3 and maxout.memory_formula != "-"
    assert s.total_activations == 3 * 32 * 32 + 28 * 28 * 6 + 28 * 28 * 3 + 14 * 14 * 3 + 14 * 14 * 12 + 10 + 4
    assert s.total_params == sum(p.numel() for p in build(s.spec, (3, 32, 32), 4).parameters())
    assert "/ batch of 8" in format_summary(s)


def test_human_numbers_round_like_the_notes() -> None:
    assert [human(n) for n in (150_528, 3_211_264, 802_816, 25_088, 588, 999_700, 0)] == [
        "150K", "3.2M", "800K", "25K", "588", "1M", "0"]
    assert human(138_357_544, 3) == "138M"


def test_bad_batch_size() -> None:
    with pytest.raises(BabysitError, match="batch size"):
        summary("fc", (1, 2, 2), 2, batch_size=0)


def test_a_network_prefix_can_be_tabulated_but_not_built() -> None:
    s = summary("conv5-5-p0", (3, 32, 32), 10)  # the notes' worked example, no classifier yet
    assert [(r.token, r.volume) for r in s.rows] == [("INPUT", "32x32x3"), ("conv5-5-p0", "28x28x5")]
    assert s.total_params == 5 * 5 * 3 * 5 + 5
    assert "would refuse it; end the spec with a plain 'fc'" in format_summary(s)  # said, not only when training
    assert "would refuse" not in format_summary(summary("conv5-5-p0 gap fc", (3, 32, 32), 10))
    with pytest.raises(BabysitError, match="end the spec with a plain 'fc'"):
        build("conv5-5-p0", (3, 32, 32), 10)
