"""One registry type for every set of names a user types: optimisers, schedules, losses, init schemes,
data sets, preprocessing kinds, augmentations.

A registry maps a name to an entry (a function, or a small dataclass that carries its code and facts).
``get`` is the one place that answers an unknown name, always in the same sentence::

    unknown optim.name 'sgdd'; choose one of sgd, adagrad, rmsprop, adam, almost-adam, adamw; did you mean 'sgd'?

Adding an optimiser, schedule, loss or augmentation is one ``register`` (or ``add``) next to the others,
plus its test. Only the standard library is imported here, so the CLI can list names without torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from babysit.errors import BabysitError

T = TypeVar("T")
F = TypeVar("F")


class Registry(Generic[T]):
    """Named entries in the order they were added.

    ``what`` names the choice in messages (``"optim.name"``, ``"augmentation"``); ``hint`` follows the
    list of names (e.g. ``" (e.g. normal-0.01)"``); ``make(obj, **fields)`` builds the entry when
    :meth:`register` is given fields (else the decorated object itself is the entry).
    """

    def __init__(self, what: str, *, hint: str = "", make: Callable[..., T] | None = None) -> None:
        self.what, self.hint, self._make = what, hint, make
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a name registered twice is a bug in babysit, not a user mistake."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str, **fields: Any) -> Callable[[F], F]:
        """Decorator: ``@REG.register("sgd")`` adds the function; with fields, ``make(fn, **fields)`` is added."""
        def decorate(obj: F) -> F:
            if fields and self._make is None:
                raise TypeError(f"the {self.what} registry takes no fields; use add(name, entry)")
            self.add(name, self._make(obj, **fields) if self._make is not None else obj)  # type: ignore[arg-type]
            return obj
        return decorate

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        return list(self._entries)

    def closest(self, name: str) -> str | None:
        """The registered name most like ``name`` (difflib), or None when none is close."""
        close = difflib.get_close_matches(name, self._entries, n=1, cutoff=0.6)
        return close[0] if close else None

    def error(self, name: str, shown: str | None = None) -> BabysitError:
        """The one sentence for an unknown ``name`` (``shown`` is what the user typed, if that differs)."""
        text = f"unknown {self.what} {shown if shown is not None else name!r}; choose one of {', '.join(self._entries)}"
        close = self.closest(name)
        return BabysitError(text + self.hint + (f"; did you mean {close!r}?" if close else "."))

    def get(self, name: str, shown: str | None = None) -> T:
        """The entry of ``name``; an unknown name raises :meth:`error`."""
        if name not in self._entries:
            raise self.error(name, shown)
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs in registration order."""
        return list(self._entries.items())

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"
