"""Ensembles of tiny digits runs: the average of the members' probabilities, every source of members,
distillation end to end, and the command's mistakes (exit 2, one sentence)."""

import csv
import json
import os

import pytest
import torch

from babysit import config as C
from babysit.ckptfile import load_checkpoint
from babysit.data.split import prepare_data
from babysit.ensemble import ensemble, evaluate_ensemble, load_ensemble
from babysit.ensemble.predict import probabilities
from babysit.rundir import EnsembleDir, RunDir
from babysit.start import load_run
from tests.monitor.conftest import run_main

TINY = {"data.limit": 300, "model.spec": "conv3-8 relu pool2 fc", "train.epochs": 2, "train.batch_size": 32,
        "train.threads": 1, "train.progress": False, "monitor.checks": False, "monitor.report": False,
        "monitor.stats_every": 0}
TINY_ARGS = [f"--{k}={v}" for k, v in TINY.items()]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """`babysit ensemble --seeds=2` of a tiny config, and a cosine-restarts run keeping its last epochs."""
    out = tmp_path_factory.mktemp("ens")
    seeds = ensemble(seeds=2, cfg=C.apply_overrides(C.RunConfig(), TINY), out=out, name="two")
    code, _, err = run_main(["train", *TINY_ARGS, "--train.epochs=4", "--schedule.name=cosine-restarts",
                             "--schedule.cycles=2", "--checkpoint.keep_last=3", "--train.ema=0.9",
                             "--out", str(out), "--name", "snap"])
    assert code == 0, err
    return out, seeds


def member_probs(run, split, weights="best"):
    _, _, model, pre, splits = load_run(run, weights=weights)
    part = splits.get(split)
    return probabilities(model, pre, part.x), part.y


def test_an_ensemble_of_two_runs_is_the_mean_of_their_probabilities(two):
    out, result = two
    assert [m.label for m in result.members] == ["seed-0", "seed-1"]
    runs = [out / "two" / "seed-0", out / "two" / "seed-1"]
    assert [C.load_toml(RunDir(r).config).data.split_seed for r in runs] == [0, 0]  # one split for both seeds
    assert [C.load_toml(RunDir(r).config).train.seed for r in runs] == [0, 1]
    for split in ("val", "test"):
        (pa, y), (pb, _) = member_probs(runs[0], split), member_probs(runs[1], split)
        mean = (pa + pb) / 2
        ens = load_ensemble(out / "two")
        torch.testing.assert_close(ens.predict(ens.split(split)[0]), mean)
        accs = [(p.argmax(1) == y).float().mean().item() for p in (pa, pb)]
        assert getattr(result, f"{split}_acc") == pytest.approx((mean.argmax(1) == y).float().mean().item())
        assert [getattr(m, f"{split}_acc") for m in result.members] == pytest.approx(accs)
        gains = result.gains()
        assert gains[f"{split}_over_best"] == pytest.approx(getattr(result, f"{split}_acc") - max(accs))
        assert gains[f"{split}_over_mean"] == pytest.approx(getattr(result, f"{split}_acc") - sum(accs) / 2)
    saved = json.loads(EnsembleDir(out / "two").ensemble.read_text())
    assert [m["run"] for m in saved["members"]] == ["seed-0", "seed-1"] and saved["source"] == "seeds"
    assert saved["test_acc"] == result.test_acc and EnsembleDir(out / "two").figure.stat().st_size > 1000
    res = evaluate_ensemble(out / "two", "test")
    assert res.accuracy == pytest.approx(result.test_acc) and int(res.confusion.sum()) == len(y)
    code, stdout, _ = run_main(["eval", str(out / "two"), "--split=val"])
    assert code == 0 and f"val: accuracy {result.val_acc:.4f}" in stdout


def test_weighted_shares_are_val_accuracy_over_their_sum(two):
    out, result = two
    w = ensemble([out / "two" / "seed-0", out / "two" / "seed-1"], weighted=True, out=out, name="weighted")
    accs = [m.val_acc for m in result.members]
    assert [m.share for m in w.members] == pytest.approx([a / sum(accs) for a in accs])
    (pa, y), (pb, _) = member_probs(out / "two" / "seed-0", "test"), member_probs(out / "two" / "seed-1", "test")
    weighted = (accs[0] * pa + accs[1] * pb) / sum(accs)
    assert w.test_acc == pytest.approx((weighted.argmax(1) == y).float().mean().item())


def test_snapshots_and_last_epochs_of_one_run(two):
    out, _ = two
    snaps = ensemble(snapshots=out / "snap", out=out, name="snaps")
    assert [m.weights for m in snaps.members] == ["snapshot-1", "snapshot-2"]  # one per cycle
    tensors, _ = load_checkpoint(RunDir(out / "snap").snapshot(2))
    last, _ = load_checkpoint(RunDir(out / "snap").last)
    assert all(torch.equal(v, last[k]) for k, v in tensors.items())  # the last cycle ends with the run
    last3 = ensemble(checkpoints=out / "snap", last=3, out=out, name="last3")
    assert [m.weights for m in last3.members] == ["epoch-2", "epoch-3", "epoch-4"]
    code, stdout, _ = run_main(["eval", str(out / "snap"), "--weights=ema"])
    result = json.loads(RunDir(out / "snap").result.read_text())
    assert code == 0 and f"test: accuracy {result['ema']['test_acc']:.4f}" in stdout


def test_the_top_trials_of_a_search(two, tmp_path):
    """A hand-made trials.csv in the search issue's format: only COMPLETE trials, best val accuracy first."""
    out, _ = two
    search = tmp_path / "search" / "s1"
    search.mkdir(parents=True)
    rows = [(0, "COMPLETE", 0.80, "two/seed-0"), (1, "FAIL", "", ""), (2, "PRUNED", 0.99, "two/seed-1"),
            (3, "COMPLETE", 0.85, "two/seed-1"), (4, "COMPLETE", 0.70, "snap")]
    with open(search / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "stage", "state", "val_acc", "test_acc", "epochs", "seconds", "run_dir", "reason",
                    "params_optim.lr"])
        for n, state, acc, run in rows:
            w.writerow([n, "coarse", state, acc, "", 2, 1.0, os.path.relpath(out / run, search) if run else "", "",
                        0.01])
    top = ensemble(search=search, top=2, out=out, name="top")
    assert [m.label for m in top.members] == ["seed-1", "seed-0"] and top.source == "search"
    assert [m.label for m in ensemble(search=search, top=5, out=out, name="top5").members] == \
        ["seed-1", "seed-0", "snap"]


def test_distil_the_ensemble_into_a_student(two):
    out, _ = two
    code, stdout, err = run_main(["distill", str(out / "two"), "--model.spec=fc-16 relu fc", "--distill.temperature=3",
                                  "--train.epochs=6",
                                  "--out", str(out), "--name", "student"])
    assert code == 0, err
    student = RunDir(out / "student")
    cfg = C.load_toml(student.config)
    assert cfg.distill.teacher == str(out / "two") and cfg.model.spec == "fc-16 relu fc" and cfg.distill.alpha == 0.9
    ens = load_ensemble(out / "two")
    soft, meta = load_checkpoint(student.teacher)
    _, splits = prepare_data(cfg)
    torch.testing.assert_close(soft["soft"], ens.predict(splits.train.x, temperature=3.0))
    assert meta["temperature"] == 3.0 and "teacher: 2 members' probabilities at T=3" in stdout
    assert json.loads(student.result.read_text())["test_acc"] > 0.5


@pytest.mark.parametrize("args,phrase", [
    (["ensemble"], "give the members one way"),
    (["ensemble", "a", "--seeds=2"], "give the members one way: run directories, --seeds=N"),
    (["ensemble", "--seeds=1"], "--seeds needs at least 2 seeds"),
    (["ensemble", "--snapshots=r", "--top=3"], "--top picks the best trials of --search=DIR"),
    (["ensemble", "--search=s", "--last=3"], "--last picks the last epochs of --checkpoints=RUN"),
    (["ensemble", "--checkpoints=r", "--last=1"], "--last must be at least 2"),
    (["ensemble", "a", "b", "--train.epochs=3"], "configure the runs --seeds=N trains"),
    (["ensemble", "only-one"], "an ensemble needs at least 2 members, got 1 run"),
    (["ensemble", "--seeds=2", "--train.ema=1.5"], "train.ema is a decay in [0, 1)"),
    (["ensemble", "--search=nowhere"], "has no trials.csv"),
    (["distill", "nowhere"], "is not an ensemble directory"),
    (["train", "--train.monitor=val_accuracy"], "train.monitor must be one of val_acc, val_loss"),
    (["train", "--distill.alpha=2"], "distill.alpha must be in [0, 1]"),
    (["lr-find", "--distill.teacher=x"], "the LR range test trains on the labels"),
])
def test_mistakes_exit_2_with_one_sentence(args, phrase, tmp_path):
    code, _, err = run_main([*args, "--out", str(tmp_path)] if args[0] in ("ensemble", "distill") else args)
    assert code == 2 and phrase in err and err.count("\n") == 1, err


def test_mistakes_about_the_runs(two, tmp_path):
    out, _ = two
    other = tmp_path / "other"
    code, _, err = run_main(["train", *TINY_ARGS, "--train.seed=5", "--out", str(tmp_path), "--name", "other"])
    assert code == 0, err
    cases = [
        (["ensemble", str(out / "two" / "seed-0"), str(other)],
         "was scored on other validation/test images than seed-0 (data.split_seed 5 vs 0)"),
        (["ensemble", "--snapshots", str(other)], "has 0 snapshot(s)"),
        (["ensemble", "--checkpoints", str(out / "snap"), "--last=4"], "fewer than --last=4; use --last=3"),
        (["ensemble", "--checkpoints", str(other), "--last=2"], "kept no epoch weights"),
        (["ensemble", str(out / "two"), str(other)], "is not a babysit run directory"),
        (["ensemble", str(out / "two" / "seed-0"), str(out / "two" / "seed-1"), "--weights=swa"],
         "has no swa weights"),
        (["ensemble", "--seeds=2", *TINY_ARGS, "--name", "two"], "already holds an ensemble"),
        (["eval", str(other), "--weights=ema"], "has no ema weights; the run was not trained with --train.ema"),
        (["eval", str(out / "two"), "--weights=ema"], "drop --weights"),
        (["distill", str(out / "two"), "--augment.pipeline=flip-h"], "drop --augment.pipeline"),
        (["distill", str(out / "two"), "--data.val_fraction=0.2"], "another split than the ensemble's members"),
        (["train", *TINY_ARGS, "--distill.teacher=x", "--out", str(tmp_path)], "start a distillation with"),
    ]
    for args, phrase in cases:
        if args[0] in ("ensemble",) and "--out" not in args:
            args = [*args, "--out", str(out) if "--name" in args else str(tmp_path)]
        code, _, err = run_main(args)
        assert code == 2 and phrase in err and err.count("\n") == 1, (args, err)
