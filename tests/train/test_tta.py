"""Test-time augmentation: the views, the averaging, and the errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from babysit.errors import BabysitError
from babysit.train.tta import TTAViews, parse_tta, random_view_augment, tta_probabilities


def names(text: str) -> list[str]:
    return [n for n, _ in parse_tta(text)[0]]


def test_views_are_the_product_of_the_factors():
    assert names("flip") == ["original", "flip-h"]
    assert names("translate") == ["original", "shift(1,0)", "shift(-1,0)", "shift(0,1)", "shift(0,-1)"]
    assert len(names("flip,translate-2")) == 10  # like AlexNet's 10 crops
    assert "flip-h+shift(-2,0)" in names("flip,translate-2")
    views, draws = parse_tta("random-8")
    assert names("random-8") == ["original"] and draws == 8


@pytest.mark.parametrize("text", ["spin", "flip-2", "random", "translate-x", "flip;translate"])
def test_unknown_views_are_clear_errors(text):
    with pytest.raises(BabysitError, match="test-time augmentation"):
        parse_tta(text)


class Probe(nn.Module):
    """Scores that remember their input: class 0 gets the mean of the left half, class 1 of the right half."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x)
        w = x.shape[-1]
        return torch.stack([x[..., : w // 2].mean((1, 2, 3)), x[..., w // 2 :].mean((1, 2, 3))], 1) + self.w


def test_probabilities_are_the_mean_over_the_views():
    """p = 1/V sum_v softmax(f(view_v(x))), and the original view is the untouched image."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 1, 6, 6), dtype=torch.uint8, generator=g)
    pre = lambda p: p / 255.0
    model = Probe()
    probs = tta_probabilities(model, pre, x, TTAViews(parse_tta("flip")[0]), batch_size=2)
    plain = model(pre(x.float())).softmax(1)
    mirrored = model(pre(x.float().flip(-1))).softmax(1)
    assert torch.allclose(probs, (plain + mirrored) / 2, atol=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(5))
    assert model.training  # mode restored


def test_random_views_replay_the_training_pipeline_without_mixing():
    aug = random_view_augment(("translate-1", "cutout-2", "mixup-0.2"), 10, 0, "edge", 0.0)
    assert list(aug.ops) == ["translate"]
    with pytest.raises(BabysitError, match="no geometric or photometric"):
        random_view_augment(("mixup-0.2",), 10, 0, "constant", 0.0)
    x = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8)
    model = Probe()
    views = TTAViews(parse_tta("random-3")[0], aug, 3)
    assert len(views) == 4
    a = tta_probabilities(model, lambda p: p / 255, x, views)
    b = tta_probabilities(model, lambda p: p / 255, x, views)
    assert torch.equal(a, b)  # seeded
    assert len(model.inputs) == 8  # 4 views (original + 3 draws), twice
