"""The report's figures drawn side by side: matplotlib draws on one core, and a run's report has a dozen figures
(0.2-2.5 s each on a 2-core machine, most of a report's time).

Inside ``with Drawings() as d:``, :func:`figure` keeps each built figure and returns a placeholder;
``d.fill(html)`` then draws and encodes them in worker processes forked from this one (they inherit the figures,
so nothing but the PNG bytes crosses back), and puts the images in place of the placeholders. With one core, on
a platform without a safe fork, or outside a ``Drawings`` block, a figure is drawn at once.
"""

from __future__ import annotations

import base64
import html
import multiprocessing
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_WORKERS = 4

_active: Drawings | None = None
_jobs: list[tuple[Figure, bool]] = []  # what the forked workers draw (inherited, never pickled)


def img(data: bytes, alt: str) -> str:
    """An <img> with the PNG embedded."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def figure(fig: Figure, alt: str, tight: bool = True) -> str:
    """The <img> of ``fig``; inside a :class:`Drawings` block a placeholder for it."""
    if _active is None:
        return img(_png(fig, tight), alt)
    return _active.add(fig, alt, tight)


def _png(fig: Figure, tight: bool) -> bytes:
    from babysit.figures import png  # matplotlib is imported where a figure is drawn, not before

    return png(fig, tight=tight)


def _draw(i: int) -> bytes:
    return _png(*_jobs[i])


def _workers(jobs: int) -> int:
    """Worker processes for ``jobs`` figures: the cores this process may use, when fork is safe (Linux)."""
    if sys.platform != "linux" or multiprocessing.current_process().daemon:
        return 1
    return max(1, min(MAX_WORKERS, jobs, len(os.sched_getaffinity(0))))


class Drawings:
    """The figures of one page, made together when the page is done (see the module docstring)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Figure, str, bool]] = []
        self.token = f"\0babysit-figure-{id(self)}-"

    def __enter__(self) -> Drawings:
        global _active
        if _active is not None:
            raise RuntimeError("one Drawings block at a time")
        _active = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _active
        _active = None

    def add(self, fig: Figure, alt: str, tight: bool) -> str:
        self.jobs.append((fig, alt, tight))
        return f"{self.token}{len(self.jobs) - 1}\0"

    def fill(self, page: str) -> str:
        """``page`` with every placeholder replaced by its image."""
        global _jobs
        workers = _workers(len(self.jobs))
        if workers == 1:
            pngs = [_png(fig, tight) for fig, _, tight in self.jobs]
        else:
            _jobs = [(fig, tight) for fig, _, tight in self.jobs]
            try:
                with multiprocessing.get_context("fork").Pool(workers) as pool:
                    pngs = pool.map(_draw, range(len(_jobs)), chunksize=1)
            finally:
                _jobs = []
        for i, ((_, alt, _), data) in enumerate(zip(self.jobs, pngs, strict=True)):
            page = page.replace(f"{self.token}{i}\0", img(data, alt))
        return page
