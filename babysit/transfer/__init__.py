"""Transfer learning between runs: ``babysit finetune FROM_RUN`` (``babysit.finetune(...)``).

A fine-tune run is an ordinary run that starts from another run's network (babysit.transfer.run); ``auto`` picks
the strategy from the notes' 2x2 table, measured (babysit.transfer.auto). The mechanics inside a run (loading the
source's weights, freezing, gradual unfreezing, discriminative learning rates, the linear probe's features) are
in babysit.train.transfer.
"""

from typing import TYPE_CHECKING

from babysit.lazy import attach

if TYPE_CHECKING:
    from babysit.transfer.auto import TABLE, Choice, choose_strategy
    from babysit.transfer.run import FinetuneResult, finetune, finetune_config

__all__ = ["TABLE", "Choice", "FinetuneResult", "choose_strategy", "finetune", "finetune_config"]

__getattr__, __dir__ = attach(__name__)
