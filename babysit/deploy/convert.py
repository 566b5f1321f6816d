"""``babysit convert RUN --fully-conv``: a new run directory holding the run's network with every FC layer
written as the equivalent CONV (babysit.models.convert), the same weights reshaped.

The new directory is an ordinary run directory (config.toml with the converted spec, spec.txt, meta.json,
preprocess.safetensors, checkpoints/best.safetensors), so ``babysit eval``, ``predict`` and ``export`` take
it as they take the original; at the training size its scores are the original's. ``babysit.fully_conv``
gives the converted network itself, which slides over a larger image in one pass and returns a score map.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from babysit import config as C
from babysit.ckptfile import save_checkpoint
from babysit.deploy.export import check_images
from babysit.deploy.load import load_run_alone
from babysit.errors import BabysitError
from babysit.models.convert import fully_conv, fully_conv_spec, is_converted, total_stride
from babysit.models.shapes import infer_shapes, volume_str
from babysit.models.spec import FC, GlobalAvgPool, parse
from babysit.rundir import RunDir, atomic_write_bytes, atomic_write_text

VECTOR_KINDS = ("pca", "pca-white")  # preprocessing that leaves no image to slide over


@dataclass
class ConvertResult:
    path: Path
    spec_before: str
    spec_after: str
    changes: list[str]  # "layer 4: fc-32 over 3x3x8 -> conv3-32-p0"
    stride: int  # the net's total stride S
    input_shape: tuple[int, int, int]
    max_abs_diff: float  # max |converted - original| score at the training size
    images: int
    source: str

    def format_text(self) -> str:
        c, h, w = self.input_shape
        bigger = h + 2 * self.stride
        lines = [f"converted run {self.path}", f"  before: {self.spec_before}", f"  after:  {self.spec_after}"]
        lines += [f"  {change}" for change in self.changes]
        lines.append(f"total stride {self.stride}: a {bigger}x{bigger} image gives a 3x3 score map, one per "
                     f"{h}x{w} crop every {self.stride} pixels (exact where no conv pads: -p0)")
        lines.append(f"check: max |converted - original| score = {self.max_abs_diff:.2e} over {self.images} "
                     f"{self.source} at {h}x{w}")
        return "\n".join(lines)


def convert_run(path: str | Path, out: str | Path | None = None, weights: str = "best") -> ConvertResult:
    """Write the fully convolutional copy of a run (``out``: default RUN-fullyconv beside it)."""
    loaded = load_run_alone(path, weights, "cpu", what="convert")
    cfg, shape, k = loaded.cfg, loaded.input_shape, len(loaded.classes)
    if cfg.data.preprocess in VECTOR_KINDS:
        raise BabysitError(f"data.preprocess={cfg.data.preprocess} turns each image into a vector, so the net has no "
                           "image to slide over; convert a run trained on images (e.g. channel-mean-std).")
    spec = parse(cfg.model.spec)
    if is_converted(spec):
        raise BabysitError(f"the spec {spec} has no fc or gap layer: it is already fully convolutional.")
    pre_shape = loaded.pre.output_shape(shape)
    new_spec = fully_conv_spec(spec, pre_shape, k)
    infos, new_layers = infer_shapes(spec, pre_shape, k), new_spec.layers()
    changes = [f"layer {i.index}: {i.layer} over {volume_str(i.in_shape)} -> {new_layers[i.index]}"
               for i in infos if isinstance(i.layer, FC | GlobalAvgPool)]
    target = Path(out) if out is not None else loaded.run.path.with_name(loaded.run.path.name + "-fullyconv")
    converted = fully_conv(loaded.model, keep_flatten=True).eval()
    x, source = check_images(loaded)
    with torch.no_grad():
        pre = loaded.pre(x)
        diff = float((converted(pre) - loaded.model(pre)).abs().max())
    new = RunDir.create(target)
    with new.removed_on_error():
        atomic_write_text(new.config, C.dumps_toml(replace(cfg, model=replace(cfg.model, spec=str(new_spec)))))
        atomic_write_text(new.spec, str(new_spec) + "\n")
        meta = loaded.run.read_json(loaded.run.meta)
        new.write_json(new.meta, {**meta, "converted_from": str(loaded.run.path), "converted_weights": weights})
        atomic_write_bytes(new.preprocess, loaded.run.preprocess.read_bytes())
        save_checkpoint(new.best, {f"model.{k}": v for k, v in converted.state_dict().items()},
                        {"converted_from": str(loaded.run.path), "weights": weights, "fully_conv": True})
    return ConvertResult(new.path, str(spec), str(new_spec), changes, total_stride(new_spec), shape, diff, len(x),
                         source)
