import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from babysit import config as C
from babysit.errors import BabysitError


def test_defaults_round_trip_through_toml(tmp_path):
    cfg = C.apply_overrides(C.RunConfig(), {"optim.lr": "0.2", "train.epochs": 3, "optim.nesterov": "true"})
    path = tmp_path / "c.toml"
    path.write_text(C.dumps_toml(cfg))
    back = C.load_toml(path)
    assert back == cfg
    assert back.optim.lr == 0.2 and back.train.epochs == 3 and back.optim.nesterov is True


def test_toml_file_sets_only_given_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[optim]\nlr = 0.01\n[train]\nbatch_size = 32\n")
    cfg = C.load_toml(path)
    assert cfg.optim.lr == 0.01 and cfg.train.batch_size == 32
    assert cfg.optim.momentum == C.OptimConfig().momentum


@pytest.mark.parametrize("key,value,phrase", [
    ("optim.lrr", "1", "unknown config key 'optim.lrr'"),
    ("optimizer.lr", "1", "unknown config section 'optimizer'"),
    ("optim.lr", "fast", "optim.lr must be a float"),
    ("optim.lr", "-1", "optim.lr must be a positive number"),
    ("train.batch_size", "-1", "train.batch_size must be at least 1 (or 0 for auto)"),
    ("train.epochs", "-1", "train.epochs must be at least 1 (or 0 for auto)"),
    ("train.epochs", "2.5", "train.epochs must be a int"),
    ("optim.nesterov", "maybe", "optim.nesterov must be a bool"),
    ("data.channels", "2", "data.channels must be 0"),
])
def test_bad_overrides_name_the_problem(key, value, phrase):
    with pytest.raises(BabysitError, match="^" + re.escape(phrase)):
        C.apply_overrides(C.RunConfig(), {key: value})


def test_bad_toml_files(tmp_path):
    with pytest.raises(BabysitError, match="does not exist"):
        C.load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\nlr=")
    with pytest.raises(BabysitError, match="not valid TOML"):
        C.load_toml(bad)
    flat = tmp_path / "flat.toml"
    flat.write_text("lr = 0.1\n")
    with pytest.raises(BabysitError, match="must be a \\[section\\] table"):
        C.load_toml(flat)
    wrong_type = tmp_path / "t.toml"
    wrong_type.write_text("[train]\nepochs = 'ten'\n")
    with pytest.raises(BabysitError, match="train.epochs must be a int"):
        C.load_toml(wrong_type)


def test_option_table_lists_every_field_with_its_default():
    table = {k: d for k, d, _ in C.option_table()}
    assert table["optim.lr"] == C.OptimConfig().lr
    assert table["model.spec"] == C.DEFAULT_SPEC
    assert len(table) == sum(len(C.dataclasses.fields(getattr(C.RunConfig(), s))) for s in C.SECTIONS)


@given(st.dictionaries(st.text(max_size=20), st.one_of(st.text(max_size=10), st.integers(), st.floats(),
                                                        st.booleans(), st.lists(st.integers(), max_size=2)),
                       max_size=4))
def test_fuzz_overrides_give_a_config_or_our_error(overrides):
    try:
        cfg = C.apply_overrides(C.RunConfig(), overrides)
    except BabysitError:
        return
    assert isinstance(cfg, C.RunConfig)


@given(st.text(max_size=200))
def test_fuzz_toml_text_gives_a_config_or_our_error(text):
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.toml"
        p.write_text(text)
        try:
            cfg = C.load_toml(p)
        except BabysitError:
            return
        assert isinstance(cfg, C.RunConfig)


@pytest.mark.parametrize("toml,message", [
    ("[optim]\nlrr = 0.1\n", "unknown config key 'optim.lrr'; keys in [optim] are: name, lr, momentum, nesterov, "
                             "betas, decay_rate, eps, weight_decay, decoupled, decay_bias, clip_norm, layer_decay; "
                             "did you mean optim.lr?"),
    ("[optm]\nlr = 0.1\n", "unknown config section 'optm' in 'optm.lr'; sections are: data, augment, model, optim, "
                           "schedule, train, checkpoint, loss, regularize, lr_find, monitor, distill, baseline, "
                           "search, recipe, transfer; "
                           "did you mean optim.lr?"),
    ("[optim]\nepochs = 3\n", "did you mean train.epochs?"),
    ("[train]\nbatch-size = 3\n", "did you mean train.batch_size?"),
    ("[optim]\nfrobnicate = 3\n", "keys in [optim] are: name, lr, momentum, nesterov, betas, decay_rate, eps, "
                                  "weight_decay, decoupled, decay_bias, clip_norm, layer_decay."),
])
def test_unknown_toml_keys_suggest_the_nearest(tmp_path, toml, message):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(BabysitError) as err:
        C.load_toml(path)
    assert str(err.value).endswith(message)


@pytest.mark.parametrize("typed,near", [
    ("epochs", "train.epochs"), ("optim.lrr", "optim.lr"), ("optm.lr", "optim.lr"), ("optimizer.lr", "optim.lr"),
    ("batch", "train.batch_size"), ("schedule.gama", "schedule.gamma"), ("lr", "optim.lr"),
    ("frobnicate", None), ("optim.zz", None), ("", None),
])
def test_nearest_key(typed, near):
    assert C.nearest(typed, [k for k, _, _ in C.option_table()]) == near
    assert C.unknown_key_error("optim.lr") is None


def test_weight_pairs_and_the_two_options_that_use_them():
    import math

    from babysit.config import weight_pairs
    from babysit.train.multitask import parse_task_weights
    from babysit.train.regularize import parse_layer_strengths

    assert weight_pairs(" a=0.5, b=0 ,") == [("a=0.5", "a", 0.5), ("b=0", "b", 0.0)]
    for bad in ("a", "=1", "a=x", "a=-1", "a=nan"):
        assert weight_pairs(bad)[0][2] is None
    assert weight_pairs("a=inf")[0][2] == math.inf
    heads = [("class", 10), ("group", 4)]
    assert parse_task_weights("group=0.5", heads) == [1.0, 0.5]
    with pytest.raises(BabysitError, match=r"loss.task_weights takes NAME=WEIGHT pairs .* got 'other=1'"):
        parse_task_weights("other=1", heads)
    assert parse_layer_strengths("0=1e-3, 9=0") == {"0": 1e-3, "9": 0.0}
    with pytest.raises(BabysitError, match=r"regularize.layer_weight_decay entry '9=-1' must look like LAYER=LAMBDA"):
        parse_layer_strengths("0=1, 9=-1")
