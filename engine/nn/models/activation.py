"""The shared non-linearity helper, and the test of whether a network is piecewise linear.

Every model takes its non-linearity from `activation(name)` and holds it as an `nn.Module`
attribute (`self.act`) that `forward` calls, instead of calling `F.relu` directly. That way
`is_piecewise_linear` can find every non-linearity by walking `model.modules()`: the exact
input-Hessian formula H = J^T (diag p - p p^T) J used for HS only holds when the network is
piecewise linear in its input (ReLU); a softplus network needs Hessian-vector products.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = ("relu", "softplus")


def activation(name: str) -> nn.Module:
    """A fresh non-linearity module: 'relu' -> nn.ReLU, 'softplus' -> nn.Softplus(beta=1).

    Not in-place, so activations never overwrite a tensor autograd or a Hessian-vector
    product still needs.
    """
    if name == "relu":
        return nn.ReLU(inplace=False)
    if name == "softplus":
        return nn.Softplus(beta=1.0)
    raise ValueError(f"unknown activation {name!r} (allowed: {', '.join(ACTIVATIONS)})")


# Leaf modules that are affine in their input (BatchNorm: in eval mode; in train mode the
# batch statistics couple the samples, which is why HS is always computed in eval mode).
_AFFINE = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.ZeroPad2d,
    # empty containers are identities (e.g. an identity shortcut written as nn.Sequential())
    nn.Sequential,
    nn.ModuleList,
    nn.ModuleDict,
)
# Non-linearities that are piecewise linear (zero second derivative almost everywhere).
_PIECEWISE_LINEAR = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)


# Smooth functionals and their names, caught when a module holds one as an attribute
# (`self.act = F.softplus`, `self.activation = "gelu"`) instead of as a module.
_SMOOTH_FUNCS = {
    id(f)
    for f in (
        F.softplus,
        F.gelu,
        F.silu,
        F.elu,
        F.celu,
        F.selu,
        F.mish,
        F.hardswish,
        F.logsigmoid,
        F.softsign,
        F.tanhshrink,
        F.tanh,
        F.sigmoid,
        torch.tanh,
        torch.sigmoid,
        torch.exp,
        F.softmax,
        F.log_softmax,
        F.layer_norm,
        F.group_norm,
    )
}
_SMOOTH_NAMES = {
    "softplus",
    "gelu",
    "silu",
    "swish",
    "elu",
    "celu",
    "selu",
    "mish",
    "tanh",
    "sigmoid",
    "hardswish",
    "logsigmoid",
    "softsign",
}


def _holds_smooth_function(m: nn.Module) -> bool:
    """A smooth functional held as a plain attribute, or named by an `act…` string attribute,
    or `piecewise_linear = False` declared by the module itself."""
    if getattr(m, "piecewise_linear", None) is False:
        return True
    for name, val in vars(m).items():
        if name.startswith("_"):
            continue
        if callable(val) and id(val) in _SMOOTH_FUNCS:
            return True
        if isinstance(val, str) and "act" in name.lower() and val.lower() in _SMOOTH_NAMES:
            return True
    return False


def is_piecewise_linear(model: nn.Module) -> bool:
    """True when every leaf module of `model` is affine or a ReLU/LeakyReLU/MaxPool, and no
    module holds a smooth function as an attribute (`self.act = F.softplus`).

    Conservative: any other leaf module (Softplus, GELU, Tanh, Sigmoid, SiLU, LayerNorm, a
    custom layer, ...) makes it False, because a wrong True would make the exact HS formula
    silently wrong while a wrong False only costs time. A non-linearity called directly in
    `forward` (`return F.softplus(h)`) is invisible to this walk; the models in this package
    never do that (they hold theirs as `self.act`), and others can say `piecewise_linear =
    False`. Wrappers such as `torch.compile`'s OptimizedModule or SWA's AveragedModel are
    walked through.
    """
    for m in model.modules():
        if _holds_smooth_function(m):
            return False
        if next(m.children(), None) is not None:
            continue  # a container; its leaves are visited on their own
        if isinstance(m, _PIECEWISE_LINEAR) or isinstance(m, _AFFINE):
            continue
        return False
    return True
