"""Sanity checks before learning, as the notes list them ("Before learning: sanity checks").

1. ``initial_loss_check``: regularisation off, the fresh model's loss is about what diffuse scores
   give: ln(C) for softmax ("2.302 for 10 classes"), C-1 for the multiclass SVM at tiny weights.
2. ``regularization_check``: cranking the regularisation up (lambda = 1e3) raises the loss.
3. ``overfit_tiny``: 20 examples, no regularisation (no dropout either), plain update rule,
   constant learning rate, full batch -> 100% training accuracy within a bounded number of steps;
   when not, the suspect knob is named (learning rate too low or too high, bad init, too little
   capacity).
4. ``zero_input_check``: the same model trained on zeroed inputs (an input-independent baseline)
   ends with a higher loss than one trained on the real inputs.

Each check returns a :class:`CheckResult` with its numbers; ``run_checks`` runs all four on copies
of the model inside a forked random state, so training afterwards is identical with or without them.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from babysit.config import LossConfig, RunConfig
from babysit.log import get_logger
from babysit.train.loop import NonFinite, TensorData, Update, train_step
from babysit.train.losses import make_loss
from babysit.train.optim import make_optimizer
from babysit.train.regularize import l2_penalty

_log = get_logger(__name__)

INITIAL_LOSS_TOLERANCE = 0.5
"""The initial loss passes within this fraction of the expected value. Calibrated He/Xavier inits give
scores of about unit variance, which adds roughly var/2 to ln(C); much more means the last layer starts
too large (the notes start it at 1e-4 * randn), much less that the loss or the labels are wrong."""
REG_STRENGTH = 1e3
"""lambda of the L2 term for the regularisation check (the notes' "crank up regularization")."""
TINY_EXAMPLES = 20
"""Training examples in the overfit-a-tiny-sample check (the notes take X_train[:20])."""
OVERFIT_MAX_STEPS = 300
"""Full-batch steps the tiny sample gets to reach 100% training accuracy."""
OVERFIT_EVAL_EVERY = 10
"""Steps between accuracy checks of the tiny sample (it stops as soon as it reaches 100%)."""
OVERFIT_GIVE_UP_AFTER = 100
"""... but gives up after this many steps when the loss has not moved at all (above OVERFIT_NO_PROGRESS)."""
OVERFIT_NO_PROGRESS = 0.99
OVERFIT_STALLED = 0.9
"""A tiny-sample loss still above this fraction of its start "barely moved": learning rate too low."""
ZERO_INPUT_STEPS = 30
"""Mini-batch steps each model of the input-independent baseline gets."""
ZERO_INPUT_EXAMPLES = 512
"""Training examples the input-independent baseline cycles over."""
ZERO_INPUT_BATCH = 64
"""At most this many examples per step: the check's cost must not grow with the run's batch (MNIST's auto batch
of 512 made it 8x dearer)."""
ZERO_INPUT_MARGIN = 0.9
"""The real-input loss must end below this fraction of the zero-input loss."""


@dataclass
class CheckResult:
    """One sanity check: PASS/FAIL, its numbers in a sentence, and what to suspect when it failed."""

    name: str  # initial_loss_check | regularization_check | overfit_tiny | zero_input_check
    title: str
    passed: bool
    summary: str
    advice: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        text = f"{'PASS' if self.passed else 'FAIL'}  {self.title}: {self.summary}"
        return text + (f"\n      -> {self.advice}" if not self.passed and self.advice else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expected_initial_loss(loss: LossConfig | str, num_classes: int) -> float:
    """The loss of all-zero scores: ln C (softmax), (C-1)*delta (SVM), (C-1)*delta^2 (squared hinge),
    C (attribute hinge), C*ln 2 (binary cross-entropy)."""
    cfg = LossConfig(name=loss) if isinstance(loss, str) else loss
    c = num_classes
    return {"softmax": math.log(c), "svm": (c - 1) * cfg.delta, "squared-hinge": (c - 1) * cfg.delta ** 2,
            "attribute-hinge": float(c), "bce": c * math.log(2)}.get(cfg.name, math.log(c))


def _no_dropout(model: nn.Module) -> nn.Module:
    """Train mode (batch norm uses batch statistics) with every dropout module off."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    return model


def initial_loss_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: LossConfig,
                       num_classes: int) -> CheckResult:
    """Loss of the fresh model on (x, y) without regularisation vs the diffuse-scores value."""
    expected = expected_initial_loss(loss, num_classes)
    with torch.no_grad():
        value = float(make_loss(loss, train=False)(_no_dropout(copy.deepcopy(model))(x), y))
    ok = math.isfinite(value) and abs(value - expected) <= INITIAL_LOSS_TOLERANCE * expected
    summary = (f"loss {value:.4f}, expected {expected:.4f} ({_formula(loss.name, num_classes)}) "
               f"+-{INITIAL_LOSS_TOLERANCE:.0%}")
    if ok:
        advice = ""
    elif value > expected:
        advice = ("the scores start far from diffuse: the last layer's weights start too large (bad init); "
                  "try --model.init=normal-0.01 or a smaller scale for the final fc")
    else:
        advice = "the loss is lower than chance allows: check the loss function and that labels match the images"
    return CheckResult("initial_loss_check", "initial loss", ok, summary, advice,
                       {"loss": value, "expected": expected, "classes": num_classes})


def _formula(name: str, c: int) -> str:
    return {"softmax": f"ln {c}", "svm": f"C-1 = {c - 1}", "bce": f"{c} ln 2"}.get(name, "zero scores")


def regularization_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: LossConfig,
                         strength: float = REG_STRENGTH) -> CheckResult:
    """The loss with lambda/2 * ||W||^2 at ``strength`` must exceed the loss without it."""
    m = _no_dropout(copy.deepcopy(model))
    weights = [p for p in m.parameters() if p.ndim > 1]
    with torch.no_grad():
        plain = float(make_loss(loss, train=False)(m(x), y))
        reg = plain + float(l2_penalty(weights, strength))
    ok = math.isfinite(reg) and reg > plain
    return CheckResult("regularization_check", "regularisation raises the loss", ok,
                       f"loss {plain:.4f} -> {reg:.4g} with lambda={strength:g}",
                       "" if ok else "the L2 term does not reach the loss: check the regulariser and that the "
                       "model has weights", {"loss": plain, "loss_reg": reg, "lambda": strength})


def _update_rule(model: nn.Module, cfg: RunConfig, vanilla: bool) -> torch.optim.Optimizer:
    """The run's update rule without weight decay; ``vanilla`` turns SGD's momentum off."""
    optim = replace(cfg.optim, weight_decay=0.0, decoupled=False, clip_norm=0.0)
    if vanilla and optim.name == "sgd":
        optim = replace(optim, momentum=0.0, nesterov=False)
    return make_optimizer(model, replace(cfg, optim=optim,
                                         regularize=replace(cfg.regularize, layer_weight_decay="")))


def overfit_tiny(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: RunConfig,
                 max_steps: int = OVERFIT_MAX_STEPS) -> CheckResult:
    """Full-batch training on (x, y) (the notes use 20 examples) until 100% training accuracy."""
    m = _no_dropout(copy.deepcopy(model))
    opt = _update_rule(m, cfg, vanilla=True)
    criterion = make_loss(replace(cfg.loss, label_smoothing=0.0))
    update = Update(m, opt, criterion)
    losses: list[float] = []
    acc, steps, blew_up = 0.0, 0, False
    while steps < max_steps:
        try:
            losses.append(train_step(update, x, y, check_finite=True).item())
        except NonFinite as e:  # caught before the update
            losses.append(e.loss)
            blew_up = True
            break
        steps += 1
        if steps % OVERFIT_EVAL_EVERY == 0 or steps == max_steps:
            with torch.no_grad():
                acc = float((m.eval()(x).argmax(1) == y).float().mean())
            _no_dropout(m)
            if acc == 1.0 or (steps >= OVERFIT_GIVE_UP_AFTER and losses[-1] > OVERFIT_NO_PROGRESS * losses[0]):
                break
    first, last = losses[0], losses[-1]
    numbers = {"examples": len(x), "steps": steps, "train_acc": acc, "loss_start": first, "loss_end": last,
               "lr": cfg.optim.lr}
    summary = (f"{len(x)} examples, {steps} steps at lr {cfg.optim.lr:g}: train accuracy {acc:.0%}, "
               f"loss {first:.4f} -> {last:.4g}")
    if acc == 1.0:
        return CheckResult("overfit_tiny", "overfit a tiny sample", True, summary, "", numbers)
    if blew_up or not math.isfinite(last) or last > first:
        advice = f"the loss blew up: learning rate too high (try --optim.lr={cfg.optim.lr / 10:g}) or a bad init"
        numbers["blew_up"] = True
    elif last > OVERFIT_STALLED * first:
        advice = (f"the loss barely moved: learning rate too low (try --optim.lr={cfg.optim.lr * 10:g}) "
                  "or a bad init (see the initial loss)")
    else:
        advice = ("the loss fell but did not reach 100%: too little capacity (more filters or layers), "
                  "or a higher learning rate")
    return CheckResult("overfit_tiny", "overfit a tiny sample", False, summary, advice, numbers)


def zero_input_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: RunConfig,
                     steps: int = ZERO_INPUT_STEPS) -> CheckResult:
    """Train one copy on x and one on zeros for ``steps`` mini-batches; real inputs must end lower.

    Plain SGD without momentum, like the overfit check: the run itself warms its learning rate up,
    and momentum 0.9 at the full rate from step 0 can blow up a fresh net within these few steps."""
    criterion = make_loss(replace(cfg.loss, label_smoothing=0.0))
    batch = min(cfg.train.batch_size, len(x), ZERO_INPUT_BATCH)
    finals = []
    for inputs in (x, torch.zeros_like(x)):
        m = _no_dropout(copy.deepcopy(model))
        update = Update(m, _update_rule(m, cfg, vanilla=True), criterion)
        for s in range(steps):
            i = (s * batch) % len(x)
            idx = torch.arange(i, i + batch, device=x.device) % len(x)
            train_step(update, inputs[idx], y[idx])
        with torch.no_grad():
            finals.append(float(criterion(m.eval()(inputs), y)))
    real, zero = finals
    ok = math.isfinite(real) and math.isfinite(zero) and real < ZERO_INPUT_MARGIN * zero
    summary = f"after {steps} steps the loss is {real:.4f} on real inputs vs {zero:.4f} on zeroed inputs"
    advice = "" if ok else ("the model learnt nothing from its inputs: learning rate too low (or too high if a "
                            "loss is nan), or the inputs and labels do not match (check the data and preprocessing)")
    return CheckResult("zero_input_check", "input-independent baseline", ok, summary, advice,
                       {"steps": steps, "loss_real": real, "loss_zero": zero})


ADVISORY = ("zero_input_check",)
"""Checks whose failure warns but does not stop a run: 30 plain-SGD steps can be too few for a deep net to pull
its real-input loss 10 % below the zero-input one, though it trains well (a 21-layer BN net on digits: 2.251 vs
2.302, then 99.4 % val)."""


def blocking(results: list[CheckResult]) -> list[CheckResult]:
    """The failed checks that stop a run (all but the ADVISORY ones)."""
    return [r for r in results if not r.passed and r.name not in ADVISORY]


def run_checks(model: nn.Module, data: TensorData, cfg: RunConfig, num_classes: int,
               progress: bool = False) -> list[CheckResult]:
    """All four checks on copies of ``model`` (left untouched) with the training split of ``data``; with
    ``progress`` a line per check as it runs (they take tens of seconds on a CPU under load)."""
    devices = [data.x_train.device.index or 0] if data.x_train.is_cuda else []
    x, y = data.x_train, data.y_train
    batch = slice(0, min(len(x), 256))
    checks: list[tuple[str, Callable[[], CheckResult]]] = [
        ("initial loss", lambda: initial_loss_check(model, x[batch], y[batch], cfg.loss, num_classes)),
        ("regularisation raises the loss", lambda: regularization_check(model, x[batch], y[batch], cfg.loss)),
        (f"overfit {TINY_EXAMPLES} images", lambda: overfit_tiny(model, x[:TINY_EXAMPLES], y[:TINY_EXAMPLES], cfg)),
        ("input-independent baseline",
         lambda: zero_input_check(model, x[:ZERO_INPUT_EXAMPLES], y[:ZERO_INPUT_EXAMPLES], cfg))]
    results = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.train.seed)
        for i, (title, check) in enumerate(checks, start=1):
            if progress:
                _log.info(f"sanity check {i}/{len(checks)}: {title} ...", extra={"end": ""})
            started = time.perf_counter()
            results.append(check())
            if progress:
                _log.info(f" {'PASS' if results[-1].passed else 'FAIL'} ({time.perf_counter() - started:.1f} s)")
    return results


def format_checks(results: list[CheckResult]) -> str:
    """The sanity-check block printed before training."""
    passed = sum(r.passed for r in results)
    return "\n".join([f"sanity checks ({passed}/{len(results)} passed):"] + [f"  {r.line()}" for r in results])
