"""Specs by name: ``model.spec=auto`` (the default: a small BN net sized to the input), ``lecture``, and the
case studies of models/zoo.py (``lenet5``, ``alexnet``, ..., ``resnet18``, ``resnet20``, ``vgg-small``).

``auto`` follows the notes' pattern ``[CONV -> BN -> RELU -> POOL]*M -> FC`` with the widths doubling
(16, 32, 64, ... for grey images; 32, 64, 128, ... for colour) and one 2x2 max pool per block while the
volume is at least 6 pixels across, so each block halves the rows and columns and doubles the depth.
The notes ask every size to come out whole: when the input does not halve down evenly (28 -> 14 -> 7),
the first conv is made "valid" (no padding, 5x5 or 3x3) so that it does (28 -> 24 -> 12 -> 6 -> 3), the
LeNet-5 way. Fewer than two pools still give two conv blocks (digits' 8x8: one pool, 8 -> 4); a volume with
no rows and columns (a pca vector, shape (k, 1, 1)) gets the two-layer net ``fc-256 relu fc``.

Why this net: on MNIST with one-cycle (peak lr 0.2, momentum cycled 0.95 -> 0.85 -> 0.95) it ends at 99.2 % test
after 6 epochs of batch 512 (99.16-99.25 %, 5 seeds) or 2 of batch 128 (the defaults; README "Speed and hardware"),
each epoch faster on two CPU cores than the hand-written BN anchor's in bench/time_to_accuracy.py. BN lets the high
one-cycle learning rate work; the conv bias before a BN is redundant but kept, so ``auto`` prints as an ordinary
spec that any user can copy and edit.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from babysit.errors import BabysitError
from babysit.models.spec import Spec, parse
from babysit.models.zoo import ZOO
from babysit.registry import Registry

LECTURE = "[conv3-32 relu]*2 pool2 [conv3-64 relu]*2 pool2 fc-256 relu dropout-0.5 fc"
"""The notes' pattern INPUT -> [[CONV -> RELU]*2 -> POOL]*2 -> FC -> RELU -> FC (babysit's default before 0.2)."""

MIN_POOLED = 6  # pool while the volume is at least this many pixels across (6 -> 3 is the last)
MAX_BLOCKS = 5  # 224 -> 7 after five halvings; bigger inputs want a strided stem (see the zoo)

NAMED: Registry[Callable[[tuple[int, int, int]], str]] = Registry("model.spec name")
"""Spec names: ``fn(input_shape) -> spec text``."""


def _halvings(size: int) -> int:
    """How many exact 2x2 pools the size takes while it is at least MIN_POOLED pixels."""
    n = 0
    while size >= MIN_POOLED and size % 2 == 0 and n < MAX_BLOCKS:
        size //= 2
        n += 1
    return n


def auto_spec(input_shape: tuple[int, int, int]) -> str:
    """The default network for images of ``input_shape`` (C, H, W); see the module docstring."""
    c, h, w = input_shape
    size = min(h, w)
    if size < 3:  # no rows and columns to convolve: a pca vector or a tiny image
        return "fc-256 relu fc"
    # the first conv: "same" (shrinks by 0), or valid 3x3 / 5x5 (shrinks by 2 / 4), whichever leaves the
    # most exact halvings (ties go to "same": fewer pixels lost at the border)
    shrink = max((0, 2, 4), key=lambda d: (_halvings(size - d) if size - d >= 3 else -1, -d))
    pools = _halvings(size - shrink)
    width = 32 if c >= 3 else 16
    blocks = []
    for i in range(max(pools, 2)):
        conv = f"conv{shrink + 1}-{width}-p0" if i == 0 and shrink else f"conv3-{width}"
        blocks.append(f"{conv} bn relu" + (" pool2" if i < pools else ""))
        width *= 2
    return " ".join(blocks) + " fc"


NAMED.add("auto", auto_spec)
NAMED.add("lecture", lambda shape: LECTURE)
for _name, _net in ZOO.items():
    NAMED.add(_name, partial(_net.spec, _name))


def published_input(text: str) -> tuple[tuple[int, int, int], int] | None:
    """(input shape, class count) a case study was published for (``vgg16``: (3, 224, 224), 1000); else None."""
    name = text.strip()
    return (ZOO.get(name).input_shape, ZOO.get(name).num_classes) if name in ZOO else None


def parse_spec(text: str) -> Spec:
    """Parse a spec that is not a name; a single unknown word close to a name gets "did you mean"."""
    try:
        return parse(text)
    except BabysitError as err:
        word = text.strip()
        close = NAMED.closest(word) if word and " " not in word and "[" not in word else None
        if close is None:
            raise
        raise BabysitError(f"{err}; or did you mean the model name {close!r} (one of {', '.join(NAMED)})?") from None


def is_named(text: str) -> bool:
    """Whether ``text`` is a spec name (``auto``, ``lecture``) rather than a spec in the grammar."""
    return text.strip() in NAMED


def resolve_spec(text: str, input_shape: tuple[int, int, int]) -> str:
    """The spec ``text``'s name stands for on this input, or ``text`` itself when it is no name."""
    return NAMED.get(text.strip())(tuple(input_shape)) if is_named(text) else text
