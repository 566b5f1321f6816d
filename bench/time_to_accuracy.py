"""Seconds of training to a target test accuracy: babysit's defaults vs two hand-written recipes.

Contenders, run one after another within each seed (babysit, examples, bn; then the next seed) so
drift in machine speed hits all alike:

  babysit   ``babysit.experiment.train`` with RunConfig() + data.name only (+ data.limit, train.seed,
            train.progress=false): the command ``babysit train --data.name=mnist``.
  examples  the pytorch/examples MNIST recipe as a lean hand loop: conv3-32, conv3-64, maxpool 2,
            dropout .25, fc 128, dropout .5, fc; Adadelta lr 1.0, StepLR gamma 0.7 per epoch, batch 64,
            inputs (x/255 - 0.1307) / 0.3081, 14 epochs.
  bn        a small BN net (29k parameters: [conv3 bn relu pool] x 3 with 16/32/64 filters, fc) with
            one-cycle, SGD Nesterov momentum 0.9, weight decay 5e-4 in the optimiser, batch 512: the
            strongest simple anchor, the bar babysit's defaults must meet. channels_last memory format
            (--bn-format; it takes ~0.6x the step time of the contiguous format on this CPU).

All see the split babysit makes for the seed (prepare_data), the hand loops as uint8 tensors in memory,
preprocessed per batch as their recipe does (no DataLoader), the loss summed on the device and read
once per epoch. After every epoch each contender's model is scored on the TEST split (eval mode, timed
apart and left out of the training time). Time to target = the training seconds of the epochs up to
the first one whose test accuracy reaches the target; babysit's per-epoch seconds are fit's own
(history "seconds": the epoch's steps, probes included; scoring, checkpoints and the sanity checks
before fit are in "wall" only).

    python bench/time_to_accuracy.py --data mnist|fashion-mnist [--seeds 3] [--first-seed 0] [--epochs N] [--threads T]
        [--limit N] [--target 0.99] [--only babysit,examples,bn] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from recipes import ExamplesNet  # bench/ is on sys.path when a bench runs
from torch import nn

from babysit import config as C
from babysit.data.preprocess import Preprocessor
from babysit.data.split import Splits, prepare_data
from babysit.experiment import train
from babysit.start import resolve_device
from babysit.train.loop import evaluate

TARGETS = {"mnist": 0.99, "fashion-mnist": 0.93}
CONTENDERS = ("babysit", "examples", "bn")

# The anchor's hyper-parameters, tuned on MNIST (seed 0, full split, 1 thread): one-cycle max lr 0.1 and 0.2
# both end at 99.26-99.27 % after 6 epochs (0.2 first at 99.0 % after 4), 0.4 collapses (97.9 %); 4 epochs
# with 0.2 (0.15) end at 99.16 % (99.18 %), at the target after 4 epochs: the fastest to it of those tried.
BN_EPOCHS = 4
BN_MAX_LR = 0.2
BN_BATCH = 512
BN_WEIGHT_DECAY = 5e-4


@dataclass
class Curve:
    """One contender's run on one seed: per-epoch training seconds and test accuracy."""

    contender: str
    seed: int
    train_s: list[float] = field(default_factory=list)  # training seconds of each epoch (no scoring)
    test_acc: list[float] = field(default_factory=list)  # test accuracy after each epoch
    eval_s: float = 0.0  # seconds spent scoring the test split (left out of train_s)
    wall_s: float = 0.0  # the whole run: data, setup, training, scoring, files
    setup_s: float = 0.0  # babysit: train() up to fit's first epoch (data, preprocessing, sanity checks)
    after_s: float = 0.0  # babysit: after fit's last epoch (test score, val analysis, findings, report)
    final_acc: float = 0.0  # test accuracy of the model the run ends with (babysit: its best-val weights)
    threads: int = 0

    def to_target(self, target: float) -> tuple[float | None, int | None]:
        """(training seconds, epochs) up to the first epoch at or above ``target``; (None, None) if never."""
        for i, acc in enumerate(self.test_acc):
            if acc >= target:
                return sum(self.train_s[: i + 1]), i + 1
        return None, None


class TestEval:
    """fit callback: score the test split at each epoch end, timed apart from the training."""

    def __init__(self, curve: Curve, x: torch.Tensor, y: torch.Tensor, echo: Any) -> None:
        self.curve, self.x, self.y, self.echo = curve, x, y, echo
        self.fit_start = self.fit_end = 0.0

    def on_fit_start(self, state: Any) -> None:
        self.fit_start = time.perf_counter()

    def on_fit_end(self, state: Any) -> None:
        self.fit_end = time.perf_counter()

    def on_epoch_end(self, state: Any) -> None:
        t0 = time.perf_counter()
        _, acc, _ = evaluate(state.model, self.x, self.y)  # eval mode, then back to train mode
        self.curve.eval_s += time.perf_counter() - t0
        self.curve.train_s.append(float(state.history[-1]["seconds"]))
        self.curve.test_acc.append(acc)
        self.echo(self.curve, state.epoch)  # epochs finished


def babysit_cfg(args: argparse.Namespace, seed: int) -> C.RunConfig:
    over: dict[str, Any] = {"data.name": args.data, "train.seed": seed, "train.progress": False}
    if args.limit:
        over["data.limit"] = args.limit
    if args.epochs:
        over["train.epochs"] = args.epochs
    if args.threads and "threads" in {f.name for f in fields(C.TrainConfig)}:
        over["train.threads"] = args.threads  # when babysit has the option, it sets the threads itself
    for item in args.set:  # --set section.key=value: try a babysit config other than the defaults
        key, _, value = item.partition("=")
        over[key] = value
    return C.apply_overrides(C.RunConfig(), over)


def run_babysit(args: argparse.Namespace, seed: int, splits: Splits, echo: Any) -> Curve:
    curve = Curve("babysit", seed)
    cfg = babysit_cfg(args, seed)
    dev = resolve_device(cfg.train.device)
    pre = Preprocessor.from_config(splits.train.x, cfg.data)  # what train() fits: same split, same statistics
    x_test, y_test = pre(splits.test.x.to(dev)), splits.test.y.to(dev)
    log = io.StringIO()
    scorer = TestEval(curve, x_test, y_test, echo)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stdout if args.verbose else log):
                res = train(cfg, out=tmp, name="run", callbacks=[scorer])
        except BaseException:
            sys.stdout.write(log.getvalue()[-4000:])
            raise
        t1 = time.perf_counter()
        curve.wall_s, curve.setup_s, curve.after_s = t1 - t0, scorer.fit_start - t0, t1 - scorer.fit_end
    curve.final_acc = res.test_acc
    curve.threads = torch.get_num_threads()
    return curve


def small_bn_net(in_ch: int, h: int, w: int, classes: int) -> nn.Sequential:
    """[conv3 (no bias) bn relu maxpool2] with 16, 32, 64 filters, then fc: 29,178 parameters on 28x28x1."""
    layers: list[nn.Module] = []
    c = in_ch
    for k in (16, 32, 64):
        layers += [nn.Conv2d(c, k, 3, padding=1, bias=False), nn.BatchNorm2d(k), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        c, h, w = k, h // 2, w // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * w, classes))


def hand_run(name: str, args: argparse.Namespace, seed: int, splits: Splits, echo: Any) -> Curve:
    """The examples or bn recipe: a lean loop over uint8 tensors in memory, scored on test after each epoch."""
    t0 = time.perf_counter()
    curve = Curve(name, seed)
    dev = resolve_device("auto")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = splits.train.x.to(dev), splits.train.y.to(dev)
    c, h, w = splits.train.input_shape
    k = len(splits.classes)
    if name == "examples":
        mean, std = 0.1307, 0.3081  # the recipe's constants (MNIST's), as transforms.Normalize has them
        model: nn.Module = ExamplesNet(c, h, w, k).to(dev)
        epochs, batch = args.epochs or 14, 64
        opt: torch.optim.Optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
        sched: Any = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
        per_step, criterion = False, F.cross_entropy
    else:
        xf = splits.train.x.float() / 255  # the training split's pixel mean and std, computed once
        mean, std = xf.mean().item(), xf.std().item()
        del xf
        model = small_bn_net(c, h, w, k).to(dev)
        epochs, batch = args.epochs or args.bn_epochs, BN_BATCH
        if args.bn_format == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=args.bn_lr, momentum=0.9, nesterov=True,
                              weight_decay=BN_WEIGHT_DECAY)
        steps = epochs * -(-len(x) // batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.bn_lr, total_steps=steps)
        per_step, criterion = True, F.cross_entropy
    fmt = torch.channels_last if name == "bn" and args.bn_format == "channels_last" else torch.contiguous_format

    def prep(raw: torch.Tensor) -> torch.Tensor:
        return ((raw.float() / 255 - mean) / std).contiguous(memory_format=fmt)

    x_test, y_test = prep(splits.test.x.to(dev)), splits.test.y.to(dev)
    n = len(x)
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=g).to(dev)
        total = torch.zeros((), device=dev)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            loss = criterion(model(prep(x[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if per_step:
                sched.step()
            total += loss.detach()
        if not per_step:
            sched.step()
        total.item()  # the one read of the epoch (and a device sync)
        curve.train_s.append(time.perf_counter() - started)
        t1 = time.perf_counter()
        _, acc, _ = evaluate(model, x_test, y_test)  # eval mode, then back to train mode
        curve.eval_s += time.perf_counter() - t1
        curve.test_acc.append(acc)
        echo(curve, epoch + 1)
    curve.final_acc = curve.test_acc[-1]
    curve.wall_s = time.perf_counter() - t0
    curve.threads = torch.get_num_threads()
    return curve


def _stats(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return format(mean, fmt)
    return f"{format(mean, fmt)} ({format(min(values), fmt)}..{format(max(values), fmt)})"


def summarise(curves: list[Curve], target: float) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(c.contender for c in curves):
        runs = [c for c in curves if c.contender == name]
        reached = [c.to_target(target) for c in runs]
        secs = [s for s, _ in reached if s is not None]
        eps = [float(e) for _, e in reached if e is not None]
        rows.append({"contender": name, "seeds": len(runs), "reached": len(secs), "to_target_s": secs,
                     "epochs_to_target": eps, "final_acc": [c.final_acc for c in runs],
                     "epochs": [len(c.train_s) for c in runs], "wall_s": [c.wall_s for c in runs],
                     "train_s": [sum(c.train_s) for c in runs], "threads": sorted({c.threads for c in runs})})
    return rows


def print_table(rows: list[dict[str, Any]], target: float) -> None:
    head = (f"{'contender':<9} {'seeds':>5} {'reached':>7}  {f'to {target:.1%} test, s':<24} {'epochs to':<16} "
            f"{'final test acc':<26} {'epochs':>6} {'train s':>8} {'wall s':>8} {'threads':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        acc = [100 * a for a in r["final_acc"]]
        print(f"{r['contender']:<9} {r['seeds']:>5} {r['reached']:>4}/{r['seeds']:<2}  "
              f"{_stats(r['to_target_s'], '.1f'):<24} {_stats(r['epochs_to_target'], '.1f'):<16} "
              f"{_stats(acc, '.2f') + ' %':<26} {max(r['epochs']):>6} {statistics.fmean(r['train_s']):>8.1f} "
              f"{statistics.fmean(r['wall_s']):>8.1f} {','.join(map(str, r['threads'])):>7}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist", choices=sorted(TARGETS))
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1, each running every contender")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed+N-1")
    ap.add_argument("--epochs", type=int, default=0, help="epochs of every contender (0: each recipe's own)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--limit", type=int, default=0, help="training images (0 = all)")
    ap.add_argument("--target", type=float, default=0.0, help="test accuracy to reach, 0..1 (0: 0.99 mnist, "
                                                              "0.93 fashion-mnist)")
    ap.add_argument("--only", default=",".join(CONTENDERS), help="contenders to run, comma-separated")
    ap.add_argument("--bn-lr", type=float, default=BN_MAX_LR, help="bn: one-cycle's max lr")
    ap.add_argument("--bn-epochs", type=int, default=BN_EPOCHS, help="bn: epochs (when --epochs is 0)")
    ap.add_argument("--bn-format", default="channels_last", choices=("channels_last", "contiguous"),
                    help="bn: memory format of the model and batches (channels_last: ~0.6x the step time on CPU)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="babysit: a config override (repeatable), e.g. --set model.spec=lecture")
    ap.add_argument("--json", default="", help="also write the numbers here")
    ap.add_argument("--verbose", action="store_true", help="show babysit's own output")
    args = ap.parse_args()
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    if unknown := set(only) - set(CONTENDERS):
        ap.error(f"unknown contender(s) {', '.join(sorted(unknown))}; choose from {', '.join(CONTENDERS)}")
    target = args.target or TARGETS[args.data]
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    load_start = os.getloadavg()

    out = sys.stdout  # babysit's own output goes elsewhere (unless --verbose); the epoch lines come here

    def echo(curve: Curve, epoch: int) -> None:
        print(f"  {curve.contender:<8} seed {curve.seed} epoch {epoch:>2}: train {curve.train_s[-1]:7.2f} s, "
              f"test {curve.test_acc[-1]:.4f}", file=out, flush=True)

    curves: list[Curve] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        cfg = babysit_cfg(args, seed)
        _, splits = prepare_data(cfg)  # the split babysit makes for this seed
        print(f"seed {seed}: {args.data} {len(splits.train)}/{len(splits.val)}/{len(splits.test)} train/val/test",
              flush=True)
        for name in only:
            torch.set_num_threads(threads)  # the same threads for every contender (babysit may set its own)
            if name == "babysit":
                curves.append(run_babysit(args, seed, splits, echo))
                c = curves[-1]
                print(f"  babysit  seed {seed}: wall {c.wall_s:.1f} s = setup {c.setup_s:.1f} (data, sanity checks) "
                      f"+ fit {c.wall_s - c.setup_s - c.after_s:.1f} (training {sum(c.train_s):.1f}, test scoring "
                      f"{c.eval_s:.1f}, val scoring and files) + after {c.after_s:.1f} (test, analysis, report)",
                      flush=True)
            else:
                curves.append(hand_run(name, args, seed, splits, echo))
    load_end = os.getloadavg()
    rows = summarise(curves, target)
    print()
    print(f"time to {target:.1%} test accuracy on {args.data}"
          f"{f' ({args.limit} training images)' if args.limit else ''}, device {resolve_device('auto')}, "
          f"torch {torch.__version__}, {threads} threads")
    print_table(rows, target)
    print(f"load average (1, 5, 15 min): start {', '.join(f'{v:.2f}' for v in load_start)}; "
          f"end {', '.join(f'{v:.2f}' for v in load_end)}  ({os.cpu_count()} CPUs)")
    print("to target: training seconds of the epochs up to the first at the target (test scoring excluded); "
          "train s: all epochs; wall s: the whole run (babysit: data, sanity checks, files, report)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"data": args.data, "target": target, "limit": args.limit, "threads": threads,
                       "device": str(resolve_device("auto")), "torch": torch.__version__,
                       "load_start": load_start, "load_end": load_end, "cpus": os.cpu_count(),
                       "bn": {"max_lr": args.bn_lr, "epochs": args.epochs or args.bn_epochs, "batch": BN_BATCH,
                              "weight_decay": BN_WEIGHT_DECAY, "memory_format": args.bn_format},
                       "summary": rows, "runs": [asdict(c) for c in curves]}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
