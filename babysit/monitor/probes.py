"""Live layer statistics: a :class:`LayerProbes` callback for fit(), cheap enough to leave on.

Every ``every`` steps one training step is probed. Hooks are attached for that step only:

- per layer output y (conv, fc, activations, batch norm): mean and std; for ReLU the fraction of
  dead units (never positive over the batch; a conv unit is a channel, since its filter is what
  dies); for tanh/sigmoid the saturated fraction (|y| > 0.99, for sigmoid |2y - 1| > 0.98);
  the RMS of the gradient dL/dy flowing back into it; histograms of y and dL/dy
- per weighted layer: ||W||, ||dL/dW|| and the update/weight ratio ||W_after - W_before|| / ||W_before||
  of that very step (the notes want it near 1e-3)
- the first layer's filters (or, for a first fc layer, its weights as image templates) as a PNG

Records go to the run directory's stats folder (``RunDir.layers``, ``RunDir.histograms``), bounded in
size whatever the run length (see :mod:`babysit.monitor.store`), and to TensorBoard when a logger is given.
"""

from __future__ import annotations

import io
import math
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from babysit.ckptfile import load_checkpoint, save_checkpoint
from babysit.config import MonitorConfig
from babysit.log import get_logger
from babysit.models.build import DepthConcat, ResidualBlock
from babysit.monitor.store import Thinned
from babysit.review.stats import read_json_records
from babysit.rundir import RunDir, atomic_write_bytes
from babysit.train.loop import LoopState

_log = get_logger(__name__)

RECORDS_CAPACITY = 256
"""Probe records kept in RunDir.layers."""
HISTOGRAMS_CAPACITY = 16
"""Histogram snapshots kept in RunDir.histograms."""
HISTOGRAM_BINS = 32
HISTOGRAM_SAMPLE = 1 << 14
"""Values per tensor that a histogram counts (evenly strided); its shape needs no more, the cost does."""
HISTOGRAM_RANGE = (0.005, 0.995)
"""The quantiles a histogram spans: a few outliers no longer squeeze the bulk into one bin."""
FIRST_LAYER_MAX = 1 << 20
"""The first layer's weights are kept raw for the report (stats/first_layer) up to this many values."""
SATURATION = 0.99
"""|tanh| above this (|2*sigmoid - 1| above 2*this - 1) counts as saturated."""

_KINDS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.Conv2d, "conv"), (nn.Linear, "fc"), (nn.ReLU, "relu"), (nn.LeakyReLU, "lrelu"), (nn.ELU, "elu"),
    (nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid"), (nn.BatchNorm1d, "bn"), (nn.BatchNorm2d, "bn"))
WEIGHTED = ("conv", "fc")


def layer_kind(module: nn.Module) -> str:
    """conv | fc | relu | lrelu | elu | tanh | sigmoid | bn, or the class name in lower case."""
    for cls, kind in _KINDS:
        if isinstance(module, cls):
            return kind
    return type(module).__name__.lower()


def probe_layers(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, module, kind) of the layers worth probing: the spec's numbered layers, inside a res[ ] or
    cat[ ] group its layers by module path ("5.body.0", "5.shortcut.0", "7.1.0"), or, for any other
    model, its leaf modules; those that are conv, fc, an activation or batch norm."""
    named: list[tuple[str, nn.Module]] = []
    for n, m in model.named_children():
        if n.isdigit() and isinstance(m, ResidualBlock | DepthConcat):
            named += [(f"{n}.{s}", leaf) for s, leaf in m.named_modules() if s and not list(leaf.children())]
        elif n.isdigit():
            named.append((n, m))
    if not named:
        named = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    kinds = {k for _, k in _KINDS} | {"maxoutunit"}
    return [(n, m, layer_kind(m)) for n, m in named if layer_kind(m) in kinds]


def histogram(t: torch.Tensor, bins: int = HISTOGRAM_BINS, sample: int = HISTOGRAM_SAMPLE,
              span: tuple[float, float] = HISTOGRAM_RANGE
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lo, hi, counts, extra) of ``t`` in ``bins`` equal bins over a robust range, without leaving the device.

    The counts come from at most ``sample`` evenly strided values. [lo, hi] is their ``span`` quantiles
    (0.5 % and 99.5 %): the values outside are counted in the first and last bin, so a few huge gradients
    no longer make the histogram one spike. Where those quantiles coincide (a ReLU output that is 0 almost
    everywhere) the range is [min, max]. ``extra`` = (values below lo, values above hi, min, max) of the
    sample, so a reader knows how much the edge bins hold. No host sync: ``torch.bincount`` on a GPU reads
    its input's maximum back to size the output, which stalls the launch queue once per histogram;
    comparing against each bin index keeps it on the device.
    """
    flat = t.detach().reshape(-1)
    part = flat[:: max(1, -(-flat.numel() // sample))].float()
    ordered = part.sort().values  # quantiles by index (numpy's "linear"): positions are known on the host
    q = [_quantile(ordered, s) for s in span]
    vmin, vmax = ordered[0], ordered[-1]
    narrow = q[1] > q[0]
    lo, hi = torch.where(narrow, q[0], vmin), torch.where(narrow, q[1], vmax)
    idx = ((part - lo) / (hi - lo).clamp_min(1e-12) * bins).floor().clamp_(0, bins - 1).long()
    counts = (idx[:, None] == torch.arange(bins, device=idx.device)).sum(0)  # (bins,), one pass, no sync
    extra = torch.stack([(part < lo).sum().float(), (part > hi).sum().float(), vmin, vmax])
    return lo, hi, counts, extra


def _quantile(ordered: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile of sorted values, interpolated linearly between neighbours (numpy's default)."""
    pos = q * (ordered.numel() - 1)
    i = min(int(pos), ordered.numel() - 1)
    j = min(i + 1, ordered.numel() - 1)
    return ordered[i] + (ordered[j] - ordered[i]) * (pos - i)


def _activation_stats(kind: str, a: torch.Tensor) -> dict[str, torch.Tensor]:
    stats = {"act_mean": a.mean(), "act_std": a.std() if a.numel() > 1 else a.new_zeros(())}
    if kind == "relu":
        positive = a > 0
        alive = positive.flatten(2).any(2).any(0) if a.dim() > 2 else positive.any(0)  # per channel / feature
        stats["dead"] = 1 - alive.float().mean()
    elif kind == "tanh":
        stats["saturated"] = (a.abs() > SATURATION).float().mean()
    elif kind == "sigmoid":
        stats["saturated"] = ((a - 0.5).abs() > SATURATION - 0.5).float().mean()
    return stats


class LayerSink(Protocol):
    """Where probe results go besides stats/ (the TensorBoard logger)."""

    def log_layers(self, record: dict[str, Any], hist: dict[str, Any] | None) -> None: ...
    def log_image(self, tag: str, image: np.ndarray, step: int) -> None: ...


class LayerProbes:
    """Callback: layer statistics every ``every`` steps, kept in ``run``'s stats/ and sent to ``sink``."""

    def __init__(self, every: int = MonitorConfig().stats_every, run: RunDir | None = None,
                 sink: LayerSink | None = None, live: bool = True) -> None:
        self.every, self.run, self.sink, self.live = every, run, sink, live
        self.enabled = True  # see set_enabled
        self.records = Thinned(RECORDS_CAPACITY)
        self.histograms = Thinned(HISTOGRAMS_CAPACITY)
        self.layers: list[tuple[str, nn.Module, str]] = []
        self.latest: dict[str, Any] | None = None
        self._hooks: list[Any] = []
        self._stats: dict[str, dict[str, torch.Tensor]] = {}
        self._hist: dict[str, dict[str, tuple[torch.Tensor, ...]]] = {}
        self._before: dict[str, torch.Tensor] = {}
        self._want_hist = False
        self._step = 0
        self._printed = -1

    # -- fit() hooks ---------------------------------------------------------------------------
    def on_fit_start(self, state: LoopState) -> None:
        self.layers = probe_layers(state.model)
        self._step = state.step
        if self.run is not None and not self.run.filters_initial.exists():
            self._write_filters(state, initial=True)
        if self.enabled:
            self._arm(state)  # the first step after (re)start shows the statistics at initialisation

    def on_batch_end(self, state: LoopState) -> None:
        self._step = state.step
        if self._hooks:
            self._collect(state)
        if self.enabled and (state.step + 1) % self.every == 0:
            self._arm(state)

    def set_enabled(self, on: bool) -> None:
        """Turn probing on or off between steps (bench/monitor_overhead.py alternates it per epoch)."""
        self.enabled = on
        if not on:
            self._disarm()
            self._before = {}

    def on_epoch_end(self, state: LoopState) -> None:
        if self.run is not None and self.enabled:
            self._write_filters(state, initial=False)
        if self.live and self.latest is not None and self.latest["step"] != self._printed:
            self._printed = self.latest["step"]  # one line per new probe, not a repeat of an old one
            _log.info(format_live(self.latest))

    def on_fit_end(self, state: LoopState) -> None:
        self._disarm()
        self.flush()

    def state_dict(self) -> dict[str, Any]:
        """Counters only; the records themselves are flushed to stats/ now (a checkpoint is being written)."""
        self.flush()
        return {"step": self._step, "records": self.records.state(), "histograms": self.histograms.state()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        step = int(sd["step"])
        run = self.run
        self.records.restore(sd["records"], read_json_records(run.layers) if run is not None else [], step)
        self.histograms.restore(sd["histograms"], read_json_records(run.histograms) if run is not None else [], step)
        self.latest = self.records.items[-1] if self.records.items else None

    def flush(self) -> None:
        if self.run is None:
            return
        meta = {"every": self.every, "layers": [[n, k] for n, _, k in self.layers]}
        self.records.dump(self.run.layers, meta)
        self.histograms.dump(self.run.histograms, {"bins": HISTOGRAM_BINS})

    # -- probing -------------------------------------------------------------------------------
    def _arm(self, state: LoopState) -> None:
        self._disarm()
        self._stats, self._hist = {}, {}
        self._want_hist = self.histograms.wants_next()
        for name, module, kind in self.layers:
            self._hooks.append(module.register_forward_hook(self._forward_hook(name, kind)))
            w = getattr(module, "weight", None)
            if kind in WEIGHTED and isinstance(w, torch.Tensor):
                self._before[name] = w.detach().clone()

    def _disarm(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _forward_hook(self, name: str, kind: str) -> Any:
        def hook(module: nn.Module, inputs: Any, out: Any) -> None:
            if not module.training or name in self._stats or not isinstance(out, torch.Tensor):
                return
            a = out.detach()
            self._stats[name] = _activation_stats(kind, a)
            if self._want_hist:
                self._hist[name] = {"act": histogram(a)}
            if out.requires_grad:
                out.register_hook(self._grad_hook(name))
        return hook

    def _grad_hook(self, name: str) -> Any:
        def hook(g: torch.Tensor) -> None:
            self._stats[name]["grad_rms"] = g.detach().pow(2).mean().sqrt()
            if self._want_hist:
                self._hist[name]["grad"] = histogram(g)
        return hook

    def _collect(self, state: LoopState) -> None:
        """Turn the hooked tensors into numbers (one device sync), store them, disarm."""
        self._disarm()
        for name, module, _ in self.layers:
            if name in self._before and name in self._stats:
                weight = _weight(module)
                w, w0 = weight.detach(), self._before[name]
                s = self._stats[name]
                s["w_norm"] = torch.linalg.vector_norm(w)
                s["update_ratio"] = torch.linalg.vector_norm(w - w0) / torch.linalg.vector_norm(w0).clamp_min(1e-30)
                if weight.grad is not None:
                    s["grad_norm"] = torch.linalg.vector_norm(weight.grad.detach())
        self._before = {}
        keys = [(n, k) for n in self._stats for k in self._stats[n]]
        if not keys:
            return
        values = torch.stack([self._stats[n][k].float() for n, k in keys]).tolist()
        layers: dict[str, dict[str, Any]] = {n: {"kind": kind} for n, _, kind in self.layers if n in self._stats}
        for (n, k), v in zip(keys, values):
            layers[n][k] = v if math.isfinite(v) else None
        record = {"step": state.step, "epoch": state.epoch + 1, "lr": state.lr, "layers": layers}
        hist = self._histogram_record(state.step) if self._want_hist else None
        self.latest = record
        kept = self.records.offer(record)
        if hist is not None:
            self.histograms.offer(hist)
        if self.sink is not None and (kept or hist is not None):
            self.sink.log_layers(record, hist)
        self._stats, self._hist = {}, {}

    def _histogram_record(self, step: int) -> dict[str, Any]:
        """Every histogram of this probe, read back in one transfer."""
        out: dict[str, Any] = {"step": step, "layers": {}}
        keys = [(name, part) for name, parts in self._hist.items() for part in parts]
        if not keys:
            return out
        rows = torch.stack([torch.cat([lo.view(1).double(), hi.view(1).double(), extra.double(), counts.double()])
                            for lo, hi, counts, extra in (self._hist[n][p] for n, p in keys)]).tolist()
        for (name, part), row in zip(keys, rows):  # [lo, hi, counts, below lo, above hi, min, max]
            below, above, vmin, vmax = row[2:6]
            out["layers"].setdefault(name, {})[part] = [row[0], row[1], [int(c) for c in row[6:]], int(below),
                                                        int(above), vmin, vmax]
        return out

    def _write_filters(self, state: LoopState, initial: bool) -> None:
        """The first layer's image at initialisation (``initial``) or now; only "now" goes to the sink. The raw
        weights (at initialisation and now) go to stats/first_layer, so the report can draw both on one scale."""
        image = first_layer_image(state.model)
        if image is None or self.run is None:
            return
        atomic_write_bytes(self.run.filters_initial if initial else self.run.filters, png_bytes(image))
        if self.sink is not None and not initial:
            self.sink.log_image("filters/first_layer", image, state.step)
        w = first_layer_weights(state.model)
        if w is None or w.numel() > FIRST_LAYER_MAX:
            return
        tensors = {"initial": w}
        if not initial and self.run.first_layer.exists():  # the initial weights were saved at step 0
            saved, _ = load_checkpoint(self.run.first_layer)
            tensors = {"initial": saved.get("initial", w), "latest": w}
        save_checkpoint(self.run.first_layer, tensors, {"step": state.step, "epoch": state.epoch})


def _weight(module: nn.Module) -> torch.Tensor:
    w = getattr(module, "weight", None)
    assert isinstance(w, torch.Tensor), f"{type(module).__name__} has no weight tensor"
    return w


def format_live(record: dict[str, Any]) -> str:
    """The live line: update/weight per weighted layer, dead ReLUs and saturation per activation."""
    parts = []
    ratios = [f"{n}:{s['update_ratio']:.1e}" for n, s in record["layers"].items() if s.get("update_ratio") is not None]
    if ratios:
        parts.append("update/weight " + " ".join(ratios))
    dead = [f"{n}:{s['dead']:.0%}" for n, s in record["layers"].items() if s.get("dead") is not None]
    if dead:
        parts.append("dead ReLU " + " ".join(dead))
    sat = [f"{n}:{s['saturated']:.0%}" for n, s in record["layers"].items() if s.get("saturated") is not None]
    if sat:
        parts.append("saturated " + " ".join(sat))
    return f"  layers @ step {record['step']}: " + " | ".join(parts)


def first_layer_weights(model: nn.Module) -> torch.Tensor | None:
    """The first weighted layer's weights as filters (K, C, F, F) on the CPU: conv filters, or a first fc layer's
    rows as C x H x W templates when its inputs are the image; None otherwise."""
    for _, module, kind in probe_layers(model):
        if kind not in WEIGHTED:
            continue
        w = _weight(module).detach().float().cpu().clone()
        if kind == "fc":
            shape = getattr(model, "input_shape", None)
            if shape is None or math.prod(shape) != w.shape[1]:
                return None
            w = w.reshape(w.shape[0], *shape)
        return w
    return None


def first_layer_image(model: nn.Module) -> np.ndarray | None:
    """The first weighted layer's filters as one uint8 image (H, W, 3) grid, each filter scaled to 0..255.

    Conv filters (K, C, F, F) show as RGB when C is 3 and grey otherwise (channel 0); a first fc layer
    whose inputs are the image shows each unit's weights as a C x H x W template (the linear classifier's).
    """
    w = first_layer_weights(model)
    return None if w is None else _grid(w)


def _grid(w: torch.Tensor, cell: int = 32, pad: int = 2) -> np.ndarray:
    k, c = w.shape[:2]
    w = w[:, :3] if c == 3 else w[:, :1].expand(-1, 3, -1, -1)
    lo = w.flatten(1).min(1).values[:, None, None, None]
    hi = w.flatten(1).max(1).values[:, None, None, None]
    tiles = ((w - lo) / (hi - lo).clamp_min(1e-12) * 255).round().to(torch.uint8)  # (K, 3, F, F)
    scale = max(1, cell // max(w.shape[2:]))
    tiles = tiles.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    th, tw = tiles.shape[2:]
    grid = np.full((rows * (th + pad) + pad, cols * (tw + pad) + pad, 3), 255, np.uint8)
    for i in range(k):
        r, col = divmod(i, cols)
        y, x = pad + r * (th + pad), pad + col * (tw + pad)
        grid[y : y + th, x : x + tw] = tiles[i].permute(1, 2, 0).numpy()
    return grid


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 (H, W, 3) array as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
