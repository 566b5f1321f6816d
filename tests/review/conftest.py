"""The review tests read the run that tests/monitor/conftest.py trains (one tiny `babysit train`)."""

from tests.monitor.conftest import trained_run

__all__ = ["trained_run"]
