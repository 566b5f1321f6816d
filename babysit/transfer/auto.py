"""``transfer.strategy=auto``: the notes' 2x2 table of transfer learning, its two questions measured.

                    similar to the source data         different from it
    small new data  linear-probe: a linear classifier  top: retrain the top layers, keep the generic early
                    on the frozen features             layers frozen (the notes: classify from earlier layers)
    large new data  full: fine-tune every layer        full: fine-tune every layer (the source's weights are
                    (little risk of overfitting)       still a better start than random ones)

*Small* is fewer labelled training images than ``transfer.small``. *Similar* is measured: a linear classifier
(softmax, scikit-learn, on standardised features) is fitted on the training split to the source network's
features and, as the quick from-scratch baseline, to the features of the same architecture with random weights;
their validation accuracies are compared. The source's features are taken as similar when they remove at least
``SIMILAR_GAIN`` of the random features' validation error (features that transfer make the new classes nearly
linearly separable; features of another domain do little better than random projections).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from babysit import config as C
from babysit.start import fresh_start, plan_run
from babysit.train.transfer import probe_features

SIMILAR_GAIN = 0.5  # similar: the source features' val error is at most half the random features'


@dataclass(frozen=True)
class Choice:
    """The cell of the table and why: the numbers measured and the strategy they give."""

    strategy: str
    small: bool
    similar: bool
    n_train: int
    probe_val_acc: float  # linear classifier on the source network's features
    random_val_acc: float  # the same on the features of the architecture with random weights

    @property
    def cell(self) -> str:
        return f"{'small' if self.small else 'large'} and {'similar' if self.similar else 'different'}"

    def describe(self) -> str:
        err_p, err_r = 1 - self.probe_val_acc, 1 - self.random_val_acc
        return (f"{self.cell} -> {self.strategy} ({self.n_train} labelled training images; a linear classifier on the "
                f"source's features scores val {self.probe_val_acc:.3f} against {self.random_val_acc:.3f} on random "
                f"features of the same net, error {err_p:.3f} vs {err_r:.3f}: "
                f"{'at most' if self.similar else 'more than'} {SIMILAR_GAIN:g} of it)")

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "cell": self.cell, "small": self.small, "similar": self.similar,
                "n_train": self.n_train, "probe_val_acc": self.probe_val_acc, "random_val_acc": self.random_val_acc,
                "similar_gain": SIMILAR_GAIN, "reason": self.describe()}


TABLE = {(True, True): "linear-probe", (True, False): "top", (False, True): "full", (False, False): "full"}
"""(small, similar) -> strategy: the notes' 2x2 table."""


def linear_val_accuracy(f_train: torch.Tensor, y_train: torch.Tensor, f_val: torch.Tensor, y_val: torch.Tensor,
                        seed: int = 0) -> float:
    """Validation accuracy of a softmax classifier (scikit-learn, L2 C=1) on features standardised with the
    training split's statistics."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(f_train.cpu().numpy())
    clf = LogisticRegression(max_iter=500, random_state=seed)
    clf.fit(scaler.transform(f_train.cpu().numpy()), y_train.cpu().numpy())
    return float(np.mean(clf.predict(scaler.transform(f_val.cpu().numpy())) == y_val.cpu().numpy()))


def choose_strategy(cfg: C.RunConfig) -> Choice:
    """Measure the new data against the source network (``cfg.transfer.source``) and pick the table's cell."""
    probe_cfg = replace(cfg, transfer=replace(cfg.transfer, strategy="linear-probe"), augment=C.AugmentConfig())
    plan = plan_run(probe_cfg)
    _, feats, _ = fresh_start(plan)  # the source's weights; the head's inputs computed once
    probe = linear_val_accuracy(feats.x_train, feats.y_train, feats.x_val, feats.y_val, cfg.train.seed)
    scratch_cfg = replace(probe_cfg, transfer=C.TransferConfig())
    model, data, _ = fresh_start(replace(plan, cfg=scratch_cfg))  # the same net, randomly initialised
    bs = cfg.train.eval_batch_size
    rand = linear_val_accuracy(probe_features(model, data.x_train, bs), data.y_train,
                               probe_features(model, data.x_val, bs), data.y_val, cfg.train.seed)
    n = len(plan.splits.train)
    small = n < cfg.transfer.small
    similar = (1 - probe) <= SIMILAR_GAIN * (1 - rand)
    return Choice(TABLE[small, similar], small, similar, n, probe, rand)
