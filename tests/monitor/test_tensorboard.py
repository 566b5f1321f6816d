"""TensorBoard events, read back with TensorBoard's own event reader."""

import pytest

from babysit.monitor.probes import LayerProbes
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
    assert h.num == 32 * 8 * 8 * 8 and h.min < h.max
    assert acc.Images("filters/first_layer")[-1].width > 0
