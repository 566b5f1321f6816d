"""``babysit export RUN --format onnx|torchscript``: one file that takes raw pixels and returns probabilities.

The exported graph is  pixels (N, C, H, W) float 0..255  ->  preprocessing  ->  network, BN folded  ->  softmax.
Every preprocessing kind is a fixed linear map after scaling and centring, so it goes into the graph as it
is applied in training (babysit.data.preprocess): (x/255 - mean)/std; zca, pca and pca-white multiply the
flattened centred image by a matrix (pca's (k, 1, 1) output is what the run's fc net takes);
patch-white is a fixed conv after replicate padding. Resizing and greying stay outside (give the file images
of the run's size and channels, as ``babysit predict`` makes them).

The file is checked before it is reported: its outputs (onnxruntime, or the TorchScript file loaded back)
against the run's own network in torch on the run's test images, max |difference| <= 1e-4.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from babysit.data.preprocess import BASIC, Preprocessor
from babysit.data.split import prepare_data
from babysit.deploy.load import LoadedRun, load_run_alone
from babysit.errors import BabysitError
from babysit.models.fold import count_bn, fold_bn

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4  # largest |exported - torch| probability accepted as the same model
CHECK_IMAGES = 500  # test images the check runs on (all of them when fewer)
INSTALL = "pip install 'babysit[export]' (or: pip install onnx onnxscript onnxruntime)"


class PixelPreprocess(nn.Module):
    """A fitted :class:`Preprocessor` as graph operations on raw pixels 0..255 (the same formulas, float32)."""

    def __init__(self, pre: Preprocessor, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        mean, std, weight = pre._tensors(torch.device("cpu"))
        self.kind = pre.kind
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("std", std.float().clone())
        self.register_buffer("weight", weight.float().clone())
        self.out_shape = pre.output_shape(input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x / 255.0 - self.mean
        if self.kind in BASIC:
            return z / self.std
        if self.kind == "patch-white":  # replicate k-1 pixels right and bottom, as in training
            k = self.weight.shape[-1]
            return F.conv2d(F.pad(z, (0, k - 1, 0, k - 1), mode="replicate"), self.weight)
        return (z.flatten(1) @ self.weight).reshape(-1, *self.out_shape)


class RawPixelNet(nn.Module):
    """pixels (N, C, H, W) float 0..255 -> class probabilities (N, K): preprocessing, folded net, softmax."""

    def __init__(self, pre: PixelPreprocess, net: nn.Module) -> None:
        super().__init__()
        self.pre, self.net = pre, net

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(self.pre(pixels)).softmax(1)


def raw_pixel_net(loaded: LoadedRun) -> RawPixelNet:
    """The run's preprocessing and network (BN folded, eval mode) as one module on the CPU."""
    net = fold_bn(loaded.model.cpu())
    return RawPixelNet(PixelPreprocess(loaded.pre, loaded.input_shape), net).eval()


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # max |exported - torch| over the check images' probabilities
    images: int  # how many images the check ran on
    source: str  # where they came from
    folded_bn: int  # BN layers folded into the conv/fc before them
    bn_left: int  # BN layers that follow no conv/fc, kept as they are
    input_shape: tuple[int, int, int]
    classes: list[str]

    def format_text(self) -> str:
        c, h, w = self.input_shape
        return (f"exported {self.path} ({self.format}): input 'pixels' float32 (N, {c}, {h}, {w}) raw 0..255 -> "
                f"output 'probabilities' (N, {len(self.classes)}); preprocessing in the graph, {self.folded_bn} "
                f"batch-norm layer(s) folded" + (f", {self.bn_left} kept" if self.bn_left else "") + "\n"
                f"check: max |{'onnxruntime' if self.format == 'onnx' else 'torchscript'} - torch| = "
                f"{self.max_abs_diff:.2e} over {self.images} {self.source} (tolerance {TOLERANCE:g})")


def check_images(loaded: LoadedRun) -> tuple[torch.Tensor, str]:
    """The run's test images when its data still loads, else seeded random pixels (said so)."""
    try:
        _, splits = prepare_data(loaded.cfg)
        if tuple(splits.test.x.shape[1:]) == loaded.input_shape:
            return splits.test.x[:CHECK_IMAGES], f"test images of {loaded.cfg.data.name}"
    except BabysitError:
        pass
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (64, *loaded.input_shape), generator=g, dtype=torch.uint8), \
        "random images (the run's data could not be loaded)"


def export_run(path: str | Path, fmt: str = "onnx", out: str | Path | None = None,
               weights: str = "best") -> ExportResult:
    """Export a run directory's network with its preprocessing; see the module docstring."""
    if fmt not in FORMATS:
        raise BabysitError(f"unknown export format {fmt!r}; use --format onnx or --format torchscript.")
    if fmt == "onnx":
        _need_onnx()
    loaded = load_run_alone(path, weights, "cpu", what="export")
    target = Path(out) if out is not None else loaded.run.path / ("model.onnx" if fmt == "onnx" else "model.pt")
    if target.is_dir():
        raise BabysitError(f"--out {target} is a folder; give a file name, e.g. {target / 'model.' + fmt[:4]}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    net = raw_pixel_net(loaded)
    x, source = check_images(loaded)
    with torch.no_grad():
        reference = loaded.probabilities(x).numpy()  # the run's own network and Preprocessor, unfolded
    example = x[:2].float()
    tmp = target.with_name(f".{target.name}.tmp")
    if fmt == "onnx":
        got = _export_onnx(net, example, tmp, x.float().numpy())
    else:
        got = _export_torchscript(net, example, tmp, x.float())
    tmp.replace(target)  # the file appears whole, never half-written
    return ExportResult(target, fmt, float(np.abs(got - reference).max()), len(x), source, net.net.folded_bn,
                        count_bn(net.net), loaded.input_shape, loaded.classes)


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise BabysitError(f"exporting to ONNX needs onnx, onnxscript and onnxruntime ({e.name} is missing); "
                           f"install them with {INSTALL}.") from None


def _export_onnx(net: RawPixelNet, example: torch.Tensor, path: Path, check: np.ndarray) -> np.ndarray:
    import onnxruntime

    batch = torch.export.Dim("batch")
    quiet = logging.getLogger("torch.onnx")  # its "torchvision is not installed" lines are no news here
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), str(path), input_names=["pixels"], output_names=["probabilities"],
                              dynamic_shapes=({0: batch},), dynamo=True, external_data=False, verbose=False)
    finally:
        quiet.setLevel(level)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"pixels": check.astype(np.float32)})[0]


def _export_torchscript(net: RawPixelNet, example: torch.Tensor, path: Path, check: torch.Tensor) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, example)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return loaded(check).numpy()
