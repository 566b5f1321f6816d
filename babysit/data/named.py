"""The named data sets and what is known about their images (standard library only).

A named set is one :class:`NamedSet` entry: its class names, how its files come (``idx``: four IDX
files looked up by :mod:`babysit.data.locate`; ``scikit-learn``: bundled with scikit-learn) and its
:class:`Traits`, the facts the augmentation warnings read (may a mirror change the class?). Image
folders and .npz files get :data:`UNKNOWN` traits: nobody has said, so nothing is warned about.
"""

from __future__ import annotations

from dataclasses import dataclass

from babysit.registry import Registry

DIGIT_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]


@dataclass(frozen=True)
class Traits:
    """What geometric augmentation may do to a data set's classes; None where it is not known."""

    mirror_safe: bool | None = None  # does a left-right mirror keep the class? (digits: no; clothes: yes)
    upright_only: bool | None = None  # are the images always upright, so upside-down ones change class or never occur?
    max_rotation: float | None = None  # degrees beyond which a turn can change the class (digits: ~30, 6 vs 9)
    mirror_why: str = "a mirrored image can show another class"  # the flip-h warning's reason on this set
    rotation_why: str = "can change the class"  # the rotate warning's reason, after "turns beyond ~D degrees"


UNKNOWN = Traits()
_DIGITS = Traits(mirror_safe=False, upright_only=True, max_rotation=30.0,
                 mirror_why="a mirrored digit is not the same digit (2, 3, 4, 5, 7 change)",
                 rotation_why="confuse 6 and 9")
_CLOTHES = Traits(mirror_safe=True, upright_only=True)


@dataclass(frozen=True)
class NamedSet:
    """A data set babysit knows by name."""

    classes: tuple[str, ...]
    files: str  # "idx" (four IDX files, see locate.py) or "scikit-learn" (bundled)
    traits: Traits
    about: str  # one line for help texts


NAMED_SETS: Registry[NamedSet] = Registry("named set")
NAMED_SETS.add("digits", NamedSet(tuple(DIGIT_CLASSES), "scikit-learn", _DIGITS,
                                  "1,797 8x8 handwritten digits bundled with scikit-learn"))
NAMED_SETS.add("mnist", NamedSet(tuple(DIGIT_CLASSES), "idx", _DIGITS, "70,000 28x28 handwritten digits"))
NAMED_SETS.add("fashion-mnist", NamedSet(tuple(FASHION_MNIST_CLASSES), "idx", _CLOTHES,
                                         "70,000 28x28 photos of clothes in 10 classes"))


def named_key(name: str) -> str:
    """How ``data.name`` is matched against the named sets: ``Fashion_MNIST`` -> ``fashion-mnist``."""
    return name.strip().lower().replace("_", "-")


def traits_of(name: str) -> Traits:
    """The traits of the named set ``name``; :data:`UNKNOWN` for anything else (folders, .npz files)."""
    key = named_key(name)
    return NAMED_SETS.get(key).traits if key in NAMED_SETS else UNKNOWN
