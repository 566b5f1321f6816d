"""The command line's help and its answers to mistakes: option meanings read from config.py's
comments, and the nearest command or option when one is misspelt.

Light on purpose (no torch): `babysit --help` and every argument mistake stay under a second.
"""

from __future__ import annotations

import argparse
import ast
import functools
import io
import textwrap
import tokenize
from pathlib import Path
from typing import Any

from babysit import config as C
from babysit.errors import BabysitError


class Help(argparse.HelpFormatter):
    """Wraps help at spaces only, so that choices such as almost-adam stay whole, and never inside
    "(default: X" so that a default is read next to its label."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        text = " ".join(text.split()).replace("(default: ", "(default:\0")
        return [line.replace("\0", " ") for line in textwrap.wrap(text, width, break_on_hyphens=False)]


class DefaultsHelp(Help, argparse.ArgumentDefaultsHelpFormatter):
    """:class:`Help` that also shows each plain option's default."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that keeps its sub-commands by name, for the unknown-command message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Help)
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def add_subparsers(self, **kwargs: Any) -> Any:
        action = super().add_subparsers(**kwargs)
        self.commands = action.choices  # filled by each add_parser call
        return action


@functools.cache
def option_help() -> dict[str, str]:
    """Dotted key -> meaning, read from the trailing comment of each field in config.py.

    Those comments are the one source of the options' help; a comment continues on ``#`` lines right
    below its field. Read once, when a parser is built.
    """
    source = Path(C.__file__).read_text(encoding="utf-8")
    lines = source.splitlines()
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    classes = {node.name: node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}
    default = C.RunConfig()
    meanings: dict[str, str] = {}
    for section in C.SECTIONS:
        for stmt in classes[type(getattr(default, section)).__name__].body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            end = stmt.end_lineno or stmt.lineno
            words = [comments.get(end, "")]
            while end < len(lines) and lines[end].lstrip().startswith("#"):  # continuation lines (1-based end)
                end += 1
                words.append(comments[end])
            meanings[f"{section}.{stmt.target.id}"] = " ".join(w for w in words if w)
    return meanings


REPEATABLE = ("search.space",)
"""Options that may be given more than once; each adds to the list (--search.space=A --search.space=B)."""


def add_config_options(p: argparse.ArgumentParser) -> None:
    """One ``--section.key`` option per config field; the dataclasses hold the defaults and, in their
    comments, the meanings."""
    group = p.add_argument_group("config options (override the defaults and --config)")
    meanings = option_help()
    for key, default, kind in C.option_table():
        shown = f"'{default}'" if isinstance(default, str) else default
        if isinstance(default, tuple):  # a list of words, or numbers, comma-separated on the command line
            kind = ("A,B,..." if not default or isinstance(default[0], str) else "X,Y,..." if C.is_list(key)
                    else ",".join(["X"] * len(default)))
            shown = ",".join(map(str, default)) or "none"
        meaning = meanings.get(key, "").replace("%", "%%")  # argparse %-formats help text
        group.add_argument(f"--{key}", dest=f"cfg:{key}", metavar=kind.upper(), default=argparse.SUPPRESS,
                           action="append" if key in REPEATABLE else "store",
                           help=f"{meaning} (default: {shown})".lstrip())


def check_command(parser: Parser, argv: list[str]) -> None:
    """An unknown (sub-)command is one sentence with the nearest command, not argparse's usage block."""
    p, path = parser, "babysit"
    for word in argv:
        commands = getattr(p, "commands", {})
        if not commands or word.startswith("-"):
            return
        if word not in commands:
            near = C.nearest(word, commands)
            hint = f"; did you mean `{path} {near}`?" if near else "."
            raise BabysitError(f"unknown command {word!r}; `{path} --help` lists the commands{hint}")
        p, path = commands[word], f"{path} {word}"


def unknown_option(command: argparse.ArgumentParser, bad: str) -> BabysitError:
    """The error for the first argument the command does not know, with the nearest option."""
    options = [o for action in command._actions for o in action.option_strings]  # argparse has no public list
    if bad.startswith("--") and "." in bad and any("." in o for o in options):  # names an unknown section or key
        error = C.unknown_key_error(bad[2:], option=True)
        if error is not None:
            return error
    near = C.nearest(bad, options) if bad.startswith("-") else None
    hint = f"; did you mean {near}?" if near else "."
    return BabysitError(f"unknown option {bad!r}; run `{command.prog} --help` for the options{hint}")
