"""Classical baselines in the same harness: what a ConvNet is worth next to the notes' first classifiers.

``babysit baseline knn|linear|two-layer|all`` and :func:`run_baseline` (``babysit.baseline(name, cfg)``):
k-nearest neighbours (L1/L2, k by cross-validation), linear SVM / softmax, the two-layer net ``fc-H relu fc``,
on pixels or hand-made features (colour histogram, HOG, bag of visual words, pca). See babysit.baseline.run.
"""

from typing import TYPE_CHECKING

from babysit.lazy import attach

if TYPE_CHECKING:
    from babysit.baseline.features import FEATURES, compute_features
    from babysit.baseline.knn import DISTANCES, CVTable, cross_validate, nearest, predict, vote
    from babysit.baseline.linear import LINEAR_LOSSES, train_linear
    from babysit.baseline.run import BASELINES, BaselineResult, format_table, run_all, run_baseline

__all__ = ["BASELINES", "BaselineResult", "CVTable", "DISTANCES", "FEATURES", "LINEAR_LOSSES", "compute_features",
           "cross_validate", "format_table", "nearest", "predict", "run_all", "run_baseline", "train_linear", "vote"]

__getattr__, __dir__ = attach(__name__)
