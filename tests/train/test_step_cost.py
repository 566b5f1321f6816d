"""What fit() adds to a training step, counted rather than timed.

On a GPU a small net is launch-bound: every kernel fit() adds to a step costs about as much as one of the
network's own. So the ops fit() dispatches between two loss read-backs are counted against the lean loop a
practitioner writes (forward, loss, zero_grad, backward, step, loss summed on the device), on the default net
with the default monitoring, and a read-back block must give each step's cost as train_step's own StepCost."""

import collections
import copy
import tempfile

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from babysit import config as C
from babysit.monitor.session import RunMonitor
from babysit.rundir import RunDir
from babysit.start import fresh_start, plan_run
from babysit.train.loop import LoopState, Update, fit, train_step
from babysit.train.optim import make_optimizer
from babysit.train.record import MemoryRecorder, StepLosses
from tests.train.test_loop import digits_data, small_model

NOT_KERNELS = (torch.ops.aten.detach, torch.ops.aten._unsafe_view)  # aliases that launch nothing


class CountOps(TorchDispatchMode):
    """Counts the aten ops that compute something (views and aliases left out) and the host syncs (.item())."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket not in NOT_KERNELS:
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    def kernels(self) -> int:
        return sum(n for op, n in self.ops.items() if op != "aten._local_scalar_dense")


class Window:
    """Callback: counts what the loop dispatches from the end of step ``first`` to the end of step ``last``."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last, self.mode = first, last, CountOps()

    def on_batch_end(self, state) -> None:
        if state.step == self.first:
            self.mode.__enter__()
        elif state.step == self.last:
            self.mode.__exit__(None, None, None)


def test_fit_adds_at_most_one_op_per_step_to_the_lean_loop_between_read_backs():
    cfg = C.apply_overrides(C.RunConfig(), {"data.name": "digits", "train.batch_size": 32, "train.epochs": 1,
                                            "train.progress": False, "monitor.checks": False,
                                            "monitor.report": False})
    plan = plan_run(cfg)
    model, data, _ = fresh_start(plan)
    lean_model = copy.deepcopy(model)
    first, last = 17, 31  # read-backs come at steps 1, 2, 4, 8, 16, 32, then every 50; probes at step 50
    window = Window(first, last)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(f"{tmp}/run")
        fit(model, data, plan.cfg, run, callbacks=RunMonitor(plan.cfg, run).callbacks() + [window])
    steps = last - first
    opt = make_optimizer(lean_model, plan.cfg)  # the same update rule, its weight decay in the step
    device = data.x_train.device
    bs, total = plan.cfg.train.batch_size, torch.zeros((), device=device)
    perm = torch.randperm(len(data.x_train)).to(device)

    def lean_step(i: int) -> None:
        nonlocal total
        idx = perm[i * bs : (i + 1) * bs]
        loss = F.cross_entropy(lean_model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()

    lean_step(0)  # the update rule makes its momentum buffers at the first step, as fit's did before the window
    with CountOps() as lean:
        for i in range(1, steps + 1):
            lean_step(i)
    fit_ops = window.mode
    assert fit_ops.ops["aten._local_scalar_dense"] == 0  # no host sync between read-backs
    extra = (fit_ops.kernels() - lean.kernels()) / steps
    more = {k: v - lean.ops[k] for k, v in fit_ops.ops.items() if v != lean.ops[k]}
    assert extra <= 1, f"fit adds {extra:.2f} ops per step: {more}"  # the weights' norms for the L2 term


def test_a_read_back_block_records_each_steps_cost_and_regularisation():
    """L1 in the loss and L2 applied by the rule: the block's records carry StepCost.item() and regularization()."""
    data = digits_data(n_train=96)
    c = C.apply_overrides(C.RunConfig(), {"optim.weight_decay": 0.05, "regularize.l1": 1e-4, "train.epochs": 1,
                                          "train.batch_size": 32})
    model = small_model()
    before = copy.deepcopy(model)
    u = Update.from_config(model, c)
    rec = MemoryRecorder()
    losses = StepLosses(model, u.optimizer, rec, [])
    state = LoopState(model, u.optimizer, c, steps_per_epoch=3)
    costs = []
    for step in range(1, 4):
        rows = slice((step - 1) * 32, step * 32)
        cost = train_step(u, data.x_train[rows], data.y_train[rows], 0.05)
        assert cost.l2_norms is not None and cost.penalty is not None  # L2 kept as norms until the read-back
        costs.append(cost)
        losses.add({"kind": "step", "step": step, "lr": 0.05}, cost)
    losses.sync(state)
    assert [r["step"] for r in rec.records] == [1, 2, 3]
    for r, cost in zip(rec.records, costs):
        assert abs(r["loss"] - cost.item()) <= 1e-6 * r["loss"]
        assert abs(r["reg"] - cost.regularization().item()) <= 1e-6 * r["reg"]
    # the first step by hand: J = data loss + lambda/2 sum ||W||^2 + lambda1 sum |W| over the weights (not biases)
    weights = [p.detach() for name, p in before.named_parameters() if name.endswith("weight")]
    reg = 0.5 * 0.05 * sum(float((w**2).sum()) for w in weights) + 1e-4 * sum(float(w.abs().sum()) for w in weights)
    data_loss = F.cross_entropy(before(data.x_train[:32]), data.y_train[:32]).item()
    assert abs(rec.records[0]["reg"] - reg) <= 1e-5 * reg
    assert abs(rec.records[0]["loss"] - (data_loss + reg)) <= 1e-5 * (data_loss + reg)
    assert state.loss_sum == sum(r["loss"] for r in rec.records)
