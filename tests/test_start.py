"""The one run setup: plan_run checks a config against its data once and every entry point starts from it."""

import math

import pytest
import torch

from babysit import config as C
from babysit.errors import BabysitError
from babysit.experiment import train
from babysit.models.auto import LECTURE, auto_spec
from babysit.start import auto_batch_size, check_config, fresh_start, plan_run, resolve_device


def cfg(**over):
    return C.apply_overrides(C.RunConfig(), {"train.progress": "false", **over})


def test_plan_on_digits():
    plan = plan_run(cfg(**{"augment.pipeline": "flip-h,translate-1", "train.batch_size": "64"}))
    assert plan.num_classes == 10 and plan.input_shape == (1, 8, 8)
    assert plan.steps_per_epoch == -(-len(plan.splits.train) // 64) == 20
    assert str(plan.spec) == plan.cfg.model.spec == auto_spec((1, 8, 8))  # the name made concrete for this input
    assert [str(op) for op in plan.ops] == ["flip-h", "translate-1"]
    assert any("flip-h on digits" in w for w in plan.warnings)  # a mirrored 2 is no 2
    assert plan.device == resolve_device("auto")  # cuda where there is one


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


def test_auto_batch_is_a_400th_of_the_data_as_a_power_of_two_in_32_to_512():
    sizes = (20, 1293, 6400, 12800, 25600, 54001, 10**6)
    assert [auto_batch_size(n) for n in sizes] == [20, 32, 32, 32, 64, 128, 512]  # n // 400 = 0, 3, 16, 32, 64, 135


def test_auto_epochs_are_about_800_steps_in_2_to_30_a_multiple_of_the_restart_cycles():
    from babysit.train.loop import AUTO_STEPS, auto_epochs, resolve_length

    assert AUTO_STEPS == 800
    assert [auto_epochs(s) for s in (422, 400, 399, 45, 10, 5000)] == [2, 2, 3, 18, 30, 2]  # ceil(800 / s) in 2..30
    assert auto_epochs(45, cycles=4) == 20 and auto_epochs(422, at_least=5) == 5  # restarts; SWA epochs + 1
    mnist = resolve_length(C.RunConfig(), 54001)
    assert (mnist.train.batch_size, mnist.train.epochs) == (128, 2)  # 422 steps an epoch
    digits = resolve_length(C.RunConfig(), 1293)
    assert (digits.train.batch_size, digits.train.epochs) == (32, 20)  # 41 steps an epoch
    given = resolve_length(C.apply_overrides(C.RunConfig(), {"train.epochs": 7, "train.batch_size": 16}), 1293)
    assert (given.train.batch_size, given.train.epochs) == (16, 7)  # numbers given are kept
    swa = C.apply_overrides(C.RunConfig(), {"train.swa_epochs": 4, "schedule.name": "cosine-restarts",
                                            "schedule.cycles": 3})
    assert resolve_length(swa, 54001).train.epochs == 6  # at least 5 (SWA over 4, after 1), a multiple of 3


def test_auto_values_are_made_concrete_and_recorded(tmp_path):
    """spec=auto and batch_size=0 become this data's net and batch; config.toml holds them, not the names."""
    res = train(cfg(**{"train.epochs": "1", "monitor.checks": "false", "monitor.report": "false"}), out=tmp_path,
                name="r")
    recorded = C.load_toml(res.run.config)
    assert recorded.model.spec == auto_spec((1, 8, 8)) and recorded.train.batch_size == 32
    auto = plan_run(cfg(**{"train.epochs": "0"}))
    assert auto.cfg.train.epochs == math.ceil(800 / auto.steps_per_epoch)  # the epochs made concrete too
    assert (tmp_path / "r" / "spec.txt").read_text().strip() == recorded.model.spec
    lecture = plan_run(cfg(**{"model.spec": "lecture", "train.batch_size": "16"}))
    assert str(lecture.spec) == LECTURE and lecture.cfg.train.batch_size == 16  # a number given is kept


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_advice_names_the_option_of_the_command_used():
    with pytest.raises(BabysitError, match=r"no CUDA GPU is available; use --device=cpu\.$"):
        resolve_device("cuda", "--device")  # babysit eval's option, not train's
    with pytest.raises(BabysitError, match=r"use --train.device=cpu\.$"):
        resolve_device("cuda")


def test_options_the_rule_ignores_and_per_epoch_constants_in_steps_are_warned():
    from babysit.start import config_warnings

    adam = cfg(**{"optim.name": "adam", "optim.momentum": "0.5"})
    assert config_warnings(adam, 10) == ["optim.momentum=0.5 is ignored by optim.name=adam (only sgd read it); "
                                         "drop it, or choose one of those rules."]
    assert config_warnings(cfg(), 10) == []  # the defaults warn about nothing
    steps = cfg(**{"schedule.name": "step", "schedule.unit": "step"})
    (warning,) = config_warnings(steps, 40)
    assert "schedule.step_size=20 is the per-epoch default" in warning and "--schedule.step_size=800" in warning
    assert plan_run(steps).warnings[-1] == config_warnings(steps, plan_run(steps).steps_per_epoch)[0]


def test_a_momentum_that_one_cycle_replaces_is_warned():
    from babysit.start import config_warnings

    (warning,) = config_warnings(cfg(**{"optim.momentum": "0.5"}), 10)
    assert warning.startswith("optim.momentum=0.5 is replaced by one-cycle's momentum cycle (0.95 -> 0.85 -> 0.95)")
    (warning,) = config_warnings(cfg(**{"optim.name": "adamw", "optim.betas": "0.8,0.99"}), 10)
    assert "beta1=0.8 is replaced" in warning
    # kept fixed on request, vanilla SGD, and other schedules: nothing to say
    assert config_warnings(cfg(**{"optim.momentum": "0.5", "schedule.momentum_low": "0"}), 10) == []
    assert config_warnings(cfg(**{"optim.momentum": "0"}), 10) == []
    assert config_warnings(cfg(**{"optim.momentum": "0.5", "schedule.name": "cosine"}), 10) == []


def test_colour_inputs_are_stored_channels_last_once(tmp_path):
    """A batch drawn from NHWC storage is NHWC already: train_step's conversion copies nothing per step."""
    import numpy as np
    from PIL import Image


    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    for channels_last in (True, False):
        plan = plan_run(cfg(**{"data.name": str(tmp_path), "train.channels_last": channels_last,
                               "train.batch_size": 8}))
        _, data, _ = fresh_start(plan)
        assert data.x_train.shape[1] == 3
        assert data.x_train.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert data.x_val.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert data.x_train[torch.tensor([3, 1])].is_contiguous(memory_format=torch.channels_last) == channels_last
