"""Reading a finished (or stopped) run: findings in words, the diagnosis rules, the HTML report.

Everything here reads only the run directory (:class:`babysit.rundir.RunDir`) and imports nothing of
training (tests/test_rundir_wall.py checks it), so a run can be reviewed without the code that made it.

- :class:`Evidence`, :class:`Finding`: what a run holds, and one diagnosis in words (findings.py)
- :func:`diagnose_run`: the rules over the curves (diagnose.py) and the layer statistics
  (layer_rules.py) -> RUN/findings.json
- :func:`write_report`: RUN/report.html (report.py, with the figures of plots.py)
- stats.py reads RUN/stats/ back; htmlcheck.py loads a page in headless Chromium

The submodule names ``diagnose`` and ``report`` stay modules here (their functions keep longer names).
"""

from typing import TYPE_CHECKING

from babysit.lazy import attach

if TYPE_CHECKING:  # the public names; attach() imports each from here on first use
    from babysit.review.diagnose import best_on_border, diagnose_run, read_findings
    from babysit.review.findings import Evidence, Finding, format_findings
    from babysit.review.report import render_report, write_report

__all__ = ["Evidence", "Finding", "best_on_border", "diagnose_run", "format_findings", "read_findings",
           "render_report", "write_report"]

__getattr__, __dir__ = attach(__name__)
