"""The recipe's plan and decision rules, each against the rule written out here (issue 17)."""

from __future__ import annotations

import math

import pytest
import torch

from babysit import config as C
from babysit.errors import BabysitError
from babysit.recipe.budget import STEPS, WEIGHTS, allot, format_plan
from babysit.recipe.late import ema_decay, patience
from babysit.recipe.rules import (
    GAP_POINTS,
    MIN_TRIALS,
    augmentation_for_gap,
    final_epochs,
    greedy_ensemble,
    helps,
    lr_range,
    overfitting,
    scores,
    size_stage,
    widen,
)
from babysit.recipe.searching import on_border
from babysit.review.recipereport import next_steps
from babysit.tune.space import Param
from babysit.tune.table import TrialRow


def test_budget_is_shared_by_weight_and_replanned_from_what_is_left():
    plan = allot(600, 0, STEPS)
    assert sum(plan.values()) == pytest.approx(600)
    total = sum(WEIGHTS[s] for s in STEPS)
    assert plan["final"] == pytest.approx(600 * WEIGHTS["final"] / total)
    assert max(plan, key=plan.get) == "final"
    # the first three steps took 100 s instead of their ~60: the rest share the 500 s left, in the same ratios
    rest = STEPS[3:]
    later = allot(600, 100, rest)
    assert sum(later.values()) == pytest.approx(500)
    assert later["fine"] / later["coarse"] == pytest.approx(WEIGHTS["fine"] / WEIGHTS["coarse"])
    assert allot(600, 700, rest)["final"] == 0  # overspent: nothing left, never negative
    text = format_plan(600, 100, rest, [("data", 10.0)])
    assert "8 m 20 s left" in text and "done  data" in text and "plan  final" in text


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("3m", 180), ("20m", 1200), ("1h30m", 5400), ("20", 1200),
                                           ("2.5m", 150), (" 1h ", 3600)])
def test_budget_durations(text, seconds):
    assert C.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "0", "", "-3m", "5x"])
def test_a_bad_budget_is_one_sentence(text):
    with pytest.raises(BabysitError, match="recipe.budget must be a duration"):
        C.validate(C.apply_overrides(C.RunConfig(), {"recipe.budget": text}))


def test_lr_range_spans_the_range_test():
    steepest, min_loss = 0.02, 0.25
    low, high = lr_range(steepest, min_loss)
    assert low == pytest.approx(min(steepest, min_loss / 10) / 3)
    assert high == pytest.approx(3 * min_loss)
    assert math.log10(high / low) == pytest.approx(math.log10(0.75 / (0.02 / 3)))  # about two decades


def test_stage_sizing():
    # 120 s, 12 trials wanted: 10 s each, less 2 s overhead = 8 s for 2 epochs of 12 s on every image: a third
    s = size_stage(120, 12.0, 2.0, target=12, min_epochs=2, max_epochs=4, min_share=0.05)
    assert s.epochs == 2 and s.share == pytest.approx(8 / 24, abs=1e-4)
    assert s.trial_s == pytest.approx(2 + 2 * s.share * 12, rel=1e-3)
    assert s.trials == int(120 // s.trial_s)
    # plenty of time: every image, and more epochs up to max_epochs
    s = size_stage(1000, 1.0, 0.5, target=10, min_epochs=2, max_epochs=4, min_share=0.05)
    assert (s.share, s.epochs) == (1.0, 4)
    # no time: the share floor, and still MIN_TRIALS
    s = size_stage(1, 100.0, 5.0, target=12, min_epochs=2, max_epochs=4, min_share=0.1)
    assert s.share == 0.1 and s.trials == MIN_TRIALS


def test_final_epochs_fit_the_time():
    assert final_epochs(100, 4.0, 4.0, at_least=2) == (100 - 4) // 4
    assert final_epochs(5, 4.0, 4.0, at_least=3) == 3  # at least the fine trials' length
    assert final_epochs(1e6, 1.0, 0.0, at_least=2, at_most=60) == 60


def test_widen_past_the_border_in_log_space():
    # position = (log b - log lo) / (log hi - log lo); outer 10 % on either side
    assert widen(1e-3, 1.0, 0.9) == (1e-3, 10.0)
    assert widen(1e-3, 1.0, 1.1e-3) == (1e-4, 1.0)
    assert widen(1e-3, 1.0, 0.03) is None
    space = [Param("optim.lr", "loguniform", 1e-3, 1.0), Param("optim.weight_decay", "loguniform", 1e-5, 1e-2)]
    best = TrialRow(3, "coarse", "COMPLETE", 0.9, None, None, 2, 1.0, "trials/0003", "",
                    {"optim.lr": 0.95, "optim.weight_decay": 1e-4})
    assert on_border(best, space) == {"optim.lr": [1e-3, 10.0]}


def test_overfitting_needs_a_gap_and_a_learnt_training_set():
    assert overfitting(1.0, 1.0 - GAP_POINTS / 100)
    assert not overfitting(0.95, 0.95 - (GAP_POINTS - 0.5) / 100)
    assert not overfitting(0.25, 0.10)  # a large gap at 25 % train accuracy is underfitting
    assert overfitting(0.999, 0.990)  # near the top: train error 0.1 % against val error 1 %
    assert not overfitting(0.97, 0.966)  # errors 3.0 % and 3.4 %: alike
    assert not overfitting(0.996, 0.993)  # a gap under half a point
    assert augmentation_for_gap(1.0, 0.95, 28, mirror_safe=True) == ("translate-2", "flip-h")
    assert augmentation_for_gap(1.0, 0.95, 8, mirror_safe=False) == ("translate-1",)  # digits: no mirror
    assert augmentation_for_gap(0.96, 0.955, 28, mirror_safe=True) == ()


def test_scores_and_helps():
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    y = torch.tensor([0, 0, 0])
    acc, loss = scores(probs, y)
    assert acc == pytest.approx(2 / 3)
    assert loss == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.7)) / 3)
    assert helps((0.9, 0.3), (0.8, 0.3))
    assert not helps((0.9, 0.5), (0.8, 0.3))  # one image more but worse probabilities: noise
    assert helps((0.8, 0.2), (0.8, 0.3))
    assert not helps((0.8, 0.3), (0.8, 0.3))


def test_greedy_ensemble_keeps_only_members_that_help():
    y = torch.tensor([0, 1, 0, 1])
    good = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.6, 0.4]])  # 3/4
    fixes = torch.tensor([[0.7, 0.3], [0.3, 0.7], [0.7, 0.3], [0.1, 0.9]])  # 4/4
    bad = torch.tensor([[0.1, 0.9], [0.9, 0.1], [0.1, 0.9], [0.9, 0.1]])  # 0/4
    assert greedy_ensemble([good, bad, fixes], y, first=0) == [0, 2]
    assert greedy_ensemble([good, bad], y, first=0) == [0]


def test_final_run_settings():
    assert patience("onecycle", 30) == 0
    assert patience("cosine", 30) == 10
    assert ema_decay(1000) == pytest.approx(1 - 10 / 1000)
    assert ema_decay(10) == 0.9 and ema_decay(10**7) == 0.9999


def test_next_steps_from_the_evidence():
    state = {"steps": {"final": {"outputs": {"best_epoch": 20, "epochs": 20, "last_train_acc": 1.0,
                                             "last_val_acc": 0.95}},
                       "ensemble": {"outputs": {"members": [["a", "best"], ["b", "best"]], "val_acc": 0.96,
                                                "final_val_acc": 0.95}}}}
    text = " ".join(next_steps(state))
    assert "Train longer" in text and "Regularise more" in text and "+1.00 points" in text
    under = {"steps": {"final": {"outputs": {"best_epoch": 3, "epochs": 20, "last_train_acc": 0.9,
                                             "last_val_acc": 0.89}}}}
    assert "bigger model" in " ".join(next_steps(under))


def test_knn_settings_fit_the_time():
    from babysit.recipe.late import KNN_RATE, knn_settings

    assert knn_settings(1259, 538, 64, 10.0) == {}  # digits: the full search
    cheap = knn_settings(54000, 16000, 784, 1000.0)
    assert cheap["baseline.distance"] == "l2" and "data.limit" not in cheap
    tight = knn_settings(54000, 16000, 784, 30.0)
    assert tight["data.limit"] == int(30.0 * KNN_RATE / (16000 * 784))  # seconds * rate / (scored * dims)


def test_small_validation_splits_cross_validate():
    from babysit.recipe.rules import CV_FOLDS, SMALL_VAL, cv_folds

    assert cv_folds(179) == CV_FOLDS == 5  # digits
    assert cv_folds(SMALL_VAL) == 0 and cv_folds(6000) == 0  # mnist: one split
