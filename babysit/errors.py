"""The one error type a user can cause.

Every mistake a user can make (missing data, corrupt image, impossible layer geometry, unknown
config key, wrong checkpoint) is raised as :class:`BabysitError` with one sentence that says what
was wrong and how to fix it. The CLI prints that sentence and exits with code 2, no traceback.
Internal bugs still raise ordinary exceptions.
"""

from __future__ import annotations


class BabysitError(Exception):
    """A mistake in the user's input, data or configuration; the message says how to fix it."""

    exit_code: int = 2


class Diverged(BabysitError):
    """Training stopped because the loss blew up (NaN, Inf or far above its start): exit 3.

    ``step``, ``loss`` and ``lr`` say where; the message says what to change."""

    exit_code = 3

    def __init__(self, message: str, step: int, loss: float, lr: float, what: str = "") -> None:
        super().__init__(message)
        self.step, self.loss, self.lr = step, loss, lr
        self.what = what or message  # what happened, without the advice ("the loss became nan")

    @classmethod
    def at(cls, what: str, step: int, loss: float, lr: float, kept: str) -> Diverged:
        """The standard message: what happened at which step and lr, the fix, and which checkpoint is kept."""
        return cls(f"{what} at step {step} (lr {lr:.3g}); the learning rate is probably too high: start a new run "
                   f"with --optim.lr ten times smaller ({kept}).", step, loss, lr, what)


class ChecksFailed(BabysitError):
    """A sanity check or the gradient check failed: exit 1. `babysit check` / `gradcheck` say which; `babysit train`
    stops before its first step (unless monitor.force), the lines above and the findings say why."""

    exit_code = 1


class ChecksDiverged(ChecksFailed):
    """`babysit train` did not start because the overfit sanity check's loss blew up at the run's learning rate:
    the run itself would diverge, so the exit code is a divergence's (3), not a failed check's."""

    exit_code = 3


class Interrupted(BabysitError):
    """Ctrl-C or SIGTERM: a checkpoint was saved and the run can be resumed (exit 130 / 143)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
