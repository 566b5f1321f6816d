"""Issue 18's bug list: the two items without a regression test of their own elsewhere.

(The others: 1 tests/models/test_summary.py "would refuse"; 2 tests/train/test_optim.py weight_decay=0;
3 tests/test_start.py --device=cpu; 4 tests/monitor/test_cli_monitor.py failed checks refuse, --monitor.force;
5 tests/test_cli.py TTA flip warning; 6 tests/review/test_diagnose.py flat loss quotes the real lr;
7 and 8 tests/test_start.py config_warnings; 9 tests/train/test_loop.py callbacks count from one;
10 tests/models/test_summary.py bn / maxout rows.)
"""

from __future__ import annotations

from babysit.clihelp import option_help
from babysit.config import RunConfig, apply_overrides
from babysit.train.optim import describe_groups, make_optimizer
from tests.train.test_optim import net


def test_2_a_per_layer_strength_of_zero_still_counts_weights_as_weights() -> None:
    cfg = apply_overrides(RunConfig(), {"regularize.layer_weight_decay": "0=0"})
    line = describe_groups(make_optimizer(net(), cfg), cfg)
    assert line == ("optimizer sgd: 1 tensors (1,440 values) weight decay 0.0005; 5 tensors (58 values) no decay "
                    "(1 weight tensors, biases, norm parameters) [L2, its gradient lambda*W added in the step]")


def test_11_data_limit_says_it_caps_only_the_training_split() -> None:
    meaning = option_help()["data.limit"]
    assert meaning == "use at most this many training images (0 = all; val and test are not capped)"
