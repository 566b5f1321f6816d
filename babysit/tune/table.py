"""What a search leaves for people and other commands: trials.csv (one row per trial, every stage) and
best.toml (the best trial's values on the base config, at the full budget).

trials.csv columns, in order: number, stage, state, val_acc, val_acc_std, test_acc, epochs, seconds,
run_dir, reason, then params_KEY for each searched key. ``number`` is unique across stages (the trial's
folder trials/NNNN), ``run_dir`` is relative to the search folder (the first fold's run with K-fold),
``state`` is COMPLETE, PRUNED, KILLED or FAIL. Trials still running are not listed yet.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from babysit import config as C
from babysit.rundir import SearchDir, atomic_write_text
from babysit.tune.space import apply_params, show
from babysit.tune.study import find_study, relative, stage_info, stage_space, stage_trials, study_name

COLUMNS = ("number", "stage", "state", "val_acc", "val_acc_std", "test_acc", "epochs", "seconds", "run_dir", "reason")
_OPTUNA_STATES = {TrialState.COMPLETE: "COMPLETE", TrialState.PRUNED: "PRUNED", TrialState.FAIL: "FAIL"}


@dataclass
class TrialRow:
    """One finished trial as the table shows it."""

    number: int
    stage: str
    state: str
    val_acc: float | None
    val_acc_std: float | None
    test_acc: float | None
    epochs: int
    seconds: float
    run_dir: str
    reason: str
    params: dict[str, Any] = field(default_factory=dict)

    def cells(self, keys: list[str]) -> list[str]:
        def num(v: float | None) -> str:
            return "" if v is None else repr(float(v))

        return [str(self.number), self.stage, self.state, num(self.val_acc), num(self.val_acc_std), num(self.test_acc),
                str(self.epochs), f"{self.seconds:.2f}", self.run_dir, self.reason,
                *(("" if k not in self.params else str(self.params[k])) for k in keys)]


def stage_rows(study: optuna.Study, stage: str, sdir: SearchDir) -> list[TrialRow]:
    """The finished (and abandoned) trials of one stage's study, in trial order."""
    rows = []
    offset = int((stage_info(study) or {}).get("offset", 0))
    for t, gone in stage_trials(study):
        u = t.user_attrs.get("outcome", {})
        if gone:
            state, reason = "FAIL", gone
        elif t.state in _OPTUNA_STATES:
            state, reason = u.get("state", _OPTUNA_STATES[t.state]), u.get("reason", "")
        else:
            continue
        number = offset + t.number
        rows.append(TrialRow(number, stage, state, u.get("val_acc"), u.get("val_acc_std"), u.get("test_acc"),
                             int(u.get("epochs", 0)), float(u.get("seconds", 0.0)),
                             u.get("run_dir") or relative(sdir.trial(number), sdir), reason, dict(t.params)))
    return rows


def collect(sdir: SearchDir, cfg: C.RunConfig,
            storage: optuna.storages.BaseStorage) -> tuple[list[TrialRow], list[str]]:
    """Every stage's finished trials, and the searched keys (the table's params_ columns), from the storage."""
    rows: list[TrialRow] = []
    keys: list[str] = []
    for stage in cfg.search.stages:
        study = find_study(storage, study_name(cfg, sdir, stage))
        info = stage_info(study) if study is not None else None
        if study is None or info is None:
            continue
        keys += [p.key for p in stage_space(info) if p.key not in keys]
        rows += stage_rows(study, stage, sdir)
    return rows, keys


def refresh_table(sdir: SearchDir, cfg: C.RunConfig, storage: optuna.storages.BaseStorage) -> list[TrialRow]:
    """Rewrite trials.csv from the storage (every worker after each trial; the master at the end)."""
    rows, keys = collect(sdir, cfg, storage)
    write_table(sdir, rows, keys)
    return rows


def best_row(rows: list[TrialRow]) -> TrialRow | None:
    """The best COMPLETE trial of the last stage that has one (the fine stage trains the full budget, so its
    scores are the ones to compare); ties go to the earlier trial."""
    for stage in ("fine", "coarse"):
        done = [r for r in rows if r.stage == stage and r.state == "COMPLETE" and r.val_acc is not None]
        if done:
            return min(done, key=lambda r: (-r.val_acc, r.number))  # type: ignore[operator]
    return None


def write_table(sdir: SearchDir, rows: list[TrialRow], keys: list[str]) -> None:
    """trials.csv, atomically (workers rewrite it after each trial)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*COLUMNS, *(f"params_{k}" for k in keys)])
    for r in sorted(rows, key=lambda r: r.number):
        w.writerow(r.cells(keys))
    atomic_write_text(sdir.trials, buf.getvalue())


def read_table(sdir: SearchDir) -> list[dict[str, str]]:
    with open(sdir.trials, newline="") as f:
        return list(csv.DictReader(f))


def best_config(cfg: C.RunConfig, best: TrialRow) -> C.RunConfig:
    """The base config with the best trial's values: the full epochs and data, the single validation split
    and the base's monitoring, ready for ``babysit train``."""
    return apply_params(cfg, best.params)


def write_best(sdir: SearchDir, cfg: C.RunConfig, best: TrialRow) -> None:
    """best.toml with a header saying where it came from."""
    scores = f"val accuracy {best.val_acc:.4f}" + (f" +- {best.val_acc_std:.4f} over {cfg.search.folds} folds"
                                                  if best.val_acc_std is not None else "")
    header = (f"# the best trial of search {sdir.path.name}: trial {best.number} ({best.stage} stage, {best.run_dir}), "
              f"{scores}\n# values found: " + ", ".join(f"{k}={show(v)}" for k, v in best.params.items()) +
              "\n# train it: babysit train --config best.toml\n")
    atomic_write_text(sdir.best, header + C.dumps_toml(best_config(cfg, best)))
