"""An ensemble's prediction: the members' softmax probabilities averaged, p = sum_i w_i softmax(f_i(x)),
with w_i = 1/M, or w_i = val_acc_i / sum_j val_acc_j (``weighted``).

Each member scores the raw images with its own preprocessing (fitted on the shared training split), so
members may differ in architecture, preprocessing and everything else a run configures; only the
validation and test images must be the same (babysit.ensemble.members).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from babysit import config as C
from babysit.data.preprocess import Preprocessor
from babysit.data.split import prepare_data, split_seed
from babysit.ensemble.members import Member
from babysit.errors import BabysitError
from babysit.rundir import RunDir
from babysit.start import load_model, load_preprocessor, resolve_device
from babysit.train.tta import tta_probabilities, tta_views

SPLIT_KEYS = ("data.name", "data.channels", "data.size", "data.val_fraction", "data.test_fraction", "data.split_seed")


def split_identity(cfg: C.RunConfig) -> tuple[object, ...]:
    """What decides a run's validation and test images: the data set, its conversion, the split fractions and seed
    (in the order of SPLIT_KEYS)."""
    d = cfg.data
    return d.name, d.channels, d.size, d.val_fraction, d.test_fraction, split_seed(cfg)


def split_difference(a: C.RunConfig, b: C.RunConfig) -> str:
    """"data.split_seed 5 vs 0": the options that give ``a`` and ``b`` different validation and test images."""
    return ", ".join(f"{k} {x!r} vs {y!r}" for k, x, y in zip(SPLIT_KEYS, split_identity(a), split_identity(b))
                     if x != y)


@dataclass
class Loaded:
    """A member ready to predict."""

    member: Member
    cfg: C.RunConfig
    model: nn.Module
    pre: Preprocessor


@torch.no_grad()
def probabilities(model: nn.Module, pre: Preprocessor, x: torch.Tensor, temperature: float = 1.0,
                  batch_size: int = 1000) -> torch.Tensor:
    """softmax(f(pre(x)) / T) (N, K) of raw images ``x``, in eval mode, on the model's device."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = [(model(pre(x[i : i + batch_size].to(dev))) / temperature).softmax(1) for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out)


class Ensemble:
    """Members loaded over one shared split of their data (loaded once), with their shares of the average."""

    def __init__(self, members: Sequence[Member], shares: Sequence[float] | None = None, device: str = "cpu",
                 minimum: int = 2) -> None:
        """``minimum``: fewer members is an error (babysit recipe scores a single model through this class too)."""
        if len(members) < minimum:
            raise BabysitError(f"an ensemble needs at least 2 members, got {len(members)}.")
        cfgs = [C.load_toml(RunDir.open(m.run).config) for m in members]
        for m, cfg in zip(members, cfgs):
            if split_identity(cfg) != split_identity(cfgs[0]):
                raise BabysitError(
                    f"member {m.label} was scored on other validation/test images than {members[0].label} "
                    f"({split_difference(cfg, cfgs[0])}); ensemble runs of one split (train them with the same "
                    "--data.split_seed; data.split_seed -1 means train.seed).")
        _, self.splits = prepare_data(cfgs[0])
        dev = resolve_device(device, "--device")
        shape, k = self.splits.train.input_shape, len(self.splits.classes)
        self.members: list[Loaded] = []
        for m, cfg in zip(members, cfgs):
            run = RunDir.open(m.run)
            pre = load_preprocessor(run)
            self.members.append(Loaded(m, cfg, load_model(run, cfg, pre, shape, k, m.weights).to(dev), pre))
        self.shares = list(shares) if shares is not None else [1 / len(members)] * len(members)
        self.batch_size = cfgs[0].train.eval_batch_size

    @property
    def classes(self) -> list[str]:
        return self.splits.classes

    def member_probabilities(self, x: torch.Tensor, temperature: float = 1.0, tta: str = "") -> list[torch.Tensor]:
        """Each member's probabilities of raw images ``x`` at temperature T; with ``tta`` averaged over those
        test-time views (babysit.train.tta)."""
        if not tta:
            return [probabilities(m.model, m.pre, x, temperature, self.batch_size) for m in self.members]
        if temperature != 1.0:
            raise ValueError("test-time views are averaged at temperature 1")
        return [tta_probabilities(m.model, m.pre, x, tta_views(tta, m.cfg, len(self.classes)), self.batch_size)
                for m in self.members]

    def combine(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """p = sum_i w_i p_i."""
        return sum((w * p for w, p in zip(self.shares, probs)), torch.zeros_like(probs[0]))

    def predict(self, x: torch.Tensor, temperature: float = 1.0, tta: str = "") -> torch.Tensor:
        """The ensemble's probabilities (N, K) of raw images ``x``."""
        return self.combine(self.member_probabilities(x, temperature, tta))

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw images, labels on the members' device) of train, val or test."""
        part = self.splits.get(name)
        return part.x, part.y.to(next(self.members[0].model.parameters()).device)


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    return (probs.argmax(1) == y).float().mean().item()


def nll(probs: torch.Tensor, y: torch.Tensor) -> float:
    """-1/N sum_i log p_{y_i}: the cross-entropy of averaged probabilities."""
    return -probs.gather(1, y[:, None]).clamp_min(1e-12).log().mean().item()
