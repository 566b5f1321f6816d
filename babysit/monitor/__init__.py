"""Babysitting a run before and during training, as the notes teach it: sanity checks, gradient check,
live layer statistics, the divergence guard and TensorBoard events.

- :func:`run_checks`: initial loss, regularisation raises the loss, overfit 20 images, zero-input
  baseline (sanity.py)
- :func:`gradcheck`: analytic vs centred-difference gradients (gradcheck.py)
- :class:`LayerProbes`: activation/gradient statistics and update/weight ratios during fit() (probes.py,
  kept bounded by store.py)
- watch.py: the divergence guard and the live diagnosis; valstats.py: the validation analysis made
  with the model at the end of a run
- :class:`RunMonitor`: what ``babysit train`` adds around fit() (session.py)

What only reads a finished run (findings, diagnosis rules, the report) is babysit.review; the commands
``babysit check`` / ``gradcheck`` / ``diagnose`` / ``report`` are in babysit.commands.
"""

from typing import TYPE_CHECKING

from babysit.lazy import attach

if TYPE_CHECKING:  # the public names; attach() imports each from here on first use
    from babysit.monitor.gradcheck import GradcheckResult, gradcheck
    from babysit.monitor.probes import LayerProbes
    from babysit.monitor.sanity import CheckResult, run_checks
    from babysit.monitor.session import RunMonitor
    from babysit.monitor.tensorboard import TensorBoardLogger

__all__ = ["CheckResult", "GradcheckResult", "LayerProbes", "RunMonitor", "TensorBoardLogger", "gradcheck",
           "run_checks"]

__getattr__, __dir__ = attach(__name__)
