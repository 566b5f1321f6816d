"""The reference networks the benches train by hand (imported by time_to_accuracy.py and frameworks.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ExamplesNet(nn.Module):
    """pytorch/examples mnist/main.py's Net, returning class scores. The recipe's nll_loss on log_softmax
    is the cross-entropy of these scores, so the benches train it with F.cross_entropy."""

    def __init__(self, in_ch: int, h: int, w: int, classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(64 * ((h - 4) // 2) * ((w - 4) // 2), 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc2(self.dropout2(F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))))
