"""What the library says goes through :mod:`logging`, on the ``babysit`` logger (``babysit.train.loop``, ...).

The epoch lines, the sanity checks, findings and warnings are log records: info for progress and results,
warning for warnings (their text still starts with ``warning:``), debug for detail. Out of the box the
``babysit`` logger has one handler that writes the bare message to whatever ``sys.stdout`` is at that moment
(so a notebook, ``contextlib.redirect_stdout`` and pytest's capture see it) and does not pass records on to the
root logger, so configuring logging elsewhere never prints them twice. The ``babysit`` command sets the level:
info by default, ``-q`` warnings only (and no progress bars), ``-v`` debug. From Python::

    import logging
    logging.getLogger("babysit").setLevel(logging.WARNING)      # quiet
    from babysit.log import route_to_root; route_to_root()  # or: records go to your own handlers instead

A record may carry ``extra={"end": ""}`` to leave its line open (``sanity check 1/4: ... PASS``), as print's
``end`` does.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "babysit"


class StdoutHandler(logging.Handler):
    """Bare messages to the current ``sys.stdout`` (looked up per record, not kept), flushed at once."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stdout
            stream.write(self.format(record) + getattr(record, "end", "\n"))
            stream.flush()
        except RecursionError:
            raise
        except BrokenPipeError:
            raise  # the CLI stops quietly on it (output piped into `head`)
        except Exception:  # noqa: BLE001 - logging's contract: a failing handler reports, never raises
            self.handleError(record)


def _root() -> logging.Logger:
    """The ``babysit`` logger, with its default handler on first use."""
    log = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, StdoutHandler) for h in log.handlers) and not getattr(log, "_babysit_routed", False):
        handler = StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)
    return log


def get_logger(name: str) -> logging.Logger:
    """The logger for module ``name`` (``__name__``), below ``babysit``; installs the default handler."""
    _root()
    return logging.getLogger(name)


def set_verbosity(verbosity: int) -> None:
    """The CLI's ``-q`` (-1: warnings only), default (0: info) and ``-v`` (1: debug)."""
    _root().setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)


def route_to_root() -> None:
    """Send babysit's records to the root logger's handlers (your ``logging.basicConfig``) instead of stdout."""
    log = logging.getLogger(LOGGER_NAME)
    for h in [h for h in log.handlers if isinstance(h, StdoutHandler)]:
        log.removeHandler(h)
    log._babysit_routed = True  # type: ignore[attr-defined]
    log.propagate = True


def shows_progress() -> bool:
    """Whether progress (bars, per-check lines) should be shown: not under ``-q``."""
    return _root().isEnabledFor(logging.INFO)
