"""TensorBoard events, read back with TensorBoard's own event reader."""

import pytest
import torch

from babysit.monitor.probes import HISTOGRAM_SAMPLE, LayerProbes
from babysit.monitor.tensorboard import TensorBoardLogger
from babysit.train.loop import fit
from tests.monitor.conftest import cfg, tiny_model

pytest.importorskip("tensorboard")


def test_scalars_histograms_and_images_are_readable(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from babysit.rundir import RunDir

    run = RunDir.create(tmp_path / "run")
    tb = TensorBoardLogger(run.path / "events")
    probes = LayerProbes(every=3, run=run, sink=tb, live=False)
    fit(tiny_model(), data, cfg(), run=run, callbacks=[tb, probes])
    acc = EventAccumulator(str(run.path / "events"), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss/train_step", "lr", "accuracy/train", "accuracy/val", "loss/val", "update_ratio/layer0",
            "dead/layer1", "act_std/layer4", "grad_norm/layer4"} <= set(tags["scalars"])
    assert {"activations/layer0", "gradients/layer0", "activations/layer1"} <= set(tags["histograms"])
    assert "filters/first_layer" in tags["images"]
    losses = acc.Scalars("loss/train_step")
    assert [e.step for e in losses] == list(range(1, 21))  # 10 steps per epoch, 2 epochs
    assert [e.step for e in acc.Scalars("accuracy/val")] == [10, 20]
    h = acc.Histograms("activations/layer0")[-1].histogram_value
    assert h.num == min(32 * 8 * 8 * 8, HISTOGRAM_SAMPLE) and h.min < h.max  # a sample of the layer's values
    assert acc.Images("filters/first_layer")[-1].width > 0


def test_losses_apart_config_hparams_and_layer_tags_by_spec_token(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from babysit.models.build import build
    from babysit.monitor.tensorboard import hparams, layer_tags
    from babysit.rundir import RunDir

    spec = "conv3-8 relu pool2 fc"
    run = RunDir.create(tmp_path / "run")
    tb = TensorBoardLogger(run.path / "events")
    probes = LayerProbes(every=5, run=run, sink=tb, live=False)
    torch.manual_seed(0)
    c = cfg(**{"model.spec": spec, "optim.weight_decay": 0.01})
    state = fit(build(spec, (1, 8, 8), 10), data, c, run=run, callbacks=[tb, probes])
    acc = EventAccumulator(str(run.path / "events"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/train_cost", "loss/train_data", "loss/reg", "loss/val", "update_ratio/0.conv3-8",
            "dead/1.relu", "grad_norm/3.fc", "hparam/best_val_acc"} <= scalars
    assert not any("layer" in t for t in scalars)
    cost, data_loss, reg = (acc.Scalars(t)[-1].value for t in ("loss/train_cost", "loss/train_data", "loss/reg"))
    assert reg > 0 and data_loss + reg == pytest.approx(cost, rel=1e-5)
    assert data_loss == pytest.approx(state.history[-1]["data_loss"], rel=1e-5)
    best = acc.Scalars("hparam/best_val_acc")[-1].value
    assert best == pytest.approx(state.best_val_acc)
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert 'spec = "conv3-8 relu pool2 fc"' in text and "weight_decay = 0.01" in text
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    plugins = {(v.tag, v.metadata.plugin_data.plugin_name) for f in (run.path / "events").iterdir()
               for e in EventFileLoader(str(f)).Load() for v in e.summary.value}
    assert {("_hparams_/experiment", "hparams"), ("_hparams_/session_start_info", "hparams"),
            ("custom_scalars__config__", "custom_scalars")} <= plugins  # the HParams tab and the loss layout
    hp = hparams(c)
    assert hp["optim.weight_decay"] == 0.01 and hp["model.spec"] == spec and "monitor.stats_every" not in hp
    assert layer_tags("[conv3-8 relu]*6 pool2 fc", ["0", "11", "12", "13"]) == {
        "0": "00.conv3-8", "11": "11.relu", "12": "12.pool2", "13": "13.fc"}  # zero-padded: TensorBoard sorts them
    assert layer_tags("auto", ["0"]) == {"0": "layer0"}


def test_without_the_tensorboard_extra_the_option_is_one_sentence(monkeypatch):
    import importlib.util

    from babysit import config as C
    from babysit.errors import BabysitError
    from babysit.start import check_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(BabysitError, match=r"pip install 'babysit\[tensorboard\]'"):
        check_config(C.apply_overrides(C.RunConfig(), {"monitor.tensorboard": True}))
    check_config(C.RunConfig())  # off by default: no need of the package
