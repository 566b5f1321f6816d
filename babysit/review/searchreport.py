"""``search/NAME/report.html``: what a hyper-parameter search found, read from its folder alone
(trials.csv, space.json, best.toml), with the notes' warnings as findings:

- best value on the border of its range (outer 10 %, in log space for a log range) -> widen it;
- a parameter whose trials all score alike -> it does not matter in this range;
- many trials killed (the loss exploded) -> the ranges are too aggressive.

Then the table and val accuracy against each searched value (log x where searched on a log scale,
coarse and fine trials in two colours).
"""

from __future__ import annotations

import csv
import html
import json
import math
import statistics
from pathlib import Path
from typing import Any

from babysit.limits import read_small_text
from babysit.review.diagnose import best_on_border
from babysit.review.drawing import Drawings, figure
from babysit.review.findings import Finding
from babysit.review.report import _findings_html, page
from babysit.rundir import SearchDir, atomic_write_text

EQUAL_TOL = 0.01
"""Groups of trials whose mean val accuracies differ by less than this (one percentage point) score alike."""
MIN_TRIALS = 4
"""Trials a stage needs before the report says a parameter does not matter."""
KILLED_SHARE = 0.3
"""This share of killed trials (at least two) means the ranges are too aggressive."""


def _float(text: str | None) -> float | None:
    try:
        v = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return v if v is not None and math.isfinite(v) else None


def read_search(path: SearchDir | str | Path) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The rows of trials.csv and space.json ({} when missing)."""
    sdir = path if isinstance(path, SearchDir) else SearchDir(path)
    rows: list[dict[str, str]] = []
    if sdir.trials.is_file():
        with open(sdir.trials, newline="") as f:
            rows = list(csv.DictReader(f))
    info = json.loads(read_small_text(sdir.space)) if sdir.space.exists() else {}
    return rows, info


def _params(info: dict[str, Any], stage: str | None = None) -> list[dict[str, Any]]:
    """The searched parameters of ``stage`` (default: the first stage, the user's own ranges)."""
    stages = [s for s in info.get("stages", []) if s.get("params") and (stage is None or s["name"] == stage)]
    return stages[0]["params"] if stages else []


def _complete(rows: list[dict[str, str]], stage: str) -> list[dict[str, str]]:
    return [r for r in rows if r["stage"] == stage and r["state"] == "COMPLETE" and _float(r["val_acc"]) is not None]


def _test(row: dict[str, str]) -> str:
    """A trial's test accuracy, or why there is none (a recipe keeps the test split unseen until its end)."""
    value = _float(row.get("test_acc"))
    return f"{value:.4f}" if value is not None else "not scored"


def best_of(rows: list[dict[str, str]]) -> dict[str, str] | None:
    """The best COMPLETE trial of the last stage that has one (ties: the earlier trial)."""
    for stage in ("fine", "coarse"):
        done = _complete(rows, stage)
        if done:
            return min(done, key=lambda r: (-(_float(r["val_acc"]) or 0.0), int(r["number"])))
    return None


def _position(p: dict[str, Any], value: float) -> float:
    f = math.log if p["log"] else float
    return (f(value) - f(p["low"])) / (f(p["high"]) - f(p["low"]))


def _groups(p: dict[str, Any], done: list[dict[str, str]]) -> list[list[float]]:
    """Val accuracies grouped by the parameter: by value for a list, else low / middle / high thirds."""
    cell = f"params_{p['key']}"
    if p["kind"] in ("choice", "grid"):
        by: dict[str, list[float]] = {}
        for r in done:
            by.setdefault(r[cell], []).append(_float(r["val_acc"]) or 0.0)
        return list(by.values())
    pts = sorted((_float(r[cell]), _float(r["val_acc"])) for r in done if _float(r[cell]) is not None)
    k = 3 if len(pts) >= 6 else 2
    size = len(pts) / k
    return [[acc or 0.0 for _, acc in pts[round(i * size): round((i + 1) * size)]] for i in range(k)]


def no_effect(p: dict[str, Any], stage: str, rows: list[dict[str, str]]) -> Finding | None:
    """A parameter whose groups of trials (by value) score within EQUAL_TOL of each other."""
    done = _complete(rows, stage)
    if len(done) < MIN_TRIALS:
        return None
    groups = [g for g in _groups(p, done) if g]
    if len(groups) < 2:
        return None
    means = [statistics.fmean(g) for g in groups]
    spread = max(means) - min(means)
    if spread >= EQUAL_TOL:
        return None
    what = "value" if p["kind"] in ("choice", "grid") else "low / high part of the range"
    where = (f"[{p['low']:.3g}, {p['high']:.3g}]" if p["kind"] not in ("choice", "grid")
             else ", ".join(map(str, p["choices"])))
    return Finding("search_no_effect", "info", f"{p['key']} does not matter in this range",
                   f"over {len(done)} finished {stage} trials the mean val accuracy per {what} of {p['key']} "
                   f"({where}) differs by {spread * 100:.2f} percentage points (under {EQUAL_TOL * 100:g})",
                   "in this range the parameter barely changes the result (or the trials were too short to tell)",
                   f"fix {p['key']} at any value in the range and spend the trials on the other parameters",
                   {"key": p["key"], "stage": stage, "spread": spread, "trials": len(done)})


def too_aggressive(rows: list[dict[str, str]], params: list[dict[str, Any]]) -> Finding | None:
    """Many trials killed: name the parameter whose killed trials sit highest in its range, if one does."""
    killed = [r for r in rows if r["state"] == "KILLED"]
    if len(killed) < 2 or len(killed) < KILLED_SHARE * len(rows):
        return None
    done = [r for r in rows if r["state"] == "COMPLETE"]
    hint, best_gap = "", 0.2
    for p in params:
        if p["kind"] in ("choice", "grid"):
            continue
        cell = f"params_{p['key']}"
        kv = [v for r in killed if (v := _float(r[cell])) is not None]
        dv = [v for r in done if (v := _float(r[cell])) is not None]
        if not kv:
            continue
        gap = statistics.fmean(_position(p, v) for v in kv) - (statistics.fmean(_position(p, v) for v in dv)
                                                                if dv else 0.5)
        if gap > best_gap:
            best_gap, hint = gap, (f"; the killed trials have the larger {p['key']}: lower its upper bound to about "
                                   f"{min(kv):.3g} (the smallest value a killed trial had)")
    return Finding("search_too_aggressive", "warning", "many trials killed: the ranges are too aggressive",
                   f"{len(killed)} of {len(rows)} trials were killed because their loss exploded (> 3x the "
                   "initial loss, or NaN)",
                   "the ranges reach values at which training diverges, most often a learning rate too high",
                   "narrow the ranges away from the values that diverged" + hint,
                   {"killed": len(killed), "trials": len(rows)})


def search_findings(rows: list[dict[str, str]], info: dict[str, Any]) -> list[Finding]:
    """The notes' warnings over a search's table: border, no effect, too aggressive."""
    findings: list[Finding] = []
    params = _params(info)
    best = best_of(rows)
    if best is not None:
        for p in params:
            value = _float(best.get(f"params_{p['key']}"))
            if p["kind"] in ("choice", "grid") or value is None:
                continue
            f = best_on_border(p["key"], value, p["low"], p["high"], log=p["log"])
            if f is not None:
                findings.append(f)
    for stage in info.get("stages", []):
        for p in stage.get("params") or []:
            f = no_effect(p, stage["name"], rows)
            if f is not None:
                findings.append(f)
    f = too_aggressive(rows, params)
    if f is not None:
        findings.append(f)
    return findings


def _plots_html(rows: list[dict[str, str]], info: dict[str, Any]) -> str:
    from babysit.review.plots import param_figure

    params = _params(info)
    if not rows or not params:
        return '<p class="muted">No finished trials yet.</p>'
    accs = [a for r in rows if (a := _float(r["val_acc"])) is not None]
    floor = min(accs, default=0.0) - 0.02
    parts = []
    for p in params:
        cell = f"params_{p['key']}"
        categorical = p["kind"] in ("choice", "grid")
        names = [str(c) for c in p.get("choices", [])]

        def x_of(r: dict[str, str], names: list[str] = names, cell: str = cell, categorical: bool = categorical) -> Any:
            return names.index(r[cell]) if categorical and r[cell] in names else (None if categorical else
                                                                                  _float(r[cell]))
        points: dict[str, tuple[list[float], list[float]]] = {}
        stopped = []
        for r in rows:
            x, y = x_of(r), _float(r["val_acc"])
            if x is None:
                continue
            if r["state"] in ("COMPLETE", "PRUNED") and y is not None:
                label = r["stage"] + (" (pruned)" if r["state"] == "PRUNED" else "")
                xs, ys = points.setdefault(label, ([], []))
                xs.append(x)
                ys.append(y)
            elif r["state"] in ("KILLED", "FAIL"):
                stopped.append((x, r["state"]))
        bounds = None if categorical else (p["low"], p["high"])
        parts.append(figure(param_figure(p["key"], points, stopped, p["log"], bounds, names if categorical else (),
                                       floor), f"val accuracy vs {p['key']}"))
    return f'<div class="filters">{"".join(parts)}</div>'


def _table_html(rows: list[dict[str, str]]) -> str:
    if not rows:
        return '<p class="muted">No finished trials yet.</p>'
    keys = [k for k in rows[0] if k.startswith("params_")]
    order = sorted(rows, key=lambda r: (r["state"] not in ("COMPLETE", "PRUNED"), -(_float(r["val_acc"]) or -1.0),
                                        int(r["number"])))
    head = ["#", "stage", "state", "val acc", "test acc", "epochs", "seconds", *(k[7:] for k in keys), "reason",
            "run"]

    def acc(r: dict[str, str]) -> str:
        v, s = _float(r["val_acc"]), _float(r.get("val_acc_std"))
        return "" if v is None else f"{v:.4f}" + (f" &plusmn; {s:.4f}" if s is not None else "")

    def cell(text: str) -> str:
        v = _float(text)
        return f"{v:.4g}" if v is not None and not text.isdigit() else html.escape(text)

    body = "".join(
        f"<tr class=\"{'' if r['state'] == 'COMPLETE' else 'muted'}\"><td>{r['number']}</td><td>{r['stage']}</td>"
        f"<td>{r['state']}</td><td>{acc(r)}</td><td>{cell(r['test_acc'])}</td><td>{r['epochs']}</td>"
        f"<td>{r['seconds']}</td>" + "".join(f"<td>{cell(r[k])}</td>" for k in keys)
        + f"<td>{html.escape(r['reason'])}</td><td><code>{html.escape(r['run_dir'])}</code></td></tr>" for r in order)
    return f"<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>{body}</table>"


def _summary_html(sdir: SearchDir, rows: list[dict[str, str]], info: dict[str, Any]) -> str:
    lines = []
    for stage in info.get("stages", []):
        mine = [r for r in rows if r["stage"] == stage["name"]]
        counts = ", ".join(f"{sum(r['state'] == s for r in mine)} {s.lower()}"
                           for s in ("COMPLETE", "PRUNED", "KILLED", "FAIL"))
        share = f" on {stage['data_share']:.0%} of the training images" if stage.get("data_share", 1) < 1 else ""
        lines.append(f"<tr><th>{html.escape(stage['name'])}</th><td>{stage.get('trials') or '-'} trials x "
                     f"{stage['epochs']} epoch(s){share}: {counts}</td></tr>")
    best = best_of(rows)
    if best is not None:
        spread = f" &plusmn; {_float(best['val_acc_std']):.4f}" if _float(best.get("val_acc_std")) else ""
        lines.append(f"<tr><th>best</th><td>trial {best['number']} ({best['stage']}): val {_float(best['val_acc']):.4f}"
                     f"{spread}, test {_test(best)}, <code>{html.escape(best['run_dir'])}</code>"
                     "</td></tr>")
    folds = f"{info['folds']}-fold cross-validation per trial" if info.get("folds") else "one validation split"
    lines.append(f"<tr><th>how</th><td>sampler {html.escape(str(info.get('sampler', '?')))}, pruner "
                 f"{html.escape(str(info.get('pruner', '?')))}, {folds}</td></tr>")
    best_toml = read_small_text(sdir.best) if sdir.best.exists() else ""
    return (f"<table>{''.join(lines)}</table>" + (f"<details><summary>best.toml (babysit train --config "
                                                   f"{html.escape(str(sdir.best))})</summary><pre>"
                                                   f"{html.escape(best_toml)}</pre></details>" if best_toml else ""))


def render_search_report(path: SearchDir | str | Path) -> str:
    """The search report as one self-contained HTML string."""
    sdir = path if isinstance(path, SearchDir) else SearchDir(path)
    rows, info = read_search(sdir)
    title = f"babysit search: {sdir.path.name}"
    findings = search_findings(rows, info)
    ranges = "".join(f"<li><code>{html.escape(s['name'])}: " + html.escape(", ".join(
        f"{p['key']}={p['kind']}" + (f"({p['low']:.3g}, {p['high']:.3g})" if p["kind"] not in ("choice", "grid")
                                    else f"({', '.join(map(str, p['choices']))})") for p in s["params"]))
        + "</code></li>" for s in info.get("stages", []) if s.get("params"))
    sections = [f"<h1>{html.escape(title)}</h1>", "<h2>Findings</h2>", _findings_html(findings) if findings else
                '<div class="finding ok">No findings: no best value on the border of its range, no parameter without '
                "effect, few trials killed.</div>",
                "<h2>Search</h2>", _summary_html(sdir, rows, info), f"<ul>{ranges}</ul>",
                "<h2>Val accuracy against each parameter</h2>", '<p class="muted">Blue: coarse trials, orange: fine; '
                "hollow: pruned; red crosses: killed or failed; dotted: the searched range.</p>"]
    with Drawings() as drawings:  # one figure per parameter, drawn in parallel
        sections += [_plots_html(rows, info), "<h2>Trials</h2>", _table_html(rows)]
    return drawings.fill(page(title, sections))


def write_search_report(path: SearchDir | str | Path) -> Path:
    """Write search/NAME/report.html (atomically) and return its path."""
    sdir = path if isinstance(path, SearchDir) else SearchDir(path)
    atomic_write_text(sdir.report, render_search_report(sdir))
    return sdir.report
