"""The one run setup: plan_run checks a config against its data once and every entry point starts from it."""

import pytest
import torch

from babysit import config as C
from babysit.errors import BabysitError
from babysit.experiment import train
from babysit.start import check_config, fresh_start, plan_run


def cfg(**over):
    return C.apply_overrides(C.RunConfig(), {"train.progress": "false", **over})


def test_plan_on_digits():
    plan = plan_run(cfg(**{"augment.pipeline": "flip-h,translate-1", "train.batch_size": "64"}))
    assert plan.num_classes == 10 and plan.input_shape == (1, 8, 8)
    assert plan.steps_per_epoch == -(-len(plan.splits.train) // 64) == 20
    assert str(plan.spec) == C.DEFAULT_SPEC
    assert [str(op) for op in plan.ops] == ["flip-h", "translate-1"]
    assert any("flip-h on digits" in w for w in plan.warnings)  # a mirrored 2 is no 2
    assert plan.device == torch.device("cpu")


def test_config_mistakes_are_found_before_the_data_is_read():
    """A bad spec is reported even when the data set does not exist: the cheap checks run first."""
    bad = cfg(**{"data.name": "/no/such/folder", "model.spec": "conv3-8 bogus fc"})
    with pytest.raises(BabysitError, match="bogus"):
        plan_run(bad)
    with pytest.raises(BabysitError, match="bogus"):
        check_config(bad)


@pytest.mark.parametrize(("over", "words"), [
    ({"train.batch_size": "5000"}, "train.batch_size=5000 is larger than the 1259 training images"),
    ({"model.spec": "conv3-8-s3-p0 fc", "data.size": "7"}, "is not an integer"),
    ({"data.preprocess": "pca", "model.spec": "conv3-8 relu fc"}, "must be fully connected"),
    ({"optim.name": "sgdd"}, "sgdd"),
    ({"augment.pipeline": "mixup-0.2", "loss.name": "svm"}, "soft labels"),
])
def test_each_mistake_is_refused_before_a_run_directory_exists(tmp_path, over, words):
    with pytest.raises(BabysitError, match=words):
        train(cfg(**over), out=tmp_path, name="r")
    assert not (tmp_path / "r").exists()


def test_fresh_start_is_seeded_and_on_the_plan():
    plan = plan_run(cfg(**{"augment.pipeline": "translate-1"}))
    m1, d1, a1 = fresh_start(plan)
    m2, d2, _ = fresh_start(plan)
    for p, q in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(p, q)
    assert d1.x_train.shape == (len(plan.splits.train), 1, 8, 8) and d1.x_raw is not None
    assert d1.x_raw.dtype == torch.uint8 and torch.equal(d1.x_train, d2.x_train)
    assert a1 is not None and [str(op) for op in plan.ops] == ["translate-1"]
    _, d3, a3 = fresh_start(plan_run(cfg()))
    assert a3 is None and d3.x_raw is None
