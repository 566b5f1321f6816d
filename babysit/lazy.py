"""Lazy package exports (PEP 562), so that ``import babysit`` and ``babysit --help`` need no torch.

A package writes its public names as ordinary imports under ``if TYPE_CHECKING:`` (readers and type
checkers see them there, as before) and ends with ``__getattr__, __dir__ = attach(__name__)``. Each
name is then imported from its module on first use and kept in the package, so later look-ups cost
nothing. This is the pattern of scientific-python's ``lazy_loader`` (its stubs, read with ``ast``),
without the dependency.
"""

from __future__ import annotations

import ast
import importlib
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package whose exported names win over its submodules of the same name.

    With eager imports, ``babysit.train`` was the function and ``babysit.models.summary`` the function
    (the ``from ... import`` ran after the submodule was loaded). Lazily, the import system would set
    the submodule over the name whenever something imports ``babysit.train.loop`` first; this keeps
    the exported name instead, as before. Submodules stay reachable through ``sys.modules`` and
    ``from babysit.train.loop import fit``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        exports = self.__dict__.get("_lazy_exports", {})
        if name in exports and isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}":
            return
        super().__setattr__(name, value)


def exports_of(init_file: str | Path) -> dict[str, tuple[str, str]]:
    """Name -> (module, name there) of the ``from M import a, b as c`` lines under ``if TYPE_CHECKING:``."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    table: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level:
                    table.update({a.asname or a.name: (stmt.module, a.name) for a in stmt.names})
    return table


def attach(package: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, which must be imported (call it from its ``__init__``)."""
    module = sys.modules[package]
    exports = exports_of(module.__file__ or "")
    module.__dict__["_lazy_exports"] = exports
    module.__class__ = _LazyPackage

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        where, original = exports[name]
        value = getattr(importlib.import_module(where), original)
        module.__dict__[name] = value  # straight into the dict: the next look-up never reaches __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(module.__dict__) | set(exports))

    return __getattr__, __dir__
