"""`babysit recipe` end to end on digits with a small budget: the plan, a kill -9 and the resume, the report, and the
rules that stop it (issue 17)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from babysit import config as C
from babysit.cli import main
from babysit.recipe import run as recipe_run
from babysit.recipe.budget import STEPS
from babysit.recipe.context import Ctx, StepResult
from babysit.rundir import RecipeDir, RunDir, SearchDir

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
BUDGET = 50  # seconds: every step runs, each small


def _state(folder: Path) -> dict:
    path = RecipeDir(folder).state
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:  # never: recipe.json is written atomically
        raise


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A recipe killed with SIGKILL while its fine search runs, then resumed to the end."""
    out = tmp_path_factory.mktemp("recipes")
    folder = out / "r"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "babysit", "recipe", f"--budget={BUDGET}s", "--out", str(out),
                             "--name", "r", "--train.threads=1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while "coarse" not in _state(folder).get("steps", {}) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    while not SearchDir(RecipeDir(folder).fine).trials.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)  # the fine search has finished a trial: kill it in flight
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _state(folder)
    result = recipe_run.recipe(resume=folder)
    return folder, before, result


def test_a_killed_recipe_resumes_at_the_step_in_flight(resumed):
    folder, before, result = resumed
    state = result.state
    assert set(before["steps"]) >= {"data", "checks", "lr", "coarse"} and "fine" not in before["steps"]
    for name in before["steps"]:  # finished steps are not run again
        assert state["steps"][name] == before["steps"][name]
    assert set(state["steps"]) == set(state["order"]) >= set(STEPS)
    fine = SearchDir(RecipeDir(folder).fine)
    assert fine.trials.is_file() and (fine.runs / "0000").is_dir()  # the fine search went on, its trial 0 kept
    assert result.test_acc > 0.9


def test_the_budget_holds_within_the_step_in_flight(resumed):
    _, _, result = resumed
    took = [s["seconds"] for s in result.state["steps"].values()]
    assert sum(took) <= BUDGET + max(took)  # (the killed step's own time could not be recorded)


def test_the_test_split_is_scored_once_at_the_end(resumed):
    folder, _, result = resumed
    rdir = RecipeDir(folder)
    for sdir in (SearchDir(rdir.coarse), SearchDir(rdir.fine)):
        results = list(sdir.runs.rglob("result.json"))  # trials/NNNN/fold-K/ when the search cross-validates
        assert results and all(json.loads(r.read_text())["test_acc"] is None for r in results)
    final = RunDir(rdir.final).read_json(RunDir(rdir.final).result)
    assert final["test_acc"] is None and final["best_val_acc"] > 0.9
    test = result.state["steps"]["test"]["outputs"]
    assert test["n_test"] == 359 and test["test_acc"] == result.test_acc


def test_every_step_says_what_it_saw_and_decided(resumed):
    _, _, result = resumed
    steps = result.state["steps"]
    for name, s in steps.items():
        assert s["evidence"] and s["decision"], name
    assert "flips change the class" in steps["data"]["decision"]  # digits: a mirrored 2 is no 2
    assert "search lr in [" in steps["lr"]["decision"]
    assert "5-fold cross-validation" in " ".join(steps["coarse"]["evidence"])  # digits: 179 val images
    assert steps["final"]["outputs"]["epochs"] >= steps["fine"]["outputs"]["epochs"]
    baselines = " ".join(steps["baselines"]["evidence"])  # run, or skipped when a loaded machine spent the time
    assert baselines.startswith("knn") and "linear" in baselines


def test_the_report_opens_in_headless_chromium(resumed, tmp_path):
    from babysit.review.htmlcheck import check_html, find_chromium

    folder, _, result = resumed
    text = result.report.read_text()
    for words in ("Timeline: plan against actual", "Decision:", "Baselines beside the final model",
                  "What to try next", "search report", "final run report"):
        assert words in text
    if find_chromium() is None:
        pytest.skip("chromium is not installed (make test installs it where apt-get can)")
    check = check_html(result.report, tmp_path / "shot.png")
    assert check.console == [], check.console
    assert check.distinct_colours > 20


def test_failed_sanity_checks_stop_the_recipe(tmp_path, capsys):
    code = main(["recipe", "--budget=1m", "--out", str(tmp_path), "--name", "bad", "--model.init=normal-1",
                 "--train.threads=1"])
    err = capsys.readouterr().err
    assert code == 1 and "sanity checks failed" in err and "initial loss" in err and "before any search" in err
    state = _state(tmp_path / "bad")
    assert list(state["steps"]) == ["data"]  # nothing after the checks ran


def test_a_best_value_on_the_border_inserts_one_widened_search(tmp_path, monkeypatch):
    rdir = RecipeDir(tmp_path / "w")
    state = {"budget_s": 100.0, "order": list(STEPS), "steps": {}, "plan": {}}
    border = {"optim.lr": [1e-3, 10.0]}
    monkeypatch.setitem(recipe_run.STEP_FUNCTIONS, "coarse",
                        lambda ctx, window: StepResult(["seen"], "widen", {"border": border}))
    rdir.path.mkdir()
    recipe_run._run_step(Ctx(rdir, C.RunConfig(), state), "coarse", 10.0)
    assert state["order"][state["order"].index("coarse") + 1] == "widen"
    assert json.loads(rdir.state.read_text())["order"] == state["order"]


def test_recipe_mistakes_are_one_sentence(tmp_path, capsys):
    assert main(["recipe", "--budget=ten minutes", "--out", str(tmp_path)]) == 2
    assert "recipe.budget must be a duration" in capsys.readouterr().err
    assert main(["recipe", "--resume", str(tmp_path / "nothing")]) == 2
    assert "is not a babysit recipe folder" in capsys.readouterr().err
    assert main(["recipe", "--resume", str(tmp_path), "--budget=3m"]) == 2
    assert "drop --config, --budget" in capsys.readouterr().err


def test_the_widened_search_runs_over_the_wider_range(tmp_path):
    from babysit.recipe.context import Window
    from babysit.recipe.searching import step_widen
    from babysit.tune.space import Param

    rdir = RecipeDir(tmp_path / "w")
    rdir.path.mkdir()
    lr = Param("optim.lr", "loguniform", 1e-4, 2e-4)  # far too low: the best lies on the upper border
    wd = Param("optim.weight_decay", "loguniform", 1e-5, 1e-2)
    state = {"steps": {"data": {"outputs": {"n_train": 1259, "batch_size": 32, "load_s": 0.5}},
                       "checks": {"outputs": {"start_s": 0.5}}, "lr": {"outputs": {"epoch_s": 0.3}},
                       "coarse": {"outputs": {"border": {"optim.lr": [1e-4, 2e-3]}, "space": [lr.to_json(),
                                              wd.to_json()], "epochs": 1, "share": 0.5}}}}
    cfg = C.apply_overrides(C.RunConfig(), {"train.threads": 1, "train.score_test": False})
    result = step_widen(Ctx(rdir, cfg, state), Window.starting_now(1.0))  # one trial at least
    space = {p["key"]: p for p in result.outputs["space"]}
    assert (space["optim.lr"]["low"], space["optim.lr"]["high"]) == (1e-4, 2e-3)
    searched = json.loads(SearchDir(rdir.widened).space.read_text())["stages"][0]["params"]
    assert {p["key"]: p["high"] for p in searched}["optim.lr"] == 2e-3
    assert "trials of 1 epoch(s)" in result.evidence[0] and "best of both coarse searches" in result.decision
