"""report.html: self-contained, every section present, and it loads cleanly in headless Chromium."""

import re

import pytest

from babysit.review.htmlcheck import check_html, find_chromium
from babysit.review.report import render_report


def test_report_is_self_contained_with_every_section(trained_run):
    run, _ = trained_run
    page = (run / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from the network
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,', page)
    for alt in ("loss curve", "loss curve, log y", "train and val loss", "accuracy", "learning rate",
                "update/weight ratio", "histograms", "first-layer filters", "confusion matrix", "most confused pairs"):
        assert alt in images, alt
    assert page.index("<h2>Findings</h2>") < page.index("<h2>Run</h2>") < page.index("<h2>Sanity checks</h2>")
    assert page.count('class="pass"') == 4
    assert "conv3-8 relu pool2 fc" in page and "[monitor]" in page  # spec and resolved config


def test_the_report_has_precision_recall_and_f1_per_class_as_sklearn_computes_them(trained_run):
    import json

    from sklearn.metrics import precision_recall_fscore_support

    run, _ = trained_run
    page = render_report(run)
    table = page[page.index("Precision, recall and F1 per class (val)"):]
    confusion = json.loads((run / "stats" / "confusion.json").read_text())["confusion"]
    y = [t for t, row in enumerate(confusion) for p, n in enumerate(row) for _ in range(n)]
    pred = [p for t, row in enumerate(confusion) for p, n in enumerate(row) for _ in range(n)]
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=list(range(len(confusion))),
                                                             zero_division=0)
    cells = re.findall(r"<tr><td>([^<]*)</td><td>([\d.]+)</td><td>([\d.]+)</td><td>([\d.]+)</td><td>(\d+)</td>", table)
    assert len(cells) == len(confusion)
    for (_, p, r, f, n), want in zip(cells, zip(prec, rec, f1, support)):
        assert (float(p), float(r), float(f), int(n)) == pytest.approx((round(want[0], 3), round(want[1], 3),
                                                                        round(want[2], 3), want[3]), abs=1e-9)


def test_first_layer_weights_are_kept_at_initialisation_and_at_the_end(trained_run):
    from babysit.ckptfile import load_checkpoint
    from babysit.rundir import RunDir

    run = RunDir(trained_run[0])
    tensors, _ = load_checkpoint(run.first_layer)
    last, _ = load_checkpoint(run.last)
    assert tensors["initial"].shape == tensors["latest"].shape == (8, 1, 3, 3)  # conv3-8 on 1-channel digits
    assert (tensors["latest"] == last["model.0.weight"]).all()  # the last epoch end's weights
    assert not (tensors["initial"] == tensors["latest"]).all()


def test_low_lr_spans_cover_the_probes_below_half_the_peak():
    from babysit.review.report import low_lr_spans

    records = [{"step": s, "lr": lr} for s, lr in ((0, 0.01), (10, 0.1), (20, 0.1), (30, 0.04), (40, 0.001))]
    assert low_lr_spans(records) == [(0, 5.0), (25.0, 40)]  # warm-up, then the cosine tail to the end


def test_layer_lines_differ_for_more_than_ten_layers():
    from babysit.review.plots import layer_style

    styles = {tuple(sorted(layer_style(i).items())) for i in range(40)}
    assert len(styles) == 40 and layer_style(3)["color"] == layer_style(13)["color"] == "C3"
    assert layer_style(3)["ls"] != layer_style(13)["ls"]


def test_report_of_a_run_that_barely_started_says_what_is_missing(tmp_path):
    (tmp_path / "config.toml").write_text("[optim]\nlr = 0.1\n")
    (tmp_path / "history.jsonl").write_text('{"kind": "step", "step": 1, "epoch": 1, "loss": 2.3, "lr": 0.1}\n')
    page = render_report(tmp_path)
    assert "No layer statistics" in page and "No validation analysis" in page and "No sanity checks" in page


chromium = pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed and "
                              "`apt-get install -y chromium` (what `make test` runs) was not possible here")


@chromium
def test_report_loads_in_headless_chromium_without_console_errors(trained_run, tmp_path):
    run, _ = trained_run
    result = check_html(run / "report.html", tmp_path / "shot.png")
    assert result.console == [], result.console
    assert (tmp_path / "shot.png").is_file() and result.distinct_colours > 50  # not blank: text and figures


@chromium
def test_the_chromium_check_can_fail(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><p>x</p><script>console.error('boom'); notDefined();</script></body></html>")
    result = check_html(page)
    assert not result.ok and any("boom" in line for line in result.console)
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body style='background:#fff'></body></html>")
    assert check_html(blank).distinct_colours == 1


def test_figures_drawn_in_forked_workers_give_the_same_page_as_drawn_in_order(trained_run, monkeypatch):
    from babysit.review import drawing

    if drawing._workers(2) < 2:
        pytest.skip("one core, or no fork: the figures are drawn in order anyway")
    run, _ = trained_run
    forked = render_report(run)
    monkeypatch.setattr(drawing, "_workers", lambda jobs: 1)
    assert render_report(run) == forked  # every PNG byte for byte, in its place
    assert "\0" not in forked and forked.count("data:image/png") >= 8
