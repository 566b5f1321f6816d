"""Seconds per epoch of the pytorch/examples MNIST model in babysit, PyTorch Lightning and Keras 3 vs a lean loop.

One model (conv3-32, conv3-64, maxpool 2, dropout .25, fc 128, dropout .5, fc: pytorch/examples
mnist/main.py's Net), one data set (babysit's split, preprocessed once, in memory), batch 64, the
same update rule, and per epoch the same work: one shuffled pass over the training split, then the
validation split scored in batches of 1000. Contenders, one after another (--rounds repeats the
whole sequence, so drift in machine speed hits all alike):

  hand        the lean loop: loss summed on the device, read once per epoch; no per-step .item()
  babysit     babysit.train.loop.fit (no run directory, as Lightning runs without checkpoints;
              --rundir gives it one; train.train_eval_size=0 so it scores val only, like the others)
  lightning   pytorch_lightning.Trainer without logger, checkpointing, progress bar or model summary,
              batches from the same in-memory tensors (lightning-dl: through DataLoader(TensorDataset))
  keras       Keras 3 on the torch backend, model.fit on NumPy arrays (channels_first, so the same layout),
              accuracy as its metric

The update rule is Adadelta lr 1.0 (the recipe's) when babysit offers it, else SGD lr 0.01 momentum
0.9 in all of them (babysit's optimisers are listed in the output). Epoch time is from one epoch's
start to the next's (the last: to the end of fit), validation included; the first epoch of each is a
warm-up; medians over the rest.

Needs the bench extra (`make bench-frameworks` builds /work/benchvenv and runs this):

    python bench/frameworks.py [--data mnist] [--epochs 3] [--limit N] [--threads T] [--rounds 1]
        [--only hand,babysit,lightning,keras,lightning-dl] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from recipes import ExamplesNet  # bench/ is on sys.path when a bench runs

from babysit import config as C
from babysit.data.preprocess import Preprocessor
from babysit.data.split import prepare_data
from babysit.rundir import RunDir
from babysit.start import make_model, resolve_device
from babysit.train.loop import TensorData, evaluate, fit
from babysit.train.optim import list_optimizers

SPEC = "conv3-32-p0 relu conv3-64-p0 relu pool2 dropout-0.25 fc-128 relu dropout-0.5 fc"
BATCH = 64
EVAL_BATCH = 1000
CONTENDERS = ("hand", "babysit", "lightning", "keras", "lightning-dl")
DEFAULT = "hand,babysit,lightning,keras"
INSTALL_HINT = "install the bench extra: `make bench-frameworks`, or pip install -e '.[bench]' (torch==2.13.0 first)"


def update_rule() -> tuple[str, float]:
    """(babysit optim.name, lr): the recipe's Adadelta when babysit has it, else SGD with momentum."""
    return ("adadelta", 1.0) if "adadelta" in list_optimizers() else ("sgd", 0.01)


def make_optimizer(params: Any) -> torch.optim.Optimizer:
    name, lr = update_rule()
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


class Batches:
    """Shuffled mini-batches of in-memory tensors, a fresh order each pass (what every loop here iterates)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, shuffle: bool, seed: int = 0) -> None:
        self.x, self.y, self.batch, self.shuffle = x, y, batch, shuffle
        self.g = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self.g).to(self.x.device) if self.shuffle else None
        for i in range(0, n, self.batch):
            if order is None:
                yield self.x[i : i + self.batch], self.y[i : i + self.batch]
            else:
                idx = order[i : i + self.batch]
                yield self.x[idx], self.y[idx]


def marks_to_epochs(marks: list[float]) -> list[float]:
    """Epoch starts plus the end of the last epoch -> seconds per epoch."""
    return [b - a for a, b in zip(marks, marks[1:])]


def run_hand(data: TensorData, shape: tuple[int, int, int], classes: int, epochs: int) -> list[float]:
    torch.manual_seed(0)
    model = ExamplesNet(*shape, classes).to(data.x_train.device)
    opt = make_optimizer(model.parameters())
    batches = Batches(data.x_train, data.y_train, BATCH, shuffle=True)
    marks = []
    for _ in range(epochs):
        marks.append(time.perf_counter())
        model.train()
        total = torch.zeros((), device=data.x_train.device)
        for xb, yb in batches:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        total.item()  # the epoch's one read
        evaluate(model, data.x_val, data.y_val, EVAL_BATCH)
    marks.append(time.perf_counter())
    return marks_to_epochs(marks)


class _FitMarks:
    """fit callback: the time at each epoch start and at the end of fit."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_epoch_start(self, state: Any) -> None:
        self.marks.append(time.perf_counter())

    def on_fit_end(self, state: Any) -> None:
        self.marks.append(time.perf_counter())


def babysit_config(args: argparse.Namespace, epochs: int) -> C.RunConfig:
    name, lr = update_rule()
    return C.apply_overrides(C.RunConfig(), {
        "data.name": args.data, "data.limit": args.limit, "model.spec": SPEC, "optim.name": name, "optim.lr": lr,
        "optim.momentum": 0.9, "optim.weight_decay": 0.0, "schedule.name": "constant",
        "schedule.warmup_epochs": 0, "train.batch_size": BATCH, "train.eval_batch_size": EVAL_BATCH,
        "train.train_eval_size": 0, "train.epochs": epochs, "train.progress": False})


def run_babysit(args: argparse.Namespace, data: TensorData, shape: tuple[int, int, int], classes: int,
                epochs: int) -> list[float]:
    cfg = babysit_config(args, epochs)
    model = make_model(cfg, shape, classes).to(data.x_train.device)
    marks = _FitMarks()
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet  # fit's epoch lines
        try:
            fit(model, data, cfg, RunDir.create(f"{tmp}/run") if args.rundir else None, callbacks=[marks])
        finally:
            sys.stdout = stdout
    return marks_to_epochs(marks.marks)


def run_lightning(data: TensorData, shape: tuple[int, int, int], classes: int, epochs: int,
                  dataloader: bool) -> list[float]:
    try:
        import pytorch_lightning as pl
    except ImportError:
        try:
            import lightning.pytorch as pl  # the unified "lightning" package
        except ImportError:
            raise ModuleNotFoundError(f"PyTorch Lightning is not installed; {INSTALL_HINT}") from None
    import logging
    import warnings

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)  # "GPU available: ..." and the like
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 on torch 2.13: a deprecation

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = ExamplesNet(*shape, classes)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            scores = self.net(x)
            self.log("val_loss", F.cross_entropy(scores, y))
            self.log("val_acc", (scores.argmax(1) == y).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return make_optimizer(self.parameters())

    class Marks(pl.Callback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.marks.append(time.perf_counter())

        def on_train_end(self, trainer: Any, module: Any) -> None:
            self.marks.append(time.perf_counter())

    if dataloader:  # the idiomatic way: per-sample indexing and collation in DataLoader
        from torch.utils.data import DataLoader, TensorDataset

        train_dl: Any = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=BATCH, shuffle=True)
        val_dl: Any = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=EVAL_BATCH)
    else:
        train_dl = Batches(data.x_train, data.y_train, BATCH, shuffle=True)
        val_dl = Batches(data.x_val, data.y_val, EVAL_BATCH, shuffle=False)
    torch.manual_seed(0)
    module, marks = Module(), Marks()
    trainer = pl.Trainer(accelerator="cuda" if data.x_train.is_cuda else "cpu", devices=1, max_epochs=epochs,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[marks])
    trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl)
    return marks_to_epochs(marks.marks)


def run_keras(data: TensorData, shape: tuple[int, int, int], classes: int, epochs: int) -> list[float]:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        raise ModuleNotFoundError(f"Keras is not installed; {INSTALL_HINT}") from None
    if keras.backend.backend() != "torch":
        raise RuntimeError(f"Keras runs on the {keras.backend.backend()} backend; set KERAS_BACKEND=torch")
    keras.config.set_image_data_format("channels_first")  # NCHW like the tensors (and torch's convolutions)
    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape), L.Conv2D(32, 3, activation="relu"),
                              L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2), L.Dropout(0.25), L.Flatten(),
                              L.Dense(128, activation="relu"), L.Dropout(0.5), L.Dense(classes)])
    name, lr = update_rule()
    opt = keras.optimizers.Adadelta(lr) if name == "adadelta" else keras.optimizers.SGD(lr, momentum=0.9)
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    marks: list[float] = []

    class Marks(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            marks.append(time.perf_counter())

        def on_train_end(self, logs: Any = None) -> None:
            marks.append(time.perf_counter())

    x, y = data.x_train.cpu().numpy(), data.y_train.cpu().numpy()
    xv, yv = data.x_val.cpu().numpy(), data.y_val.cpu().numpy()
    model.fit(x, y, batch_size=BATCH, epochs=epochs, validation_data=(xv, yv), validation_batch_size=EVAL_BATCH,
              shuffle=True, verbose=0, callbacks=[Marks()])
    return marks_to_epochs(marks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per contender (plus one warm-up)")
    ap.add_argument("--limit", type=int, default=0, help="training images (0 = all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the sequence of contenders this many times")
    ap.add_argument("--only", default=DEFAULT, help=f"contenders, comma-separated, from {', '.join(CONTENDERS)}")
    ap.add_argument("--rundir", action="store_true", help="babysit writes a real run directory (checkpoints)")
    ap.add_argument("--json", default="", help="also write the numbers here")
    args = ap.parse_args()
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    if unknown := set(only) - set(CONTENDERS):
        ap.error(f"unknown contender(s) {', '.join(sorted(unknown))}; choose from {', '.join(CONTENDERS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    load_start = os.getloadavg()

    cfg = babysit_config(args, 1)
    _, splits = prepare_data(cfg)
    pre = Preprocessor.from_config(splits.train.x, cfg.data)
    dev = resolve_device("auto")
    data = TensorData(pre(splits.train.x).to(dev), splits.train.y.to(dev), pre(splits.val.x).to(dev),
                      splits.val.y.to(dev))
    shape, classes = tuple(data.x_train.shape[1:]), len(splits.classes)
    name, lr = update_rule()
    rule = "Adadelta lr 1.0" if name == "adadelta" else "SGD lr 0.01 momentum 0.9"
    print(f"{args.data}: {len(data.x_train)} train / {len(data.x_val)} val images, batch {BATCH}, device {dev}, "
          f"{threads} threads, torch {torch.__version__}; update rule {rule}" +
          ("" if name == "adadelta" else f" (babysit has no Adadelta: {', '.join(list_optimizers())})"), flush=True)

    runners: dict[str, Callable[[int], list[float]]] = {
        "hand": lambda e: run_hand(data, shape, classes, e),
        "babysit": lambda e: run_babysit(args, data, shape, classes, e),
        "lightning": lambda e: run_lightning(data, shape, classes, e, dataloader=False),
        "lightning-dl": lambda e: run_lightning(data, shape, classes, e, dataloader=True),
        "keras": lambda e: run_keras(data, shape, classes, e),
    }
    times: dict[str, list[float]] = {c: [] for c in only}
    missing: dict[str, str] = {}
    for r in range(args.rounds):
        for c in only:
            if c in missing:
                continue
            torch.set_num_threads(threads)
            try:
                epochs = runners[c](args.epochs + 1)
            except ModuleNotFoundError as e:
                missing[c] = str(e)
                print(f"  {c}: skipped: {e}", flush=True)
                continue
            times[c] += epochs[1:]  # the first epoch is the warm-up
            print(f"  round {r + 1} {c:<12} epochs (s): {', '.join(f'{t:.2f}' for t in epochs)}  "
                  f"(first = warm-up)", flush=True)
    load_end = os.getloadavg()

    medians = {c: statistics.median(t) for c, t in times.items() if t}
    base = medians.get("hand")
    print()
    print(f"{'contender':<13} {'median s/epoch':>14} {'vs hand':>8}  timed epochs (s)")
    for c in only:
        if c in missing:
            print(f"{c:<13} {'not installed':>14}")
            continue
        ratio = f"{medians[c] / base:.2f}x" if base else "-"
        print(f"{c:<13} {medians[c]:>14.3f} {ratio:>8}  {', '.join(f'{t:.2f}' for t in times[c])}")
    print(f"load average (1, 5, 15 min): start {', '.join(f'{v:.2f}' for v in load_start)}; "
          f"end {', '.join(f'{v:.2f}' for v in load_end)}  ({os.cpu_count()} CPUs)")
    if missing:
        print(f"not run: {', '.join(missing)}; {INSTALL_HINT}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"data": args.data, "train_images": len(data.x_train), "batch": BATCH, "device": str(dev),
                       "threads": threads, "torch": torch.__version__, "update_rule": rule, "rounds": args.rounds,
                       "load_start": load_start, "load_end": load_end, "median_s": medians,
                       "ratio_vs_hand": {c: m / base for c, m in medians.items()} if base else {},
                       "epochs_s": times, "missing": missing}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
