"""``babysit report RUN`` -> RUN/report.html: one self-contained page (images embedded, no network).

Findings at the top, then: run summary and config, sanity checks, loss curve (raw + smoothed, with a
log-scale switch), train/val accuracy with the gap shaded, the learning rate, update/weight ratio per
layer, dead/saturated units, activation and gradient histograms per layer, first-layer filters,
confusion matrix and per-class accuracy on val, and the most-confused pairs with example images.
Everything is read from the run directory; sections whose data the run lacks say so.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from babysit.ckptfile import load_checkpoint
from babysit.ema import ema
from babysit.errors import BabysitError
from babysit.limits import read_small_text
from babysit.models.spec import layer_labels
from babysit.review.diagnose import UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW, diagnose_run, read_findings
from babysit.review.drawing import Drawings, figure, img
from babysit.review.findings import LOW_LR_SHARE, Finding
from babysit.review.metrics import per_class
from babysit.review.stats import read_histograms, read_layer_records, read_val_analysis
from babysit.rundir import RunDir, atomic_write_text

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1050px;margin:24px auto;padding:0 16px;
color:#222;background:#fff}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.finding{border-left:5px solid #999;padding:6px 12px;margin:8px 0;background:#f7f7f7}
.error{border-color:#c0392b;background:#fdecea}.warning{border-color:#e67e22;background:#fef5e7}
.info{border-color:#2980b9;background:#eaf2f8}.ok{border-color:#27ae60;background:#eafaf1}
.pass{color:#1e8449;font-weight:bold}.fail{color:#c0392b;font-weight:bold}
img{max-width:100%}pre{background:#f4f4f4;padding:8px;overflow-x:auto;font-size:.85em}
.muted{color:#777}.filters{display:flex;gap:24px;flex-wrap:wrap}.filters figure{margin:0}
#logy:checked ~ .lin{display:none}#logy:not(:checked) ~ .log{display:none}
"""


def page(title: str, sections: list[str]) -> str:
    """A self-contained HTML page: the title, the report's CSS and the sections in order (run, search, recipe)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{CSS}</style></head><body>{"".join(sections)}</body></html>\n')


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_small_text(path)) if path.exists() else None
    except json.JSONDecodeError:
        return None


def _findings_html(findings: list[Finding]) -> str:
    if not findings:
        return '<div class="finding ok">No findings: the curves and layer statistics look healthy.</div>'
    return "".join(
        f'<div class="finding {html.escape(f.severity)}"><b>{html.escape(f.title)}</b><br>'
        f"saw: {html.escape(f.observation)}<br>why: {html.escape(f.cause)}<br>next: {html.escape(f.action)}</div>"
        for f in findings)


def _summary_html(run: RunDir, meta: dict[str, Any], result: dict[str, Any], epochs: list[dict[str, Any]]) -> str:
    rows = [("data", f"{meta.get('data', '?')} ({meta.get('source', '')})"),
            ("classes", len(meta.get("classes", []))),
            ("input", "x".join(map(str, meta.get("input_shape", [])))),
            ("train / val / test", " / ".join(map(str, meta.get("split_sizes", [])))),
            ("epochs run", len(epochs)),
            ("best val accuracy", f"{result['best_val_acc']:.4f} (epoch {result['best_epoch']})" if result else "-"),
            ("test accuracy", "- (the run did not finish)" if not result else "not scored (train.score_test=false)"
             if result.get("test_acc") is None else f"{result['test_acc']:.4f}"),
            ("wall time", f"{result['seconds']:.1f} s" if result else "-"),
            ("seed", meta.get("seed", "?")), ("torch", meta.get("torch", "?")),
            ("git commit", meta.get("git_commit") or "-"), ("created", meta.get("created", "?"))]
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    spec = read_small_text(run.spec).strip() if run.spec.exists() else "?"
    config = read_small_text(run.config) if run.config.exists() else ""
    return (f"<table>{body}</table><p>spec: <code>{html.escape(spec)}</code></p>"
            f"<details><summary>resolved config</summary><pre>{html.escape(config)}</pre></details>")


def _checks_html(checks: list[dict[str, Any]]) -> str:
    if not checks:
        return '<p class="muted">No sanity checks were recorded (monitor.checks was off, or the run was resumed).</p>'
    rows = "".join(
        f"<tr><td class=\"{'pass' if c['passed'] else 'fail'}\">{'PASS' if c['passed'] else 'FAIL'}</td>"
        f"<td>{html.escape(c['title'])}</td><td>{html.escape(c['summary'])}</td>"
        f"<td>{html.escape(c.get('advice') or '')}</td></tr>" for c in checks)
    return f"<table><tr><th></th><th>check</th><th>numbers</th><th>suspect</th></tr>{rows}</table>"


def _curves_html(steps: list[dict[str, Any]], epochs: list[dict[str, Any]]) -> str:
    from babysit.review.plots import accuracy_figure, epoch_loss_figure, loss_figure, lr_figure

    if not steps:
        return '<p class="muted">No steps recorded.</p>'
    xs = [int(r["step"]) for r in steps]
    losses = [float(r["loss"]) for r in steps]
    smoothed = ema(losses, 0.9 if len(losses) < 500 else 0.98)
    bounds = [int(e["step"]) for e in epochs]
    parts = ["<h2>Loss</h2>", '<input type="checkbox" id="logy"><label for="logy"> log-scale y axis</label>',
             f'<div class="lin">{figure(loss_figure(xs, losses, smoothed, False, bounds), "loss curve")}</div>']
    if all(v > 0 for v in losses):
        parts.append(f'<div class="log">{figure(loss_figure(xs, losses, smoothed, True, bounds), "loss curve, log y")}'
                     "</div>")
    else:
        parts.append('<div class="log muted">The loss has values <= 0: no log scale.</div>')
    scored = [e for e in epochs if e.get("val_loss") is not None and e.get("cost") is not None]
    if scored:  # runs from before the split recorded only the cost: their data loss is shown as the cost
        parts += ["<h2>Train data loss / val loss</h2>", figure(epoch_loss_figure(
            [e["epoch"] for e in scored], [e.get("data_loss", e["cost"]) for e in scored],
            [e["val_loss"] for e in scored], [e.get("reg", 0.0) for e in scored]), "train and val loss"),
            "<p class='muted'>The val loss has no regularisation term, so it is drawn beside the training "
            "<i>data</i> loss; the cost the epoch line prints is data loss + regularisation. The train loss is the "
            "mean over the epoch's mini-batches (in training mode: dropout, augmentation), the val loss is measured "
            "once at the epoch's end.</p>"]
    acc = [e for e in epochs if e.get("train_acc") is not None and e.get("val_acc") is not None]
    if acc:
        parts += ["<h2>Train / val accuracy</h2>", figure(accuracy_figure(
            [e["epoch"] for e in acc], [e["train_acc"] for e in acc], [e["val_acc"] for e in acc]), "accuracy")]
    parts += ["<h2>Learning rate</h2>", figure(lr_figure(xs, [float(r["lr"]) for r in steps]), "learning rate")]
    return "".join(parts)


def _series(records: list[dict[str, Any]], stat: str, kinds: tuple[str, ...]) -> dict[str, tuple[list[int], list[Any]]]:
    out: dict[str, tuple[list[int], list[Any]]] = {}
    for r in records:
        for name, s in r["layers"].items():
            if s.get("kind") in kinds and stat in s:
                xs, ys = out.setdefault(name, ([], []))
                xs.append(r["step"])
                ys.append(s[stat])
    return out


def low_lr_spans(records: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Step spans whose probes ran below half the peak lr (warm-up, the end of a cosine or one-cycle run): the
    update/weight ratio falls with the lr there, and the finding (layer_rules.update_ratio) leaves them out."""
    peak = max((float(r.get("lr", 0.0)) for r in records), default=0.0)
    spans: list[tuple[float, float]] = []
    for i, r in enumerate(records):
        if peak > 0 and float(r.get("lr", 0.0)) < LOW_LR_SHARE * peak:
            a = (records[i - 1]["step"] + r["step"]) / 2 if i else r["step"]
            b = (r["step"] + records[i + 1]["step"]) / 2 if i + 1 < len(records) else r["step"]
            if spans and spans[-1][1] >= a:
                spans[-1] = (spans[-1][0], b)
            else:
                spans.append((a, b))
    return spans


def _layers_html(run: RunDir, labels: dict[str, str]) -> str:
    from babysit.review.plots import histograms_figure, layer_stat_figure

    records = read_layer_records(run)
    if not records:
        return '<p class="muted">No layer statistics (monitor.stats_every was 0, or the run stopped first).</p>'
    parts = [figure(layer_stat_figure(_series(records, "update_ratio", ("conv", "fc")), "||dW|| / ||W||",
                                    "update / weight ratio per layer (want ~1e-3)", log=True,
                                    band=(UPDATE_RATIO_LOW, UPDATE_RATIO_HIGH), target=1e-3, labels=labels,
                                    low_lr=low_lr_spans(records)), "update/weight ratio")]
    parts.append(figure(layer_stat_figure(_series(records, "act_std", ("conv", "fc", "relu", "lrelu", "elu", "tanh",
                                                                     "sigmoid", "bn")), "std",
                                        "activation std per layer", log=True, labels=labels), "activation std"))
    for stat, kinds, title in (("dead", ("relu",), "dead ReLU fraction (never positive over the probed batch)"),
                               ("saturated", ("tanh", "sigmoid"), "saturated fraction (|y| > 0.99)")):
        series = _series(records, stat, kinds)
        if series:
            parts.append(figure(layer_stat_figure(series, "fraction", title, labels=labels), title))
    parts.append(figure(layer_stat_figure(_series(records, "grad_norm", ("conv", "fc")), "||dL/dW||",
                                        "weight-gradient norm per layer", log=True, labels=labels), "gradient norm"))
    hists = read_histograms(run)
    if hists:
        layer_kinds = {n: s.get("kind", "") for n, s in records[-1]["layers"].items()}
        parts += ["<h2>Activation / gradient histograms</h2><p class='muted'>At the first and the last kept probe, "
                  "each panel on its own range: its 0.5-99.5 % quantiles, the values outside counted in the edge bins "
                  "(the panel says what share). Compare shapes along a row; the numbers on the x axes give the "
                  "scale.</p>",
                  figure(histograms_figure(hists[0]["layers"], hists[-1]["layers"], layer_kinds, labels,
                                         (hists[0]["step"], hists[-1]["step"])), "histograms", tight=False)]
    return "".join(parts)


def _filters_html(run: RunDir) -> str:
    from babysit.review.plots import filters_figure

    if run.first_layer.is_file():
        try:
            tensors, _ = load_checkpoint(run.first_layer)
        except BabysitError:  # a damaged file falls back to the pictures
            tensors = {}
        if "initial" in tensors:
            latest = tensors.get("latest")
            return (figure(filters_figure(tensors["initial"].numpy(), None if latest is None else latest.numpy()),
                         "first-layer filters") +
                    '<p class="muted">Both on one scale. Noisy filters suggest an unconverged network, a badly set '
                    "learning rate or too little regularisation; smooth, diverse ones that training goes well.</p>")
    cells = [f"<figure>{img(path.read_bytes(), label)}<figcaption>{label}</figcaption></figure>"
             for path, label in ((run.filters_initial, "at initialisation"), (run.filters, "at the end"))
             if path.is_file()]
    if not cells:
        return ('<p class="muted">No first-layer image (layer statistics were off, or the first layer is not '
                "image-shaped).</p>")
    return (f'<div class="filters">{"".join(cells)}</div><p class="muted">Noisy filters suggest an unconverged '
            "network, "
            "a badly set learning rate or too little regularisation; smooth, diverse ones that training goes well.</p>")


def _inputs_html(run: RunDir) -> str:
    """Preprocessing and the training augmentation, with a picture of augmented training images."""
    import tomllib

    config = tomllib.loads(read_small_text(run.config)) if run.config.exists() else {}
    described = config.get("data", {}).get("preprocess", "?")
    if run.preprocess.is_file():
        try:
            saved = load_checkpoint(run.preprocess)[1]
            described = saved.get("describe") or saved.get("kind") or described
        except BabysitError:  # a damaged statistics file must not stop the report
            pass
    augment = config.get("augment", {})
    pipeline = ", ".join(augment.get("pipeline", [])) or "none"
    parts = [f"<p>preprocessing (fitted on the training split): <code>{html.escape(str(described))}</code><br>"
             f"augmentation (training batches only): <code>{html.escape(pipeline)}</code>"
             + (f", fill {html.escape(str(augment.get('fill')))}" if augment.get("pipeline") else "") + "</p>"]
    if run.augment.is_file():
        parts.append(img(run.augment.read_bytes(), "augmented training images") +
                     '<p class="muted">First column: the training image; then the same image in the first '
                     "training batches. If a class is no longer recognisable, the augmentation is too strong.</p>")
    return "".join(parts)


def _val_html(run: RunDir) -> str:
    from babysit.review.plots import confused_pairs_figure, confusion_figure

    summary, examples = read_val_analysis(run)
    if summary is None:
        return '<p class="muted">No validation analysis (the run did not finish).</p>'
    classes = summary["classes"]
    parts = [f"<p>val accuracy {summary['accuracy']:.4f} with the best weights.</p>",
             figure(confusion_figure(summary["confusion"], classes, summary["per_class_acc"]), "confusion matrix")]
    parts.append(_per_class_html(classes, summary["confusion"]))
    if summary["pairs"]:
        parts += ["<h2>Most-confused pairs (true -> predicted)</h2>",
                  figure(confused_pairs_figure(summary["pairs"], examples, classes), "most confused pairs")]
    return "".join(parts)


def _per_class_html(classes: list[str], confusion: Any) -> str:
    """Precision, recall and F1 of each class on val (babysit.review.metrics), with the macro average."""
    m = per_class(confusion)
    rows = "".join(f"<tr><td>{html.escape(str(c))}</td><td>{p:.3f}</td><td>{r:.3f}</td><td>{f:.3f}</td>"
                   f"<td>{n}</td></tr>" for c, p, r, f, n in zip(classes, m.precision, m.recall, m.f1, m.support))
    return ("<h3>Precision, recall and F1 per class (val)</h3><table><tr><th>class</th><th>precision</th>"
            f"<th>recall</th><th>F1</th><th>images</th></tr>{rows}<tr><th>macro avg</th><th>{m.precision.mean():.3f}"
            f"</th><th>{m.recall.mean():.3f}</th><th>{m.macro_f1:.3f}</th><th>{int(m.support.sum())}</th></tr></table>")


def _transfer_html(run: RunDir) -> str:
    """A fine-tune run's origin: the source run and its data, the strategy, and what auto measured and chose."""
    info = _read_json(run.transfer) if run.transfer.exists() else None
    if not isinstance(info, dict):
        return ""
    rows = [("source run", info.get("source")), ("source data", info.get("source_data")),
            ("strategy", info.get("strategy")), ("unfreezing", info.get("unfreeze")),
            ("lr multiplier per layer below the head", info.get("layer_decay"))]
    if info.get("strategy") == "top":
        rows.insert(3, ("top weight layers trained", info.get("layers")))
    auto = info.get("auto")
    if isinstance(auto, dict):
        rows.append(("auto chose", f"{auto.get('cell')} -> {auto.get('strategy')}"))
        rows.append(("why", auto.get("reason")))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<h2>Transfer learning</h2><table>{body}</table>"


def _tasks_html(run: RunDir, result: dict[str, Any] | None, epochs: list[dict[str, Any]]) -> str:
    """Multi-task runs: every head's val accuracy at the best epoch and its test accuracy."""
    result = result if isinstance(result, dict) else {}  # a run that has not finished has no result.json
    epochs = [e for e in epochs or [] if isinstance(e, dict)]
    best = next((e for e in epochs if e.get("epoch") == result.get("best_epoch")), epochs[-1] if epochs else {})
    val = best.get("val_acc_tasks") or {}
    test = result.get("test_acc_tasks") or {}
    if not val and not test:
        return ""
    rows = "".join(f"<tr><td>{html.escape(t)}</td><td>{val.get(t, float('nan')):.4f}</td>"
                   f"<td>{test.get(t, float('nan')):.4f}</td></tr>" for t in dict.fromkeys([*val, *test]))
    return ("<h2>Tasks</h2><p class='muted'>One head per task on a shared trunk (model.heads); the first task's "
            f"accuracy picks the kept epoch.</p><table><tr><th>task</th><th>val (best epoch)</th><th>test</th></tr>"
            f"{rows}</table>")


def _labels(run: RunDir) -> dict[str, str]:
    """Layer name -> "3 conv3-64" from the run's spec.txt ({} without one)."""
    return layer_labels(read_small_text(run.spec).strip()) if run.spec.exists() else {}


def render_report(path: RunDir | str | Path) -> str:
    """The report of run directory ``path`` as one HTML string."""
    run = RunDir.open(path)
    history = run.read_history()
    steps = [r for r in history if r.get("kind") == "step"]
    epochs = [r for r in history if r.get("kind") == "epoch"]
    meta = _read_json(run.meta) or {}
    result = _read_json(run.result)
    checks = (_read_json(run.checks) or {}).get("checks", [])
    if not run.findings.is_file():
        diagnose_run(run)
    title = f"babysit report: {run.path.name}"
    with Drawings() as drawings:  # the figures are drawn together, in parallel, when the page is done
        sections = [f"<h1>{html.escape(title)}</h1>", "<h2>Findings</h2>", _findings_html(read_findings(run)),
                    "<h2>Run</h2>", _summary_html(run, meta, result, epochs), _transfer_html(run),
                    _tasks_html(run, result, epochs),
                    "<h2>Input pipeline</h2>", _inputs_html(run),
                    "<h2>Sanity checks</h2>", _checks_html(checks),
                    _curves_html(steps, epochs), "<h2>Layer statistics</h2>", _layers_html(run, _labels(run)),
                    "<h2>First-layer filters</h2>", _filters_html(run), "<h2>Validation</h2>", _val_html(run)]
    return drawings.fill(page(title, sections))


def write_report(path: RunDir | str | Path) -> Path:
    """Write RUN/report.html (atomically) and return its path."""
    out = RunDir.of(path).report
    atomic_write_text(out, render_report(path))
    return out
