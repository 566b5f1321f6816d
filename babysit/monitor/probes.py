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
import time
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
HISTOGRAM_SAMPLE = 1 << 12
"""Values per tensor that a histogram counts (evenly strided); its shape needs no more, the cost does."""
HISTOGRAM_RANGE = (0.005, 0.995)
"""The quantiles a histogram spans: a few outliers no longer squeeze the bulk into one bin."""
FIRST_LAYER_MAX = 1 << 20
"""The first layer's weights are kept raw for the report (stats/first_layer) up to this many values."""
FILTERS_EVERY_S = 30.0
"""While training, stats/filters.png and stats/first_layer are redrawn at an epoch end when this many seconds have
passed since they last were, and always when fit ends: on a GPU an epoch of a small net takes a fraction of a
second, and redrawing them every epoch cost more than the probes (TensorBoard still gets an image every epoch)."""
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


def histogram_sample(t: torch.Tensor, sample: int = HISTOGRAM_SAMPLE) -> torch.Tensor:
    """A float copy of ``min(numel, sample)`` values of ``t`` at fixed random positions: what a histogram counts. A
    copy, so an in-place op after the hook (ReLU(inplace)) cannot change it; ``take`` reads a channels-last tensor
    without copying the whole of it first."""
    return t.detach().take(_positions(t.numel(), min(t.numel(), sample), t.device)).to(torch.float32, copy=True)


_POSITIONS: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def _positions(total: int, n: int, device: torch.device) -> torch.Tensor:
    """``n`` positions in ``range(total)`` (all of them when n == total): drawn at random once per size and device,
    seeded by the size, sorted. Evenly spaced positions would alias with the layout: a stride that divides an
    activation map's plane samples the same few pixels of every channel and image (MNIST's empty corners).
    Made once, so no host-to-device copy per probe (on a GPU that would wait for the launch queue)."""
    key = (total, n, device)
    if key not in _POSITIONS:
        g = torch.Generator().manual_seed(total)
        picked = torch.arange(total) if n >= total else torch.randint(total, (n,), generator=g).sort().values
        _POSITIONS[key] = picked.to(device)
    return _POSITIONS[key]


def histograms(samples: list[torch.Tensor], bins: int = HISTOGRAM_BINS,
               span: tuple[float, float] = HISTOGRAM_RANGE) -> torch.Tensor:
    """Histograms of many samples at once, without leaving the device: a (len(samples), 6 + bins) tensor whose
    rows are [lo, hi, values below lo, values above hi, min, max, counts of the ``bins`` equal bins of [lo, hi]].

    [lo, hi] is a sample's ``span`` quantiles (0.5 % and 99.5 %, numpy's linear interpolation): the values
    outside are counted in the first and last bin, so a few huge gradients no longer make the histogram one
    spike. Where those quantiles coincide (a ReLU output that is 0 almost everywhere) the range is [min, max].
    Samples of one length are stacked and done together (one sort, one ``searchsorted`` for every bin edge), so a
    probe of ten layers launches a few dozen kernels, not ten times that; nothing is read back to the host
    (``torch.bincount`` would: it sizes its output from the data)."""
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(samples):
        groups.setdefault(t.numel(), []).append(i)
    rows_of: list[torch.Tensor | None] = [None] * len(samples)
    for n, members in groups.items():
        rows = torch.stack([samples[i].reshape(-1) for i in members])  # (L, n)
        ordered = rows.sort(dim=1).values
        q_lo, q_hi = (_quantile(ordered, s) for s in span)
        vmin, vmax = ordered[:, 0], ordered[:, -1]
        narrow = q_hi > q_lo
        lo, hi = torch.where(narrow, q_lo, vmin), torch.where(narrow, q_hi, vmax)
        # bin b holds lo + b*w <= x < lo + (b+1)*w (w = (hi - lo) / bins); below lo -> bin 0, above hi -> the last
        frac = torch.arange(1, bins, device=rows.device, dtype=rows.dtype) / bins
        inner = lo[:, None] + (hi - lo)[:, None] * frac  # (L, bins - 1) inner edges
        below_edge = torch.searchsorted(ordered, inner.contiguous())  # values < each inner edge
        ends = below_edge.new_zeros(len(members), 1), below_edge.new_full((len(members), 1), n)
        cum = torch.cat([ends[0], below_edge, ends[1]], 1)
        counts = (cum[:, 1:] - cum[:, :-1]).to(rows.dtype)
        below = (rows < lo[:, None]).sum(1).to(rows.dtype)
        above = (rows > hi[:, None]).sum(1).to(rows.dtype)
        table = torch.cat([torch.stack([lo, hi, below, above, vmin, vmax], 1), counts], 1)
        for k, i in enumerate(members):
            rows_of[i] = table[k : k + 1]  # a view: putting the rows back in order costs one cat
    return torch.cat(rows_of) if rows_of else torch.empty(0, 6 + bins)  # type: ignore[arg-type]


def histogram(t: torch.Tensor, bins: int = HISTOGRAM_BINS, sample: int = HISTOGRAM_SAMPLE,
              span: tuple[float, float] = HISTOGRAM_RANGE
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lo, hi, counts, extra) of one tensor (see :func:`histograms`): ``extra`` = (values below lo, values above
    hi, min, max) of the sample, so a reader knows how much the edge bins hold."""
    row = histograms([histogram_sample(t, sample)], bins, span)[0]
    return row[0], row[1], row[6:].long(), row[2:6]


def _quantile(ordered: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile of each row of sorted values, interpolated linearly between neighbours (numpy's default)."""
    n = ordered.shape[-1]
    pos = q * (n - 1)
    i = min(int(pos), n - 1)
    j = min(i + 1, n - 1)
    return ordered[..., i] + (ordered[..., j] - ordered[..., i]) * (pos - i)


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
        self._hist: dict[str, dict[str, torch.Tensor]] = {}  # layer -> act / grad -> the sample a histogram counts
        self._before: dict[str, torch.Tensor] = {}
        self._want_hist = False
        self._filters_at = time.monotonic()  # when stats/filters.png was last drawn
        self._initial: torch.Tensor | None = None  # the first layer's weights at initialisation (stats/first_layer)
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
        if self.enabled and self.sink is not None and (image := first_layer_image(state.model)) is not None:
            self.sink.log_image("filters/first_layer", image, state.step)
        if self.enabled and time.monotonic() - self._filters_at >= FILTERS_EVERY_S:
            self._write_filters(state, initial=False)
        if self.live and self.latest is not None and self.latest["step"] != self._printed:
            self._printed = self.latest["step"]  # one line per new probe, not a repeat of an old one
            _log.info(format_live(self.latest))

    def on_fit_end(self, state: LoopState) -> None:
        self._disarm()
        self.flush()
        if self.enabled:
            self._write_filters(state, initial=False)

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
                self._hist[name] = {"act": histogram_sample(a)}
            if out.requires_grad:
                out.register_hook(self._grad_hook(name))
        return hook

    def _grad_hook(self, name: str) -> Any:
        def hook(g: torch.Tensor) -> None:
            self._stats[name]["grad_rms"] = torch.linalg.vector_norm(g.detach()) * (g.numel() ** -0.5)
            if self._want_hist:
                self._hist[name]["grad"] = histogram_sample(g)
        return hook

    def _collect(self, state: LoopState) -> None:
        """Turn the hooked tensors into numbers (one device sync for the whole probe), store them, disarm."""
        self._disarm()
        weighted = [(name, _weight(module)) for name, module, _ in self.layers
                    if name in self._before and name in self._stats]
        if weighted:  # ||W||, ||W - W_before|| / ||W_before||, ||dW||: a few fused kernels for every layer at once
            ws = [w.detach() for _, w in weighted]
            befores = [self._before[name] for name, _ in weighted]
            w_norm = torch._foreach_norm(ws)
            ratios = torch._foreach_div(torch._foreach_norm(torch._foreach_sub(ws, befores)),
                                        torch._foreach_clamp_min(torch._foreach_norm(befores), 1e-30))
            with_grad = [(name, w.grad.detach()) for name, w in weighted if w.grad is not None]
            grad_norm = dict(zip([name for name, _ in with_grad], torch._foreach_norm([g for _, g in with_grad])))
            for (name, _), norm, ratio in zip(weighted, w_norm, ratios):
                self._stats[name] |= {"w_norm": norm, "update_ratio": ratio}
                if name in grad_norm:
                    self._stats[name]["grad_norm"] = grad_norm[name]
        self._before = {}
        keys = [(n, k) for n in self._stats for k in self._stats[n]]
        if not keys:
            return
        parts = [(name, part) for name, kinds in self._hist.items() for part in kinds] if self._want_hist else []
        table = histograms([self._hist[n][p] for n, p in parts]) if parts else None
        flat = torch.stack([self._stats[n][k].float() for n, k in keys])
        if table is not None:
            flat = torch.cat([flat, table.flatten()])
        read = flat.tolist()  # the one transfer: every statistic and histogram of this probe
        values, rows = read[: len(keys)], read[len(keys):]
        layers: dict[str, dict[str, Any]] = {n: {"kind": kind} for n, _, kind in self.layers if n in self._stats}
        for (n, k), v in zip(keys, values):
            layers[n][k] = v if math.isfinite(v) else None
        record = {"step": state.step, "epoch": state.epoch + 1, "lr": state.lr, "layers": layers}
        hist = None
        if self._want_hist:
            width = 6 + HISTOGRAM_BINS
            hist = _histogram_record(state.step, parts, [rows[i * width : (i + 1) * width] for i in range(len(parts))])
        self.latest = record
        kept = self.records.offer(record)
        if hist is not None:
            self.histograms.offer(hist)
        if self.sink is not None and (kept or hist is not None):
            self.sink.log_layers(record, hist)
        self._stats, self._hist = {}, {}

    def _write_filters(self, state: LoopState, initial: bool) -> None:
        """The first layer's image at initialisation (``initial``) or now into stats/. The raw weights (at
        initialisation and now) go to stats/first_layer, so the report can draw both on one scale."""
        self._filters_at = time.monotonic()
        if self.run is None or (w := first_layer_weights(state.model)) is None:
            return
        atomic_write_bytes(self.run.filters_initial if initial else self.run.filters, png_bytes(_grid(w)))
        if w.numel() > FIRST_LAYER_MAX:
            return
        if initial:
            self._initial = w
        elif self._initial is None:  # a resumed run: the initial weights were saved at step 0
            saved = load_checkpoint(self.run.first_layer)[0] if self.run.first_layer.exists() else {}
            self._initial = saved.get("initial", w)
        tensors = {"initial": w} if initial else {"initial": self._initial, "latest": w}
        save_checkpoint(self.run.first_layer, tensors, {"step": state.step, "epoch": state.epoch})


def _histogram_record(step: int, parts: list[tuple[str, str]], rows: list[list[float]]) -> dict[str, Any]:
    """The histograms.json entry of one probe: per layer, per part (act, grad), [lo, hi, counts, below lo,
    above hi, min, max], from the rows of :func:`histograms`."""
    out: dict[str, Any] = {"step": step, "layers": {}}
    for (name, part), row in zip(parts, rows):  # [lo, hi, below lo, above hi, min, max, counts]
        below, above, vmin, vmax = row[2:6]
        out["layers"].setdefault(name, {})[part] = [row[0], row[1], [int(c) for c in row[6:]], int(below),
                                                    int(above), vmin, vmax]
    return out


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
