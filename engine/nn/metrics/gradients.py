"""Input gradients: IG (Li & Spratling 2023, Sec. 3) and gradient alignment (A.5).

- IG `input_gradient_norm`: mean over samples of ||d CE(f(x_i), y_i) / d x_i||_1, eval mode.
- `gradient_alignment`: E[cos(grad L(x), grad L(x + eta))], eta ~ U(-eps, eps).

Gradients come from `torch.autograd.grad` (no parameter `.grad` is touched) in eval mode; the
caller's mode is restored.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.nn.attacks import model_mode
from engine.nn.metrics.batches import batches


def input_grads(model, x, y) -> torch.Tensor:
    """Per-sample d CE(f(x_i), y_i) / d x_i for one batch (sum-reduced CE, caller's mode)."""
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xr), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xr)
    return g


def input_gradient_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """IG: mean over samples of the l1 norm of d CE(f(x_i), y_i) / d x_i, in eval mode.

    With sum-reduced CE per batch each sample's gradient is its own, so the l1 norm of the
    batch gradient is the sum of the per-sample norms; divided by N at the end. Per batch this
    equals the authors' ||d (batch-mean CE) / d X||_1 over the whole batch tensor (the 1/B of
    the mean turns the sum of per-sample norms into their mean). One host sync.
    """
    n = len(x)
    if n == 0:
        raise ValueError("input_gradient_norm: empty input")
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    with model_mode(model, False):
        for s in batches(n, batch_size):
            g = input_grads(model, x[s], y[s])
            total += g.abs().sum(dtype=torch.float64)
    return float(total / n)


def gradient_alignment(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    batch_size: int = 500,
    generator: torch.Generator | None = None,
) -> float:
    """A.5: mean over samples of cos(grad_x L(x), grad_x L(x + eta)), eta ~ U(-eps, eps),
    x + eta clamped to [0, 1]; per-sample flattened gradients, eval mode. eta is drawn on
    the generator's device (global RNG on x's device when None). A sample with a zero
    gradient gets cosine 0 (torch's cosine_similarity)."""
    if len(x) == 0:
        raise ValueError("gradient_alignment: empty input")
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    with model_mode(model, False):
        for s in batches(len(x), batch_size):
            xb, yb = x[s], y[s]
            dev = generator.device if generator is not None else xb.device
            u = torch.rand(xb.shape, generator=generator, device=dev, dtype=torch.float64)
            eta = ((2 * u - 1) * eps).to(device=xb.device, dtype=xb.dtype)
            g1 = input_grads(model, xb, yb).flatten(1)
            g2 = input_grads(model, (xb + eta).clamp(0.0, 1.0), yb).flatten(1)
            total += F.cosine_similarity(g1, g2, dim=1).double().sum()
    return float(total / len(x))
