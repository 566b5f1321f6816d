"""fit() vs a hand-written minimal PyTorch loop: same model, data, batch size and work per epoch.

Both do, per epoch: shuffle, forward, cross-entropy + L2, backward, SGD step, then score 1000
training images and the validation split. fit() additionally writes history.jsonl, checkpoints
and the best weights (it runs with a real run directory). Epochs are interleaved (fit, hand, fit,
hand, ...) so drift in machine speed hits both alike; the first epoch of each is a warm-up.

    python bench/loop_overhead.py [--data digits|mnist|fashion-mnist] [--limit N] [--epochs 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from babysit import config as C
from babysit.data.preprocess import Preprocessor
from babysit.data.split import prepare_data
from babysit.rundir import RunDir
from babysit.start import make_model
from babysit.train.loop import TensorData, evaluate, fit
from babysit.train.optim import decayed_parameters, l2_penalty


def hand_epoch(model, opt, data: TensorData, batch_size: int, lr: float, wd: float, seed: int) -> None:
    """The minimal loop a practitioner would write by hand."""
    decay, _ = decayed_parameters(model)
    n = len(data.x_train)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    model.train()
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        for g in opt.param_groups:
            g["lr"] = lr
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]) + l2_penalty(decay, wd)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    evaluate(model, data.x_train[:1000], data.y_train[:1000])
    evaluate(model, data.x_val, data.y_val)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--limit", type=int, default=0, help="training images (0 = all)")
    ap.add_argument("--epochs", type=int, default=6, help="timed epochs per loop (plus one warm-up)")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    cfg = C.apply_overrides(C.RunConfig(), {"data.name": args.data, "data.limit": args.limit,
                                            "train.progress": False, "schedule.name": "constant",
                                            "schedule.warmup_epochs": 0, "train.epochs": 1})
    _, splits = prepare_data(cfg)
    pre = Preprocessor.from_config(splits.train.x, cfg.data)
    data = TensorData(pre(splits.train.x), splits.train.y, pre(splits.val.x), splits.val.y)
    model_fit = make_model(cfg, splits.train.input_shape, len(splits.classes))
    model_hand = copy.deepcopy(model_fit)
    opt = torch.optim.SGD(model_hand.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    times: dict[str, list[float]] = {"fit": [], "hand": []}
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(args.epochs + 1):
            run = RunDir.create(f"{tmp}/run{epoch}")
            t0 = time.perf_counter()
            fit(model_fit, data, cfg, run)  # one epoch, with a real run directory
            t1 = time.perf_counter()
            hand_epoch(model_hand, opt, data, cfg.train.batch_size, cfg.optim.lr, cfg.optim.weight_decay, epoch)
            t2 = time.perf_counter()
            if epoch > 0:
                times["fit"].append(t1 - t0)
                times["hand"].append(t2 - t1)
    fit_s, hand_s = statistics.median(times["fit"]), statistics.median(times["hand"])
    print(f"data {args.data}: {len(data.x_train)} train images, batch {cfg.train.batch_size}, "
          f"{torch.get_num_threads()} threads, {args.epochs} timed epochs each")
    print(f"fit  epoch: median {fit_s:.3f} s  (all: {', '.join(f'{t:.3f}' for t in times['fit'])})")
    print(f"hand epoch: median {hand_s:.3f} s  (all: {', '.join(f'{t:.3f}' for t in times['hand'])})")
    print(f"epoch-time ratio fit/hand: {fit_s / hand_s:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
