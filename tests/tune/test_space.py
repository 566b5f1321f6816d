"""The search space: the KEY=DIST grammar, its mistakes (one sentence each), and sampling on a log scale."""

import math
import re

import numpy as np
import optuna
import pytest
from scipy import stats

from babysit import config as C
from babysit.errors import BabysitError
from babysit.tune.space import Param, check_sampler, grid_size, parse_param, parse_space
from tests.monitor.conftest import run_main


def test_each_distribution_becomes_its_optuna_distribution():
    space = parse_space(["optim.lr=loguniform(1e-4,1)", "optim.momentum=uniform(0.5,0.99)",
                         "train.batch_size=int(16,128)", "optim.name=choice('sgd','adam')",
                         "model.spec=grid('fc-10','fc-32 relu fc')"])
    lr, mom, bs, name, spec = space
    assert lr == Param("optim.lr", "loguniform", 1e-4, 1.0) and lr.log and lr.numeric
    assert lr.distribution() == optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)
    assert mom.distribution() == optuna.distributions.FloatDistribution(0.5, 0.99) and not mom.log
    assert bs.distribution() == optuna.distributions.IntDistribution(16, 128)
    assert name.distribution() == optuna.distributions.CategoricalDistribution(["sgd", "adam"])
    assert spec.kind == "grid" and spec.choices == ("fc-10", "fc-32 relu fc") and grid_size([name, spec]) == 4
    assert lr.text() == "optim.lr=loguniform(0.0001,1)" and name.text() == "optim.name=choice('sgd','adam')"
    assert [Param.from_json(p.to_json()) for p in space] == list(space)


def test_a_float_range_on_an_int_key_and_other_type_mistakes():
    assert parse_param("train.batch_size=grid(32,64)").choices == (32, 64)
    assert parse_param("optim.nesterov=choice(True,False)").choices == (True, False)
    for entry, words in [
        ("train.batch_size=uniform(16,128)", "train.batch_size is a whole number: search it with int(16,128)"),
        ("optim.name=uniform(0,1)", "optim.name is a str, not a number: search it with choice(...)"),
        ("train.batch_size=int(1.5,4)", "int(low,high) needs whole numbers"),
    ]:
        with pytest.raises(BabysitError, match=re.escape(words)):
            parse_param(entry)


@pytest.mark.parametrize("entry,message", [
    ("optim.lrr=loguniform(1e-4,1)", "search.space entry 'optim.lrr=loguniform(1e-4,1)': unknown config key "
                                     "'optim.lrr'; keys in [optim] are: name, lr, momentum, nesterov, betas, "
                                     "decay_rate, eps, weight_decay, decoupled, decay_bias, clip_norm, layer_decay; "
                                     "did you mean optim.lr?"),
    ("optim.lr=logunifrom(1e-4,1)", "unknown distribution 'logunifrom' (known: loguniform, uniform, int, choice, "
                                    "grid); did you mean loguniform?"),
    ("optim.lr=loguniform(0,1)", "a log scale needs low > 0, got 0"),
    ("optim.lr=loguniform(1,1e-4)", "the range needs low < high, got 1 and 0.0001"),
    ("optim.lr=uniform(1e-4)", "uniform(low,high) needs two numbers"),
    ("optim.lr", "there is no KEY=DIST"),
    ("optim.lr=10**uniform(-4,0)", "is not a distribution call such as loguniform(1e-4,1)"),
    ("optim.lr=loguniform(a,1)", "a is not a number or a quoted string"),
    ("optim.momentum=uniform(-1,0.9)", "the bound -1 is refused: optim.momentum must be >= 0, got -1.0."),
    ("search.trials=int(1,5)", "a search cannot search its own [search] settings"),
    ("optim.name=choice('sgd','sgd')", "choice(...) needs one or more different values"),
])
def test_mistakes_in_the_space_are_one_sentence(entry, message):
    with pytest.raises(BabysitError) as e:
        parse_space([entry])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_every_listed_value_is_checked_against_the_data_before_the_first_trial():
    """An unknown optimiser, or a spec whose layers do not fit 8x8 digits: refused by check_search, not in trial 7."""
    from babysit.tune.search import check_search

    base = {"data.limit": 100, "search.stages": "fine", "monitor.checks": False}
    with pytest.raises(BabysitError, match=r"search.space: optim.name='adamm' cannot be trained: unknown optim.name "
                                           r"'adamm'.*did you mean 'adam'"):
        check_search(C.apply_overrides(C.RunConfig(), {**base, "search.space": "optim.name=choice('sgd','adamm')"}))
    with pytest.raises(BabysitError, match=r"search.space: model.spec='\[conv3-8 pool2\]\*4 fc' cannot be trained: "
                                           r"layer 7 'pool2'"):
        check_search(C.apply_overrides(C.RunConfig(), {**base, "search.space":
                                                       "model.spec=choice('fc-10','[conv3-8 pool2]*4 fc')"}))
    space, n_train, classes = check_search(C.apply_overrides(C.RunConfig(), {**base, "search.space":
                                                                             "optim.lr=loguniform(1e-3,1)"}))
    assert [p.key for p in space] == ["optim.lr"] and n_train == 100 and classes == 10


def test_a_key_twice_an_empty_space_and_grid_needs_lists():
    with pytest.raises(BabysitError, match="names optim.lr more than once"):
        parse_space(["optim.lr=loguniform(1e-4,1)", "optim.lr=uniform(0.1,1)"])
    with pytest.raises(BabysitError, match="search.space is empty"):
        parse_space([])
    with pytest.raises(BabysitError, match="search.sampler=grid walks lists of values, but optim.lr is loguniform"):
        check_sampler(parse_space(["optim.lr=loguniform(1e-4,1)"]), "grid")
    check_sampler(parse_space(["optim.lr=grid(0.1,0.01)"]), "grid")


def test_the_command_line_takes_repeated_space_options_and_refuses_mistakes_before_training(tmp_path):
    cfg = C.apply_overrides(C.RunConfig(), {"search.space": "optim.lr=loguniform(1e-4,1),model.spec=choice('fc-10',"
                                                            "'[conv3-8 relu]*2 pool2 fc')"})
    assert cfg.search.space == ("optim.lr=loguniform(1e-4,1)", "model.spec=choice('fc-10','[conv3-8 relu]*2 pool2 fc')")
    code, _, err = run_main(["search", "--out", str(tmp_path), "--search.space=optim.lr=loguniform(1e-4,1)",
                             "--search.space=optim.weight_decy=loguniform(1e-6,1e-2)"])
    assert code == 2 and "unknown config key 'optim.weight_decy'" in err and "did you mean optim.weight_decay?" in err
    code, _, err = run_main(["search", "--out", str(tmp_path), "--search.sampler=grid",
                             "--search.space=optim.lr=loguniform(1e-4,1)"])
    assert code == 2 and "search.sampler=grid walks lists of values" in err
    code, _, err = run_main(["search", "--resume", str(tmp_path / "nowhere")])
    assert code == 2 and "is not a babysit search folder (no search.toml)" in err
    assert not any(tmp_path.iterdir())  # nothing written for a mistake


def test_loguniform_samples_are_uniform_in_log_space():
    """Optuna's random sampler on loguniform(1e-4, 1): log10(lr) ~ U(-4, 0), so each decade gets a quarter of the
    draws (the notes: lr = 10 ** uniform(-4, 0)); a linear uniform would put 90 % in the top decade."""
    lr = parse_param("optim.lr=loguniform(1e-4,1)").distribution()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    draws = np.array([study.ask({"lr": lr}).params["lr"] for _ in range(2000)])
    assert draws.min() >= 1e-4 and draws.max() <= 1.0
    logs = np.log10(draws)
    assert stats.kstest(logs, stats.uniform(loc=-4, scale=4).cdf).pvalue > 0.01
    assert stats.kstest(draws, stats.uniform(loc=1e-4, scale=1 - 1e-4).cdf).pvalue < 1e-6  # the test can fail
    per_decade = np.histogram(logs, bins=[-4, -3, -2, -1, 0])[0] / len(draws)
    assert np.allclose(per_decade, 0.25, atol=0.04), per_decade
    assert math.isclose(np.median(draws), 10**-2, rel_tol=0.25)  # the median of 10**U(-4,0) is 10**-2
