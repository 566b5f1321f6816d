"""babysit search end to end on the bundled digits with tiny budgets: coarse to fine, the table and best.toml,
a crashing trial, a killed one, pruning, K-fold, and resuming a search whose process died."""

import csv
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from babysit import config as C
from babysit.errors import BabysitError
from babysit.rundir import RunDir, SearchDir
from babysit.tune import trial as T
from babysit.tune.narrow import narrow
from babysit.tune.search import search
from babysit.tune.space import Param
from babysit.tune.table import COLUMNS
from tests.monitor.conftest import run_main

ROOT = Path(__file__).resolve().parents[2]
TINY = {"data.limit": 200, "model.spec": "fc-10", "train.epochs": 2, "train.batch_size": 32, "train.threads": 1}
SPACE = ["optim.lr=loguniform(1e-2,1)", "optim.weight_decay=loguniform(1e-6,1e-2)"]


def tiny(**over) -> C.RunConfig:
    return C.apply_overrides(C.RunConfig(), {**TINY, **over})


def rows_of(sdir: SearchDir) -> list[dict[str, str]]:
    with open(sdir.trials, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Coarse (5 trials, 1 epoch) then fine (2 trials, 2 epochs) on 200 digits; the third trial crashes."""
    out = tmp_path_factory.mktemp("search")
    calls = []
    real = T.train_one

    def crashing(cfg, path, callbacks):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real(cfg, path, callbacks)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T, "train_one", crashing)
        result = search(tiny(**{"search.trials": 5, "search.fine_trials": 2, "search.top_k": 2,
                                "search.coarse_epochs": 0.5, "search.name": "s"}), SPACE, out=out)
    return result, SearchDir(out / "s")


def test_the_table_has_the_columns_other_commands_read(searched):
    result, sdir = searched
    with open(sdir.trials, newline="") as f:
        header = next(csv.reader(f))
    assert header == [*COLUMNS, "params_optim.lr", "params_optim.weight_decay"]
    rows = rows_of(sdir)
    assert [int(r["number"]) for r in rows] == list(range(7))
    assert [r["stage"] for r in rows] == ["coarse"] * 5 + ["fine"] * 2
    assert {r["state"] for r in rows} <= {"COMPLETE", "PRUNED", "FAIL", "KILLED"}
    assert [r["epochs"] for r in rows if r["state"] == "COMPLETE"] == ["1"] * 4 + ["2"] * 2  # coarse: half of 2
    for r in rows:
        assert r["run_dir"] == f"trials/{int(r['number']):04d}"
        if r["state"] == "COMPLETE":
            run = RunDir.open(sdir.path / r["run_dir"])  # relative to the search folder, a normal run directory
            res = run.read_json(run.result)
            assert float(r["val_acc"]) == res["best_val_acc"] and float(r["test_acc"]) == res["test_acc"]
            cfg = C.load_toml(run.config)
            assert math.isclose(cfg.optim.lr, float(r["params_optim.lr"]))
            assert not cfg.monitor.checks and cfg.monitor.stats_every == 0 and not cfg.monitor.report
            assert "Finished epoch" in run.log.read_text()  # the trial's output went to its log, not the terminal
            assert not run.checks.exists()
    assert RunDir(sdir.checks).checks.is_file()  # the sanity checks ran once, for the whole search
    assert result.trials[0].number == 0 and len(result.trials) == 7


def test_a_crashing_trial_is_recorded_and_the_search_goes_on(searched):
    _, sdir = searched
    rows = rows_of(sdir)
    assert rows[2]["state"] == "FAIL" and rows[2]["reason"].startswith("RuntimeError: boom (traceback in ")
    assert "RuntimeError: boom" in RunDir(sdir.path / rows[2]["run_dir"]).log.read_text()
    assert sum(r["state"] == "COMPLETE" for r in rows) == 6


def test_the_fine_stage_searches_the_ranges_narrowed_around_the_top_coarse_trials(searched):
    result, sdir = searched
    rows = rows_of(sdir)
    coarse = sorted((r for r in rows if r["stage"] == "coarse" and r["state"] == "COMPLETE"),
                    key=lambda r: (-float(r["val_acc"]), int(r["number"])))
    top = [{"optim.lr": float(r["params_optim.lr"]), "optim.weight_decay": float(r["params_optim.weight_decay"])}
           for r in coarse[:2]]
    wide = (Param("optim.lr", "loguniform", 1e-2, 1.0), Param("optim.weight_decay", "loguniform", 1e-6, 1e-2))
    expected = narrow(wide, top)
    stages = {s["name"]: s for s in __import__("json").loads(sdir.space.read_text())["stages"]}
    fine = [Param.from_json(p) for p in stages["fine"]["params"]]
    for got, want in zip(fine, expected):
        assert math.isclose(got.low, want.low) and math.isclose(got.high, want.high)
    for r in rows:
        if r["stage"] == "fine":
            for p in fine:
                assert p.low <= float(r[f"params_{p.key}"]) <= p.high
    assert stages["coarse"]["epochs"] == 1 and stages["fine"]["epochs"] == 2
    assert isinstance(result.study, optuna.Study) and result.study.study_name == "s/fine"
    assert len(result.study.trials) == 2 and set(result.studies) == {"coarse", "fine"}


def test_best_toml_is_the_best_fine_trial_ready_for_babysit_train(searched, tmp_path):
    result, sdir = searched
    rows = [r for r in rows_of(sdir) if r["stage"] == "fine"]
    best = max(rows, key=lambda r: float(r["val_acc"]))
    text = sdir.best.read_text()
    assert text.startswith(f"# the best trial of search s: trial {best['number']} (fine stage, {best['run_dir']})")
    cfg = C.load_toml(sdir.best)
    assert math.isclose(cfg.optim.lr, float(best["params_optim.lr"]))
    assert cfg.train.epochs == 2 and cfg.data.limit == 200 and cfg.monitor.checks  # the full budget, base monitoring
    assert result.best.number == int(best["number"]) and result.best_config == cfg
    code, out, err = run_main(["train", "--config", str(sdir.best), "--out", str(tmp_path), "--name", "again",
                               "--monitor.checks=false", "--monitor.report=false", "--monitor.stats_every=0"])
    assert code == 0, err
    again = RunDir(tmp_path / "again")
    assert math.isclose(again.read_json(again.result)["best_val_acc"], float(best["val_acc"]))  # same run, same score
    assert "val accuracy vs optim.lr" in sdir.report.read_text()


def test_babysit_ensemble_takes_the_top_trials_of_a_real_search(searched, tmp_path):
    """The table's contract with `babysit ensemble --search`: the best COMPLETE trials by val accuracy."""
    from babysit.ensemble.make import ensemble

    _, sdir = searched
    rows = sorted((r for r in rows_of(sdir) if r["state"] == "COMPLETE"), key=lambda r: -float(r["val_acc"]))
    ens = ensemble(search=sdir.path, top=2, out=tmp_path, name="top2")
    assert [Path(m.run).name for m in ens.members] == [Path(r["run_dir"]).name for r in rows[:2]]
    assert all(Path(m.run).parent.name == "trials" for m in ens.members)


def test_a_trial_whose_loss_explodes_is_killed_with_the_reason(tmp_path):
    result = search(tiny(**{"search.stages": "fine", "search.sampler": "grid", "search.trials": 5,
                            "monitor.checks": False, "search.name": "k"}), ["optim.lr=grid(0.05,10000.0)"],
                    out=tmp_path)
    rows = {float(r["params_optim.lr"]): r for r in rows_of(SearchDir(tmp_path / "k"))}
    assert len(rows) == 2  # a grid of two values: two trials, however many were asked for
    killed, good = rows[1e4], rows[0.05]
    assert killed["state"] == "KILLED" and good["state"] == "COMPLETE"
    assert "at step" in killed["reason"] and ("became nan" in killed["reason"] or "initial" in killed["reason"])
    history = RunDir(tmp_path / "k" / killed["run_dir"]).read_history()
    assert history[-1]["kind"] == "diverged"
    assert result.best.params == {"optim.lr": 0.05}


def test_the_median_pruner_stops_trials_behind_the_median(tmp_path):
    result = search(tiny(**{"search.stages": "fine", "search.sampler": "grid", "search.trials": 6,
                            "search.pruner": "median", "train.epochs": 3, "monitor.checks": False,
                            "search.name": "p"}), ["optim.lr=grid(0.5,0.2,0.1,0.0001,0.00003,0.00001)"], out=tmp_path)
    rows = rows_of(SearchDir(tmp_path / "p"))
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned and all(int(r["epochs"]) < 3 for r in pruned)
    study = result.study
    for r in pruned:  # below the median of the earlier trials' val accuracy at the epoch it stopped
        t = next(t for t in study.trials if t.number == int(r["number"]))
        step = max(t.intermediate_values)
        earlier = [o.intermediate_values[step] for o in study.trials if o.number < t.number and step in
                   o.intermediate_values and o.state == optuna.trial.TrialState.COMPLETE]
        assert t.intermediate_values[step] < statistics.median(earlier)
    # after the pruner's 3 start-up trials, every tiny learning rate (val ~ chance after an epoch) is stopped
    assert all(r["state"] == "PRUNED" for r in rows if int(r["number"]) >= 3 and float(r["params_optim.lr"]) <= 1e-4)
    best = max(rows, key=lambda r: float(r["val_acc"]))
    assert best["state"] == "COMPLETE" and result.best.number == int(best["number"])


def test_k_fold_cross_validation_reports_mean_and_std(tmp_path):
    search(tiny(**{"data.limit": 0, "train.epochs": 1, "search.stages": "fine", "search.trials": 2,
                   "search.folds": 3, "monitor.checks": False, "search.name": "f"}), ["optim.lr=loguniform(0.05,0.5)"],
           out=tmp_path)
    sdir = SearchDir(tmp_path / "f")
    for r in rows_of(sdir):
        n = int(r["number"])
        assert r["run_dir"] == f"trials/{n:04d}/fold-0"
        runs = [RunDir(sdir.trial(n, k)) for k in range(3)]
        vals = [run.read_json(run.result)["best_val_acc"] for run in runs]
        assert math.isclose(float(r["val_acc"]), statistics.fmean(vals))
        assert math.isclose(float(r["val_acc_std"]), statistics.stdev(vals))
        cfgs = [C.load_toml(run.config) for run in runs]
        assert [(c.data.folds, c.data.fold) for c in cfgs] == [(3, 0), (3, 1), (3, 2)]
        sizes = [run.read_json(run.meta)["split_sizes"] for run in runs]
        assert all(s[0] + s[1] == 1438 and s[2] == 359 for s in sizes)  # each fold: the same test, 1/3 as val
        assert sum(s[1] for s in sizes) == 1438  # the val folds partition the non-test images
    assert "&plusmn;" in sdir.report.read_text()


def test_ctrl_c_stops_the_search_and_resume_reruns_the_interrupted_trial(tmp_path, monkeypatch):
    real, calls = T.train_one, []

    def interrupted_once(cfg, path, callbacks):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, path, callbacks)

    monkeypatch.setattr(T, "train_one", interrupted_once)
    cfg = tiny(**{"search.stages": "fine", "search.trials": 2, "monitor.checks": False, "search.name": "c",
                  "search.storage": "", "train.epochs": 1})
    with pytest.raises(BabysitError, match="search interrupted; .* continue with `babysit search --resume ") as e:
        search(cfg, SPACE, out=tmp_path)
    assert e.value.exit_code == 130
    sdir = SearchDir(tmp_path / "c")
    assert [r["state"] for r in rows_of(sdir)] == ["COMPLETE", "FAIL"]
    assert rows_of(sdir)[1]["reason"].startswith("interrupted (Ctrl-C or SIGTERM)")
    search(resume=sdir.path)
    rows = rows_of(sdir)
    assert [r["state"] for r in rows] == ["COMPLETE", "FAIL", "COMPLETE"] and len(calls) == 3
    assert rows[2]["params_optim.lr"] == rows[1]["params_optim.lr"]


def test_the_plan_hides_a_storage_password():
    from babysit.tune.search import _shown

    assert _shown("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert _shown("sqlite:///a/b.db") == "sqlite:///a/b.db"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


class _Died(BaseException):
    """Stands for the process dying mid-trial (no except clause of babysit catches it)."""


def test_a_trial_left_running_by_a_dead_worker_is_rerun_on_resume_and_finished_ones_are_not(tmp_path, monkeypatch):
    from babysit.tune import worker as W

    dead = f"{socket.gethostname()}:{_dead_pid()}"
    monkeypatch.setattr(W, "worker_id", lambda: dead)  # as if the worker that ran the trials were gone
    real, calls = T.train_one, []

    def dies_on_the_third(cfg, path, callbacks):
        calls.append(path)
        if len(calls) == 3:
            raise _Died
        return real(cfg, path, callbacks)

    monkeypatch.setattr(T, "train_one", dies_on_the_third)
    cfg = tiny(**{"search.stages": "coarse", "search.trials": 4, "monitor.checks": False, "search.name": "r"})
    with pytest.raises(_Died):
        search(cfg, SPACE, out=tmp_path)
    sdir = SearchDir(tmp_path / "r")
    finished = {n: RunDir(sdir.trial(n)).result.stat().st_mtime_ns for n in (0, 1)}
    with pytest.raises(BabysitError, match="already holds a search; continue it with `babysit search --resume"):
        search(cfg, SPACE, out=tmp_path)
    result = search(resume=sdir.path)
    rows = {int(r["number"]): r for r in rows_of(sdir)}
    assert sorted(rows) == [0, 1, 2, 3, 4]
    assert rows[2]["state"] == "FAIL" and "was killed mid-trial; the same parameters were queued again" in rows[2][
        "reason"]
    assert rows[3]["params_optim.lr"] == rows[2]["params_optim.lr"]  # the abandoned point is tried again first
    assert [rows[n]["state"] for n in (0, 1, 3, 4)] == ["COMPLETE"] * 4
    assert {n: RunDir(sdir.trial(n)).result.stat().st_mtime_ns for n in (0, 1)} == finished  # not rerun
    assert len(calls) == 3 + 2 and sum(r.state == "COMPLETE" for r in result.trials) == 4


@pytest.mark.slow
def test_kill_9_then_resume_from_the_command_line(tmp_path):
    """The real thing: `babysit search` killed with SIGKILL mid-search, then `--resume`; no finished trial reruns."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "babysit", "search", "--out", str(tmp_path), "--search.name=k9",
            "--search.stages=coarse", "--search.trials=6", "--monitor.checks=false", "--data.limit=600",
            "--train.epochs=3", "--model.spec=conv3-8 relu pool2 fc", "--train.threads=1",
            *[f"--search.space={s}" for s in SPACE]]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sdir = SearchDir(tmp_path / "k9")
    deadline = time.time() + 240
    while not RunDir(sdir.trial(1)).result.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.parent.name: p.stat().st_mtime_ns for p in sdir.runs.glob("*/result.json")}
    assert len(done) >= 2
    code, out, err = run_main(["search", "--resume", str(sdir.path)])
    assert code == 0, err
    rows = rows_of(sdir)
    assert sum(r["state"] == "COMPLETE" for r in rows) == 6
    assert {p.parent.name: p.stat().st_mtime_ns for p in sdir.runs.glob("*/result.json") if p.parent.name in done} == \
        done
    abandoned = [r for r in rows if r["state"] == "FAIL"]
    assert len(abandoned) <= 1 and all("killed mid-trial" in r["reason"] for r in abandoned)


@pytest.mark.slow
def test_two_local_workers_share_one_sqlite_study_and_no_trial_runs_twice(tmp_path):
    result = search(tiny(**{"search.stages": "coarse", "search.trials": 6, "monitor.checks": False,
                            "search.workers": 2, "search.name": "w"}), SPACE, out=tmp_path)
    check_shared(SearchDir(tmp_path / "w"), result, 6)


def check_shared(sdir: SearchDir, result, n: int) -> None:
    """n trials, each run once, by both workers, with distinct parameters."""
    rows = rows_of(sdir)
    assert sorted(int(r["number"]) for r in rows) == list(range(n))
    assert all(r["state"] == "COMPLETE" for r in rows)
    assert len({r["params_optim.lr"] for r in rows}) == n
    assert sorted(p.name for p in sdir.runs.iterdir()) == [f"{i:04d}" for i in range(n)]
    workers = {sdir.worker_log(i).read_text().count(" trial ") for i in (0, 1)}
    assert sum(sdir.worker_log(i).read_text().count(" trial ") for i in (0, 1)) == n and min(workers) >= 1
    assert len({t.user_attrs["worker"] for t in result.study.trials if "worker" in t.user_attrs}) == 2


def test_failed_sanity_checks_stop_the_search_with_exit_1_unless_forced(tmp_path, capsys):
    """As `babysit train`: a base config that fails the checks (normal-1 init: the initial loss is far from
    ln 10) stops before any trial, exit 1; --monitor.force=true searches anyway."""
    from babysit.errors import ChecksFailed
    from babysit.rundir import SearchDir
    from babysit.tune.search import _sanity_checks

    bad = C.apply_overrides(C.RunConfig(), {"data.limit": 300, "model.spec": "conv3-8 relu pool2 fc",
                                            "model.init": "normal-1"})
    with pytest.raises(ChecksFailed, match="--monitor.force=true") as e:
        _sanity_checks(bad, SearchDir(tmp_path / "s"), threads=1)
    assert e.value.exit_code == 1 and "initial loss" in str(e.value)
    _sanity_checks(C.apply_overrides(bad, {"monitor.force": True}), SearchDir(tmp_path / "f"), threads=1)
    assert "searching anyway (--monitor.force=true)" in capsys.readouterr().out
