"""Data losses of the notes, averaged over the mini-batch: L = 1/N sum_i L_i.

``scores`` are the class scores f (N, K). ``y`` holds class indices (N,) for the single-label
losses; the multi-label losses (attribute hinge, binary cross-entropy) also take a target matrix
(N, K) and read class indices as one-vs-all targets (the right class on, every other class off).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from babysit.config import LossConfig, RunConfig
from babysit.registry import Registry
from babysit.train.multitask import MultiTaskLoss, parse_heads, parse_task_weights

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[Callable[[LossConfig], LossFn]] = Registry("loss.name")
"""The data losses by the name users type in ``--loss.name``: ``fn(cfg) -> loss(scores, y)``."""


def list_losses() -> list[str]:
    """The names ``--loss.name`` accepts."""
    return LOSSES.names()


def softmax_loss(scores: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Softmax cross-entropy L_i = -log(e^{f_y} / sum_j e^{f_j}), with the notes' label smoothing.

    With smoothing eps the target distribution q puts 1 - eps on the right class and eps/(k-1) on
    each of the k-1 others: L_i = -sum_j q_j log p_j. (torch's ``label_smoothing=e`` spreads e/k
    over all k classes instead; the two agree when eps = e*(k-1)/k.)

    ``y`` may also be soft targets t (N, K) with rows summing to 1 (mixup, cutmix): L_i = -sum_j t_j log p_j,
    and smoothing then gives q = (1 - eps) t + eps/(k-1) (1 - t), which is the above for a one-hot t.
    """
    if y.ndim == 1 and label_smoothing == 0:
        return F.cross_entropy(scores, y)
    k = scores.shape[1]
    logp = F.log_softmax(scores, dim=1)  # (N, K)
    t = F.one_hot(y, k).to(logp.dtype) if y.ndim == 1 else y.to(logp.dtype)
    q = (1 - label_smoothing) * t + label_smoothing / (k - 1) * (1 - t)
    return -(q * logp).sum(1).mean()


def svm_loss(scores: torch.Tensor, y: torch.Tensor, delta: float = 1.0, squared: bool = False) -> torch.Tensor:
    """Multiclass SVM (Weston-Watkins) L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + delta).

    ``squared`` gives the squared hinge sum_{j != y_i} max(0, s_j - s_{y_i} + delta)^2.
    """
    correct = scores.gather(1, y[:, None])  # (N, 1)
    margins = (scores - correct + delta).clamp_min(0)  # (N, K)
    margins = margins.scatter(1, y[:, None], 0.0)  # the j = y_i term is left out
    return (margins.pow(2) if squared else margins).sum(1).mean()


def _signs(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Targets in {-1, +1} (N, K): from class indices (one-vs-all), or from a 0/1 or -1/+1 matrix."""
    if y.ndim == 1:
        return F.one_hot(y, scores.shape[1]).to(scores.dtype) * 2 - 1
    y = y.to(scores.dtype)
    return y * 2 - 1 if bool((y >= 0).all()) else y


def attribute_hinge_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Attribute (multi-label) hinge L_i = sum_j max(0, 1 - y_ij f_j), y_ij in {-1, +1}."""
    return (1 - _signs(scores, y) * scores).clamp_min(0).sum(1).mean()


def bce_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per attribute, L_i = -sum_j [y_ij log s(f_j) + (1 - y_ij) log(1 - s(f_j))],
    s the sigmoid, y_ij in {0, 1}."""
    target = (_signs(scores, y) + 1) / 2
    return F.binary_cross_entropy_with_logits(scores, target, reduction="none").sum(1).mean()


@LOSSES.register("softmax")
def _softmax(cfg: LossConfig) -> LossFn:
    return partial(softmax_loss, label_smoothing=cfg.label_smoothing)


@LOSSES.register("svm")
def _svm(cfg: LossConfig) -> LossFn:
    return partial(svm_loss, delta=cfg.delta)


@LOSSES.register("squared-hinge")
def _squared_hinge(cfg: LossConfig) -> LossFn:
    return partial(svm_loss, delta=cfg.delta, squared=True)


@LOSSES.register("attribute-hinge")
def _attribute_hinge(cfg: LossConfig) -> LossFn:
    return attribute_hinge_loss


@LOSSES.register("bce")
def _bce(cfg: LossConfig) -> LossFn:
    return bce_loss


def make_loss(cfg: LossConfig, train: bool = True) -> LossFn:
    """The configured data loss; ``train=False`` drops label smoothing (what validation reports)."""
    return LOSSES.get(cfg.name)(cfg if train else LossConfig(cfg.name, cfg.delta, 0.0))


Targets = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
"""What a training batch's loss reads: labels (N,) or soft targets (N, K); for distillation (labels, teacher)."""


def distillation_loss(scores: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor, temperature: float,
                      alpha: float, hard: LossFn = softmax_loss) -> torch.Tensor:
    """Knowledge distillation (Hinton, Vinyals & Dean 2015):

        L = alpha * T^2 * KL(p_T || q_T) + (1 - alpha) * hard(scores, y)

    ``teacher`` holds p_T, the teacher's probabilities at temperature T (N, K); q_T = softmax(scores / T);
    KL(p || q) = sum_j p_j (log p_j - log q_j), averaged over the batch. The T^2 keeps the soft term's
    gradients (which scale as 1/T^2) comparable to the hard term's as T changes."""
    log_q = F.log_softmax(scores / temperature, dim=1)
    soft = F.kl_div(log_q, teacher.to(log_q.dtype), reduction="batchmean")
    return alpha * temperature**2 * soft + (1 - alpha) * hard(scores, y)


class Distillation:
    """The training loss of a distilled student; its targets are (labels, teacher probabilities at T)."""

    def __init__(self, hard: LossFn, temperature: float, alpha: float) -> None:
        self.hard, self.temperature, self.alpha = hard, temperature, alpha

    def __call__(self, scores: torch.Tensor, targets: Targets) -> torch.Tensor:
        if not isinstance(targets, tuple):
            raise ValueError("a distillation loss needs (labels, teacher probabilities) targets; "
                             "TensorData.soft_train holds the teacher's")
        y, teacher = targets
        return distillation_loss(scores, y, teacher, self.temperature, self.alpha, self.hard)


def make_train_loss(cfg: RunConfig) -> Callable[[torch.Tensor, Targets], torch.Tensor]:
    """The loss a run trains on: the configured data loss, or with ``distill.teacher`` the distillation loss
    built on it."""
    hard = make_loss(cfg.loss)
    d = cfg.distill
    if cfg.model.heads:  # multi-task: the weighted sum of each head's loss on its slice of the scores
        return multitask_loss(hard, cfg)
    return Distillation(hard, d.temperature, d.alpha) if d.teacher else hard


def multitask_loss(loss: LossFn, cfg: RunConfig) -> MultiTaskLoss:
    """``loss`` per task of ``model.heads``, weighted by ``loss.task_weights`` and summed."""
    heads = parse_heads(cfg.model.heads)
    return MultiTaskLoss(loss, heads, parse_task_weights(cfg.loss.task_weights, heads))
