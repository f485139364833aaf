"""WideResNet-depth-width (Zagoruyko & Komodakis 2016) as in the AdvLC authors' code; the
paper's analysis experiments (Sec. 4, Figs 1-4) use WideResNet-34-10.

depth = 6n + 4: conv3x3(C->16), three stages of n pre-activation `wide_basic` blocks
(16k, 32k, 64k channels; stride 1, 2, 2), act(bn), adaptive average pool, linear. Each block:
act(bn1(x)) -> conv3x3 -> act(bn2) -> conv3x3 (carrying the stride: the authors' code puts the
stride on the *second* conv, unlike the original WRN), plus a 1x1-conv shortcut on x when the
shape changes. No dropout, no input normalisation. Parameter names follow the authors' code
(`layer1.block0.bn1.weight`, `bn1`, `fc0`), so their checkpoints load. Weights use PyTorch's
default initialisation: the authors' code defines a xavier `conv_init` but never applies it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from engine.errors import UserError
from engine.nn.models.activation import activation


class WideBasic(nn.Module):
    """act(bn1(x)) -> conv1 -> act(bn2) -> conv2 (stride here) + shortcut(x)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, act: str = "relu"):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.act = activation(act)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False))
        else:
            self.shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act(self.bn1(x)))
        out = self.conv2(self.act(self.bn2(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


def _stage(in_planes: int, planes: int, n: int, stride: int, act: str) -> nn.Sequential:
    blocks = OrderedDict()
    for i, s in enumerate([stride] + [1] * (n - 1)):
        blocks[f"block{i}"] = WideBasic(in_planes, planes, s, act)
        in_planes = planes
    return nn.Sequential(blocks)


class WideResNet(nn.Module):
    """WideResNet-`depth`-`width`; see the module docstring."""

    def __init__(
        self, depth: int = 34, width: int = 10, num_classes: int = 10, in_channels: int = 3, act: str = "relu"
    ):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise UserError(f"model.depth = {depth}: WideResNet depth must be 6n + 4 (10, 16, 22, 28, 34, 40, ...)")
        if width < 1:
            raise UserError(f"model.width = {width}: must be >= 1")
        n = (depth - 4) // 6
        stages = [16, 16 * width, 32 * width, 64 * width]
        self.depth, self.width = depth, width
        self.conv1 = nn.Conv2d(in_channels, stages[0], kernel_size=3, padding=1, bias=False)
        self.layer1 = _stage(stages[0], stages[1], n, 1, act)
        self.layer2 = _stage(stages[1], stages[2], n, 2, act)
        self.layer3 = _stage(stages[2], stages[3], n, 2, act)
        self.bn1 = nn.BatchNorm2d(stages[3])
        self.act = activation(act)
        self.aap = nn.AdaptiveAvgPool2d(1)
        self.fc0 = nn.Linear(stages[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer3(self.layer2(self.layer1(out)))
        out = self.act(self.bn1(out))
        out = self.aap(out).flatten(1)
        return self.fc0(out)
