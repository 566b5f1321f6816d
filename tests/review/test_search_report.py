"""search/NAME/report.html and its findings, from hand-made search folders (trials.csv + space.json)."""

import csv
import json
import re

import pytest

from babysit.review.htmlcheck import check_html, find_chromium
from babysit.review.searchreport import (
    EQUAL_TOL,
    KILLED_SHARE,
    render_search_report,
    search_findings,
    write_search_report,
)
from babysit.rundir import SearchDir

LR = {"key": "optim.lr", "kind": "loguniform", "low": 1e-4, "high": 1.0, "log": True, "choices": []}
MOM = {"key": "optim.momentum", "kind": "uniform", "low": 0.5, "high": 0.99, "log": False, "choices": []}
NAME = {"key": "optim.name", "kind": "choice", "low": None, "high": None, "log": False, "choices": ["sgd", "adam"]}


def make_search(folder, trials, params=(LR, MOM, NAME), fine=None):
    """A search folder as babysit search leaves it: space.json and trials.csv (rows: stage, state, val, values)."""
    sdir = SearchDir(folder)
    sdir.path.mkdir(parents=True, exist_ok=True)
    stages = [{"name": "coarse", "trials": len(trials), "epochs": 1, "data_share": 1.0, "limit": 0,
               "params": list(params)}]
    if fine is not None:
        stages.append({"name": "fine", "trials": 2, "epochs": 5, "data_share": 1.0, "limit": 0, "params": fine})
    sdir.space.write_text(json.dumps({"metric": "val_acc", "folds": 0, "sampler": "random", "pruner": "none",
                                      "top_k": 3, "stages": stages}))
    keys = [p["key"] for p in params]
    with open(sdir.trials, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "stage", "state", "val_acc", "val_acc_std", "test_acc", "epochs", "seconds", "run_dir",
                    "reason", *(f"params_{k}" for k in keys)])
        for i, (stage, state, val, *values) in enumerate(trials):
            w.writerow([i, stage, state, "" if val is None else val, "", "" if val is None else val - 0.01, 1, 0.5,
                        f"trials/{i:04d}", "the loss became nan at step 3 (lr 0.9)" if state == "KILLED" else "",
                        *values])
    return sdir


def rules(findings):
    return [f.rule for f in findings]


def test_best_value_in_the_outer_tenth_of_a_log_range_says_widen_it(tmp_path):
    """lr in [1e-4, 1]: log10 spans 4 decades, so the outer 10 % is below 10**-3.6 = 2.5e-4 or above 10**-0.4."""
    low = make_search(tmp_path / "low", [("coarse", "COMPLETE", 0.95, 2.0e-4, 0.9, "sgd"),
                                         ("coarse", "COMPLETE", 0.80, 1e-2, 0.7, "adam")])
    rows, info = _read(low)
    [f] = [f for f in search_findings(rows, info) if f.rule == "best_on_border"]
    assert "optim.lr" in f.title and "lower edge" in f.observation and "widen the range towards smaller values" in \
        f.action and "[1e-05, 1]" in f.action
    inside = make_search(tmp_path / "in", [("coarse", "COMPLETE", 0.95, 3.0e-4, 0.9, "sgd"),
                                           ("coarse", "COMPLETE", 0.80, 1e-2, 0.7, "adam")])
    assert "best_on_border" not in rules(search_findings(*_read(inside)))  # 3e-4 is 11.9 % of the way: inside
    high = make_search(tmp_path / "high", [("coarse", "COMPLETE", 0.95, 1e-2, 0.98, "sgd")])
    [f] = [f for f in search_findings(*_read(high)) if f.rule == "best_on_border"]
    assert f.numbers["name"] == "optim.momentum" and "towards larger values" in f.action  # linear: 0.98 is 98 %


def test_the_best_fine_trial_is_the_one_checked_against_the_coarse_range(tmp_path):
    sdir = make_search(tmp_path / "s", [("coarse", "COMPLETE", 0.99, 1.1e-4, 0.7, "sgd"),
                                        ("fine", "COMPLETE", 0.90, 1e-2, 0.7, "sgd")], fine=[LR, MOM, NAME])
    assert "best_on_border" not in rules(search_findings(*_read(sdir)))  # the fine trial (1e-2) is the best


def test_a_parameter_whose_trials_score_alike_does_not_matter(tmp_path):
    """Momentum spread over its range, val accuracy the same within 1 point in each third: no effect. The lr thirds
    differ by far more, so lr matters."""
    trials = [("coarse", "COMPLETE", acc, lr, mom, "sgd") for acc, lr, mom in
              [(0.50, 1e-4, 0.55), (0.60, 2e-4, 0.7), (0.70, 1e-3, 0.9), (0.80, 2e-3, 0.95),
               (0.90, 1e-2, 0.8), (0.99, 2e-2, 0.6)]]
    sdir = make_search(tmp_path / "s", trials)
    found = {f.numbers.get("key"): f for f in search_findings(*_read(sdir)) if f.rule == "search_no_effect"}
    assert set(found) == {"optim.momentum"}  # optim.name has one value (no groups to compare); lr matters
    f = found["optim.momentum"]
    # thirds by momentum: (0.55, 0.6) -> accs (0.50, 0.99), (0.7, 0.8) -> (0.60, 0.90), (0.9, 0.95) -> (0.70, 0.80)
    means = [(0.50 + 0.99) / 2, (0.60 + 0.90) / 2, (0.70 + 0.80) / 2]
    assert f.numbers["spread"] == pytest.approx(max(means) - min(means)) and f.numbers["spread"] < EQUAL_TOL
    lr_thirds = [(0.50 + 0.60) / 2, (0.70 + 0.80) / 2, (0.90 + 0.99) / 2]
    assert max(lr_thirds) - min(lr_thirds) > EQUAL_TOL
    assert "does not matter in this range" in f.title and "percentage points" in f.observation


def test_all_trials_equal_means_no_parameter_matters(tmp_path):
    trials = [("coarse", "COMPLETE", 0.7, lr, mom, name) for lr, mom, name in
              [(1e-4, 0.6, "sgd"), (1e-3, 0.9, "adam"), (1e-2, 0.7, "sgd"), (1e-1, 0.55, "adam")]]
    sdir = make_search(tmp_path / "s", trials)
    no = [f.numbers["key"] for f in search_findings(*_read(sdir)) if f.rule == "search_no_effect"]
    assert no == ["optim.lr", "optim.momentum", "optim.name"]
    assert "search_no_effect" not in rules(search_findings(*_read(make_search(tmp_path / "few", trials[:3]))))


def test_many_killed_trials_say_the_ranges_are_too_aggressive_and_name_the_culprit(tmp_path):
    trials = [("coarse", "KILLED", None, 0.5, 0.7, "sgd"), ("coarse", "KILLED", None, 0.2, 0.9, "sgd"),
              ("coarse", "COMPLETE", 0.9, 1e-3, 0.8, "sgd"), ("coarse", "COMPLETE", 0.8, 1e-4 * 3, 0.6, "sgd"),
              ("coarse", "COMPLETE", 0.85, 2e-3, 0.75, "sgd")]
    sdir = make_search(tmp_path / "s", trials)
    [f] = [f for f in search_findings(*_read(sdir)) if f.rule == "search_too_aggressive"]
    assert KILLED_SHARE == 0.3 and f.numbers == {"killed": 2, "trials": 5}
    assert "ranges are too aggressive" in f.title and "lower its upper bound to about 0.2" in f.action
    assert "optim.lr" in f.action
    one = make_search(tmp_path / "one", trials[1:])  # 1 of 4 killed: not many
    assert "search_too_aggressive" not in rules(search_findings(*_read(one)))


def _read(sdir):
    from babysit.review.searchreport import read_search

    return read_search(sdir)


def _report_of(tmp_path):
    trials = [("coarse", "COMPLETE", 0.6 + 0.05 * i, 10 ** (-4 + i / 2), 0.5 + 0.05 * i, ["sgd", "adam"][i % 2])
              for i in range(8)] + [("coarse", "KILLED", None, 0.9, 0.6, "sgd"), ("coarse", "FAIL", None, 0.5, 0.6,
                                                                                   "adam"),
                                    ("coarse", "PRUNED", 0.55, 1e-3, 0.6, "sgd"),
                                    ("fine", "COMPLETE", 0.97, 0.05, 0.9, "adam")]
    sdir = make_search(tmp_path / "s", trials, fine=[{**LR, "low": 0.01, "high": 0.5}, MOM, NAME])
    return write_search_report(sdir)


def test_the_report_is_self_contained_with_a_figure_per_parameter(tmp_path):
    page = _report_of(tmp_path).read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,', page)
    assert images == ["val accuracy vs optim.lr", "val accuracy vs optim.momentum", "val accuracy vs optim.name"]
    assert page.index("<h2>Findings</h2>") < page.index("<h2>Search</h2>") < page.index("<h2>Trials</h2>")
    assert "trial 11 (fine): val 0.9700" in page and "1 killed" in page and "1 pruned" in page
    assert page.count("<tr") == 1 + 12 + 4  # header + every trial, and the summary's rows
    assert "optim.lr=loguniform(0.01, 0.5)" in page  # the fine stage's narrowed range


def test_the_report_of_a_search_without_trials_says_so(tmp_path):
    page = render_search_report(make_search(tmp_path / "s", []))
    assert page.count("No finished trials yet.") == 2


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed and `apt-get install -y chromium` "
                    "(what `make test` runs) was not possible here")
def test_the_search_report_loads_in_headless_chromium_without_console_errors(tmp_path):
    result = check_html(_report_of(tmp_path), tmp_path / "shot.png")
    assert result.console == [] and result.distinct_colours > 50
