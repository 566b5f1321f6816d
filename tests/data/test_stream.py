"""Streaming (``data.stream=on``): scikit-learn's digits written out as PNGs, decoded once by DataLoader workers
into a memory-mapped uint8 cache. A streamed run must equal the in-memory one bit for bit: the same bytes (one
decoder), the same split, permutation and augmentation draws, the same preprocessing statistics (one chunked
pass either way) applied elementwise per batch instead of to the whole split at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from babysit import config as C
from babysit.data import stream
from babysit.data.preprocess import Preprocessor
from babysit.data.stream import MappedImages, StreamOptions, pixel_means, use_stream
from babysit.errors import BabysitError
from babysit.rundir import RunDir
from babysit.start import fresh_start, plan_run
from babysit.train.loop import fit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 1,797 digits as 8x8 grayscale PNGs in root/<class>/."""
    root = tmp_path_factory.mktemp("pngs")
    d = load_digits()
    for i, (im, y) in enumerate(zip(np.rint(d.images * (255 / 16)).astype(np.uint8), d.target, strict=True)):
        (root / str(y)).mkdir(exist_ok=True)
        Image.fromarray(im).save(root / str(y) / f"{i:04d}.png")
    return root


def _cfg(folder: Path, cache: Path, mode: str, **over: object) -> C.RunConfig:
    base = {"data.name": str(folder), "data.stream": mode, "data.cache": str(cache), "data.workers": 2,
            "model.spec": "conv3-8 relu pool2 fc", "train.epochs": 2, "train.batch_size": 64, "train.progress": False,
            "train.threads": 1, "checkpoint.every": 5, "augment.pipeline": ("translate-1", "cutout-3")}
    return C.apply_overrides(C.RunConfig(), {**base, **over})


def test_a_streamed_run_equals_the_in_memory_run(folder, tmp_path):
    results = {}
    for mode in ("off", "on"):
        plan = plan_run(_cfg(folder, tmp_path / "cache", mode))
        model, data, augment = fresh_start(plan)
        state = fit(model, data, plan.cfg, augment=augment)
        results[mode] = (plan, data, model.state_dict(), state.history)
    (p_off, d_off, w_off, h_off), (p_on, d_on, w_on, h_on) = results["off"], results["on"]
    assert p_off.splits.train.store is None and p_on.splits.train.store is not None
    assert isinstance(d_on.x_train, MappedImages) and isinstance(d_on.x_raw, MappedImages)
    for split in ("train", "val", "test"):  # the same bytes, in the same order
        assert torch.equal(p_off.splits.get(split).x, p_on.splits.get(split).x), split
    assert torch.equal(d_off.x_val, d_on.x_val[:])  # preprocessed per batch == preprocessed whole
    for k, v in w_off.items():
        assert torch.equal(v, w_on[k]), k
    assert [r["val_acc"] for r in h_off] == [r["val_acc"] for r in h_on]
    assert h_on[-1]["val_acc"] > 0.6  # it learns (chance: 0.1); 2 epochs of a tiny net


def test_statistics_of_the_streaming_pass_equal_the_in_memory_ones(folder, tmp_path):
    on = plan_run(_cfg(folder, tmp_path / "cache", "on")).splits.train.x
    off = plan_run(_cfg(folder, tmp_path / "cache", "off")).splits.train.x
    for kind in ("channel-mean-std", "pca"):
        a = Preprocessor.fit(on, kind, chunk=100)  # 100 images at a time from the memory map
        b = Preprocessor.fit(off, kind)
        assert torch.equal(a.mean, b.mean) or torch.allclose(a.mean, b.mean, rtol=0, atol=1e-7), kind
        assert torch.allclose(a.std, b.std, rtol=0, atol=1e-6) and torch.allclose(a.basis.abs(), b.basis.abs(),
                                                                                 atol=1e-4), kind
    pixels = off.numpy().astype(np.float64) / 255.0  # the notes' formulas, written out
    fitted = Preprocessor.fit(on, "channel-mean-std", chunk=100)
    assert fitted.mean.item() == pytest.approx(pixels.mean(), abs=1e-6)
    assert fitted.std.item() == pytest.approx(pixels.std(), abs=1e-6)
    assert pixel_means(on).item() == pytest.approx(pixels.mean() * 255, rel=1e-6)  # exact integer sums


def test_the_cache_is_reused_by_a_second_run(folder, tmp_path, monkeypatch, capsys):
    cfg = _cfg(folder, tmp_path / "cache", "on")
    first = plan_run(cfg)
    assert "decoding 1,797 images (1x8x8)" in capsys.readouterr().out
    files = sorted(p.name for p in next((tmp_path / "cache").iterdir()).iterdir())
    assert files[:3] == ["cache.json", "images.u8", "lock"] and len(files) == 6  # + the train, val and test rows

    def no_decoding(*args: object) -> None:
        raise AssertionError("the cache should have been read, not filled")

    monkeypatch.setattr(stream, "_fill", no_decoding)
    second = plan_run(cfg)
    assert "decoding" not in capsys.readouterr().out
    assert torch.equal(first.splits.train.x, second.splits.train.x)
    # every epoch reads the same memory map: the split is a view of a file of exactly its bytes
    rows = next((tmp_path / "cache").iterdir())
    sizes = sorted(p.stat().st_size for p in rows.glob("rows-*.u8"))
    assert sizes == sorted(len(second.splits.get(s)) * 64 for s in ("train", "val", "test"))


def test_a_killed_first_pass_continues_where_it_stopped(folder, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = stream.read_image

    def dies_after_600(*args: object, **kw: object) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] > 600:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(stream, "read_image", dies_after_600)
    monkeypatch.setattr(stream, "_SAVE_EVERY", 0.0)  # save progress after every batch of 256
    cfg = _cfg(folder, tmp_path / "cache", "on", **{"data.workers": 0})
    with pytest.raises(KeyboardInterrupt):
        plan_run(cfg)
    cache = next((tmp_path / "cache").iterdir())
    assert not (cache / "images.u8").exists() and (cache / "images.u8.partial").exists()
    monkeypatch.setattr(stream, "read_image", real)
    capsys.readouterr()
    plan = plan_run(cfg)
    assert "decoding 1,285 images (1x8x8) into the cache" in capsys.readouterr().out  # 1797 - 2 batches of 256
    off = plan_run(_cfg(folder, tmp_path / "cache", "off"))
    assert torch.equal(plan.splits.train.x, off.splits.train.x)


class _StopAfter:
    def __init__(self, n: int) -> None:
        self.n = n

    def on_batch_end(self, state: object) -> None:
        if state.step == self.n:  # type: ignore[attr-defined]
            raise KeyboardInterrupt


def test_resume_is_exact_when_streaming(folder, tmp_path):
    cfg = _cfg(folder, tmp_path / "cache", "on", **{"model.spec": "conv3-8 relu pool2 dropout-0.3 fc"})
    plan = plan_run(cfg)
    model, data, augment = fresh_start(plan)
    fit(model, data, plan.cfg, RunDir.create(tmp_path / "whole"), augment=augment)
    run = RunDir.create(tmp_path / "cut")
    cut, data, augment = fresh_start(plan)
    with pytest.raises(KeyboardInterrupt):
        fit(cut, data, plan.cfg, run, callbacks=[_StopAfter(27)], augment=augment)  # 20 steps/epoch: mid-epoch 2
    torch.manual_seed(99)  # whatever happens in between must not matter
    resumed, data, augment = fresh_start(plan_run(cfg))
    fit(resumed, data, plan.cfg, run, resume=True, augment=augment)
    for k, v in model.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_auto_streams_only_when_memory_is_short(monkeypatch):
    monkeypatch.setattr(stream, "available_memory", lambda: 10**9)
    # 60,000 MNIST images: 47 MB uint8, about 8 x that in memory = 376 MB < half of 1 GB -> in memory
    assert not use_stream("auto", 60_000, (1, 28, 28))
    assert use_stream("auto", 80_000, (1, 28, 28))  # 502 MB estimated > 0.5 GB
    assert use_stream("on", 10, (1, 8, 8)) and not use_stream("off", 10**9, (3, 224, 224))
    assert stream.IN_MEMORY_FACTOR * 60_000 * 784 == pytest.approx(376e6, rel=0.01)


def test_streaming_a_named_set_is_refused(tmp_path):
    with pytest.raises(BabysitError, match="data.stream=on reads image folders and CSV lists"):
        plan_run(C.apply_overrides(C.RunConfig(), {"data.stream": "on", "data.cache": str(tmp_path)}))


def test_options_dataclass_matches_the_config():
    d = C.DataConfig()
    assert (d.stream, d.cache, d.workers) == ("auto", "", 2)
    assert StreamOptions().mode == "off"  # load_dataset without options decodes into memory, as before


def test_running_out_of_memory_in_memory_says_to_stream(monkeypatch):
    def no_memory(self: Preprocessor, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 460988864 bytes.")

    plan = plan_run(C.apply_overrides(C.RunConfig(), {"train.threads": 1}))
    monkeypatch.setattr(Preprocessor, "__call__", no_memory)
    with pytest.raises(BabysitError, match=r"do not fit in memory; use --data.stream=on"):
        fresh_start(plan)


@pytest.mark.parametrize("damage", [b"{not json", b'{"shape": "1797x1x8x8"}', b'{"shape": [1797, 1, 8, 8.5]}',
                                    b"\xff\xfe", b"[]"])
def test_a_damaged_cache_record_says_to_delete_the_folder(folder, tmp_path, damage):
    cfg = _cfg(folder, tmp_path / "cache", "on")
    plan_run(cfg)
    cache = next((tmp_path / "cache").iterdir())
    (cache / "cache.json").write_bytes(damage)
    with pytest.raises(BabysitError, match=r"cache\.json is damaged; delete the folder .* decodes the images again"):
        plan_run(cfg)
