"""The recipe's decision rules: pure functions of the evidence, each tested on its own.

- lr_range: the coarse learning-rate range from the range test.
- size_stage / final_epochs: how many trials of how many epochs on how many images fit a step's time.
- widen: a best value on the border of its range (the notes: "careful with best values on border").
- augmentation_for_gap: the notes' "big gap between train and val accuracy: overfitting".
- greedy_ensemble / helps: keep a member or test-time views only if validation gains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from babysit.review.recipereport import GAP_POINTS  # one overfitting threshold for the recipe and its report

WD_RANGE = (1e-5, 1e-2)
"""The coarse range of the L2 strength lambda (optim.weight_decay), log-uniform."""
FIT_ACC = 0.9
"""Train accuracy below this is underfitting: a gap then says nothing about overfitting."""
SMALL_VAL = 1000
"""Fewer validation images than this make one split too coarse to choose by (179 on digits: one image is 0.56
points, and the best trials all reach 100 %): the searches cross-validate instead (the notes)."""
CV_FOLDS = 5
MAX_SEEDS = 5
"""The final config is trained again with other seeds, while the final step's time lasts, up to this many runs."""
MIN_TRIALS = 3
"""Fewer trials than this is no search; a stage gets at least this many."""


def lr_range(steepest: float, min_loss: float) -> tuple[float, float]:
    """The coarse lr range around the range test: from a third of the lower of the steepest-descent lr and the
    loss minimum's lr / 10, to three times the loss minimum's lr (about two decades, log-uniform)."""
    low = min(steepest, min_loss / 10) / 3
    high = max(min_loss * 3, low * 10)
    return low, high


@dataclass(frozen=True)
class StageSize:
    """What one search stage runs: trials, epochs per trial, share of the training images, and the estimated
    seconds of one trial."""

    trials: int
    epochs: int
    share: float
    trial_s: float


def size_stage(seconds: float, epoch_s: float, overhead_s: float, *, target: int, min_epochs: int,
               max_epochs: int, min_share: float) -> StageSize:
    """Size a stage to ``seconds``: ``target`` trials of ``min_epochs`` epochs on the share of the images that
    fits (at least ``min_share``); once every image fits, more epochs (up to ``max_epochs``); then as many
    trials as the time holds by this estimate (at least MIN_TRIALS; the stage itself runs until its deadline).

    One trial costs overhead_s + epochs * share * epoch_s (epoch_s: one epoch on all training images)."""
    per_trial = max(seconds / target - overhead_s, 0.0)
    share = min(1.0, max(min_share, per_trial / (min_epochs * epoch_s)))
    epochs = min_epochs
    if share >= 1.0:
        epochs = max(min_epochs, min(max_epochs, int(per_trial // epoch_s)))
    trial_s = overhead_s + epochs * share * epoch_s
    trials = max(MIN_TRIALS, int(seconds // trial_s))
    return StageSize(trials, epochs, round(share, 4), trial_s)


def cv_folds(n_val: int) -> int:
    """K of the searches' K-fold cross-validation: CV_FOLDS for a validation split under SMALL_VAL images, else 0
    (one split)."""
    return CV_FOLDS if n_val < SMALL_VAL else 0


def final_epochs(seconds: float, epoch_s: float, overhead_s: float, at_least: int, at_most: int = 60) -> int:
    """Epochs of the final training that fit ``seconds`` (at least ``at_least``: the fine trials' own length)."""
    return max(at_least, min(at_most, int((seconds - overhead_s) // epoch_s)))


def widen(low: float, high: float, best: float, border: float = 0.1) -> tuple[float, float] | None:
    """The range widened ten-fold past the edge the best value lies on (the outer ``border`` share of the
    range in log space), or None when it lies inside."""
    pos = (math.log(best) - math.log(low)) / (math.log(high) - math.log(low))
    if pos < border:
        return low / 10, high
    if pos > 1 - border:
        return low, high * 10
    return None


def overfitting(train_acc: float, val_acc: float) -> bool:
    """The notes' "big gap between train and val accuracy" while the training images are learnt (train accuracy
    at least FIT_ACC; below it the model underfits, whatever the gap): a gap of GAP_POINTS or more, or, near the
    top, a train error at most half the val error with a gap of at least half a point (train 99.9 % against val
    99.0 % is a tenfold error ratio: overfitting, though the gap is under a point)."""
    gap = 100 * (train_acc - val_acc)
    relative = (1 - train_acc) <= (1 - val_acc) / 2 and gap >= 0.5
    return train_acc >= FIT_ACC and (gap >= GAP_POINTS or relative)


def augmentation_for_gap(train_acc: float, val_acc: float, side: int, mirror_safe: bool | None) -> tuple[str, ...]:
    """The final run's augmentation when the best fine trial overfit: shifts of about 1/14 of the image side
    (2 pixels on 28x28, 1 on 8x8), and left-right flips where a mirror keeps the class. None otherwise: more
    data would not be the lever."""
    if not overfitting(train_acc, val_acc):
        return ()
    return (f"translate-{max(1, round(side / 14))}",) + (("flip-h",) if mirror_safe else ())


def scores(probs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy -log p_y) of probabilities (N, K)."""
    acc = (probs.argmax(1) == y).float().mean().item()
    return acc, -probs.gather(1, y[:, None]).clamp_min(1e-12).log().mean().item()


def helps(new: tuple[float, float], old: tuple[float, float]) -> bool:
    """Validation gains: a higher accuracy without a higher loss, or the same accuracy with a lower loss (on a
    small val set one image more is noise when the probabilities got worse)."""
    same = abs(new[0] - old[0]) <= 1e-9
    return (new[0] > old[0] and not same and new[1] <= old[1]) or (same and new[1] < old[1] - 1e-6)


def greedy_ensemble(val_probs: list[torch.Tensor], y: torch.Tensor, first: int = 0) -> list[int]:
    """Forward selection (Caruana et al. 2004, without replacement): start from member ``first``, add the member
    whose average with those chosen scores best on val, while it helps (see ``helps``). Returns the chosen
    indices in the order they were added."""
    chosen = [first]
    total = val_probs[first].clone()
    best = scores(total, y)
    while len(chosen) < len(val_probs):
        trials = [(scores((total + p) / (len(chosen) + 1), y), i) for i, p in enumerate(val_probs) if i not in chosen]
        (acc, loss), i = max(trials, key=lambda t: (t[0][0], -t[0][1]))
        if not helps((acc, loss), best):
            break
        chosen.append(i)
        total += val_probs[i]
        best = (acc, loss)
    return chosen
