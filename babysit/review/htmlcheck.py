"""Open an HTML file in headless Chromium: console messages and a screenshot.

    python -m babysit.review.htmlcheck RUN/report.html [--screenshot shot.png]

prints the console messages (there should be none) and whether the screenshot is blank; exits 1
when either is wrong. The tests use :func:`check_html` on a fresh report.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0")
_CONSOLE = re.compile(r":CONSOLE[:(\]]")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None."""
    return next((p for p in (shutil.which(n) for n in CHROMIUM_NAMES) if p), None)


@dataclass
class HtmlCheck:
    console: list[str]  # console messages (errors, warnings, logs) the page produced
    screenshot: Path
    distinct_colours: int  # in the screenshot; 1 means blank
    stderr: str

    @property
    def ok(self) -> bool:
        return not self.console and self.distinct_colours > 1


def check_html(page: str | Path, screenshot: str | Path | None = None, width: int = 1100, height: int = 2400,
               timeout: float = 120.0) -> HtmlCheck:
    """Load ``page`` in headless Chromium with a fresh profile; collect console lines and a screenshot."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium executable found (install it with `apt-get install -y chromium`)")
    page = Path(page).resolve()
    with tempfile.TemporaryDirectory(prefix="babysit-chromium-") as profile:
        shot = Path(screenshot) if screenshot else Path(profile) / "screenshot.png"
        res = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                              f"--screenshot={shot.resolve()}", page.as_uri()],
                             capture_output=True, text=True, timeout=timeout)
        console = [line for line in res.stderr.splitlines() if _CONSOLE.search(line)]
        colours = 0
        if shot.is_file():
            from PIL import Image

            pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
            colours = len(np.unique(pixels[:: max(1, len(pixels) // 200_000)], axis=0))
        if screenshot is None:  # keep a copy outside the temporary profile
            kept = Path(tempfile.gettempdir()) / f"{page.stem}-screenshot.png"
            if shot.is_file():
                shutil.copyfile(shot, kept)
            shot = kept
    return HtmlCheck(console, shot, colours, res.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page")
    ap.add_argument("--screenshot", default=None)
    args = ap.parse_args(argv)
    result = check_html(args.page, args.screenshot)
    for line in result.console:
        print(f"console: {line}")
    print(f"console messages: {len(result.console)}; screenshot {result.screenshot}: "
          f"{result.distinct_colours} distinct colours ({'blank' if result.distinct_colours <= 1 else 'not blank'})")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
