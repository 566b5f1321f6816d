"""Figures as PNG files for the commands that draw one: the learning-rate schedule, the LR range test,
the activation statistics at initialisation; and :func:`png` for figures embedded in a page.

Plain numbers in, PNG out: the results are read through the small protocols below, so this module
imports no babysit package and anything may draw with it. matplotlib's object API (``Figure`` + Agg
canvas) means no display and no global pyplot state.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


class LRCurves(Protocol):
    """What :func:`plot_lr_find` reads (babysit.tune.lr_find.LRFindResult has it)."""

    @property
    def lrs(self) -> Sequence[float]: ...  # the ramp's learning rates, one per mini-batch
    @property
    def smoothed(self) -> Sequence[Sequence[float]]: ...  # per seed: the smoothed loss, as far as that seed ran
    @property
    def suggestion(self) -> float: ...  # lr of the steepest descent
    @property
    def min_loss_lr(self) -> float: ...  # lr where the smoothed loss is lowest


class HasStd(Protocol):
    """What :func:`plot_init_check` reads of one layer (babysit.models.init.ActivationStat has it)."""

    @property
    def std(self) -> float: ...


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (its folder made when missing) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    return out


def png(fig: Figure, dpi: int = 100, tight: bool = True) -> bytes:
    """Encode a figure as PNG bytes (for embedding in the HTML report). ``tight`` crops to what is drawn, which
    draws the figure twice: a figure that places its axes itself (many panels) saves half its time without it."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def plot_schedule(lrs: Sequence[float], steps_per_epoch: int, path: str | Path, title: str = "") -> Path:
    """Learning rate against epoch (x = step / steps_per_epoch)."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.plot(np.arange(len(lrs)) / steps_per_epoch, lrs)
    ax.set(xlabel="epoch", ylabel="learning rate", title=title)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def plot_lr_find(result: LRCurves, path: str | Path) -> Path:
    """Smoothed loss against lr (log x): the mean over seeds, the min..max band, and the suggestions."""
    curves = np.full((len(result.smoothed), len(result.lrs)), np.nan)
    for i, curve in enumerate(result.smoothed):
        curves[i, : len(curve)] = curve
    lrs = np.asarray(result.lrs)
    seen = ~np.all(np.isnan(curves), axis=0)
    common = min(len(c) for c in result.smoothed)  # every seed still running up to here
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    ax.fill_between(lrs[:common], curves[:, :common].min(0), curves[:, :common].max(0), alpha=0.3,
                    label=f"min..max over {len(result.smoothed)} seeds")
    ax.plot(lrs[:common], curves[:, :common].mean(0), color="C0", label="smoothed loss (mean)")
    for curve in result.smoothed:  # each seed's own tail, up to where it stopped
        ax.plot(lrs[common - 1 : len(curve)], curve[common - 1 :], color="C0", lw=0.7, alpha=0.6)
    ax.axvline(result.suggestion, color="C2", ls="--", label=f"steepest descent {result.suggestion:.2g}")
    ax.axvline(result.min_loss_lr / 10, color="C3", ls=":", label=f"min-loss lr / 10 {result.min_loss_lr / 10:.2g}")
    ax.set_xscale("log")
    top = np.nanmax(curves[:, seen][:, : max(1, seen.sum() // 3)])  # the early loss sets the useful height
    ax.set_ylim(max(0.0, np.nanmin(curves) * 0.9), top * 1.3)
    ax.set(xlabel="learning rate (log scale)", ylabel="loss", title="LR range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_png(fig, path)


def plot_init_check(results: Mapping[str, Sequence[HasStd]], path: str | Path) -> Path:
    """The lecture's picture: std of each activation layer's output, one line per init scheme (log y)."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for scheme, stats in results.items():
        ax.plot(range(1, len(stats) + 1), [max(s.std, 1e-30) for s in stats], marker="o", label=scheme)
    ax.set_yscale("log")
    ax.set(xlabel="activation layer", ylabel="std of activations", title="activations at initialisation")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_png(fig, path)


def members_figure(labels: Sequence[str], val: Sequence[float], test: Sequence[float], ensemble_val: float,
                   ensemble_test: float) -> Figure:
    """An ensemble against its members: each member's val and test accuracy, the ensemble's as lines."""
    fig = Figure(figsize=(max(4.5, 0.45 * len(labels) + 2.5), 3.8))
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    ax.scatter(x, val, color="C0", label="member, val")
    ax.scatter(x, test, color="C1", marker="s", label="member, test")
    ax.axhline(ensemble_val, color="C0", ls="--", label=f"ensemble, val {ensemble_val:.4f}")
    ax.axhline(ensemble_test, color="C1", ls=":", label=f"ensemble, test {ensemble_test:.4f}")
    ax.set_xticks(x, labels, rotation=45 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center",
                  fontsize=8)
    ax.set(ylabel="accuracy", title=f"ensemble of {len(labels)} members")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def cross_validation_figure(ks: Sequence[int], accuracies: Mapping[str, np.ndarray], title: str = "") -> Figure:
    """The notes' cross-validation picture: accuracy against k, one dot per fold, the mean joined by a line
    with +- one std as error bars; one colour per distance. ``accuracies[name]`` is (len(ks), folds)."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    shift = 0.12 * (max(ks) - min(ks) + 1) / max(len(ks), 1)  # side by side, so the distances do not hide each other
    for i, (name, acc) in enumerate(accuracies.items()):
        acc = np.asarray(acc, dtype=float)
        colour, x = f"C{i}", np.asarray(ks, dtype=float) + shift * (i - (len(accuracies) - 1) / 2)
        for f in range(acc.shape[1]):
            ax.scatter(x, acc[:, f], s=12, color=colour, alpha=0.5, label=f"{name}: each of {acc.shape[1]} folds"
                       if f == 0 else None)
        ax.errorbar(x, acc.mean(1), yerr=acc.std(1), color=colour, capsize=3, label=f"{name}: mean +- std")
    ax.set(xlabel="k (neighbours)", ylabel="cross-validation accuracy", title=title or "k-nearest neighbours")
    ax.set_xticks(list(ks))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
