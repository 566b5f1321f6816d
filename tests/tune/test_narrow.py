"""Coarse to fine: each range narrowed around the top-k coarse trials, log ranges in log space."""

import math

import pytest

from babysit.tune.narrow import MIN_PAD, SPAN_PAD, narrow, narrow_param
from babysit.tune.space import Param, parse_space


def test_a_log_range_is_narrowed_in_log_space():
    """top-k lr = 1e-3, 3e-3, 1e-2 in loguniform(1e-4, 1): u = log10 spans [-3, -2], pad = max(0.25 * 1, 0.1 * 4)
    = 0.4, so the fine range is [10**-3.4, 10**-1.6]."""
    p = Param("optim.lr", "loguniform", 1e-4, 1.0)
    fine = narrow_param(p, [1e-2, 1e-3, 3e-3])
    assert SPAN_PAD == 0.25 and MIN_PAD == 0.1
    pad = max(SPAN_PAD * (-2 - -3), MIN_PAD * (0 - -4))
    assert fine.kind == "loguniform" and pad == 0.4
    assert math.isclose(fine.low, 10 ** (-3 - pad)) and math.isclose(fine.high, 10 ** (-2 + pad))
    # the middle of the fine range is the geometric (not arithmetic) middle of the top values
    assert math.isclose(math.sqrt(fine.low * fine.high), math.sqrt(1e-3 * 1e-2))


def test_a_linear_range_the_clip_to_the_coarse_range_and_one_trial():
    p = Param("optim.momentum", "uniform", 0.5, 0.99)
    fine = narrow_param(p, [0.9, 0.95])
    pad = max(0.25 * 0.05, 0.1 * 0.49)
    assert math.isclose(fine.low, 0.9 - pad) and fine.high == 0.99  # clipped: never outside the coarse range
    one = narrow_param(Param("optim.lr", "loguniform", 1e-4, 1.0), [1e-4])
    assert one.low == 1e-4 and math.isclose(one.high, 10 ** (-4 + 0.4))  # one value: 10 % of the range each side


def test_whole_numbers_round_outwards_and_lists_keep_the_values_used():
    fine = narrow_param(Param("train.batch_size", "int", 16, 256), [64, 100])
    pad = max(0.25 * 36, 0.1 * 240)  # 24
    assert (fine.low, fine.high) == (math.floor(64 - pad), math.ceil(100 + pad)) == (40, 124)
    spec = Param("model.spec", "choice", choices=("fc-10", "fc-32 relu fc", "fc-64 relu fc"))
    assert narrow_param(spec, ["fc-64 relu fc", "fc-10", "fc-64 relu fc"]).choices == ("fc-10", "fc-64 relu fc")


def test_narrow_a_whole_space_around_the_top_trials():
    space = parse_space(["optim.lr=loguniform(1e-4,1)", "optim.name=choice('sgd','adam','adamw')"])
    top = [{"optim.lr": 1e-2, "optim.name": "adam"}, {"optim.lr": 1e-3, "optim.name": "adam"}]
    lr, name = narrow(space, top)
    assert name.choices == ("adam",)
    assert lr.low == pytest.approx(10 ** -3.4) and lr.high == pytest.approx(10 ** -1.6)
    assert narrow(space, []) == space
