"""Building blocks shared by every network in ``models``."""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs with BatchNorm and a projection shortcut when needed.

    ``zero_init_last`` zero-initialises the last BatchNorm, so every block starts as the identity,
    which trains deeper ResNets faster and more stably (Goyal et al., 2017, "Accurate, large
    minibatch SGD"); the reference classifiers use it, the SPIC latent classifier was trained
    without it.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, zero_init_last: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if zero_init_last:
            nn.init.zeros_(self.bn2.weight)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))
