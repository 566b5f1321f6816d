"""Findings in words, and the evidence the diagnosis rules read.

A :class:`Finding` is stated the way a practitioner says it: what was observed (with the numbers
that triggered it) -> the likely cause -> the next action. :class:`Evidence` gathers what a run
directory holds: step and epoch history, layer statistics, sanity checks, the config.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from babysit.limits import read_small_text
from babysit.review.stats import read_layer_records
from babysit.rundir import RunDir

SEVERITIES = ("error", "warning", "info")
LOW_LR_SHARE = 0.5
"""Probes taken below this share of the peak lr (warm-up, a cosine or one-cycle tail) are not judged by the
update/weight rule: the ratio is about lr x gradient / weight, so it falls with the schedule by design."""


@dataclass(frozen=True)
class Finding:
    """One diagnosis: ``title`` (observation - cause in a few words), then the three parts in full."""

    rule: str  # the rule's name, e.g. "loss_flat"
    severity: str  # error | warning | info
    title: str  # e.g. "loss barely changes — LR too low"
    observation: str  # what the numbers show
    cause: str  # the likely cause
    action: str  # what to do next
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(d["rule"], d["severity"], d["title"], d["observation"], d["cause"], d["action"],
                   dict(d.get("numbers", {})))

    def format(self) -> str:
        return (f"[{self.severity}] {self.title}\n      saw:  {self.observation}\n"
                f"      why:  {self.cause}\n      next: {self.action}")


def format_findings(findings: list[Finding]) -> str:
    """The findings block printed at the end of a run and by ``babysit diagnose``."""
    if not findings:
        return "findings: none - the curves and layer statistics look healthy."
    return "\n".join([f"findings ({len(findings)}):"] + [f"  {f.format()}" for f in findings])


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity) if f.severity in SEVERITIES else 9)


@dataclass
class Evidence:
    """What the rules look at. Every list may be empty (a run that has barely started)."""

    steps: list[dict[str, Any]] = field(default_factory=list)  # {"step", "loss", "lr"}
    epochs: list[dict[str, Any]] = field(default_factory=list)  # {"epoch", "cost", "train_acc", "val_acc", ...}
    layers: list[dict[str, Any]] = field(default_factory=list)  # probe records (see probes.py)
    checks: list[dict[str, Any]] = field(default_factory=list)  # CheckResult dicts
    diverged: dict[str, Any] | None = None  # {"step", "loss", "lr", "message"}
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config as nested dicts
    num_classes: int = 0

    @classmethod
    def from_history(cls, history: list[dict[str, Any]], **kw: Any) -> Evidence:
        steps = [r for r in history if r.get("kind") == "step"]
        epochs = [r for r in history if r.get("kind") == "epoch"]
        diverged = next((r for r in reversed(history) if r.get("kind") == "diverged"), None)
        return cls(steps=steps, epochs=epochs, diverged=diverged, **kw)

    @classmethod
    def from_run(cls, path: RunDir | str | Path) -> Evidence:
        """Read a run directory: history, layer records, sanity checks, config, meta (class names)."""
        import tomllib

        run = RunDir.of(path)
        config = tomllib.loads(read_small_text(run.config)) if run.config.exists() else {}
        checks = json.loads(read_small_text(run.checks)).get("checks", []) if run.checks.exists() else []
        meta = json.loads(read_small_text(run.meta)) if run.meta.exists() else {}
        return cls.from_history(run.read_history(), layers=read_layer_records(run), checks=checks,
                                config=config, num_classes=len(meta.get("classes", [])))

    def cfg(self, section: str, key: str, default: Any = None) -> Any:
        return self.config.get(section, {}).get(key, default)

    def lr(self) -> float:
        """The configured learning rate (the largest recorded one when there is no config)."""
        return float(self.cfg("optim", "lr", 0.0) or max((r.get("lr", 0.0) for r in self.steps), default=0.0))

    def lr_text(self) -> str:
        """The learning rate the steps really had: ``0.05``, or ``0.0003..0.0075 (the schedule's; optim.lr 0.05)``."""
        lrs = [float(r["lr"]) for r in self.steps if isinstance(r.get("lr"), (int, float))]
        lo, hi = (min(lrs), max(lrs)) if lrs else (self.lr(), self.lr())
        if f"{lo:.3g}" == f"{hi:.3g}" == f"{self.lr():.3g}":
            return f"{hi:.3g}"
        return f"{lo:.3g}..{hi:.3g} (the schedule's; optim.lr {self.lr():.3g})"

    def losses(self) -> list[float]:
        return [float(r["loss"]) for r in self.steps if isinstance(r.get("loss"), (int, float))]

    def full_lr_steps(self) -> list[dict[str, Any]]:
        """Steps taken at >= half the peak learning rate: past warm-up and before the schedule anneals."""
        peak = max((float(r.get("lr", 0.0)) for r in self.steps), default=0.0)
        return [r for r in self.steps if float(r.get("lr", 0.0)) >= 0.5 * peak] if peak > 0 else list(self.steps)

    def full_lr_layers(self) -> list[dict[str, Any]]:
        """Probe records taken at >= LOW_LR_SHARE of the peak learning rate (not warm-up, not the end of a
        cosine or one-cycle run, where the update/weight ratio falls with the lr by design)."""
        peak = max((float(r.get("lr", 0.0)) for r in self.layers), default=0.0)
        return ([r for r in self.layers if float(r.get("lr", 0.0)) >= LOW_LR_SHARE * peak] if peak > 0
                else list(self.layers))


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def median(xs: list[float]) -> float:
    s = sorted(xs)
    if not s:
        return math.nan
    m = len(s) // 2
    return s[m] if len(s) % 2 else 0.5 * (s[m - 1] + s[m])


def smooth(xs: list[float], window: int) -> list[float]:
    """Centred moving average (shrinking at the ends)."""
    half = max(1, window) // 2
    out = []
    for i in range(len(xs)):
        part = xs[max(0, i - half) : i + half + 1]
        out.append(sum(part) / len(part))
    return out
