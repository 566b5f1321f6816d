"""``babysit distill ENSEMBLE``: train one (smaller) network on an ensemble's soft targets plus the labels
(Hinton, Vinyals & Dean 2015; the notes: "distil an ensemble back to a single model").

The teacher's probabilities at temperature T, p_T = sum_i w_i softmax(f_i(x) / T), are computed once per
training image, on the unaugmented images, and kept in RUN/teacher.safetensors: the student is trained
without augmentation (a view the teacher never scored would need the whole ensemble at every step), and
a resumed distillation reads the same numbers back. The loss is babysit.train.losses.distillation_loss:
alpha T^2 KL(p_T || softmax(s / T)) + (1 - alpha) CE(s, y).

The student starts from the first member's config (same data and split; any option may be overridden,
usually ``--model.spec``), with augmentation off.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from babysit import config as C
from babysit.data.split import split_seed
from babysit.ensemble.make import load_ensemble, read_members
from babysit.ensemble.predict import split_difference, split_identity
from babysit.errors import BabysitError
from babysit.experiment import TrainResult, train
from babysit.log import get_logger
from babysit.rundir import EnsembleDir, RunDir
from babysit.start import Plan

_log = get_logger(__name__)


def student_config(teacher: str | Path, cfg: C.RunConfig | None = None,
                   overrides: dict[str, Any] | None = None) -> C.RunConfig:
    """The student's config: ``cfg`` (default: the first member's, with its split pinned and augmentation off),
    then ``overrides``, with ``distill.teacher`` set; refused when it would not use the teacher's split."""
    folder = EnsembleDir(teacher)
    if not EnsembleDir.holds_one(folder.path):
        raise BabysitError(f"{str(folder.path)!r} is not an ensemble directory (no ensemble.json); build one with "
                           "`babysit ensemble RUN RUN ...` (or --seeds=N) and distil that.")
    members, _ = read_members(folder.path)
    first = C.load_toml(RunDir.open(members[0].run).config)
    if cfg is None:
        cfg = replace(first, data=replace(first.data, split_seed=split_seed(first)),
                      augment=replace(first.augment, pipeline=()))
    student = C.apply_overrides(cfg, {**(overrides or {}), "distill.teacher": str(folder.path)})
    if split_identity(student) != split_identity(first):
        raise BabysitError(f"the student would train on another split than the ensemble's members "
                           f"({split_difference(student, first)}); keep the members' data options and "
                           f"--data.split_seed={split_seed(first)}.")
    return student


def distill(teacher: str | Path, cfg: C.RunConfig | None = None, overrides: dict[str, Any] | None = None,
            out: str | Path = "runs", name: str = "") -> TrainResult:
    """Train a student on the ensemble ``teacher``'s soft targets (``distill.temperature``, ``distill.alpha``)."""
    student = student_config(teacher, cfg, overrides)

    def soft_targets(plan: Plan) -> torch.Tensor:
        ens = load_ensemble(student.distill.teacher, device=str(plan.device))
        _log.info(f"teacher: {len(ens.members)} members' probabilities at T={student.distill.temperature:g} for "
                  f"{len(plan.splits.train)} training images")
        return ens.predict(plan.splits.train.x, temperature=student.distill.temperature).cpu()

    return train(student, out=out, name=name, soft_targets=soft_targets)
