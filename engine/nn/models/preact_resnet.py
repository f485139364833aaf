"""PreActResNet18 (He et al. 2016, identity mappings), as used by Rice et al. 2020 and
Wong et al. 2020 and for the paper's Tables 1-3.

Two variants of the projection shortcut (the 1x1 conv of the three downsampling blocks):

- "common":  shortcut(act(bn1(x)))  -- He et al.'s pre-activation block and the code of
  Rice et al. / Wong et al.; the shortcut shares the block's pre-activation.
- "authors": shortcut(x)            -- the AdvLC authors' code (Li & Spratling), which
  projects the raw block input (their README credits KDSA's model, which uses the common
  form). The paper presets use "common" (the paper cites He et al.'s PreActResNet18);
  `model.shortcut = "authors"` reproduces the authors' code (docs/FIDELITY.md).

Both have the same parameters under the same names (and those names follow the authors' code,
so their checkpoints load), so one state_dict fits both. Identity shortcuts add x in both.
For 32x32 inputs (CIFAR, SVHN) and 64x64 (TinyImageNet: the same network; the adaptive
average pool at the end absorbs the larger feature map). No normalisation of the input
(inputs are in [0, 1], as in the authors' models). Weights use PyTorch's default
initialisation, as in the authors' code.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from engine.nn.models.activation import activation

SHORTCUTS = ("common", "authors")


class PreActBlock(nn.Module):
    """Pre-activation basic block: act(bn1) -> conv1 -> act(bn2) -> conv2, plus shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, act: str = "relu", shortcut: str = "common"):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r} (allowed: {', '.join(SHORTCUTS)})")
        self.shortcut_from = shortcut
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.act = activation(act)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False))
        else:
            self.shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(x))
        if self.shortcut is None:
            skip = x
        elif self.shortcut_from == "authors":
            skip = self.shortcut(x)
        else:
            skip = self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """conv3x3(C->64), four stages of two PreActBlocks (64, 128, 256, 512; stride 1, 2, 2, 2),
    act(bn), adaptive average pool, linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, act: str = "relu", shortcut: str = "common"):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(64, 2, 1, act, shortcut)
        self.layer2 = self._make_layer(128, 2, 2, act, shortcut)
        self.layer3 = self._make_layer(256, 2, 2, act, shortcut)
        self.layer4 = self._make_layer(512, 2, 2, act, shortcut)
        self.bn = nn.BatchNorm2d(512)
        self.act = activation(act)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes, num_blocks, stride, act, shortcut) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(PreActBlock(self.in_planes, planes, s, act, shortcut))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.act(self.bn(out))
        out = self.avgpool(out).flatten(1)
        return self.linear(out)
