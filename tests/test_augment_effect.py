"""Slow: augmentation on real Fashion-MNIST narrows the train/val gap (`make test-slow`)."""

import pytest

from babysit import config as C
from babysit.data.locate import find_dataset
from babysit.experiment import train


@pytest.mark.slow
@pytest.mark.skipif(find_dataset("fashion-mnist") is None, reason="Fashion-MNIST is not on this machine "
                    "(`babysit data get fashion-mnist`)")
def test_flip_and_translate_narrow_the_gap_on_fashion_mnist(tmp_path):
    """Same data, model, seed and epochs; only augment.pipeline differs. The gap is train accuracy (1,000
    unaugmented training images) minus val accuracy at the last epoch."""
    base = {"data.name": "fashion-mnist", "data.limit": 3000, "train.epochs": 12, "train.progress": False,
            "model.spec": "[conv3-16 relu]*2 pool2 [conv3-32 relu]*2 pool2 fc-128 relu dropout-0.5 fc",
            "monitor.checks": False, "monitor.report": False, "monitor.stats_every": 0,
            "optim.lr": 0.05}  # a net without BN: the default peak 0.2 is for the BN auto net (README)
    gaps = {}
    for name, pipeline in (("plain", ""), ("augmented", "flip-h,translate-2")):
        cfg = C.apply_overrides(C.RunConfig(), {**base, "augment.pipeline": pipeline})
        last = train(cfg, out=tmp_path, name=name).state.history[-1]
        gaps[name] = last["train_acc"] - last["val_acc"]
    print(f"train - val gap: {gaps}")
    assert gaps["augmented"] < gaps["plain"] - 0.02, gaps
