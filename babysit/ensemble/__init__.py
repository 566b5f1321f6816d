"""Model ensembles (the notes' "a few percent for free"), and distilling one back into a single network.

    members.py   where members come from: runs, seeds, a search's top trials, snapshots, last epochs
    predict.py   Ensemble: members loaded over one shared split; their softmax probabilities averaged
    make.py      `babysit ensemble` -> ENS/ensemble.json; `babysit eval ENS`
    distill.py   `babysit distill ENS`: a student trained on the ensemble's soft targets plus the labels
"""

from typing import TYPE_CHECKING

from babysit.lazy import attach

if TYPE_CHECKING:  # the public names; attach() imports each from here on first use
    from babysit.ensemble.distill import distill, student_config
    from babysit.ensemble.make import EnsembleResult, ensemble, evaluate_ensemble, load_ensemble
    from babysit.ensemble.members import Member
    from babysit.ensemble.predict import Ensemble

__all__ = ["Ensemble", "EnsembleResult", "Member", "distill", "ensemble", "evaluate_ensemble", "load_ensemble",
           "student_config"]

__getattr__, __dir__ = attach(__name__)
