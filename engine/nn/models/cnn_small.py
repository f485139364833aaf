"""A small CNN for scikit-learn digits (1x8x8, 10 classes) and other tiny images.

conv3x3(C->32) act, conv3x3(32->64, stride 2) act, flatten, linear(64*ceil(S/2)^2 -> 128) act,
linear(128 -> classes), each of 32, 64 and 128 multiplied by `width` (model.cnn_width).
151,306 parameters on digits at width 1 (601,610 at width 2), so a PGD-10 epoch over the
1437 training digits takes a fraction of a second on a laptop CPU: the model that makes
every engine path testable without a GPU.

No BatchNorm: it keeps the model piecewise linear in both train and eval mode (train-mode BN
couples the samples of a batch), keeps train- and eval-mode attacks identical, and digits
train well without it. Weights use PyTorch's default initialisation.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from engine.nn.models.activation import activation


class CNNSmall(nn.Module):
    """Two conv layers and two linear layers; see the module docstring."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8, act: str = "relu", width: int = 1
    ):
        super().__init__()
        half = (image_size + 1) // 2  # spatial size after the stride-2, pad-1, 3x3 conv
        c1, c2, h = 32 * width, 64 * width, 128 * width
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, stride=2, padding=1)
        self.fc1 = nn.Linear(c2 * half * half, h)
        self.fc2 = nn.Linear(h, num_classes)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.conv1(x))
        out = self.act(self.conv2(out))
        out = self.act(self.fc1(out.flatten(1)))
        return self.fc2(out)
