"""The notes' case studies by name: ``--model.spec=resnet18``, ``babysit summary vgg16``.

Each entry writes a published network in the grammar (spec.py) for a given input: the depth C of the
input is the data's, and the last ``fc`` has one output per class. What the grammar leaves out:

- conv layers always have a bias (babysit's rule, also before a bn), so networks published without conv
  biases (ResNet) count exactly one extra number per conv filter here; the tests check that equation;
- local response normalisation (AlexNet, ZF Net, GoogLeNet) has no token; it has no parameters;
- GoogLeNet's two auxiliary classifiers are left out (they only help training);
- a size that is not whole is rounded down where torch rounds it down, written ``-floor``; the
  shortcut of a residual block that changes the volume is a 1x1 conv (+ bn) ("option B"), also in
  ``resnet20``, whose paper uses zero-padding shortcuts ("option A", no parameters).

``resnet20`` and ``vgg-small`` are the small-image variants: they fit 28x28 (MNIST) and 32x32 (CIFAR-10)
and anything down to digits' 8x8. The ImageNet networks want their published input (``ZooNet.input_shape``)
or one large enough; a size that does not fit is refused naming the input it was written for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from babysit.errors import BabysitError
from babysit.models.shapes import infer_shapes
from babysit.registry import Registry

Shape3 = tuple[int, int, int]


@dataclass(frozen=True)
class ZooNet:
    """One case study: its spec for an input shape, the input and class count it was published for."""

    make: Callable[[Shape3], str]  # input (C, H, W) -> spec text
    input_shape: Shape3  # the published input, the default of `babysit summary NAME`
    num_classes: int  # the published class count (1000 for ImageNet)
    paper: str  # who and where, for the README's table

    def spec(self, name: str, input_shape: Shape3) -> str:
        """The spec for ``input_shape``, refused in one sentence when the network does not fit it."""
        text = self.make(tuple(input_shape))  # type: ignore[arg-type]
        try:
            infer_shapes(text, tuple(input_shape), 10, require_scores=False)  # type: ignore[arg-type]
        except BabysitError as err:
            c, h, w = self.input_shape
            raise BabysitError(f"{name} does not fit {input_shape[1]}x{input_shape[2]} images ({err}); it is written "
                               f"for {c}x{h}x{w} (babysit summary {name} --input {c}x{h}x{w}), and resnet20 or "
                               f"vgg-small fit small images") from None
        return text


ZOO: Registry[ZooNet] = Registry("case study")


def _lenet5(shape: Shape3) -> str:
    # LeCun et al. 1998: 32x32 input; MNIST's 28x28 digits were padded by 2 to 32, which "same" padding does here
    first = "conv5-6-p0" if shape[1:] == (32, 32) else "conv5-6"
    return f"{first} tanh avgpool2 conv5-16-p0 tanh avgpool2 conv5-120-p0 tanh fc-84 tanh fc"


# Krizhevsky et al. 2012 as trained on two GPUs: conv2, conv4 and conv5 see only their own GPU's half of the
# depth (groups of 2; the notes: "AlexNet: 1 vs 2 parts"). 227x227: (227-11)/4+1 = 55 (the paper's 224 does not fit).
ALEXNET = ("conv11-96-s4-p0 relu pool3-s2 conv5-256-g2 relu pool3-s2 conv3-384 relu conv3-384-g2 relu conv3-256-g2 "
           "relu pool3-s2 fc-4096 relu dropout-0.5 fc-4096 relu dropout-0.5 fc")

# Zeiler & Fergus 2013, Fig. 3: 224 -> 110 -> 55 -> 26 -> 13 -> 6 (their sizes, with -floor where torch rounds)
ZFNET = ("conv7-96-s2-p1-floor relu pool3-s2-p1-floor conv5-256-s2-p0 relu pool3-s2-p1-floor conv3-384 relu "
         "conv3-384 relu conv3-256 relu pool3-s2 fc-4096 relu dropout-0.5 fc-4096 relu dropout-0.5 fc")


def _vgg(stages: tuple[int, ...]) -> str:
    """Simonyan & Zisserman 2014: stages of 3x3 convs (64, 128, 256, 512, 512 filters), a 2x2 pool after each."""
    widths = (64, 128, 256, 512, 512)
    body = " ".join(f"[conv3-{k} relu]*{n} pool2" for k, n in zip(widths, stages, strict=True))
    return f"{body} fc-4096 relu dropout-0.5 fc-4096 relu dropout-0.5 fc"


def _inception(c1: int, r3: int, c3: int, r5: int, c5: int, pool: int) -> str:
    """GoogLeNet's module: 1x1 | 1x1 reduce -> 3x3 | 1x1 reduce -> 5x5 | 3x3 max pool -> 1x1, depth-concatenated."""
    return (f"cat[conv1-{c1} relu | conv1-{r3} relu conv3-{c3} relu | conv1-{r5} relu conv5-{c5} relu | "
            f"pool3-s1-p1 conv1-{pool} relu]")


# Szegedy et al. 2014, Table 1 (no auxiliary classifiers, no LRN; global average pooling = their 7x7 average pool)
GOOGLENET_MODULES = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


def _googlenet(shape: Shape3) -> str:
    m = {name: _inception(*widths) for name, widths in GOOGLENET_MODULES.items()}
    pool = "pool3-s2-p1-floor"
    return (f"conv7-64-s2-floor relu {pool} conv1-64 relu conv3-192 relu {pool} {m['3a']} {m['3b']} {pool} "
            f"{m['4a']} {m['4b']} {m['4c']} {m['4d']} {m['4e']} {pool} {m['5a']} {m['5b']} gap dropout-0.4 fc")


def _basic_block(k: int, stride: int) -> str:
    """He et al. 2015's two-layer block: 3x3 conv, bn, relu, 3x3 conv, bn, added to the shortcut, relu."""
    first = f"conv3-{k}-s{stride}-floor" if stride > 1 else f"conv3-{k}"
    return f"res[{first} bn relu conv3-{k} bn] relu"


def _stage(k: int, blocks: int, stride: int) -> str:
    rest = f" [{_basic_block(k, 1)}]*{blocks - 1}" if blocks > 1 else ""
    return _basic_block(k, stride) + rest


def _resnet(blocks: tuple[int, ...]) -> Callable[[Shape3], str]:
    """ImageNet ResNet with basic blocks: 7x7/2 stem and 3x3/2 max pool, four stages of 64..512 filters."""
    def make(shape: Shape3) -> str:
        stages = " ".join(_stage(k, n, 1 if i == 0 else 2) for i, (k, n) in enumerate(zip((64, 128, 256, 512), blocks,
                                                                                          strict=True)))
        return f"conv7-64-s2-floor bn relu pool3-s2-p1-floor {stages} gap fc"
    return make


def _resnet20(shape: Shape3) -> str:
    """He et al. 2015 section 4.2 (CIFAR-10): 6n+2 layers with n = 3; 16, 32, 64 filters on 32, 16, 8 pixels."""
    return f"conv3-16 bn relu {_stage(16, 3, 1)} {_stage(32, 3, 2)} {_stage(64, 3, 2)} gap fc"


def _vgg_small(shape: Shape3) -> str:
    """VGG's pattern for small images: [[CONV-BN-RELU]*2 -> POOL]*3 with 64, 128, 256 filters, a 2x2 pool
    after a stage only while the size is even (28 -> 14 -> 7, 32 -> 16 -> 8 -> 4), then FC-256 and the scores."""
    size = min(shape[1:])
    stages = []
    for k in (64, 128, 256):
        pool = size % 2 == 0 and size >= 2
        stages.append(f"[conv3-{k} bn relu]*2" + (" pool2" if pool else ""))
        size //= 2 if pool else 1
    return " ".join(stages) + " fc-256 relu dropout-0.5 fc"


ZOO.add("lenet5", ZooNet(_lenet5, (1, 32, 32), 10, "LeCun et al. 1998"))
ZOO.add("alexnet", ZooNet(lambda shape: ALEXNET, (3, 227, 227), 1000, "Krizhevsky et al. 2012"))
ZOO.add("zfnet", ZooNet(lambda shape: ZFNET, (3, 224, 224), 1000, "Zeiler & Fergus 2013"))
ZOO.add("vgg11", ZooNet(lambda shape: _vgg((1, 1, 2, 2, 2)), (3, 224, 224), 1000, "Simonyan & Zisserman 2014 (A)"))
ZOO.add("vgg16", ZooNet(lambda shape: _vgg((2, 2, 3, 3, 3)), (3, 224, 224), 1000, "Simonyan & Zisserman 2014 (D)"))
ZOO.add("googlenet", ZooNet(_googlenet, (3, 224, 224), 1000, "Szegedy et al. 2014"))
ZOO.add("resnet18", ZooNet(_resnet((2, 2, 2, 2)), (3, 224, 224), 1000, "He et al. 2015"))
ZOO.add("resnet34", ZooNet(_resnet((3, 4, 6, 3)), (3, 224, 224), 1000, "He et al. 2015"))
ZOO.add("resnet20", ZooNet(_resnet20, (3, 32, 32), 10, "He et al. 2015, CIFAR-10"))
ZOO.add("vgg-small", ZooNet(_vgg_small, (3, 32, 32), 10, "VGG's pattern for 28x28 / 32x32"))
