"""The networks: a small CNN for digits, PreActResNet18 and WideResNet, each with a ReLU or a
softplus non-linearity.

`build_model(cfg.model, num_classes=..., in_channels=..., image_size=...)` is the one entry
point. Inputs are in [0, 1] and no model has an input-normalisation layer (the authors'
models have none, and the attack budgets are in that pixel scale). Weights use PyTorch's
default initialisation. `is_piecewise_linear(model)` tells the HS code whether the exact
input-Hessian formula applies (ReLU) or Hessian-vector products are needed (softplus).
"""

from __future__ import annotations

import torch.nn as nn

from engine.errors import UserError
from engine.nn.models.activation import ACTIVATIONS, activation, is_piecewise_linear
from engine.nn.models.cnn_small import CNNSmall
from engine.nn.models.preact_resnet import SHORTCUTS, PreActBlock, PreActResNet18
from engine.nn.models.wide_resnet import WideBasic, WideResNet
from engine.sections import ModelConfig

__all__ = [
    "build_model",
    "is_piecewise_linear",
    "activation",
    "ARCHS",
    "CNNSmall",
    "PreActResNet18",
    "PreActBlock",
    "WideResNet",
    "WideBasic",
]

ARCHS = ("cnn_small", "preact_resnet18", "wide_resnet")


def build_model(cfg: ModelConfig, *, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The network `cfg.arch` with `cfg.activation` (`cfg`: a RunConfig's [model] section), for (B, in_channels, image_size, image_size)
    inputs in [0, 1] and `num_classes` logits. Built on the CPU; the caller moves it.

    `cfg.shortcut` applies to preact_resnet18 only, `cfg.depth` / `cfg.width` to wide_resnet
    only, `cfg.cnn_width` to cnn_small only. The ResNets end in an adaptive average pool, so
    they accept any image_size >= 1 (8x8 digits included); cnn_small's first linear layer is
    sized from image_size.
    """
    if cfg.activation not in ACTIVATIONS:
        raise UserError(
            f"model.activation = {cfg.activation!r}: must be one of " + ", ".join(repr(a) for a in ACTIVATIONS)
        )
    if num_classes < 1 or in_channels < 1 or image_size < 1:
        raise ValueError(
            f"build_model: num_classes={num_classes}, in_channels={in_channels}, "
            f"image_size={image_size} must all be >= 1"
        )
    if cfg.arch == "cnn_small":
        return CNNSmall(num_classes, in_channels, image_size, cfg.activation, cfg.cnn_width)
    if cfg.arch == "preact_resnet18":
        if cfg.shortcut not in SHORTCUTS:
            raise UserError(
                f"model.shortcut = {cfg.shortcut!r}: must be one of " + ", ".join(repr(s) for s in SHORTCUTS)
            )
        return PreActResNet18(num_classes, in_channels, cfg.activation, cfg.shortcut)
    if cfg.arch == "wide_resnet":
        return WideResNet(cfg.depth, cfg.width, num_classes, in_channels, cfg.activation)
    raise UserError(f"model.arch = {cfg.arch!r}: must be one of " + ", ".join(repr(a) for a in ARCHS))
