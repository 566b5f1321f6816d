"""model.spec=auto: a BN net whose every size comes out whole (the notes' rule), for any input."""

from __future__ import annotations

import pytest

from babysit.errors import BabysitError
from babysit.models.auto import LECTURE, auto_spec, resolve_spec
from babysit.models.shapes import infer_shapes
from babysit.models.spec import Conv, Pool, parse


@pytest.mark.parametrize("shape, pools, first", [
    ((1, 28, 28), 3, "conv5-16-p0"),  # 28 -> 24 -> 12 -> 6 -> 3 (28 -> 14 -> 7 would stop at an odd 7)
    ((1, 8, 8), 1, "conv3-16"),  # digits: 8 -> 4, then a second block without a pool
    ((3, 32, 32), 3, "conv3-32"),  # CIFAR: 32 -> 16 -> 8 -> 4, colour starts at 32 filters
    ((3, 224, 224), 5, "conv3-32"),  # five halvings at most
    ((1, 100, 100), 5, "conv5-16-p0"),  # 96 -> 3
])
def test_auto_spec_halves_down_evenly(shape, pools, first):
    spec = parse(auto_spec(shape))
    layers = spec.layers()
    assert str(layers[0]) == first
    assert sum(isinstance(layer, Pool) for layer in layers) == pools
    convs = [layer for layer in layers if isinstance(layer, Conv)]
    assert len(convs) == max(pools, 2)
    assert [c.k for c in convs] == [convs[0].k * 2**i for i in range(len(convs))]  # depth doubles
    infer_shapes(spec, shape, 10)  # raises when a size is not whole


def test_a_vector_input_gets_the_two_layer_net():
    assert auto_spec((50, 1, 1)) == "fc-256 relu fc"


def test_names_resolve_and_specs_pass_through():
    assert resolve_spec("lecture", (1, 8, 8)) == LECTURE
    assert resolve_spec(" auto ", (1, 28, 28)) == auto_spec((1, 28, 28))
    assert resolve_spec("conv3-8 relu fc", (1, 8, 8)) == "conv3-8 relu fc"
    with pytest.raises(BabysitError, match="unknown token 'lenett'"):
        parse(resolve_spec("lenett", (1, 8, 8)))
