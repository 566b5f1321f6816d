"""Babysitting a run, as the notes teach it: sanity checks, gradient check, live layer statistics,
diagnoses in words, the HTML report and TensorBoard events.

- ``babysit check`` / :func:`babysit.check`: initial loss, regularisation raises the loss, overfit 20
  images, zero-input baseline (sanity.py)
- ``babysit gradcheck`` / :func:`gradcheck`: analytic vs centred-difference gradients (gradcheck.py)
- :class:`LayerProbes`: activation/gradient statistics and update/weight ratios during fit() (probes.py)
- ``babysit diagnose`` / :func:`diagnose_run`: findings from a run directory (diagnose.py)
- ``babysit report`` / :func:`write_report`: RUN/report.html (report.py, plots.py)

The run-level entry points the CLI calls are in commands.py (``babysit.check``, ``babysit.diagnose``,
``babysit.report`` at the top level); here the submodule names diagnose and report stay modules.
"""

from typing import TYPE_CHECKING

from babysit.lazy import attach

if TYPE_CHECKING:  # the public names; attach() imports each from here on first use
    from babysit.monitor.commands import check, gradcheck_config
    from babysit.monitor.diagnose import best_on_border, diagnose_run
    from babysit.monitor.findings import Evidence, Finding, format_findings
    from babysit.monitor.gradcheck import GradcheckResult, gradcheck
    from babysit.monitor.probes import LayerProbes
    from babysit.monitor.report import write_report
    from babysit.monitor.sanity import CheckResult, run_checks
    from babysit.monitor.session import RunMonitor
    from babysit.monitor.tensorboard import TensorBoardLogger

__all__ = ["CheckResult", "Evidence", "Finding", "GradcheckResult", "LayerProbes", "RunMonitor", "TensorBoardLogger",
           "best_on_border", "check", "diagnose_run", "format_findings", "gradcheck", "gradcheck_config",
           "run_checks", "write_report"]

__getattr__, __dir__ = attach(__name__)
