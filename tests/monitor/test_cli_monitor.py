"""The monitor's commands end to end on the bundled digits: train's checks, live line and findings;
the notes' LR 1e6 and 1e-6 runs; check, gradcheck, diagnose and report."""

import json

from babysit.rundir import read_history
from tests.monitor.conftest import TINY_RUN, run_main


def test_train_shows_checks_live_line_and_findings(trained_run):
    run, out = trained_run
    assert "sanity checks (4/4 passed):" in out and "PASS  initial loss: loss " in out
    assert "PASS  overfit a tiny sample: 20 examples" in out
    assert "  layers @ step " in out and "update/weight 0:" in out
    assert out.index("sanity checks") < out.index("Finished epoch 1") < out.index("findings")
    assert f"report: {run / 'report.html'}" in out
    for name in ("checks.json", "findings.json", "report.html", "stats/layers.json", "stats/histograms.json",
                 "stats/filters.png", "stats/confusion.json", "stats/confused.npz"):
        assert (run / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "events").iterdir())
    checks = json.loads((run / "checks.json").read_text())
    assert checks["passed"] and len(checks["checks"]) == 4


def test_lr_1e6_stops_within_a_few_steps_with_lr_too_high(tmp_path):
    code, out, err = run_main(["train", *TINY_RUN, "--optim.lr=1e6", "--monitor.checks=false",
                               "--monitor.report=false", "--out", str(tmp_path), "--name", "hi"])
    assert code == 3 and err.startswith("babysit: error: ") and "Traceback" not in err
    assert "loss exploded — LR too high" in out
    history = read_history(tmp_path / "hi" / "history.jsonl")
    assert len([r for r in history if r["kind"] == "step"]) <= 5
    assert history[-1]["kind"] == "diverged"
    findings = json.loads((tmp_path / "hi" / "findings.json").read_text())["findings"]
    assert findings[0]["rule"] == "lr_too_high" and "--optim.lr=100000" in findings[0]["action"]


def test_a_nan_caught_by_the_loop_also_becomes_the_lr_too_high_finding(tmp_path):
    code, out, err = run_main(["train", *TINY_RUN, "--optim.lr=1e30", "--schedule.name=constant",
                               "--monitor.checks=false", "--monitor.report=false", "--out", str(tmp_path),
                               "--name", "x"])
    assert code == 3 and "loss exploded — LR too high" in out and "the weights became inf" in out
    assert "Traceback" not in err and "at step 1 (lr 1e+30)" in err  # the first step's update made them Inf
    history = read_history(tmp_path / "x" / "history.jsonl")
    assert history[-1]["kind"] == "diverged" and history[-1]["loss"] == "inf" and history[-1]["step"] == 1


def test_lr_1e_6_ends_with_loss_barely_changes(tmp_path):
    code, out, _ = run_main(["train", *TINY_RUN, "--optim.lr=1e-6", "--monitor.checks=false",
                             "--monitor.report=false", "--out", str(tmp_path), "--name", "lo"])
    assert code == 0
    assert "loss barely changes — LR too low" in out.split("findings")[-1]


def test_check_command_exit_1_names_the_failing_checks(tmp_path):
    code, out, err = run_main(["check", "--data.limit=300", "--model.spec=conv3-8 relu pool2 fc", "--optim.lr=1e-6",
                               "--out", str(tmp_path), "--name", "c"])
    assert code == 1 and "FAIL  overfit a tiny sample" in out and "learning rate too low" in out
    assert "sanity checks failed (overfit_tiny, zero_input_check)" in err
    saved = json.loads((tmp_path / "c" / "checks.json").read_text())
    assert not saved["passed"] and [c["passed"] for c in saved["checks"]] == [True, True, False, False]


def test_check_command_warns_about_flips_that_change_digits(tmp_path):
    code, out, _ = run_main(["check", "--data.limit=300", "--model.spec=conv3-8 relu pool2 fc",
                             "--augment.pipeline=flip-v,translate-1", "--out", str(tmp_path), "--name", "f"])
    assert out.startswith("warning: flip-v on digits: upside-down images change class meaning (6 and 9)")
    assert "flip-h" not in out


def test_gradcheck_command(tmp_path):
    code, out, _ = run_main(["gradcheck", "--data.limit=100", "--model.spec=conv3-4 tanh pool2 fc", "--points=2",
                             "--entries=4"])
    assert code == 0 and "PASS: worst relative error" in out and "0.weight" in out


def test_diagnose_and_report_commands(trained_run):
    run, _ = trained_run
    code, out, _ = run_main(["diagnose", str(run)])
    assert code == 0 and out.startswith("findings") and "findings.json" in out
    code, out, _ = run_main(["report", str(run)])
    assert code == 0 and out.strip() == f"report: {run / 'report.html'}"


def test_resume_refuses_tensorboard_flag(trained_run):
    run, _ = trained_run
    code, _, err = run_main(["train", "--resume", str(run), "--tensorboard"])
    assert code == 2 and "--resume continues a run with its own saved config" in err


def test_failed_checks_stop_train_before_the_first_step_unless_forced(tmp_path):
    """Bug 4: --model.init=normal-1 fails the initial-loss check; train stops with exit 1, the diagnosis printed
    and recorded, no step taken. --monitor.force=true trains anyway, with a warning."""
    bad = ["train", *TINY_RUN, "--model.init=normal-1", "--monitor.stats_every=0", "--out", str(tmp_path)]
    code, out, err = run_main([*bad, "--name", "stop"])
    assert code == 1 and "Traceback" not in err
    assert "sanity check 1/4: initial loss ... FAIL" in out  # a line per check as it runs
    assert "initial loss" in err and "--monitor.force=true" in err and "training did not start" in err
    assert "Finished epoch" not in out and out.index("sanity checks") < out.index("findings")
    assert not [r for r in read_history(tmp_path / "stop" / "history.jsonl") if r["kind"] == "step"]
    findings = json.loads((tmp_path / "stop" / "findings.json").read_text())["findings"]
    assert findings[0]["rule"] == "check_initial_loss_check" and (tmp_path / "stop" / "report.html").is_file()
    code, out, err = run_main([*bad, "--monitor.force=true", "--monitor.report=false", "--train.epochs=1",
                               "--name", "forced"])
    assert code in (0, 3) and "training anyway (--monitor.force=true)" in out and "Finished epoch 1" in out


def test_only_the_zero_input_heuristic_fails_without_stopping_a_run():
    from babysit.monitor.sanity import ADVISORY, CheckResult, blocking

    results = [CheckResult(name, name, passed, "") for name, passed in
               (("initial_loss_check", True), ("regularization_check", True), ("overfit_tiny", True),
                ("zero_input_check", False))]
    assert ADVISORY == ("zero_input_check",) and blocking(results) == []
    results[2] = CheckResult("overfit_tiny", "overfit", False, "")
    assert blocking(results) == [results[2]]


def test_lr_1e6_with_the_checks_on_stops_before_training_with_exit_3(tmp_path):
    """The overfit check blows up at lr 1e6: training does not start, and the exit code is a divergence's (3), as
    when the guard stops a run, not a failed check's (1)."""
    code, out, err = run_main(["train", *TINY_RUN, "--optim.lr=1e6", "--monitor.report=false", "--out", str(tmp_path),
                               "--name", "hi"])
    assert code == 3 and "Traceback" not in err and "training did not start" in err
    assert "the loss blew up: learning rate too high (try --optim.lr=100000)" in err
    assert not [r for r in read_history(tmp_path / "hi" / "history.jsonl") if r["kind"] == "step"]
    code, _, err = run_main(["check", *TINY_RUN, "--optim.lr=1e6", "--out", str(tmp_path), "--name", "c"])
    assert code == 1  # `babysit check` says "a check failed", whatever the check
