"""The report's figures: each function takes plain numbers read from a run and returns a ``Figure``;
:func:`babysit.figures.png` encodes it for the page.

Uses matplotlib's object API (``Figure``), so no display and no global pyplot state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def loss_figure(steps: Sequence[int], losses: Sequence[float], smoothed: Sequence[float], log: bool = False,
                epoch_steps: Sequence[int] = ()) -> Figure:
    """Training loss per step: raw (thin) and smoothed (EMA), epoch boundaries dotted."""
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    ax.plot(steps, losses, lw=0.6, alpha=0.45, color="C0", label="loss per mini-batch")
    ax.plot(steps, smoothed, lw=1.8, color="C1", label="smoothed (EMA)")
    for s in epoch_steps:
        ax.axvline(s, color="grey", lw=0.5, ls=":")
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="loss" + (" (log scale)" if log else ""), title="training loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def epoch_loss_figure(epochs: Sequence[int], data_loss: Sequence[float], val_loss: Sequence[float],
                      reg: Sequence[float] = ()) -> Figure:
    """Per epoch: the training data loss (mean over the epoch's mini-batches, regularisation left out) beside
    the val loss, which has none; the regularisation term dashed when the run had one."""
    fig = Figure(figsize=(7, 3.4))
    ax = fig.add_subplot()
    ax.plot(epochs, data_loss, marker="o", color="C0", label="train data loss (epoch mean)")
    ax.plot(epochs, val_loss, marker="o", color="C1", label="val loss (end of epoch)")
    if any(r > 0 for r in reg):
        ax.plot(epochs, reg, ls="--", color="grey", label="regularisation term (in the cost, not in either)")
    ax.set(xlabel="epoch", ylabel="loss", title="train data loss vs val loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = (".", "x", "+", "1")


def layer_style(i: int) -> dict[str, str]:
    """Colour, line style and marker of the i-th layer's line: ten colours, then the next line style (and
    marker) for layers 11-20 and so on, so no two of up to 40 layers look alike."""
    return {"color": f"C{i % 10}", "ls": LINE_STYLES[(i // 10) % 4], "marker": MARKERS[(i // 10) % 4]}


def accuracy_figure(epochs: Sequence[int], train: Sequence[float], val: Sequence[float]) -> Figure:
    """Train and val accuracy per epoch, the gap between them shaded."""
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    ax.plot(epochs, train, marker="o", label="train")
    ax.plot(epochs, val, marker="o", label="val")
    ax.fill_between(epochs, train, val, color="C3", alpha=0.15, label="gap")
    ax.set(xlabel="epoch", ylabel="accuracy", title="train / val accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def lr_figure(steps: Sequence[int], lrs: Sequence[float]) -> Figure:
    fig = Figure(figsize=(7, 2.6))
    ax = fig.add_subplot()
    ax.plot(steps, lrs)
    ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
    ax.grid(alpha=0.3)
    return fig


def layer_stat_figure(series: Mapping[str, tuple[Sequence[int], Sequence[float | None]]], ylabel: str, title: str,
                      log: bool = False, band: tuple[float, float] | None = None,
                      target: float | None = None, labels: Mapping[str, str] | None = None,
                      low_lr: Sequence[tuple[float, float]] = ()) -> Figure:
    """One line per layer over steps, named by ``labels`` (``"3 conv3-64"``), each with its own colour / line
    style; optional shaded band and target line (the update/weight ratio's); ``low_lr`` spans of steps
    hatched where the schedule's lr was low (ratios fall with it; the finding does not judge them)."""
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    if band is not None:
        ax.axhspan(*band, color="C2", alpha=0.1, label=f"{band[0]:g} .. {band[1]:g}")
    if target is not None:
        ax.axhline(target, color="C2", ls="--", lw=1, label=f"target {target:g}")
    for i, (a, b) in enumerate(low_lr):
        ax.axvspan(a, b, color="grey", alpha=0.12, lw=0, label="lr < half its peak (not judged)" if i == 0 else None)
    labels = labels or {}
    for i, (name, (xs, ys)) in enumerate(series.items()):
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None and (not log or y > 0)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, ms=4, label=labels.get(name, f"layer {name}"),
                    **layer_style(i))
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2 if len(series) < 12 else 3, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.subplots_adjust(left=0.1, right=0.68 if len(series) < 12 else 0.55, bottom=0.14)
    return fig


def histograms_figure(first: dict, last: dict, kinds: dict[str, str], labels: Mapping[str, str] | None = None,
                      steps: tuple[int, int] = (0, 0)) -> Figure:
    """Per layer (rows): activations at the first and the last probe, then gradients at the first and the last
    (columns), each panel on its own x range, so a gradient that shrank 100x during training still shows its
    shape (one shared axis made the smaller one a spike).

    ``first``/``last`` map layer name -> {"act": [lo, hi, counts, below, above, min, max], "grad": [...]}: each
    spans its 0.5-99.5 % range, the values outside counted in the edge bins (each panel says what share).
    """
    from matplotlib.ticker import MaxNLocator

    labels = labels or {}
    names = list(last)
    rows = max(1, len(names))
    height = 0.95 * rows + 0.6
    fig = Figure(figsize=(10, height))
    fig.subplots_adjust(left=0.12, right=0.99, top=1 - 0.45 / height, bottom=0.25 / height, hspace=0.55,
                        wspace=0.06)  # fixed spacing: tight_layout costs seconds on 20+ axes
    axes = fig.subplots(rows, 4, squeeze=False)
    columns = [("act", first, "grey"), ("act", last, "C0"), ("grad", first, "grey"), ("grad", last, "C1")]
    for col, (part, _, _) in enumerate(columns):
        when = f"step {steps[col % 2]}" if any(steps) else ("first probe", "last probe")[col % 2]
        axes[0][col].set_title(f"{'activations' if part == 'act' else 'gradients'}, {when}", fontsize=8)
    for row, name in enumerate(names):
        for col, (part, snap, colour) in enumerate(columns):
            ax = axes[row][col]
            h = snap.get(name, {}).get(part)
            if h:
                lo, hi, counts = h[:3]
                edges = np.linspace(lo, hi, len(counts) + 1)
                ax.stairs(np.asarray(counts) / max(1, sum(counts)), edges, fill=True, alpha=0.7, color=colour)
                if len(h) >= 5 and h[3] + h[4]:
                    ax.text(0.99, 0.95, f"{(h[3] + h[4]) / max(1, sum(counts)):.1%} in edge bins", fontsize=5,
                            ha="right", va="top", transform=ax.transAxes, color="dimgrey")
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.tick_params(labelsize=5.5, length=2, pad=1)
            ax.set_yticks([])
        label = labels.get(name) or f"layer {name} ({kinds.get(name, '')})"
        axes[row][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    return fig


def _tile_grid(w: np.ndarray, pad: int = 1) -> np.ndarray:
    """Filters (K, C, F, F) -> one (rows, cols, 3) float grid, NaN between tiles (drawn white)."""
    k, _, fh, fw = w.shape
    cols = int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    grid = np.full((rows * (fh + pad) + pad, cols * (fw + pad) + pad, 3), np.nan)
    for i in range(k):
        r, c = divmod(i, cols)
        y, x = pad + r * (fh + pad), pad + c * (fw + pad)
        grid[y:y + fh, x:x + fw] = w[i].transpose(1, 2, 0)
    return grid


def filters_figure(initial: np.ndarray, latest: np.ndarray | None) -> Figure:
    """The first layer's filters (K, C, F, F) at initialisation and at the end, side by side on ONE scale:
    grey (channel 0) or RGB (3 channels) mapped from [-m, m], m the largest |w| of both, so how much the
    filters grew and smoothed is visible (per-filter contrast stretching would hide it)."""
    sets = [("at initialisation", initial)] + ([("at the end", latest)] if latest is not None else [])
    m = max(float(np.abs(w).max()) for _, w in sets) or 1.0
    fig = Figure(figsize=(4.6 * len(sets), 4.9))
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    for ax, (title, w) in zip(axes, sets):
        w = w[:, :3] if w.shape[1] == 3 else np.repeat(w[:, :1], 3, axis=1)
        grid = np.clip(_tile_grid(w) / (2 * m) + 0.5, 0, 1)
        grid[np.isnan(grid)] = 1.0  # the gaps between tiles
        ax.imshow(grid, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{title} ({len(w)} filters, max |w| {float(np.abs(w).max()):.2g})", fontsize=9)
    fig.suptitle(f"one scale for both: black/dark = -{m:.2g}, mid grey = 0, white/bright = +{m:.2g}", fontsize=8,
                 y=0.04)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.93, bottom=0.08, wspace=0.05)
    return fig


def confusion_figure(confusion: Sequence[Sequence[int]], classes: Sequence[str], per_class: Sequence[float]) -> Figure:
    """The val confusion matrix (rows true, columns predicted) and per-class accuracy."""
    k = len(classes)
    fig = Figure(figsize=(9, 4 + 0.15 * k))
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    m = np.asarray(confusion)
    ax.imshow(m, cmap="Blues")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    names = [c[:10] for c in classes]
    ax.set_xticks(range(k), names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (val)")
    bx.barh(range(k), per_class, color="C0")
    bx.set_yticks(range(k), names, fontsize=7)
    bx.invert_yaxis()
    bx.set_xlim(0, 1)
    bx.set(xlabel="accuracy", title="per-class accuracy (val)")
    bx.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def confused_pairs_figure(pairs: Sequence[dict], examples: dict[str, np.ndarray], classes: Sequence[str]) -> Figure:
    """One row per most-confused pair (true -> predicted): its count and example val images."""
    cols = max([len(examples.get(f"pair{i}", [])) for i in range(len(pairs))] + [1])
    fig = Figure(figsize=(1.2 * cols + 2.2, 1.25 * max(1, len(pairs))))
    axes = fig.subplots(max(1, len(pairs)), cols, squeeze=False)
    for i, pair in enumerate(pairs):
        imgs = examples.get(f"pair{i}", np.zeros((0, 1, 1, 1), np.uint8))
        for j in range(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(imgs):
                img = imgs[j]
                ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
            else:
                ax.axis("off")
        axes[i][0].set_ylabel(f"{classes[pair['true']][:10]} -> {classes[pair['pred']][:10]}\n({pair['count']}x)",
                              fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


SEARCH_COLOURS = {"coarse": "C0", "fine": "C1"}


def param_figure(key: str, points: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                 stopped: Sequence[tuple[float, str]], log: bool = False, bounds: tuple[float, float] | None = None,
                 categories: Sequence[str] = (), floor: float = 0.0) -> Figure:
    """Val accuracy against one searched value: a dot per trial, one colour per stage (``points`` keyed "coarse",
    "fine", "coarse (pruned)" ...: pruned ones hollow); trials that were killed or failed as red crosses at the
    bottom (``floor``). A list of values is
    spread over its categories (x = index); a log-searched range gets a log x axis; ``bounds`` are dotted."""
    fig = Figure(figsize=(5.2, 3.2))
    ax = fig.add_subplot()
    for label, (xs, ys) in points.items():  # "coarse", "fine", "coarse (pruned)", ...
        colour = SEARCH_COLOURS.get(label.split()[0], "C2")
        hollow = "pruned" in label
        ax.scatter(xs, ys, s=22, facecolors="none" if hollow else colour, edgecolors=colour, alpha=0.8, label=label,
                   zorder=3)
    if stopped:
        xs = [x for x, _ in stopped]
        ax.scatter(xs, [floor] * len(xs), marker="x", color="C3", s=30, label="killed / failed", zorder=3)
    if bounds is not None:
        for b in bounds:
            ax.axvline(b, color="grey", ls=":", lw=1)
    if categories:
        ax.set_xticks(range(len(categories)), [c[:18] for c in categories], fontsize=7, rotation=20)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    elif log:
        ax.set_xscale("log")
    ax.set(xlabel=key + (" (log scale)" if log else ""), ylabel="val accuracy", title=f"val accuracy vs {key}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig
