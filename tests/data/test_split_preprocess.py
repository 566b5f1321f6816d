import pytest
import torch

from babysit.data.preprocess import Preprocessor
from babysit.data.sources import Dataset, ImageSet, load_dataset
from babysit.data.split import split_dataset, stratified_indices
from babysit.errors import BabysitError


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_split_is_stratified_disjoint_and_complete(digits):
    s = split_dataset(digits, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert len(s.train) + len(s.val) + len(s.test) == len(digits.train) == 1797
    whole = torch.bincount(digits.train.y, minlength=10).double() / len(digits.train)
    for part, frac in ((s.test, 0.2), (s.val, 0.1)):
        share = torch.bincount(part.y, minlength=10).double() / len(part)
        assert (share - whole).abs().max() < 0.01  # class balance kept
        assert len(part) == pytest.approx(frac * 1797, abs=10)


def test_split_indices_disjoint_and_seeded():
    y = torch.arange(100) % 4
    a = stratified_indices(y, [0.2, 0.1], seed=3)
    b = stratified_indices(y, [0.2, 0.1], seed=3)
    c = stratified_indices(y, [0.2, 0.1], seed=4)
    allidx = torch.cat(a)
    assert sorted(allidx.tolist()) == list(range(100))
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert [len(p) for p in a] == [20, 8, 72]  # per class of 25: round(5.0)=5, round(2.5)=2 (half to even)


def test_official_test_split_is_kept():
    x = torch.randint(0, 255, (60, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(60) % 3
    test = ImageSet(x[:9], y[:9], ["a", "b", "c"])
    ds = Dataset("toy", ImageSet(x, y, ["a", "b", "c"]), test, "memory")
    s = split_dataset(ds, 0.1, 0.2, 0)
    assert s.test is test and len(s.train) + len(s.val) == 60


def test_one_class_is_an_error():
    x = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)
    ds = Dataset("one", ImageSet(x, torch.zeros(10, dtype=torch.long), ["a"]), None, "memory")
    with pytest.raises(BabysitError, match="only one class"):
        split_dataset(ds)


@pytest.mark.parametrize("kind", ["none", "mean-image", "channel-mean", "channel-mean-std"])
def test_preprocess_round_trip_and_statistics(digits, kind):
    s = split_dataset(digits, seed=0)
    pre = Preprocessor.fit(s.train.x, kind)
    z = pre(s.train.x)
    assert torch.allclose(pre.invert(z), s.train.x.float(), atol=1e-3)
    x01 = s.train.x.double() / 255
    if kind == "mean-image":
        assert z.mean(0).abs().max() < 1e-5  # every pixel zero-centred over train
        assert torch.allclose(pre.mean.double(), x01.mean(0, keepdim=True), atol=1e-6)
    if kind in ("channel-mean", "channel-mean-std"):
        assert abs(z.mean().item()) < 1e-5
        assert pre.mean.item() == pytest.approx(x01.mean().item(), abs=1e-6)
    if kind == "channel-mean-std":
        assert z.std().item() == pytest.approx(1.0, abs=1e-3)
        assert pre.std.item() == pytest.approx(x01.std(unbiased=False).item(), rel=1e-5)


def test_statistics_see_only_the_training_split(digits):
    """The lecture's common pitfall: val/test must not leak into the mean."""
    s = split_dataset(digits, seed=0)
    pre = Preprocessor.fit(s.train.x, "mean-image")
    poisoned_val = s.val.x.clone().fill_(255)
    again = Preprocessor.fit(s.train.x, "mean-image")
    assert torch.equal(pre.mean, again.mean)
    everything = torch.cat([s.train.x, s.val.x, s.test.x])
    leaked = Preprocessor.fit(everything, "mean-image")
    assert not torch.allclose(pre.mean, leaked.mean)
    # val is transformed with train's statistics
    assert torch.allclose(pre(poisoned_val), (torch.ones_like(poisoned_val, dtype=torch.float32) - pre.mean))


def test_unknown_preprocess_is_an_error(digits):
    with pytest.raises(BabysitError, match="unknown preprocessing 'whiten'"):
        Preprocessor.fit(digits.train.x, "whiten")
