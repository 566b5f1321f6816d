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
