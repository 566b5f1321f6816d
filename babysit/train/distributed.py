"""Data-parallel training (DDP) as torchrun starts it: the process group and the few messages fit() needs.

``torchrun --nproc-per-node=N -m babysit train ...`` starts N copies of babysit with RANK, WORLD_SIZE,
LOCAL_RANK and LOCAL_WORLD_SIZE in their environment (several machines: ``--nnodes`` and
``--rdzv-endpoint`` set the same variables). Each process ("rank") holds a full copy of the network:

    every rank draws the same seeded epoch permutation and cuts the same global mini-batch from it
    rank r keeps its contiguous share of the batch rows (``torch.tensor_split``: sizes differ by 1 at most)
    forward + backward on its rows; torch's DistributedDataParallel averages the gradients in backward
    the same update on every rank, so the weights stay equal without being sent

``train.batch_size`` is the global batch, so a run on N processes takes the same steps as one process
(``train.scale_lr``: the linear scaling rule instead, batch_size per process, lr times N). Each rank's
loss is weighted by its share of the rows (rows_r * N / B), so DDP's average of the N gradients is the
gradient of the mean loss over all B rows even when the last batch does not split evenly.

Rank 0 alone writes the run directory; the others read it when resuming. Without torchrun (WORLD_SIZE
unset or 1) every function here is a no-op, so fit() reads the same with and without DDP.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from babysit.errors import BabysitError

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")  # what torchrun sets for each process


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the processes torchrun started (0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1  # processes in all (WORLD_SIZE), over every machine
    local_rank: int = 0  # this process's number on its machine: its GPU
    local_world: int = 1  # processes on this machine: they share its cores

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run directory and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process: gradients are all-reduced."""
        return self.world > 1


def ranks() -> Ranks:
    """This process's place from torchrun's environment variables; a lone process is rank 0 of 1."""
    if "WORLD_SIZE" not in os.environ:
        return Ranks()
    values = {}
    for key in ENV:
        raw = os.environ.get(key, "")
        if not raw.isdigit():
            raise BabysitError(f"${key}={raw!r} is not a whole number; start babysit with `torchrun "
                               "--nproc-per-node=N -m babysit train ...`, which sets it, or unset WORLD_SIZE.")
        values[key] = int(raw)
    r = Ranks(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], values["LOCAL_WORLD_SIZE"])
    if not (0 <= r.rank < r.world and 0 <= r.local_rank < r.local_world <= r.world):
        raise BabysitError(f"torchrun's environment is inconsistent (RANK={r.rank}, WORLD_SIZE={r.world}, LOCAL_RANK="
                           f"{r.local_rank}, LOCAL_WORLD_SIZE={r.local_world}); start babysit through torchrun.")
    return r


def joined() -> Ranks:
    """:func:`ranks` once this process has joined the group (:func:`start`), else a lone process: a command other
    than ``train`` started under torchrun trains every batch whole instead of half a batch with no all-reduce."""
    return ranks() if dist.is_initialized() else Ranks()


def device_for(device: torch.device, sync_bn: bool = False) -> torch.device:
    """One GPU per process: ``cuda`` (or ``auto`` on a GPU machine) becomes ``cuda:LOCAL_RANK`` under torchrun.
    ``sync_bn`` (SyncBatchNorm) is refused on the CPU, where torch does not implement it."""
    r = ranks()
    if r.active and sync_bn and device.type != "cuda":
        raise BabysitError("--train.sync_bn=true needs GPUs (torch's SyncBatchNorm runs on CUDA only); on the CPU "
                           "leave it off: each process then normalises its own rows of the batch.")
    if not r.active or device.type != "cuda":
        return device
    if device.index is not None:
        raise BabysitError(f"--train.device={device} would put all {r.world} processes on one GPU; under torchrun use "
                           "--train.device=cuda (each process takes GPU LOCAL_RANK), or CUDA_VISIBLE_DEVICES.")
    if torch.cuda.device_count() < r.local_world:
        raise BabysitError(f"torchrun started {r.local_world} processes on this machine but it has "
                           f"{torch.cuda.device_count()} GPU(s); use --nproc-per-node={torch.cuda.device_count()}.")
    return torch.device("cuda", r.local_rank)


def start(device: torch.device) -> Ranks:
    """Join the process group (gloo on the CPU, NCCL on GPUs) once; ranks other than 0 print nothing from here
    on (stderr stays, so their errors still show). A lone process does nothing."""
    r = ranks()
    if not r.active or dist.is_initialized():
        return r
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if not r.main:  # one copy of every line: rank 0 speaks for the run
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return r


def stop() -> None:
    """Leave the process group (the end of a run)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def describe(r: Ranks, batch_size: int, lr: float, scaled: bool) -> str:
    """The line that says what the global batch and lr are, e.g. for 2 processes with the linear scaling rule."""
    per = f"{batch_size // r.world} per process" if scaled else f"about {batch_size / r.world:g} per process"
    rule = (f" (linear scaling rule, train.scale_lr: batch and lr {r.world} x those given)" if scaled
            else " (train.batch_size is the global batch)")
    return (f"DDP: {r.world} processes ({dist.get_backend() if dist.is_initialized() else 'gloo'}), global batch "
            f"{batch_size} ({per}), lr {lr:.6g}{rule}")


def check_shards(r: Ranks, n: int, batch_size: int, batch_norm: bool) -> None:
    """Every process needs rows in every mini-batch (two, for batch norm: one row has no variance)."""
    if not r.active:
        return
    least = 2 * r.world if batch_norm else r.world
    last = n % batch_size or batch_size
    small = min(batch_size, last)
    if small < least:
        few = "fewer than 2 images (batch norm needs 2)" if batch_norm else "no images"
        raise BabysitError(f"a mini-batch of {small} images split over {r.world} processes leaves a process with {few}"
                           f" ({n} training images, global batch {batch_size}); use a --train.batch_size whose "
                           f"batches (the last one too: n % batch_size) hold at least {least} images.")


def wrap(model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
    """The module fit()'s forward and backward go through: DDP (gradients averaged over the processes in
    backward, rank 0's buffers broadcast before each forward), BN made SyncBatchNorm with ``sync_bn``;
    the model itself alone. The parameters stay the model's own objects, so its optimiser and state_dict
    (checkpoint keys without DDP's ``module.``) are untouched."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return model
    if sync_bn:  # (refused on the CPU by device_for, before anything was written)
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place for every BN below the top (a Sequential)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard(xb: torch.Tensor, yb: Any, r: Ranks) -> tuple[torch.Tensor, Any, float]:
    """This process's rows of the global mini-batch (xb, yb) and its loss weight rows_r * N / B: with it, DDP's
    mean of the N gradients is the gradient of the mean loss over all B rows. Alone: everything, weight 1."""
    if not r.active:
        return xb, yb, 1.0
    b = len(xb)

    def mine(t: torch.Tensor) -> torch.Tensor:
        return torch.tensor_split(t, r.world)[r.rank]

    x = mine(xb)
    y = tuple(mine(t) for t in yb) if isinstance(yb, tuple) else mine(yb)
    return x, y, len(x) * r.world / b


def mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the processes (every process gets it); alone, ``t``. fit()'s weighted step losses
    average to the global batch's loss, so every rank records and checks the same numbers."""
    if not dist.is_initialized():
        return t
    out = t.clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


def agree(signum: int | None, now: bool) -> int | None:
    """Stop on a signal at the same step on every process: alone at once; under DDP at the steps ``now`` is true
    (fit's sync steps and epoch ends), the signal any process caught (one int all-reduced, max)."""
    if not dist.is_initialized():
        return signum
    if not now:
        return None
    flag = torch.tensor([signum or 0], device=_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every process before scoring: DDP broadcasts them only
    at the next forward, and every rank scores val itself so they all take the same best / early-stop decisions."""
    if not dist.is_initialized():
        return
    for b in model.buffers():
        dist.broadcast(b.data, 0)


def seed_rank(seed: int, r: Ranks) -> None:
    """A dropout stream per process (rank 0 keeps the run's seed): with one stream every process would drop the
    same units of different images."""
    if r.rank > 0:
        torch.manual_seed(seed * 1_000_003 + r.rank)


def rng_states() -> list[dict[str, torch.Tensor]]:
    """Every process's torch RNG state (CPU, and its GPU's), gathered on all of them for rank 0's checkpoint: a
    resumed run gives each process its own dropout stream back. Alone: []."""
    if not dist.is_initialized():
        return []
    mine = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and dist.get_backend() == "nccl":
        mine["cuda"] = torch.cuda.get_rng_state()
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out


def set_rng(states: dict[str, torch.Tensor]) -> None:
    """Inverse of one entry of :func:`rng_states`."""
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every process (a broadcast of a small object); it is also a barrier: the others
    wait here until rank 0 arrives. Alone: ``value``."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, 0)
    return box[0]


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
