"""Epoch time with the layer statistics on (default monitor.stats_every) vs off, in one run, interleaved.

One fit() on a real run directory with everything `babysit train` attaches (divergence guard, layer
probes, live diagnosis); a toggle callback turns the probes on for odd epochs and off for even ones,
so drift in machine speed hits both alike. Each epoch is timed from its start to the next one's,
which includes the epoch-end work (evaluation, checkpoint, the live line, the filters image, the
stats flush). The first two epochs are warm-up. Prints the medians and their ratio (target <= 1.05),
and a paired estimate that drift cannot bias: each probe's extra time against the typical step of
the same epoch, scaled by one probe per N steps.

    python bench/monitor_overhead.py [--data fashion-mnist] [--limit 6000] [--epochs 12] [--every N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from babysit import config as C
from babysit.data.preprocess import Preprocessor
from babysit.data.split import prepare_data
from babysit.monitor.probes import LayerProbes
from babysit.monitor.watch import DivergenceGuard, LiveDiagnosis
from babysit.rundir import RunDir
from babysit.start import make_model
from babysit.train.loop import LoopState, TensorData, fit

WARM_UP = 2  # epochs not timed


class Toggle:
    """Probes on in odd epochs, off in even ones; records each epoch's wall time under its setting, and
    every step's duration (for the paired per-probe estimate, which machine-speed drift cannot bias)."""

    def __init__(self, probes: LayerProbes) -> None:
        self.probes = probes
        self.times: dict[bool, list[float]] = {True: [], False: []}
        self.steps: list[tuple[int, int, float]] = []  # (epoch, step, seconds since the previous batch end)
        self._start: float | None = None
        self._last = 0.0
        self._on = False

    def _close(self, epoch: int) -> None:
        if self._start is not None and epoch >= WARM_UP:
            self.times[self._on].append(time.perf_counter() - self._start)

    def on_epoch_start(self, state: LoopState) -> None:
        self._close(state.epoch - 1)
        self._on = state.epoch % 2 == 1
        self.probes.set_enabled(self._on)
        self._start = self._last = time.perf_counter()

    def on_batch_end(self, state: LoopState) -> None:
        now = time.perf_counter()
        if state.batch > 1 and state.epoch >= WARM_UP:  # the first batch of an epoch carries the epoch start
            self.steps.append((state.epoch, state.step, now - self._last))
        self._last = now

    def on_fit_end(self, state: LoopState) -> None:
        self._close(state.epoch - 1)

    def probe_costs(self, every: int) -> tuple[list[float], float]:
        """Extra seconds of each probe (the probed step and the next, minus two typical steps of the same
        epoch) and the median plain step."""
        by_epoch: dict[int, dict[int, float]] = {}
        for epoch, step, dt in self.steps:
            by_epoch.setdefault(epoch, {})[step] = dt
        extras, plain = [], []
        for epoch, steps in by_epoch.items():
            # arming (weight snapshot) happens after step s-1, so it lands in interval s with the hooked
            # forward/backward; collecting happens after step s and lands in interval s+1
            probed = {s for s in steps if s % every == 0} if epoch % 2 == 1 else set()
            normal = [dt for s, dt in steps.items() if s not in probed and s - 1 not in probed]
            plain += normal
            typical = statistics.median(normal)
            extras += [steps[s] + steps[s + 1] - 2 * typical for s in probed if s + 1 in steps]
        return extras, statistics.median(plain)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--limit", type=int, default=6000, help="training images (0 = all)")
    ap.add_argument("--epochs", type=int, default=12, help="epochs in all, half of them with probes")
    ap.add_argument("--every", type=int, default=C.MonitorConfig().stats_every, help="steps between probes")
    ap.add_argument("--spec", default=C.ModelConfig().spec)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = C.apply_overrides(C.RunConfig(), {"data.name": args.data, "data.limit": args.limit, "model.spec": args.spec,
                                            "train.progress": False, "schedule.name": "constant",
                                            "schedule.warmup_epochs": 0, "train.epochs": args.epochs})
    _, splits = prepare_data(cfg)
    pre = Preprocessor.from_config(splits.train.x, cfg.data)
    data = TensorData(pre(splits.train.x), splits.train.y, pre(splits.val.x), splits.val.y)
    model = make_model(cfg, splits.train.input_shape, len(splits.classes))
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(f"{tmp}/run")
        probes = LayerProbes(args.every, run)
        toggle = Toggle(probes)
        fit(model, data, cfg, run, callbacks=[toggle, DivergenceGuard(run), probes, LiveDiagnosis(probes)])
    on, off = statistics.median(toggle.times[True]), statistics.median(toggle.times[False])
    steps = -(-len(data.x_train) // cfg.train.batch_size)
    print(f"data {args.data}: {len(data.x_train)} train images, {steps} steps/epoch, batch {cfg.train.batch_size}, "
          f"spec {args.spec!r}, {torch.get_num_threads()} threads, probes every {args.every} steps")
    print(f"stats on  epoch: median {on:.3f} s  (all: {', '.join(f'{t:.3f}' for t in toggle.times[True])})")
    print(f"stats off epoch: median {off:.3f} s  (all: {', '.join(f'{t:.3f}' for t in toggle.times[False])})")
    print(f"epoch-time ratio on/off: {on / off:.3f}  (target <= 1.05)")
    extras, step = toggle.probe_costs(args.every)
    if extras:
        extra = statistics.median(extras)
        print(f"paired estimate: a probe costs {extra:.3f} s extra (median of {len(extras)}) = {extra / step:.2f} "
              f"plain steps of {step:.3f} s; at one probe per {args.every} steps the overhead is "
              f"{1 + extra / step / args.every:.3f}x")


if __name__ == "__main__":
    main()
