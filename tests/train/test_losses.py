"""Losses against hand computations on the notes' own examples, torch's versions, and float64 gradient checks."""

import math

import pytest
import torch
import torch.nn.functional as F

from babysit.config import LossConfig
from babysit.errors import BabysitError
from babysit.train.losses import (
    Distillation,
    attribute_hinge_loss,
    bce_loss,
    distillation_loss,
    list_losses,
    make_loss,
    softmax_loss,
    svm_loss,
)

# the notes' three images (cat, car, frog) and their scores for the classes (cat, car, frog)
SCORES = torch.tensor([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
LABELS = torch.tensor([0, 1, 2])


def one(scores, label):
    return scores[None], torch.tensor([label])


def test_multiclass_svm_on_the_notes_example():
    # cat: max(0, 5.1 - 3.2 + 1) + max(0, -1.7 - 3.2 + 1) = 2.9 + 0
    assert svm_loss(*one(SCORES[0], 0)).item() == pytest.approx(2.9)
    assert svm_loss(*one(SCORES[1], 1)).item() == pytest.approx(0.0)
    # frog: max(0, 2.2 + 3.1 + 1) + max(0, 2.5 + 3.1 + 1) = 6.3 + 6.6
    assert svm_loss(*one(SCORES[2], 2)).item() == pytest.approx(12.9)
    assert svm_loss(SCORES, LABELS).item() == pytest.approx((2.9 + 0 + 12.9) / 3)  # 5.27
    assert svm_loss(*one(SCORES[0], 0), delta=0.0).item() == pytest.approx(1.9)
    assert svm_loss(*one(SCORES[0], 0), delta=10.0).item() == pytest.approx(11.9 + 5.1)
    # torch's multi_margin_loss divides the same sum by the number of classes
    torch.testing.assert_close(svm_loss(SCORES, LABELS, delta=2.0), 3 * F.multi_margin_loss(SCORES, LABELS, margin=2.0))


def test_squared_hinge():
    assert svm_loss(*one(SCORES[0], 0), squared=True).item() == pytest.approx(2.9**2)
    assert svm_loss(*one(SCORES[2], 2), squared=True).item() == pytest.approx(6.3**2 + 6.6**2)


def test_softmax_on_the_notes_example():
    expected = -math.log(math.exp(3.2) / (math.exp(3.2) + math.exp(5.1) + math.exp(-1.7)))
    assert softmax_loss(*one(SCORES[0], 0)).item() == pytest.approx(expected)
    assert expected == pytest.approx(2.04, abs=0.005)  # the notes' number


def test_label_smoothing_targets_are_eps_over_k_minus_1_and_1_minus_eps():
    eps = 0.3
    logp = torch.log_softmax(SCORES[0], 0)
    expected = -(0.7 * logp[0] + 0.15 * logp[1] + 0.15 * logp[2]).item()  # k = 3: eps/(k-1) = 0.15
    assert softmax_loss(*one(SCORES[0], 0), label_smoothing=eps).item() == pytest.approx(expected)
    # torch's label_smoothing e puts e/k everywhere: the same targets when e = eps * k / (k-1)
    torch.testing.assert_close(softmax_loss(SCORES, LABELS, eps),
                               F.cross_entropy(SCORES, LABELS, label_smoothing=eps * 3 / 2))


def test_attribute_hinge_by_hand():
    f = torch.tensor([[0.5, 0.2, -1.0]])
    y = torch.tensor([[1.0, -1.0, 1.0]])
    # max(0, 1 - 0.5) + max(0, 1 + 0.2) + max(0, 1 + 1.0)
    assert attribute_hinge_loss(f, y).item() == pytest.approx(0.5 + 1.2 + 2.0)
    assert attribute_hinge_loss(f, (y + 1) / 2).item() == pytest.approx(3.7)  # 0/1 targets read as -1/+1
    # a class index is one-vs-all: class 0 -> y = (+1, -1, -1): 0.5 + 1.2 + max(0, 1 - 1.0)
    assert attribute_hinge_loss(f, torch.tensor([0])).item() == pytest.approx(1.7)


def test_binary_cross_entropy_by_hand():
    f = torch.tensor([[0.0, 2.0]])
    y = torch.tensor([[1.0, 0.0]])
    # -log sigmoid(0) - log(1 - sigmoid(2)) = log 2 + log(1 + e^2)
    assert bce_loss(f, y).item() == pytest.approx(math.log(2) + math.log(1 + math.e**2))
    assert bce_loss(f, torch.tensor([0])).item() == pytest.approx(math.log(2) + math.log(1 + math.e**2))


@pytest.mark.parametrize("name", ["softmax", "svm", "squared-hinge", "attribute-hinge", "bce"])
def test_gradient_check_in_float64(name):
    torch.manual_seed(0)
    scores = (torch.randn(6, 5, dtype=torch.float64) * 2).requires_grad_()
    y = torch.randint(0, 5, (6,))
    fn = make_loss(LossConfig(name=name, delta=1.0, label_smoothing=0.1))
    # the hinges have kinks: gradcheck only where no margin sits within 1e-3 of one
    assert torch.autograd.gradcheck(lambda s: fn(s, y), (scores,), eps=1e-6, atol=1e-6)


def test_multilabel_gradient_check_with_a_target_matrix():
    torch.manual_seed(1)
    scores = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (4, 3)).double()
    assert torch.autograd.gradcheck(lambda s: bce_loss(s, y), (scores,))
    assert torch.autograd.gradcheck(lambda s: attribute_hinge_loss(s, y * 2 - 1), (scores * 3,))


def test_registry_and_eval_variant():
    assert list_losses() == ["softmax", "svm", "squared-hinge", "attribute-hinge", "bce"]
    smoothed = make_loss(LossConfig(label_smoothing=0.2))
    plain = make_loss(LossConfig(label_smoothing=0.2), train=False)
    assert plain(SCORES, LABELS).item() == pytest.approx(F.cross_entropy(SCORES, LABELS).item())
    assert smoothed(SCORES, LABELS).item() != pytest.approx(plain(SCORES, LABELS).item())
    with pytest.raises(BabysitError, match="^unknown loss.name 'hinge'; choose one of softmax, svm"):
        make_loss(LossConfig(name="hinge"))


def test_softmax_loss_takes_soft_targets_like_torch():
    """Mixup/cutmix targets t (N, K): L_i = -sum_j t_ij log p_ij, torch's cross_entropy with probabilities."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 5, generator=g, dtype=torch.float64)
    t = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), 1)
    written = -(t * torch.log(torch.exp(scores) / torch.exp(scores).sum(1, keepdim=True))).sum(1).mean()
    assert softmax_loss(scores, t).item() == pytest.approx(written.item(), rel=1e-12)
    assert softmax_loss(scores, t).item() == pytest.approx(F.cross_entropy(scores, t).item(), rel=1e-12)
    y = torch.tensor([0, 1, 2, 3, 4, 0])  # one-hot soft targets give the hard-label loss
    assert softmax_loss(scores, F.one_hot(y, 5).double()).item() == pytest.approx(softmax_loss(scores, y).item())


def test_label_smoothing_of_soft_targets():
    """q = (1 - eps) t + eps/(k-1) (1 - t): still sums to 1, and equals the hard-label smoothing for one-hot t."""
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(4, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([1, 0, 4, 2])
    onehot = F.one_hot(y, 5).double()
    assert softmax_loss(scores, onehot, 0.1).item() == pytest.approx(softmax_loss(scores, y, 0.1).item(), rel=1e-12)
    t = 0.7 * onehot + 0.3 * F.one_hot(y.roll(1), 5).double()
    q = 0.9 * t + 0.1 / 4 * (1 - t)
    assert torch.allclose(q.sum(1), torch.ones(4, dtype=torch.float64))
    written = -(q * F.log_softmax(scores, 1)).sum(1).mean()
    assert softmax_loss(scores, t, 0.1).item() == pytest.approx(written.item(), rel=1e-12)


def test_distillation_loss_is_hintons_formula_with_temperature():
    """alpha T^2 sum_j p_j (log p_j - log q_j) / N + (1 - alpha) CE; p = teacher's softmax(z/T), q = softmax(s/T)."""
    torch.manual_seed(0)
    student, teacher_scores, y = torch.randn(6, 4), torch.randn(6, 4) * 3, torch.tensor([0, 1, 2, 3, 0, 1])
    for t, alpha in ((1.0, 0.5), (4.0, 0.9), (20.0, 1.0), (2.0, 0.0)):
        p = [[math.exp(z / t) / sum(math.exp(v / t) for v in row) for z in row] for row in teacher_scores.tolist()]
        q = [[math.exp(s / t) / sum(math.exp(v / t) for v in row) for s in row] for row in student.tolist()]
        kl = sum(pj * (math.log(pj) - math.log(qj)) for pr, qr in zip(p, q) for pj, qj in zip(pr, qr)) / 6
        ce = sum(-math.log(math.exp(r[c]) / sum(math.exp(v) for v in r)) for r, c in zip(student.tolist(), y)) / 6
        soft = torch.tensor(p)
        got = distillation_loss(student, y, soft, t, alpha).item()
        assert got == pytest.approx(alpha * t * t * kl + (1 - alpha) * ce, rel=1e-5)
        torch_kl = F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher_scores / t, 1), reduction="batchmean")
        assert got == pytest.approx(alpha * t * t * torch_kl.item() + (1 - alpha) * F.cross_entropy(student, y).item(),
                                    rel=1e-5)
        assert Distillation(softmax_loss, t, alpha)(student, (y, soft)).item() == pytest.approx(got)


def test_distillation_gradient_is_the_soft_minus_teacher_probabilities():
    """d/ds of T^2 KL = T (q_T - p_T) / N: the T^2 keeps the soft term's gradient from shrinking as 1/T^2."""
    torch.manual_seed(1)
    s = torch.randn(5, 3, requires_grad=True)
    p = torch.softmax(torch.randn(5, 3), 1)
    for t in (1.0, 5.0):
        (g,) = torch.autograd.grad(distillation_loss(s, torch.zeros(5, dtype=torch.long), p, t, 1.0), s)
        torch.testing.assert_close(g, t * (torch.softmax(s.detach() / t, 1) - p) / 5)
    with pytest.raises(ValueError, match="labels, teacher"):
        Distillation(softmax_loss, 2.0, 0.5)(s, torch.zeros(5, dtype=torch.long))
