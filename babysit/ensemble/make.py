"""``babysit ensemble``: members from one source -> each scored alone and all together -> an ensemble directory.

ENS/ensemble.json lists the members (run directory relative to ENS, which weights, share of the
average) with each one's val and test accuracy, the ensemble's, and the gains over the best member
(the highest accuracy of any member on that split) and over the mean member. ``babysit eval ENS``
scores it again on any split (with test-time views too).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from babysit import config as C
from babysit.ensemble.members import (
    Member,
    check_choice,
    from_checkpoints,
    from_runs,
    from_search,
    from_snapshots,
    train_seeds,
)
from babysit.ensemble.predict import Ensemble, accuracy, nll
from babysit.errors import BabysitError
from babysit.experiment import EvalResult, topk_accuracy, tta_warnings
from babysit.figures import members_figure, png
from babysit.limits import read_small_text
from babysit.rundir import EnsembleDir, atomic_write_bytes, atomic_write_text, named_dir
from babysit.train.tta import tta_views


@dataclass
class MemberScore:
    label: str
    run: str  # relative to the ensemble directory
    weights: str
    share: float  # w_i of the average
    val_acc: float
    test_acc: float


@dataclass
class EnsembleResult:
    path: Path
    source: str
    weighted: bool
    members: list[MemberScore]
    val_acc: float
    test_acc: float
    val_loss: float
    test_loss: float
    classes: list[str]

    def gains(self) -> dict[str, float]:
        """Ensemble minus the best member and minus the mean member, on val and on test."""
        out = {}
        for split in ("val", "test"):
            accs = [getattr(m, f"{split}_acc") for m in self.members]
            mine = getattr(self, f"{split}_acc")
            out[f"{split}_over_best"] = mine - max(accs)
            out[f"{split}_over_mean"] = mine - sum(accs) / len(accs)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"kind": "babysit ensemble", "created": datetime.now().isoformat(timespec="seconds"),
                "source": self.source, "weighted": self.weighted, "members": [asdict(m) for m in self.members],
                "val_acc": self.val_acc, "test_acc": self.test_acc, "val_loss": self.val_loss,
                "test_loss": self.test_loss, "gains": self.gains(), "classes": self.classes}

    def format(self) -> str:
        width = max(12, *(len(m.label) for m in self.members))
        lines = [f"{'member':<{width}}  {'share':>6}  {'val acc':>8}  {'test acc':>8}"]
        lines += [f"{m.label:<{width}}  {m.share:6.3f}  {m.val_acc:8.4f}  {m.test_acc:8.4f}" for m in self.members]
        lines.append(f"{'ensemble':<{width}}  {'':>6}  {self.val_acc:8.4f}  {self.test_acc:8.4f}  "
                     f"({'shares: val accuracy / their sum' if self.weighted else 'mean of the probabilities'})")
        g = self.gains()
        lines.append(f"gain over the best member: val {g['val_over_best']:+.4f}, test {g['test_over_best']:+.4f}; "
                     f"over the mean member: val {g['val_over_mean']:+.4f}, test {g['test_over_mean']:+.4f}")
        return "\n".join(lines)


def score(ens: Ensemble, weighted: bool = False) -> tuple[list[tuple[float, float]], dict[str, float]]:
    """Each member's (val, test) accuracy and the ensemble's val/test accuracy and loss; sets ``ens.shares``
    (val accuracy / their sum when ``weighted``)."""
    per_split = {}
    for split in ("val", "test"):
        x, y = ens.split(split)
        probs = ens.member_probabilities(x)
        per_split[split] = (probs, y, [accuracy(p, y) for p in probs])
    val_accs = per_split["val"][2]
    if weighted:
        ens.shares = [a / sum(val_accs) for a in val_accs]
    totals = {}
    for split, (probs, y, _) in per_split.items():
        combined = ens.combine(probs)
        totals[f"{split}_acc"], totals[f"{split}_loss"] = accuracy(combined, y), nll(combined, y)
    return list(zip(val_accs, per_split["test"][2])), totals


def ensemble(runs: list[str | Path] | tuple[str | Path, ...] = (), *, seeds: int = 0, cfg: C.RunConfig | None = None,
             search: str | Path | None = None, top: int | None = None, snapshots: str | Path | None = None,
             checkpoints: str | Path | None = None, last: int | None = None, weights: str = "best",
             weighted: bool = False, out: str | Path = "runs", name: str = "", device: str = "cpu") -> EnsembleResult:
    """``babysit ensemble``: members from run directories (``runs``, each with ``weights``), ``seeds`` runs of
    ``cfg``, the ``top`` trials of a ``search`` directory, the ``snapshots`` of a cosine-restarts run or the
    ``last`` epochs of ``checkpoints``; writes OUT/NAME/ensemble.json (+ ensemble.png) and returns the scores."""
    source = check_choice([str(r) for r in runs], seeds, str(search or ""), str(snapshots or ""),
                          str(checkpoints or ""), top, last, overrides=cfg is not None and not seeds)
    folder = EnsembleDir(named_dir(out, name or f"ensemble-{datetime.now():%Y%m%d-%H%M%S}"))
    if folder.ensemble.exists():
        raise BabysitError(f"{str(folder.path)!r} already holds an ensemble; choose another --name.")
    if source == "seeds":
        C.validate(cfg or C.RunConfig())
        members = train_seeds(cfg or C.RunConfig(), seeds, folder.path)
    elif source == "runs":
        members = from_runs(list(runs), weights)
    elif source == "search":
        members = from_search(search or "", top or 5)
    elif source == "snapshots":
        members = from_snapshots(snapshots or "")
    else:
        members = from_checkpoints(checkpoints or "", last or 2)
    ens = Ensemble(members, device=device)
    accs, totals = score(ens, weighted)
    folder.path.mkdir(parents=True, exist_ok=True)
    result = EnsembleResult(folder.path, source, weighted, [
        MemberScore(m.label, os.path.relpath(m.run, folder.path), m.weights, share, val, test)
        for m, share, (val, test) in zip(members, ens.shares, accs)], classes=ens.classes, **totals)
    write(result)
    return result


def write(result: EnsembleResult) -> None:
    """ENS/ensemble.json and ENS/ensemble.png, atomically."""
    folder = EnsembleDir(result.path)
    atomic_write_text(folder.ensemble, json.dumps(result.to_json(), indent=2) + "\n")
    fig = members_figure([m.label for m in result.members], [m.val_acc for m in result.members],
                         [m.test_acc for m in result.members], result.val_acc, result.test_acc)
    atomic_write_bytes(folder.figure, png(fig))


def read_members(path: str | Path) -> tuple[list[Member], list[float]]:
    """An ensemble directory's members and their shares, as ensemble.json lists them (no model loaded)."""
    folder = EnsembleDir(path)
    try:
        saved = json.loads(read_small_text(folder.ensemble))
        members = [Member(Path(os.path.normpath(folder.path / m["run"])), m["weights"]) for m in saved["members"]]
        shares = [float(m["share"]) for m in saved["members"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise BabysitError(f"{str(folder.ensemble)!r} is missing or damaged; build the ensemble again with "
                           "`babysit ensemble`.") from None
    return members, shares


def load_ensemble(path: str | Path, device: str = "cpu") -> Ensemble:
    """An ensemble directory's members, loaded with their shares."""
    members, shares = read_members(path)
    return Ensemble(members, shares, device)


def evaluate_ensemble(path: str | Path, split: str = "test", device: str = "cpu", tta: str = "") -> EvalResult:
    """``babysit eval ENS``: accuracy, loss (of the averaged probabilities) and confusion matrix on one split;
    with ``tta`` each member's probabilities are first averaged over those test-time views."""
    ens = load_ensemble(path, device)
    x, y = ens.split(split)
    probs = ens.predict(x)
    pred, tta_acc, views = probs.argmax(1), None, 0
    if tta:
        tta_probs = ens.predict(x, tta=tta)
        pred, tta_acc = tta_probs.argmax(1), accuracy(tta_probs, y)
        views = max(len(tta_views(tta, m.cfg, len(ens.classes))) for m in ens.members)
    k = len(ens.classes)
    confusion = torch.bincount(y.cpu() * k + pred.cpu(), minlength=k * k).view(k, k)
    warnings = tta_warnings(tta, ens.members[0].cfg.data.name) if tta else []
    top5 = topk_accuracy(probs, y, 5) if k > 5 else None
    return EvalResult(split, nll(probs, y), accuracy(probs, y), confusion, ens.classes, tta, views, tta_acc,
                      tuple(warnings), top5)
