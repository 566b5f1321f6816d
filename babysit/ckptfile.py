"""The checkpoint file format: safetensors tensors with their JSON metadata in the same file's header.

Loading never executes code: tensors come from safetensors and everything else is JSON. One file
per checkpoint means the weights and the metadata can never disagree after a crash. This module is
below training so that readers of a finished run (babysit.review) open checkpoints without it; what
goes into a checkpoint (optimiser and RNG state) is babysit.train.checkpoint's business.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from babysit.errors import BabysitError
from babysit.limits import check_memory, read_bounded
from babysit.rundir import atomic_write_bytes

if TYPE_CHECKING:
    import torch


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    write: Callable[[Path, bytes], None] = atomic_write_bytes) -> None:
    """Atomically write ``tensors`` and the JSON-able ``meta`` to one safetensors file.

    A readable copy of ``meta`` goes next to it as ``<name>.json`` (informational only). Both are serialised
    here, so ``write`` may put the bytes on disk later (babysit.writer.write_later: off the training thread).
    """
    from safetensors.torch import save as st_save  # torch is imported where tensors are written, not before

    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    write(path, st_save(flat, metadata={"babysit": json.dumps(meta)}))
    write(path.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: (tensors, meta).

    Only safetensors and JSON are parsed, so a crafted file (a pickle, a ``torch.save`` archive)
    is refused as "not a babysit checkpoint" and never executed.
    """
    from safetensors.torch import load as st_load

    if not path.exists():
        raise BabysitError(f"checkpoint {str(path)!r} does not exist; the run stopped before saving it, so resume "
                           "it with `babysit train --resume RUN` or train it afresh.")
    try:
        data = read_bounded(path, _sane_size(path), f"checkpoint {str(path)!r}")
    except OSError as e:
        raise BabysitError(f"cannot read checkpoint {str(path)!r} ({e.strerror}); check its permissions.") from None
    try:
        tensors = st_load(data)
        meta = _header_meta(data)
    except (SafetensorError, ValueError, UnicodeDecodeError, RecursionError):
        raise _damaged(path) from None
    if not isinstance(meta, dict):
        raise BabysitError(f"{str(path)!r} is a safetensors file but not a babysit checkpoint (no metadata); "
                           "put back the run's own file or start the run afresh.")
    return tensors, meta


HEADER_MAX = 100_000_000
"""Bytes a safetensors header may have (safetensors' own limit): the JSON index of the tensors."""


def _damaged(path: Path) -> BabysitError:
    return BabysitError(f"checkpoint {str(path)!r} is damaged (truncated or overwritten) or not a babysit "
                        "checkpoint; put back the run's own file or start the run afresh.")


def _sane_size(path: Path) -> int:
    """The size ``path`` must have, from its header alone (8 + header + the end of the last tensor's bytes),
    checked before anything is loaded: a file of another size (a sparse 64 GB file, a header declaring more
    bytes than the file holds, a truncated file) is damaged, and one larger than the memory left is refused
    with both numbers, instead of a MemoryError or a swapping machine."""
    if not path.is_file():  # before opening: opening a FIFO would block
        raise BabysitError(f"checkpoint {str(path)!r} is not a regular file; put back the run's own file or "
                           "start the run afresh.")
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            header_len = int.from_bytes(f.read(8), "little")
            if size < 8 or not 2 <= header_len <= min(HEADER_MAX, size - 8):
                raise _damaged(path)
            header = json.loads(f.read(header_len))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _damaged(path) from None
    except OSError as e:
        raise BabysitError(f"cannot read checkpoint {str(path)!r} ({e.strerror}); check its permissions.") from None
    if not isinstance(header, dict):
        raise _damaged(path)
    offsets = [v.get("data_offsets") if isinstance(v, dict) else None for k, v in header.items() if k != "__metadata__"]
    if not all(isinstance(o, list) and len(o) == 2 and all(isinstance(e, int) and e >= 0 for e in o) for o in offsets):
        raise _damaged(path)
    ends = [o[1] for o in offsets]
    expected = 8 + header_len + max(ends, default=0)
    if size != expected:
        raise _damaged(path)
    # the bytes are read once and the tensors made from them: about twice the file at the peak
    check_memory(2 * size, f"loading checkpoint {str(path)!r} ({size:,} bytes)", "free memory (close other "
                 "programs) or load it on a machine with more, since the run's weights need it")
    return size


def _header_meta(data: bytes) -> Any:
    """The JSON ``meta`` stored in a safetensors header (``__metadata__["babysit"]``), or None."""
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    raw = meta.get("babysit") if isinstance(meta, dict) else None
    return json.loads(raw) if isinstance(raw, str) else None


def checkpoint_step(path: Path) -> int | None:
    """The step a checkpoint was saved at, read from its header only; None when there is none."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            meta = _header_meta(head + f.read(min(int.from_bytes(head, "little"), 100_000_000)))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    step = meta.get("step") if isinstance(meta, dict) else None
    return step if isinstance(step, int) else None
