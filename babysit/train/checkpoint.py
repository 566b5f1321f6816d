"""Checkpoints: what a run saves to resume exactly (weights, optimiser and RNG state), and config checks.

The file format itself (safetensors + JSON header, written atomically) is :mod:`babysit.ckptfile`;
its functions are importable from here too, as the training code always has.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import torch

from babysit.ckptfile import checkpoint_step, load_checkpoint, save_checkpoint
from babysit.errors import BabysitError

__all__ = ["all_finite", "checkpoint_step", "config_changes", "flatten_state", "load_checkpoint", "rng_state",
           "save_checkpoint", "seed_all", "set_rng_state", "unflatten_state"]


def all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    """True when no floating-point tensor holds NaN or Inf."""
    return all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def config_changes(saved: dict[str, Any], now: dict[str, Any], free: tuple[str, ...] = ()) -> list[str]:
    """``"key: old -> new"`` for every config key whose value differs between two nested config dicts.

    Keys (``"train.epochs"``) or whole sections (``"monitor"``) in ``free`` may change; keys that exist
    in only one of the two are skipped (a checkpoint written before an option was added).
    """
    now = json.loads(json.dumps(now, default=str))  # compare as stored: tuples become lists
    changes = []
    for sec, values in now.items():
        old_sec = saved.get(sec)
        if not isinstance(old_sec, dict) or not isinstance(values, dict):
            continue
        for key, value in values.items():
            name = f"{sec}.{key}"
            if name in free or sec in free or key not in old_sec:
                continue
            if old_sec[key] != value:
                changes.append(f"{name}: {old_sec[key]!r} -> {value!r}")
    return changes


def flatten_state(prefix: str, state: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested state (dicts/lists) into ``tensors``; return the JSON skeleton."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state
        return {"__tensor__": prefix}
    if isinstance(state, dict):
        return {"__dict__": [[k, flatten_state(f"{prefix}.{k}", v, tensors)] for k, v in state.items()]}
    if isinstance(state, (list, tuple)):
        return [flatten_state(f"{prefix}.{i}", v, tensors) for i, v in enumerate(state)]
    return state


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state` (dict keys keep their type: optimiser state uses ints)."""
    if isinstance(skeleton, dict) and "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def seed_all(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's ``random`` from one number."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Capture torch (CPU and CUDA), numpy and python RNG states."""
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state: Any = np.random.get_state(legacy=True)  # ('MT19937', keys, pos, has_gauss, cached)
    tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    py = random.getstate()
    return {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [py[0], list(py[1]), py[2]]}


def set_rng_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` captured; a damaged record is a BabysitError."""
    try:
        torch.set_rng_state(tensors["rng.torch"])
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        name, pos, has_gauss, cached = meta["numpy"]
        np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
        version, internal, gauss = meta["python"]
        random.setstate((version, tuple(internal), gauss))
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise BabysitError("the checkpoint's random-number state is damaged, so the run cannot continue exactly; "
                           "start the run afresh.") from None
