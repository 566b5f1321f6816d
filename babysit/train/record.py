"""Where fit() keeps what it produces: the history, the best weights and the resumable checkpoint.

:class:`RunRecorder` writes them into a run directory (history.jsonl, checkpoints/best and last, so a
killed run resumes exactly); :class:`MemoryRecorder` keeps them in memory for a ``fit`` without a run
directory (the history as a list, the best weights as a copy; nothing to resume from). The loop talks
to either through the same calls, so it has no "is there a run directory?" branches. Besides the best
weights, ``keep_weights`` keeps the other weights a run may produce: the EMA's best, the SWA average,
cosine-restarts snapshots and the last epochs' weights.

Under torchrun (DDP) rank 0 has the :class:`RunRecorder`; every other rank a :class:`RankRecorder`, which
writes nothing, reads rank 0's checkpoint when resuming and sends its random-number state along at each save.
"""

from __future__ import annotations

import copy
import functools
import math
import signal
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from babysit.errors import BabysitError, Diverged
from babysit.log import get_logger
from babysit.rundir import RunDir
from babysit.train import distributed as ddp
from babysit.train.checkpoint import (
    all_finite,
    checkpoint_step,
    config_changes,
    flatten_state,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unflatten_state,
)
from babysit.writer import flush as flush_writes
from babysit.writer import later, write_later

_log = get_logger(__name__)

if TYPE_CHECKING:
    from pathlib import Path

    from babysit.config import RunConfig
    from babysit.train.loop import LoopState, StepCost

# Options a resumed run may change in config.toml: none of them alters the weights (epochs stretches the schedule).
RESUME_FREE_KEYS = ("train.epochs", "train.patience", "train.progress", "train.device", "train.eval_batch_size",
                    "train.train_eval_size", "train.sync_every", "train.threads", "checkpoint.every", "monitor")


class MemoryRecorder:
    """fit() without a run directory: history and best weights in memory, no checkpoints."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.best: dict[str, torch.Tensor] | None = None
        self.weights: dict[tuple[str, int], dict[str, torch.Tensor]] = {}  # (kind, index) -> weights

    def append(self, records: dict[str, Any] | list[dict[str, Any]]) -> None:
        """One history record, or a block of them."""
        self.records.extend(records if isinstance(records, list) else [records])

    def keep_best(self, state: LoopState, meta: dict[str, Any]) -> None:
        self.best = {k: v.detach().clone() for k, v in state.model.state_dict().items()}

    def best_weights(self) -> dict[str, torch.Tensor] | None:
        return self.best

    def keep_weights(self, kind: str, weights: dict[str, torch.Tensor], meta: dict[str, Any], index: int = 0,
                     keep_last: int = 0) -> None:
        """Keep ``weights`` as ``kind`` (ema, swa, snapshot, epoch) number ``index``; with ``keep_last`` drop
        those of the kind numbered ``index - keep_last`` and below."""
        self.weights[(kind, index)] = weights
        if keep_last:
            for key in [k for k in self.weights if k[0] == kind and k[1] <= index - keep_last]:
                del self.weights[key]

    def save(self, state: LoopState, callbacks: list[Any]) -> None:
        """Nothing to write: a run without a directory cannot be resumed."""

    def flush(self) -> None:
        """Nothing is written in the background."""

    def restore(self, state: LoopState, callbacks: list[Any]) -> None:
        raise BabysitError("resume needs a run directory; pass fit(..., run=RunDir(...)).")

    def kept(self) -> str:
        """What survives a divergence, for its message."""
        return "no checkpoint was saved before it"

    def stopped(self, signum: int) -> str:
        return f"stopped by {signal.Signals(signum).name}; without a run directory nothing was saved."


class RunRecorder:
    """fit() with a run directory: history.jsonl, checkpoints/best.safetensors and last.safetensors."""

    def __init__(self, run: RunDir) -> None:
        self.run = run

    def append(self, records: dict[str, Any] | list[dict[str, Any]]) -> None:
        """One history record, or a block of them in one write."""
        self.run.append_history(records)

    def keep_best(self, state: LoopState, meta: dict[str, Any]) -> None:
        save_checkpoint(self.run.best, {f"model.{k}": v for k, v in state.model.state_dict().items()}, meta,
                        write_later)

    def keep_weights(self, kind: str, weights: dict[str, torch.Tensor], meta: dict[str, Any], index: int = 0,
                     keep_last: int = 0) -> None:
        """checkpoints/ema, swa, snapshots/cycle-N or epochs/epoch-N; with ``keep_last`` the files of the kind
        numbered ``index - keep_last`` and below are removed."""
        run = self.run
        paths = {"ema": lambda: run.best_ema, "swa": lambda: run.swa, "snapshot": lambda: run.snapshot(index),
                 "epoch": lambda: run.epoch_weights(index)}
        save_checkpoint(paths[kind](), {f"model.{k}": v for k, v in weights.items()}, meta, write_later)
        if keep_last and kind == "epoch":
            later(lambda: self._drop_epochs(index - keep_last))

    def _drop_epochs(self, upto: int) -> None:
        """Remove the kept epochs' weights numbered ``upto`` and below (on the writer, after their writes)."""
        for number, path in RunDir.numbered(self.run.epochs):
            if number <= upto:
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)

    def best_weights(self) -> dict[str, torch.Tensor] | None:
        flush_writes()
        if not self.run.best.exists():
            return None
        best, _ = load_checkpoint(self.run.best)
        return {k[len("model."):]: v for k, v in best.items()}

    def save(self, state: LoopState, callbacks: list[Any]) -> None:
        """checkpoints/last.safetensors: weights, optimiser, RNG, callbacks and the position in the run (under
        DDP also the number of processes and each one's RNG state)."""
        rank_rngs = ddp.rng_states()  # every process takes part, before anything here can raise
        tensors = {f"model.{k}": v for k, v in state.model.state_dict().items()}
        if not all_finite(tensors):  # never replace the last good checkpoint with NaN weights
            raise Diverged.at("the weights became NaN or Inf", state.step, float("nan"), state.lr, self.kept())
        meta: dict[str, Any] = {
            "epoch": state.epoch, "batch": state.batch, "step": state.step, "loss_sum": state.loss_sum,
            "reg_sum": state.reg_sum,
            "lr": state.lr, "best_val_acc": state.best_val_acc, "best_epoch": state.best_epoch,
            "best_score": state.best_score, "history": state.history, "spec": state.cfg.model.spec,
            "config": _config_dict(state.cfg),
            "optimizer": flatten_state("optim", state.optimizer.state_dict(), tensors),
            "schedule": state.schedule.state_dict() if state.schedule is not None else None,
            "averages": (flatten_state("avg", state.averages.state_dict(), tensors) if state.averages is not None
                         else None),
            "callbacks": [flatten_state(f"cb{i}", cb.state_dict(), tensors) if hasattr(cb, "state_dict") else None
                          for i, cb in enumerate(callbacks)],
        }
        meta["rng"] = rng_state(tensors)
        meta["world_size"] = max(len(rank_rngs), 1)
        for r, states in enumerate(rank_rngs):
            for key, value in states.items():
                tensors[f"rng.rank{r}.{key}"] = value
        later(self.run.sync_history)  # the history up to this step is durable before the checkpoint resuming from it
        save_checkpoint(self.run.last, tensors, meta, write_later)

    def flush(self) -> None:
        """Wait until the checkpoints handed to the background writer are on disk (raises its write error)."""
        flush_writes()

    def restore(self, state: LoopState, callbacks: list[Any], write: bool = True) -> None:
        """Inverse of :meth:`save`; errors in words when the checkpoint does not fit this model or config.
        ``write=False`` (a DDP rank other than 0): restore only, leave the history to rank 0."""
        run = self.run
        if not run.last.exists():  # killed before its first checkpoint: start over in the same directory
            _log.info(f"{run.path} has no checkpoint yet; training it from the start.")
            if write:
                run.append_history({"kind": "resume", "step": 0, "epoch": 1})
            return
        tensors, meta = load_checkpoint(run.last)
        ranks, saved_world = ddp.joined(), meta.get("world_size", 1)
        if saved_world != ranks.world:
            how = (f"torchrun --nproc-per-node={saved_world} -m babysit train --resume {run.path}"
                   if saved_world != 1 else f"babysit train --resume {run.path}")
            raise BabysitError(f"checkpoint {run.last} was saved by {saved_world} process(es) and this resume runs "
                               f"{ranks.world}: each process's batch rows and random numbers depend on the number, so "
                               f"resume on the same number, `{how}` (or start a new run).")
        if not {"optimizer", "rng", "step"} <= meta.keys():
            raise BabysitError(f"{run.last} holds weights only (no optimiser state or position), so the run cannot "
                               "resume from it; put back this run's own last checkpoint or start the run afresh.")
        saved = meta.get("config")
        changes = config_changes(saved, asdict(state.cfg), RESUME_FREE_KEYS) if isinstance(saved, dict) else []
        if not changes and meta.get("spec") != state.cfg.model.spec:
            changes = [f"model.spec: {meta.get('spec')!r} -> {state.cfg.model.spec!r}"]
        if changes:
            raise BabysitError(f"checkpoint {run.last} was saved with another config than {run.config} "
                               f"({'; '.join(changes)}); undo the edit (or put back this run's own checkpoint) to "
                               "resume, or start a new run with the new config.")
        check_position(meta, run.last, state.steps_per_epoch)
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            state.model.load_state_dict(weights)
            state.optimizer.load_state_dict(unflatten_state(meta["optimizer"], tensors))
            for cb, cb_state in zip(callbacks, meta.get("callbacks", [])):
                if cb_state is not None and hasattr(cb, "load_state_dict"):
                    cb.load_state_dict(unflatten_state(cb_state, tensors))
            for key in ("epoch", "batch", "step", "loss_sum", "lr", "best_val_acc", "best_epoch", "history"):
                setattr(state, key, meta[key])
            if state.schedule is not None and meta.get("schedule") is not None:
                state.schedule.load_state_dict(meta["schedule"])
            state.reg_sum = float(meta.get("reg_sum", 0.0))  # checkpoints from before the split hold none
            state.best_score = meta.get("best_score", state.best_val_acc if state.best_epoch > 0 else None)
            if state.averages is not None and meta.get("averages") is not None:
                state.averages.load_state_dict(unflatten_state(meta["averages"], tensors))
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise BabysitError(f"checkpoint {run.last} does not match this model ({str(e).splitlines()[0]}); "
                               "put back this run's own checkpoint or start the run afresh.") from None
        set_rng_state(meta["rng"] if isinstance(meta.get("rng"), dict) else {}, tensors)
        if ranks.active:  # each process's own dropout stream
            mine = f"rng.rank{ranks.rank}."
            ddp.set_rng({k[len(mine):]: v for k, v in tensors.items() if k.startswith(mine)})
        if write:
            run.append_history({"kind": "resume", "step": state.step, "epoch": state.epoch + 1})

    def kept(self) -> str:
        flush_writes()  # the last checkpoint handed to the writer counts
        saved = checkpoint_step(self.run.last)
        return (f"the last good checkpoint, step {saved}, is kept in {self.run.last}" if saved is not None
                else "no checkpoint was saved before it")

    def stopped(self, signum: int) -> str:
        return (f"stopped by {signal.Signals(signum).name} after saving a checkpoint; resume with "
                f"`babysit train --resume {self.run.path}`.")


class RankRecorder(MemoryRecorder):
    """A DDP process other than rank 0: keeps what it needs in memory and writes nothing; resumes from the
    checkpoint rank 0 wrote and sends rank 0 its RNG state at every save."""

    def __init__(self, run: RunDir) -> None:
        super().__init__()
        self.reader = RunRecorder(run)

    def save(self, state: LoopState, callbacks: list[Any]) -> None:
        ddp.rng_states()  # rank 0 gathers every process's state into its checkpoint

    def restore(self, state: LoopState, callbacks: list[Any]) -> None:
        self.reader.restore(state, [], write=False)  # rank 0's callbacks hold the callback states

    def stopped(self, signum: int) -> str:
        return self.reader.stopped(signum)


Recorder = MemoryRecorder | RunRecorder | RankRecorder
"""Where fit() records: a run directory, memory, or (DDP ranks other than 0) nowhere."""


@functools.lru_cache(maxsize=4)
def _config_dict(cfg: RunConfig) -> dict[str, Any]:
    """``asdict(cfg)`` once per config (it is frozen): a checkpoint is written at every epoch end and every
    checkpoint.every steps, and asdict walks every field each time. Only read (serialised), never changed."""
    return asdict(cfg)


def recorder(run: RunDir | None, main: bool = True) -> Recorder:
    """The recorder for fit(): the run directory's (rank 0 under DDP), a non-writing one on the other ranks,
    memory without a run directory."""
    if run is None:
        return MemoryRecorder()
    return RunRecorder(run) if main else RankRecorder(run)


class WeightSnapshot:
    """A copy of the model's weights and buffers and the optimiser's state, on their own device.

    Taken at every loss read-back (``train.sync_every``), so it is refreshed in place: one fused copy into buffers
    made once, a few kernels however many tensors the model has (a clone per tensor was the biggest cost of a
    read-back on a GPU). The buffers are made again when the set of tensors changes (the optimiser creates its
    state at the first step)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self._layout: list[tuple[Any, ...]] = []
        self._saved: list[torch.Tensor] = []
        self._numbers: list[dict[str, Any]] = []
        self._groups: list[dict[str, Any]] = []
        self.take()

    def _params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _live(self) -> tuple[list[torch.Tensor], list[tuple[Any, ...]]]:
        """The tensors to copy and their layout (where each lives, shape, dtype, device)."""
        tensors, layout = [], []
        for key, t in self.model.state_dict().items():
            tensors.append(t.detach())
            layout.append(("model", key, t.shape, t.dtype, t.device))
        for i, p in enumerate(self._params()):
            for k, v in self.optimizer.state.get(p, {}).items():
                if isinstance(v, torch.Tensor):
                    tensors.append(v)
                    layout.append(("optim", i, k, v.shape, v.dtype, v.device))
        return tensors, layout

    @torch.no_grad()
    def take(self) -> None:
        tensors, layout = self._live()
        if layout != self._layout:
            self._layout, self._saved = layout, [t.clone() for t in tensors]
        elif tensors:
            torch._foreach_copy_(self._saved, tensors)
        # the optimiser's other state: numbers (a step count) per parameter, the groups' hyper-parameters
        self._numbers = copy.deepcopy([{k: v for k, v in self.optimizer.state.get(p, {}).items()
                                        if not isinstance(v, torch.Tensor)} for p in self._params()])
        self._groups = copy.deepcopy([{k: v for k, v in g.items() if k != "params"}
                                      for g in self.optimizer.param_groups])

    @torch.no_grad()
    def restore(self) -> None:
        tensors, layout = self._live()
        if layout != self._layout:  # the optimiser made its state after the snapshot: back to none
            self.optimizer.state.clear()
            tensors, layout = self._live()
        if tensors:
            torch._foreach_copy_(tensors, self._saved)
        for p, numbers in zip(self._params(), self._numbers):
            if p in self.optimizer.state:
                self.optimizer.state[p].update(numbers)
        for g, saved in zip(self.optimizer.param_groups, self._groups):
            g.update(saved)


def check_position(meta: dict[str, Any], path: Path, steps_per_epoch: int) -> None:
    """Validate a checkpoint's position like user input: the file may have been edited or crafted, and a string
    epoch or a negative batch would otherwise surface as a traceback or as NaN training much later."""
    def count(key: str, low: int, high: float = math.inf) -> str | None:
        v = meta.get(key)
        ok = isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
        return None if ok else f"{key} is {v!r}, not a whole number from {low}" + (
            f" to {int(high)}" if high < math.inf else "")

    def real(key: str, low: float = -math.inf, optional: bool = False) -> str | None:
        v = meta.get(key)
        if optional and v is None:
            return None
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= low
        return None if ok else f"{key} is {v!r}, not a finite number" + (f" >= {low:g}" if low > -math.inf else "")

    problems = [count("epoch", 0), count("batch", 0, steps_per_epoch), count("step", 0), count("best_epoch", -1),
                real("loss_sum"), real("lr", 0.0), real("best_val_acc", -1.0), real("best_score", optional=True)]
    if not isinstance(meta.get("history"), list) or not all(isinstance(r, dict) for r in meta["history"]):
        problems.append("history is not a list of records")
    bad = [p for p in problems if p]
    if bad:
        raise BabysitError(f"checkpoint {path} has an invalid position ({bad[0]}); put back this run's own "
                           "checkpoint or start the run afresh.")


def sync_due(step: int, every: int) -> bool:
    """Read the losses back at steps 1, 2, 4, 8, ... (a blow-up at the start is caught at once), then
    every ``every`` steps."""
    return step % every == 0 or (step < every and step & (step - 1) == 0)


def _l2_terms(costs: list[StepCost]) -> torch.Tensor | None:
    """Each step's L2 term (the update rule's weight decay) from its weights' norms, for a block of fit()'s steps
    (one update rule, so all or none of them have norms): one stack and one product; None without the term."""
    reg = costs[0].reg
    if costs[0].l2_norms is None or reg is None:
        return None
    return reg.l2_values(torch.stack([v for c in costs for v in c.l2_norms]).view(len(costs), -1))


class StepLosses:
    """Mini-batch losses kept on the device and read back in blocks: one host sync per block, not per step.

    At each :meth:`sync` the block is checked and recorded: a NaN or Inf loss, or a callback's
    ``on_losses(state, records)`` raising :class:`Diverged` (the divergence guard), rolls the model and
    the optimiser back to the last synced state, records the steps before the bad one and re-raises. So
    NaN weights never reach a checkpoint, the best weights or the model fit() leaves behind.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rec: Recorder,
                 callbacks: list[Any]) -> None:
        self.rec, self.callbacks = rec, callbacks
        self.pending: list[tuple[dict[str, Any], StepCost]] = []  # (record without its loss, the step's cost)
        self.good = WeightSnapshot(model, optimizer)  # the state after the last synced step

    def add(self, record: dict[str, Any], cost: StepCost) -> None:
        """One step's record and its cost (data loss + regularisation), still on the device."""
        self.pending.append((record, cost))

    def sync(self, state: LoopState) -> None:
        """Read the pending losses (one transfer), check them, record them; updates ``state.loss``/``loss_sum``."""
        if not self.pending:
            return
        # one transfer: the costs, the regularisation terms and the weights' norm (a NaN gradient in the last
        # step shows only there); the block's L2 terms are formed here, a few kernels for all its steps
        costs = [c for _, c in self.pending]
        n, first = len(costs), costs[0].loss
        loss, reg = torch.stack([c.loss for c in costs]), None
        if any(c.penalty is not None for c in costs):  # L1, or L2 when the rule does not apply it
            reg = torch.stack([c.penalty.to(first) if c.penalty is not None else torch.zeros_like(first)
                               for c in costs])
        l2 = _l2_terms(costs)
        if l2 is not None:  # the L2 term the update rule applied
            l2 = l2.to(loss)
            loss, reg = loss + l2, l2 if reg is None else reg + l2
        norm = torch.nn.utils.get_total_norm([p.detach() for p in self.good.model.parameters()]).to(first)
        # DDP: the mean over processes of their weighted losses is the global batch's (alone: unchanged)
        parts = [loss] + ([reg] if reg is not None else []) + [norm.view(1)]
        *values, weight_norm = ddp.mean(torch.cat(parts)).tolist()
        records = [{**r, "loss": v} for (r, _), v in zip(self.pending, values[:n])]
        for r, v in zip(records, values[n:]):  # the regularisation term, when the run has one
            r["reg"] = v
        self.pending = []
        try:
            bad = next((r for r in records if not math.isfinite(r["loss"])), None)
            if bad is not None:
                raise Diverged.at(f"the loss became {bad['loss']}", bad["step"], bad["loss"], bad["lr"],
                                  self.rec.kept())
            if not math.isfinite(weight_norm):
                last = records[-1]
                raise Diverged.at(f"the weights became {weight_norm} (a NaN or Inf update)", last["step"],
                                  weight_norm, last["lr"], self.rec.kept())
            for cb in self.callbacks:
                if hasattr(cb, "on_losses"):
                    cb.on_losses(state, records)
        except Diverged as e:
            ok = [r for r in records if r["step"] < e.step or (r["step"] == e.step and math.isfinite(r["loss"]))]
            self._record(state, ok)
            self.good.restore()
            raise
        self._record(state, records)
        self.good.take()

    def _record(self, state: LoopState, records: list[dict[str, Any]]) -> None:
        self.rec.append(records)
        for r in records:  # one add per step, in order: the same float sum as adding each step's loss
            state.loss_sum += r["loss"]
            state.reg_sum += r.get("reg", 0.0)
        if records:
            state.loss = records[-1]["loss"]
