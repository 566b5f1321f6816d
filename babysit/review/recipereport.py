"""``recipes/NAME/report.html``: what a recipe did and why, read from its folder alone (recipe.json).

A plan-vs-actual timeline of the budget, every step's evidence and decision in words, links to every run and
search it made, the baselines beside the final model, and what to try next with more time (next_steps).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from babysit.limits import read_small_text
from babysit.review.drawing import img
from babysit.review.report import page
from babysit.rundir import RecipeDir, RunDir, SearchDir, atomic_write_text

GAP_POINTS = 2.0
"""A train - val accuracy gap of at least this many points means overfitting: the recipe's rule for adding
augmentation (babysit.recipe.rules) and the report's advice both read it here."""


def next_steps(state: dict[str, Any]) -> list[str]:
    """What to try with more time, from the evidence of the finished steps."""
    steps = {k: v.get("outputs", {}) for k, v in state.get("steps", {}).items()}
    out = []
    final = steps.get("final", {})
    if final.get("best_epoch") and final.get("epochs") and final["best_epoch"] >= final["epochs"]:
        out.append(f"Train longer: val accuracy was still rising at the final run's last epoch ({final['epochs']}); "
                   "a longer budget gives the final run more epochs.")
    if final.get("last_train_acc") is not None and final.get("last_val_acc") is not None:
        gap = 100 * (final["last_train_acc"] - final["last_val_acc"])
        if gap >= GAP_POINTS:
            out.append(f"Regularise more: the final run ended with a train - val gap of {gap:.1f} points "
                       "(overfitting): stronger augmentation, a larger weight decay or dropout, or more data.")
        elif final["last_train_acc"] < 0.99:
            out.append(f"Use a bigger model: train accuracy ended at {final['last_train_acc']:.3f} with a gap of "
                       f"{gap:.1f} points (underfitting): more filters or layers (--model.spec).")
    if steps.get("widen", {}).get("still_on_border"):
        out.append("Widen the search further: the best " + " and ".join(steps["widen"]["still_on_border"])
                   + " still lay on the border after one widening.")
    ens = steps.get("ensemble", {})
    if len(ens.get("members", [])) > 1:
        out.append(f"Train more ensemble members (other seeds: `babysit ensemble --seeds=5 --config "
                   f"...`): the ensemble gained {100 * (ens['val_acc'] - ens['final_val_acc']):+.2f} points on val.")
    fine = steps.get("fine", {})
    if fine and fine.get("share", 1.0) < 1.0:
        out.append(f"Search on more data: the fine trials saw {100 * fine['share']:.0f}% of the training images.")
    return out or ["Nothing stands out: more time would go to more search trials and a longer final run."]


def _timeline(state: dict[str, Any]) -> str:
    budget = state["budget_s"]
    scale = 100 / max(budget, sum(s["seconds"] for s in state["steps"].values()), 1e-9)
    rows = []
    for name in state["order"]:
        s = state["steps"].get(name)
        planned = state["plan"].get(name, 0.0)
        if s is None:
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{planned:.0f} s</td><td>-</td><td>-</td>"
                        "<td class='muted'>not run</td></tr>")
            continue
        bar = (f"<div style='background:#bcd;height:8px;width:{planned * scale:.1f}%'></div>"
               f"<div style='background:#2980b9;height:8px;width:{s['seconds'] * scale:.1f}%'></div>")
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{planned:.0f} s</td><td>{s['allotted']:.0f} s</td>"
                    f"<td>{s['seconds']:.1f} s</td><td style='width:50%'>{bar}</td></tr>")
    spent = sum(s["seconds"] for s in state["steps"].values()) + state.get("interrupted_s", 0.0)
    return (f"<p>Budget {budget:.0f} s, spent {spent:.0f} s"
            + (f" (of which {state['interrupted_s']:.0f} s in steps interrupted and resumed)"
               if state.get("interrupted_s") else "")
            + ". Light bars: the first plan; dark bars: the time each step took. A step gets its share of what is "
            "left when it starts (allotted).</p><table><tr><th>step</th><th>first plan</th><th>allotted</th>"
            f"<th>took</th><th></th></tr>{''.join(rows)}</table>")


def _links(name: str, out: dict[str, Any], rdir: RecipeDir) -> str:
    links = []
    folders = {"coarse": rdir.coarse, "widen": rdir.widened, "fine": rdir.fine}
    if name in folders and SearchDir(folders[name]).report.is_file():
        links.append(("search report", SearchDir(folders[name]).report))
    if name == "checks" and RunDir(rdir.checks).checks.is_file():
        links.append(("sanity checks (JSON)", RunDir(rdir.checks).checks))
    if name == "final" and RunDir(rdir.final).report.is_file():
        links.append(("final run report", RunDir(rdir.final).report))
    if name == "test" and out.get("ensemble_dir"):
        links.append(("ensemble directory", rdir.ensemble))
    html_links = " · ".join(f'<a href="{html.escape(os.path.relpath(p, rdir.path))}">{html.escape(t)}</a>'
                            for t, p in links)
    picture = img(rdir.lr_plot.read_bytes(), "LR range test") if name == "lr" and rdir.lr_plot.is_file() else ""
    return (f"<p>{html_links}</p>" if html_links else "") + picture


def _baselines(state: dict[str, Any]) -> str:
    steps = {k: v.get("outputs", {}) for k, v in state["steps"].items()}
    rows = [(name, r["val_acc"], r["test_acc"]) for name, r in steps.get("baselines", {}).items()]
    model_val = steps.get("ensemble", {}).get("val_acc", steps.get("final", {}).get("val_acc"))
    test = steps.get("test", {})
    if test:
        rows.append((f"babysit: {test['model']}", model_val, test["test_acc"]))
    body = "".join(f"<tr><td>{html.escape(n)}</td><td>{v:.4f}</td><td>{t:.4f}</td></tr>" for n, v, t in rows
                   if v is not None)
    return f"<table><tr><th>model</th><th>val</th><th>test</th></tr>{body}</table>" if body else "<p>-</p>"


def render_recipe_report(path: RecipeDir | str | Path) -> str:
    rdir = path if isinstance(path, RecipeDir) else RecipeDir(path)
    state = json.loads(read_small_text(rdir.state))
    test = state["steps"].get("test", {}).get("outputs", {})
    title = f"babysit recipe: {rdir.path.name}"
    headline = (f"<p><b>Test accuracy {test['test_acc']:.4f}</b> ({html.escape(test['model'])}, "
                f"{test['n_test']:,} test images scored once, at the end).</p>" if test else
                "<p>The recipe has not finished: resume it with <code>babysit recipe --resume "
                f"{html.escape(str(rdir.path))}</code>.</p>")
    steps = []
    for i, name in enumerate(state["order"], 1):
        s = state["steps"].get(name)
        if s is None:
            continue
        evidence = "".join(f"<li>{html.escape(e)}</li>" for e in s["evidence"])
        steps.append(f"<h3>{i}. {html.escape(s['title'])} <span class='muted'>({s['seconds']:.1f} s)</span></h3>"
                     f"<ul>{evidence}</ul><div class='finding info'><b>Decision:</b> {html.escape(s['decision'])}"
                     f"</div>{_links(name, s.get('outputs', {}), rdir)}")
    nexts = "".join(f"<li>{html.escape(t)}</li>" for t in next_steps(state))
    sections = [f"<h1>{html.escape(title)}</h1>", headline, "<h2>Timeline: plan against actual</h2>",
                _timeline(state), "<h2>Baselines beside the final model</h2>", _baselines(state),
                "<h2>Steps: evidence and decisions</h2>", "".join(steps),
                "<h2>What to try next with more time</h2>", f"<ul>{nexts}</ul>",
                "<h2>Config</h2>", f"<pre>{html.escape(read_small_text(rdir.config))}</pre>"]
    return page(title, sections)


def write_recipe_report(path: RecipeDir | str | Path) -> Path:
    """Write recipes/NAME/report.html (atomically) and return its path."""
    rdir = path if isinstance(path, RecipeDir) else RecipeDir(path)
    atomic_write_text(rdir.report, render_recipe_report(rdir))
    return rdir.report
