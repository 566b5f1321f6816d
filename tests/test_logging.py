"""Issue 18: the library's output goes through logging (babysit/log.py); the CLI's -q / -v set its level."""

from __future__ import annotations

import ast
import io
import logging
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from babysit import log
from babysit.cli import _verbosity_first, main

PACKAGE = Path(__file__).resolve().parents[1] / "babysit"
# a command's own output and a script's main() may print; the library below them logs
MAY_PRINT = {"cli.py", "__init__.py", "review/htmlcheck.py"}

FAST = ["--train.epochs=1", "--data.limit=100", "--train.progress=false", "--model.spec=conv3-4 relu pool2 fc",
        "--monitor.checks=false", "--monitor.report=false", "--train.threads=1", "--augment.pipeline=flip-h"]


def test_no_print_to_stdout_below_the_cli() -> None:
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = str(path.relative_to(PACKAGE))
        if rel in MAY_PRINT:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
                    and not any(k.arg == "file" for k in node.keywords)):
                found.append(f"{rel}:{node.lineno}")
    assert found == []


def test_the_handler_writes_bare_lines_to_the_current_stdout() -> None:
    logger = log.get_logger("babysit.test")
    buf = io.StringIO()
    with redirect_stdout(buf):
        logger.info("sanity check 1/4: x ...", extra={"end": ""})
        logger.info(" PASS (0.1 s)")
        logger.debug("not shown at info")
    assert buf.getvalue() == "sanity check 1/4: x ... PASS (0.1 s)\n"


@pytest.mark.parametrize(("argv", "moved"), [
    (["train", "-q", "--x=1"], ["-q", "train", "--x=1"]),
    (["-v", "eval", "RUN", "-vv"], ["-v", "-v", "-v", "eval", "RUN"]),
    (["predict", "RUN", "--", "-q"], ["predict", "RUN", "--", "-q"]),  # after --, a file named -q
])
def test_verbosity_flags_may_come_anywhere(argv: list[str], moved: list[str]) -> None:
    assert _verbosity_first(argv) == moved


def test_quiet_keeps_warnings_and_drops_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "-q", *FAST, "--out", str(tmp_path), "--name", "quiet"]) == 0
    quiet = capsys.readouterr().out.splitlines()  # flip-h on digits is warned about; no epoch line, no result
    assert quiet and all(line.startswith("warning: ") for line in quiet) and "flip-h" in quiet[0]
    assert logging.getLogger("babysit").level == logging.WARNING
    assert main(["summary", "conv3-8 fc", "--input", "1x8x8"]) == 0  # the next command is back at info
    assert logging.getLogger("babysit").level == logging.INFO


def test_route_to_root_hands_records_to_the_users_logging(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("babysit")
    handlers, propagate = list(logger.handlers), logger.propagate
    try:
        log.route_to_root()
        buf = io.StringIO()
        with redirect_stdout(buf), caplog.at_level(logging.INFO, logger="babysit"):
            log.get_logger("babysit.test").info("to root")
        assert buf.getvalue() == "" and "to root" in caplog.messages
    finally:
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger._babysit_routed = False  # type: ignore[attr-defined]
