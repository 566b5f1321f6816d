"""fit() (default monitoring on) vs the lean loop a practitioner writes for speed: same model, data,
batch size, update rule, schedule-free lr and per-epoch evaluation, side by side in one run.

The lean loop: weight decay inside the optimiser, the loss summed on the device and read once per
epoch (no per-step ``.item()``), no history, no checkpoints, no probes. fit() runs as ``babysit
train`` runs it: a real run directory (history.jsonl, checkpoints, best weights), the divergence
guard, layer probes every ``monitor.stats_every`` steps and the live diagnosis. One fit() runs all
epochs; at each of its epoch ends a callback runs one lean epoch, so the two alternate (fit, lean,
fit, lean, ...) and drift in machine speed hits both alike. A fit epoch is the time from one epoch
start to the next, less the lean epoch inside it; the first epoch of each is a warm-up.

    python bench/loop_overhead.py [--data digits|mnist|fashion-mnist] [--limit N] [--epochs 5]
                                  [--device cpu|cuda] [--spec SPEC] [--batch-size 64] [--threads T]
                                  [--set KEY=VALUE ...]   (fit's options alone: monitor.stats_every=0 prices the probes)
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from babysit import config as C
from babysit.data.preprocess import Preprocessor
from babysit.monitor.session import RunMonitor
from babysit.rundir import RunDir
from babysit.start import make_model
from babysit.train.loop import TensorData, evaluate, fit
from babysit.train.optim import decayed_parameters


def lean_epoch(model, opt, data: TensorData, batch_size: int, seed: int) -> float:
    """The lean loop: no host sync inside the epoch."""
    n = len(data.x_train)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(data.x_train.device)
    model.train()
    total = torch.zeros((), device=data.x_train.device)
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
    evaluate(model, data.x_train[:1000], data.y_train[:1000])
    evaluate(model, data.x_val, data.y_val)
    return total.item()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Interleaved:
    """Callback: one lean epoch at each of fit()'s epoch ends, both timed."""

    def __init__(self, model, opt, data: TensorData, batch_size: int, device: torch.device) -> None:
        self.args, self.device = (model, opt, data, batch_size), device
        self.fit_times: list[float] = []
        self.lean_times: list[float] = []
        self.started = 0.0
        self.lean_s = 0.0

    def on_epoch_start(self, state) -> None:
        sync(self.device)
        now = time.perf_counter()
        if self.started:
            self.fit_times.append(now - self.started - self.lean_s)
        self.started = now

    def on_epoch_end(self, state) -> None:
        sync(self.device)
        t0 = time.perf_counter()
        lean_epoch(*self.args, seed=state.epoch - 1)  # the same seeds as before epochs counted from 1
        sync(self.device)
        self.lean_s = time.perf_counter() - t0
        self.lean_times.append(self.lean_s)

    def on_fit_end(self, state) -> None:
        self.on_epoch_start(state)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--limit", type=int, default=0, help="training images (0 = all)")
    ap.add_argument("--epochs", type=int, default=6, help="timed epochs per loop (plus one warm-up)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--spec", default="", help="model.spec (default: babysit's default for the data)")
    ap.add_argument("--batch-size", type=int, default=0, help="default: babysit's")
    ap.add_argument("--lr", type=float, default=0.0, help="constant learning rate (default: babysit's optim.lr)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: babysit's automatic choice)")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                    help="NHWC in both loops (train.channels_last; default: babysit's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a babysit option for fit alone")
    args = ap.parse_args()
    over = {"data.name": args.data, "data.limit": args.limit, "train.progress": False, "train.device": args.device,
            "schedule.name": "constant", "schedule.warmup_epochs": 0, "train.epochs": 1, "train.threads": args.threads,
            "monitor.checks": False, "monitor.report": False}
    over.update({"train.channels_last": args.channels_last} if args.channels_last is not None else {})
    over.update({"model.spec": args.spec} if args.spec else {})
    over.update({"train.batch_size": args.batch_size} if args.batch_size else {})
    over.update({"optim.lr": args.lr} if args.lr else {})
    cfg = C.apply_overrides(C.RunConfig(), over)
    from babysit.start import plan_run

    plan = plan_run(cfg)  # sets the threads as a run would
    cfg = plan.cfg  # the spec and batch size babysit picks for this data
    device, splits = plan.device, plan.splits
    pre = Preprocessor.from_config(splits.train.x, cfg.data)
    data = TensorData(pre(splits.train.x).to(device), splits.train.y.to(device), pre(splits.val.x).to(device),
                      splits.val.y.to(device))
    model_fit = make_model(cfg, splits.train.input_shape, len(splits.classes)).to(device)
    model_lean = copy.deepcopy(model_fit)
    if cfg.train.channels_last:
        model_lean.to(memory_format=torch.channels_last)
        data = TensorData(data.x_train.contiguous(memory_format=torch.channels_last), data.y_train,
                          data.x_val.contiguous(memory_format=torch.channels_last), data.y_val)
    decay, rest = decayed_parameters(model_lean)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.optim.weight_decay},
                           {"params": rest, "weight_decay": 0.0}], lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          nesterov=cfg.optim.nesterov)
    lean = Interleaved(model_lean, opt, data, cfg.train.batch_size, device)
    load = os.getloadavg()[0]
    cfg = C.apply_overrides(cfg, {"train.epochs": args.epochs + 1, **dict(item.split("=", 1) for item in args.set)})
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(f"{tmp}/run")
        fit(model_fit, data, cfg, run, callbacks=RunMonitor(cfg, run).callbacks() + [lean])
    times = {"fit": lean.fit_times[1:], "lean": lean.lean_times[1:]}
    fit_s, lean_s = statistics.median(times["fit"]), statistics.median(times["lean"])
    print(f"data {args.data}: {len(data.x_train)} train images, batch {cfg.train.batch_size}, device {device}, "
          f"{torch.get_num_threads()} threads, {args.epochs} timed epochs each, load {load:.2f} -> "
          f"{os.getloadavg()[0]:.2f}")
    print(f"spec: {cfg.model.spec}, channels_last {cfg.train.channels_last}"
          + (f"; fit with {', '.join(args.set)}" if args.set else ""))
    print(f"fit  epoch: median {fit_s:.3f} s  (all: {', '.join(f'{t:.3f}' for t in times['fit'])})")
    print(f"lean epoch: median {lean_s:.3f} s  (all: {', '.join(f'{t:.3f}' for t in times['lean'])})")
    print(f"epoch-time ratio fit/lean: {fit_s / lean_s:.3f}  (target <= 1.05 on CPU, <= 1.10 on CUDA)")


if __name__ == "__main__":
    main()
