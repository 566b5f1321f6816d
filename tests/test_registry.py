"""The registry type: order, the one unknown-name sentence, decorator with and without fields, lightness."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import babysit.registry
from babysit.errors import BabysitError
from babysit.registry import Registry


def colours() -> Registry[int]:
    reg: Registry[int] = Registry("colour")
    for i, name in enumerate(["red", "green", "blue"]):
        reg.add(name, i)
    return reg


def test_names_keep_registration_order_and_the_container_protocol():
    reg = colours()
    assert reg.names() == ["red", "green", "blue"] == list(reg)
    assert len(reg) == 3 and "green" in reg and "grey" not in reg
    assert reg.get("blue") == 2 == reg["blue"]
    assert reg.items() == [("red", 0), ("green", 1), ("blue", 2)]


def test_unknown_name_is_one_sentence_with_the_choices_and_a_suggestion():
    with pytest.raises(BabysitError) as err:
        colours().get("gren")
    assert str(err.value) == "unknown colour 'gren'; choose one of red, green, blue; did you mean 'green'?"
    with pytest.raises(BabysitError) as err:
        colours().get("purple")
    assert str(err.value) == "unknown colour 'purple'; choose one of red, green, blue."


def test_hint_and_shown_text():
    reg: Registry[int] = Registry("scheme", hint=" (e.g. normal-0.01)")
    reg.add("normal-STD", 0)
    assert str(reg.error("normal", shown="normal")) == ("unknown scheme 'normal'; choose one of normal-STD "
                                                        "(e.g. normal-0.01); did you mean 'normal-STD'?")
    assert str(reg.error("spin", shown="spin-10")).startswith("unknown scheme 'spin-10'; choose one of normal-STD")


def test_register_as_a_decorator_with_and_without_fields():
    plain: Registry[object] = Registry("function")

    @plain.register("double")
    def double(x: int) -> int:
        return 2 * x

    assert plain.get("double") is double and double(3) == 6  # the decorator hands the function back

    @dataclass(frozen=True)
    class Entry:
        fn: object
        stage: str

    built: Registry[Entry] = Registry("op", make=lambda fn, **f: Entry(fn, **f))

    @built.register("triple", stage="late")
    def triple(x: int) -> int:
        return 3 * x

    assert built.get("triple") == Entry(triple, "late")
    with pytest.raises(TypeError, match="takes no fields"):
        plain.register("half", stage="early")(lambda x: x / 2)


def test_a_name_registered_twice_is_a_bug():
    with pytest.raises(ValueError, match="registered twice"):
        colours().add("red", 9)


def test_the_registry_imports_only_the_standard_library_and_errors():
    """The CLI lists names from registries before torch is loaded: registry.py must stay light."""
    tree = ast.parse(Path(babysit.registry.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported = {m if m.startswith("babysit") else m.split(".")[0] for m in imported}
    assert imported <= set(sys.stdlib_module_names) | {"__future__", "babysit.errors"}, imported
