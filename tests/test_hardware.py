"""train.threads / channels_last / precision / compile / deterministic: what each does, on this CPU."""

import pytest
import torch

from babysit import config as C
from babysit.errors import BabysitError
from babysit.start import cpu_threads, set_hardware
from babysit.train.loop import Update, fit, train_step
from tests.train.test_loop import cfg, digits_data, small_model


@pytest.fixture(autouse=True)
def restore_torch_settings():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)


def test_threads_come_from_the_option_then_omp_then_the_cores(monkeypatch):
    assert cpu_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads(0) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpu_threads(0) == len(__import__("os").sched_getaffinity(0))
    set_hardware(C.apply_overrides(C.RunConfig(), {"train.threads": "1"}), torch.device("cpu"))
    assert torch.get_num_threads() == 1


def test_bf16_is_refused_on_the_cpu():
    with pytest.raises(BabysitError, match="train.precision=bf16 autocasts on CUDA"):
        set_hardware(C.apply_overrides(C.RunConfig(), {"train.precision": "bf16"}), torch.device("cpu"))


def test_deterministic_turns_torch_deterministic_algorithms_on_and_off():
    set_hardware(C.apply_overrides(C.RunConfig(), {"train.deterministic": "true"}), torch.device("cpu"))
    assert torch.are_deterministic_algorithms_enabled()
    set_hardware(C.RunConfig(), torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled()


def test_unknown_precision_or_compile_mode_is_one_sentence():
    with pytest.raises(BabysitError, match="train.precision must be one of fp32, bf16"):
        C.apply_overrides(C.RunConfig(), {"train.precision": "fp16"})
    with pytest.raises(BabysitError, match="train.compile must be one of off, default"):
        C.apply_overrides(C.RunConfig(), {"train.compile": "fast"})


def test_channels_last_trains_the_same_network():
    """NHWC changes the memory layout, not the maths: the same losses up to float rounding."""
    data = digits_data(n_train=128)
    a, b = small_model(), small_model()
    ua = Update.from_config(a, cfg())
    ub = Update.from_config(b, cfg(**{"train.channels_last": "true"}))
    assert b[0].weight.is_contiguous(memory_format=torch.channels_last)
    for _ in range(5):
        la = train_step(ua, data.x_train, data.y_train, 0.05)
        lb = train_step(ub, data.x_train, data.y_train, 0.05)
        torch.testing.assert_close(la.total(), lb.total(), rtol=1e-4, atol=1e-5)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_compile_keeps_the_checkpoint_keys_and_the_losses(tmp_path):
    """torch.compile (inductor, needs a C compiler) in place: the state_dict keys stay the model's own."""
    data = digits_data(n_train=128, n_val=64)
    plain, compiled = small_model(), small_model()
    keys = list(plain.state_dict())
    sa = fit(plain, data, cfg(**{"train.epochs": 1}))
    sb = fit(compiled, data, cfg(**{"train.epochs": 1, "train.compile": "default"}))
    assert list(compiled.state_dict()) == keys
    assert sa.history[-1]["cost"] == pytest.approx(sb.history[-1]["cost"], rel=1e-3)
