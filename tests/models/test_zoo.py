"""The case studies by name (models/zoo.py): parameter counts against the published ones, every summary
table, names wherever a spec goes, and inputs a network does not fit.

Published counts: VGG-16 138,357,544 and VGG-11 132,863,336 (the paper's, with biases; torchvision's are
the same); AlexNet 60,965,224 (the two-GPU network: conv2, conv4, conv5 in 2 groups, as in Caffe's
bvlc_alexnet); ResNet-18 11,689,512 and ResNet-34 21,797,672 (torchvision: convs without biases, so ours
have one bias per conv filter more); ResNet-20 272,474 with 1x1 projection shortcuts and no conv
biases (269,722 with the paper's parameter-free option-A shortcuts); GoogLeNet about 6.8M (the paper's
Table 1, no auxiliary classifiers).
"""

from __future__ import annotations

import json

import pytest
import torch

from babysit.cli import main
from babysit.errors import BabysitError
from babysit.models import build, format_summary, summary
from babysit.models.auto import NAMED, is_named, parse_spec, published_input, resolve_spec
from babysit.models.spec import Conv, parse
from babysit.models.zoo import GOOGLENET_MODULES, ZOO

pytestmark = pytest.mark.usefixtures("one_thread")


def conv(f: int, c: int, k: int, groups: int = 1) -> int:
    """Weights + biases of a conv layer: (F*F*C/G)*K + K."""
    return f * f * c // groups * k + k


def fc(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def bn(c: int) -> int:
    return 2 * c  # gamma and beta


LENET5 = conv(5, 1, 6) + conv(5, 6, 16) + conv(5, 16, 120) + fc(120, 84) + fc(84, 10)
ALEXNET = (conv(11, 3, 96) + conv(5, 96, 256, 2) + conv(3, 256, 384) + conv(3, 384, 384, 2) + conv(3, 384, 256, 2)
           + fc(6 * 6 * 256, 4096) + fc(4096, 4096) + fc(4096, 1000))
ZFNET = (conv(7, 3, 96) + conv(5, 96, 256) + conv(3, 256, 384) + conv(3, 384, 384) + conv(3, 384, 256)
         + fc(6 * 6 * 256, 4096) + fc(4096, 4096) + fc(4096, 1000))
RESNET18_BIASES = 64 + 2 * 2 * 64 + (2 * 2 * 128 + 128) + (2 * 2 * 256 + 256) + (2 * 2 * 512 + 512)  # + shortcuts
RESNET34_BIASES = 64 + 3 * 2 * 64 + (4 * 2 * 128 + 128) + (6 * 2 * 256 + 256) + (3 * 2 * 512 + 512)
RESNET20_BIASES = 16 + 3 * 2 * 16 + (3 * 2 * 32 + 32) + (3 * 2 * 64 + 64)
RESNET20_PROJECTIONS = 16 * 32 + bn(32) + 32 * 64 + bn(64)  # without biases


def googlenet() -> int:
    total, depth = conv(7, 3, 64) + conv(1, 64, 64) + conv(3, 64, 192), 192
    for c1, r3, c3, r5, c5, pool in GOOGLENET_MODULES.values():
        total += conv(1, depth, c1) + conv(1, depth, r3) + conv(3, r3, c3) + conv(1, depth, r5) + conv(5, r5, c5)
        total += conv(1, depth, pool)
        depth = c1 + c3 + c5 + pool
    return total + fc(depth, 1000)


COUNTS = {  # name: (our count at the published input and classes, what it is made of)
    "lenet5": LENET5,  # 61,706
    "alexnet": ALEXNET,
    "zfnet": ZFNET,
    "vgg11": 132_863_336,
    "vgg16": 138_357_544,
    "googlenet": googlenet(),
    "resnet18": 11_689_512 + RESNET18_BIASES,
    "resnet34": 21_797_672 + RESNET34_BIASES,
    "resnet20": 272_474 + RESNET20_BIASES,
    "vgg-small": (conv(3, 3, 64) + conv(3, 64, 64) + conv(3, 64, 128) + conv(3, 128, 128) + conv(3, 128, 256)
                  + conv(3, 256, 256) + bn(64) * 2 + bn(128) * 2 + bn(256) * 2 + fc(4 * 4 * 256, 256) + fc(256, 10)),
}


def test_the_published_figures_written_out() -> None:
    assert LENET5 == 61_706
    assert ALEXNET == 60_965_224  # Caffe's bvlc_alexnet
    assert RESNET18_BIASES == 4_800 and RESNET34_BIASES == 8_512 and RESNET20_BIASES == 784
    assert 272_474 - RESNET20_PROJECTIONS == 269_722  # option A (zero-padding shortcuts) has no parameters there
    assert list(ZOO) == list(COUNTS)


def test_torchvisions_alexnet_written_in_the_grammar() -> None:
    # the single-tower variant (64-192-384-256-256, 224 input; its adaptive pooling is the identity at 6x6)
    spec = ("conv11-64-s4-p2-floor relu pool3-s2 conv5-192 relu pool3-s2 conv3-384 relu conv3-256 relu conv3-256 relu "
            "pool3-s2 fc-4096 relu fc-4096 relu fc")
    s = summary(spec, (3, 224, 224), 1000)
    assert s.rows[-4].volume == "6x6x256"  # 224 -> (224-11+2*2)/4+1 = 55.25 -> 55 -> 27 -> 13 -> 6
    assert s.total_params == 61_100_840


@pytest.mark.parametrize("name", list(COUNTS))
def test_parameter_counts(name: str) -> None:
    net = ZOO.get(name)
    s = summary(name, net.input_shape, net.num_classes)
    assert s.total_params == COUNTS[name]
    with torch.device("meta"):  # the built network holds exactly those parameters (no memory allocated)
        model = build(resolve_spec(name, net.input_shape), net.input_shape, net.num_classes)
    assert sum(p.numel() for p in model.parameters()) == COUNTS[name]
    assert format_summary(s).count("\n") >= len(s.rows)


def test_googlenet_is_the_papers_six_point_eight_million() -> None:
    s = summary("googlenet", (3, 224, 224), 1000)
    assert abs(s.total_weights - 6.8e6) / 6.8e6 < 0.03  # Table 1's rows add up to ~6.8M (their K is 1024)
    assert [r.volume for r in s.rows if r.token == "cat[...]"] == ["28x28x256", "28x28x480"] + [
        "14x14x512"] * 3 + ["14x14x528", "14x14x832", "7x7x832", "7x7x1024"]  # Table 1's output sizes


def test_resnet18_volumes_follow_the_paper() -> None:
    s = summary("resnet18", (3, 224, 224), 1000)
    blocks = [r.volume for r in s.rows if r.token == "res[...]"]
    assert blocks == ["56x56x64"] * 2 + ["28x28x128"] * 2 + ["14x14x256"] * 2 + ["7x7x512"] * 2
    assert s.rows[1].volume == "112x112x64"  # conv1: (224 - 7 + 2*3)/2 + 1 = 112.5, rounded down


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
@pytest.mark.parametrize("name", ["resnet20", "vgg-small"])
def test_small_image_variants_fit(name: str, shape: tuple[int, int, int]) -> None:
    model = build(resolve_spec(name, shape), shape, 10)
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_lenet5_pads_mnist_to_32() -> None:
    assert resolve_spec("lenet5", (1, 32, 32)).startswith("conv5-6-p0 ")
    assert summary("lenet5", (1, 28, 28), 10).rows[1].volume == "28x28x6"  # 28 + 2*2 - 5 + 1: the 32x32 net's C1
    assert summary("lenet5", (1, 28, 28), 10).total_params == LENET5


def test_a_network_that_does_not_fit_says_what_it_was_written_for() -> None:
    with pytest.raises(BabysitError, match=r"vgg16 does not fit 28x28 images \(layer 16 'pool2': 7x7 input, 2x2 pool, "
                                           r"stride 2: \(7-2\)/2\+1 = 3.5 is not an integer.*it is written for "
                                           r"3x224x224 .*resnet20 or vgg-small"):
        resolve_spec("vgg16", (1, 28, 28))
    with pytest.raises(BabysitError, match=r"alexnet does not fit 224x224 .*\(224-11\)/4\+1 = 54.25"):
        resolve_spec("alexnet", (3, 224, 224))  # the notes' remark: the paper's 224 does not work, 227 does


def test_names_are_spec_names_everywhere() -> None:
    for name in ZOO:
        assert is_named(name) and name in NAMED
    assert published_input("vgg16") == ((3, 224, 224), 1000) and published_input("conv3-8 fc") is None
    assert parse(resolve_spec("resnet20", (3, 32, 32))).layers()[0] == Conv(3, 16)
    with pytest.raises(BabysitError, match="unknown token 'resnet-18'.*did you mean the model name 'resnet18'"):
        parse_spec("resnet-18")
    with pytest.raises(BabysitError, match="'conv3' is not a valid conv token") as err:
        parse_spec("conv3 fc")  # a spec, not a name: no name suggested
    assert "model name" not in str(err.value)


def test_summary_command_defaults_to_the_published_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "vgg16"]) == 0
    assert "= 138,357,544;" in capsys.readouterr().out
    assert main(["summary", "resnet18", "--input", "3x224x224"]) == 0
    out = capsys.readouterr().out
    assert f"= {11_689_512 + RESNET18_BIASES:,};" in out and "shortcut conv1-128-s2-floor:" in out
    assert main(["summary", "resnet-18"]) == 2
    assert "did you mean the model name 'resnet18'" in capsys.readouterr().err


def test_train_with_res_and_cat_groups_on_digits(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = "conv3-8 bn relu res[conv3-8 bn relu conv3-16-s2-floor bn] relu cat[conv1-8 | pool3-s1-p1 conv1-8] gap fc"
    assert main(["train", "--data.name=digits", f"--model.spec={spec}", "--train.epochs=2", "--train.threads=1",
                 "--monitor.checks=false", "--monitor.report=false",
                 "--train.progress=false", "--data.limit=400", "--out", str(tmp_path), "--name", "g"]) == 0
    run = tmp_path / "g"
    assert (run / "spec.txt").read_text().strip() == spec
    assert json.loads((run / "result.json").read_text())["test_acc"] > 0.3  # 10 classes: chance is 0.1
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0  # the run's network is rebuilt from spec.txt and its weights load
    assert capsys.readouterr().out.startswith("test: accuracy ")
    # deployment reaches inside the groups: BN folded in the body and the shortcut, the graph exported
    from babysit.deploy.export import export_run

    exported = export_run(run, "torchscript", tmp_path / "g.pt")
    assert exported.folded_bn == 4 and exported.max_abs_diff <= 1e-4  # conv-bn: stem, body x2, shortcut


@pytest.mark.slow
def test_resnet20_trains_on_digits(tmp_path) -> None:
    assert main(["train", "--data.name=digits", "--model.spec=resnet20", "--train.epochs=1", "--train.threads=1",
                 "--train.progress=false", "--out", str(tmp_path), "--name", "r20"]) == 0
    config = (tmp_path / "r20" / "config.toml").read_text()
    assert "res[conv3-16 bn relu conv3-16 bn] relu" in config  # the name is resolved: config.toml holds the spec
    assert json.loads((tmp_path / "r20" / "result.json").read_text())["test_acc"] > 0.5
