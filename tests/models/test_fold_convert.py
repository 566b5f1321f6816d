"""BN folding and FC -> CONV conversion on real digits images: the equations written out, torch's own fusion,
identical scores at the training size and the score map against the original net on every crop."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from babysit.data.sources import load_dataset
from babysit.errors import BabysitError
from babysit.models.build import build
from babysit.models.convert import fully_conv, fully_conv_spec, total_stride
from babysit.models.fold import count_bn, fold_bn

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """200 real digits images, (x/255 - 0.5) as a preprocessing would give them."""
    x = load_dataset("digits").train.x[:200]
    return torch.as_tensor(np.asarray(x)).float() / 255.0 - 0.5


def _trained_bn(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from their initial 0/1, as training leaves them."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.1)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def test_conv_bn_and_fc_bn_fold_into_one_layer_with_the_same_outputs(digits):
    torch.manual_seed(0)
    model = _trained_bn(build("conv3-8 bn relu pool2 fc-32 bn relu fc", (1, 8, 8), 10))
    folded = fold_bn(model)
    assert folded.folded_bn == 2 and count_bn(folded) == 0 and count_bn(model) == 2  # the original is untouched
    with torch.no_grad():
        assert (folded(digits) - model(digits)).abs().max() <= 1e-5
    conv, bn = model.get_submodule("0"), model.get_submodule("1")
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # W' = W s, b' = (b - mu) s + beta
    torch.testing.assert_close(folded.get_submodule("0").weight, conv.weight * s.view(-1, 1, 1, 1))
    torch.testing.assert_close(folded.get_submodule("0").bias, (conv.bias - bn.running_mean) * s + bn.bias)
    ours, theirs = folded.get_submodule("4"), fuse_linear_bn_eval(model.get_submodule("4"), model.get_submodule("5"))
    torch.testing.assert_close(ours.weight, theirs.weight)
    torch.testing.assert_close(ours.bias, theirs.bias)
    torch.testing.assert_close(folded.get_submodule("0").weight, fuse_conv_bn_eval(conv, bn).weight)


def test_a_bn_after_a_relu_is_kept_and_the_output_does_not_change(digits):
    torch.manual_seed(1)
    model = _trained_bn(build("conv3-8 relu bn pool2 fc", (1, 8, 8), 10))
    folded = fold_bn(model)
    assert folded.folded_bn == 0 and count_bn(folded) == 1
    torch.testing.assert_close(folded(digits), model(digits))


def test_the_notes_example_fc_over_7x7x512_is_a_conv_f7_k4096():
    spec = fully_conv_spec("fc-4096 relu fc-4096 relu fc", (512, 7, 7), 1000)
    assert str(spec) == "conv7-4096-p0 relu conv1-4096 relu conv1-1000"


def test_converted_specs_keep_the_layer_numbers():
    spec = fully_conv_spec("[conv3-8 relu]*2 pool2 [fc-32 bn relu]*2 dropout-0.5 fc", (1, 8, 8), 10)
    assert str(spec) == "[conv3-8 relu]*2 pool2 conv4-32-p0 bn relu conv1-32 bn relu dropout-0.5 conv1-10"
    assert str(fully_conv_spec("conv3-8 relu conv1-10 gap", (1, 8, 8), 10)) == "conv3-8 relu conv1-10 avgpool8-s1"
    assert total_stride("conv3-8-s2 relu pool2 pool3-s1 fc") == 4


@pytest.mark.parametrize("text", ["conv3-8 bn relu pool2 fc-32 bn relu dropout-0.5 fc", "conv3-8 relu conv1-10 gap",
                                  "[conv3-4 relu]*2 pool2 [fc-16 relu]*2 maxout-2 fc"])
def test_identical_scores_at_the_training_size(digits, text):
    torch.manual_seed(2)
    model = _trained_bn(build(text, (1, 8, 8), 10))
    conv = fully_conv(model)
    assert not any(isinstance(m, nn.Linear) for m in conv.modules())
    with torch.no_grad():
        out = conv(digits)
        assert out.shape == (len(digits), 10, 1, 1)
        assert (out.flatten(1) - model(digits)).abs().max() <= 1e-5


@pytest.mark.parametrize("text", ["conv3-8-p0 relu pool2 fc-16 relu fc", "conv3-6-p0 bn relu conv3-10-p0 gap",
                                  "conv2-8-s2-p0 relu fc"])
def test_on_a_larger_image_the_map_is_the_original_net_on_every_crop_at_the_total_stride(digits, text):
    """Four real digits tiled into 16x16 images; map[i, j] = net(crop at (i S, j S)) for every position."""
    torch.manual_seed(3)
    model = _trained_bn(build(text, (1, 8, 8), 10))
    big = torch.cat([torch.cat([digits[0:4], digits[4:8]], 3), torch.cat([digits[8:12], digits[12:16]], 3)], 2)
    conv = fully_conv(model)
    s = conv.total_stride
    assert s == total_stride(text)
    with torch.no_grad():
        score_map = conv(big)
        n = (16 - 8) // s + 1
        assert score_map.shape == (4, 10, n, n)
        for i in range(n):
            for j in range(n):
                crop = big[:, :, i * s : i * s + 8, j * s : j * s + 8]
                assert (score_map[:, :, i, j] - model(crop)).abs().max() <= 1e-5


def test_what_cannot_be_converted_is_one_sentence():
    with pytest.raises(BabysitError, match="square"):
        fully_conv_spec("conv3-8 relu fc", (1, 8, 6), 10)
    with pytest.raises(BabysitError, match="gap inside the group"):
        fully_conv_spec("[conv1-10 gap]*1", (1, 8, 8), 10)
    with pytest.raises(BabysitError, match="babysit.build"):
        fully_conv(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
