"""l-inf attacks used for training and evaluation: FGSM, FGSM-R, FGSM-N and PGD.

All take inputs in [0, 1] of shape (B, C, H, W), integer labels of shape (B,), and sizes
in [0, 1] pixel units (write 8/255). Gradients come from `torch.autograd.grad`, so no
parameter `.grad` is ever touched. Each public function puts the model in the mode it
needs (eval by default; `train_mode=True` reproduces the authors' training attacks, where
BatchNorm sees the adversarial batches) and restores the caller's mode.

Semantics (docs/PAPER.md):
- fgsm:    x + eps * sign(g(x))                                   (Goodfellow et al. 2015)
- fgsm_rs: x0 = x + U(-eps, eps); x0 + alpha * sign(g(x0)), projected to the eps-ball
           (FGSM-R; Wong et al. 2020 with step alpha; the paper's Sec. 4 uses alpha = eps)
- fgsm_n:  x~ = clip(x + U(-k, k)); x~ + alpha * sign(g(x~)), clipped to [0, 1] but *not*
           projected to the eps-ball around x (Zhang et al. 2022; ||delta|| <= k + alpha)
- pgd:     `steps` steps of size alpha from x (or a random start), projected each step
           (Madry et al. 2018)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@contextmanager
def model_mode(model: nn.Module, train: bool):
    """Put `model` in train/eval mode for the block and restore the caller's mode after."""
    was_training = model.training
    model.train(train)
    try:
        yield model
    finally:
        model.train(was_training)


def grad_sign(model, x, y, keep_graph: bool = False):
    """sign of d CE(f(x), y) / dx (in the model's current mode); with keep_graph also the
    logits, their graph kept for reuse."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        (g,) = torch.autograd.grad(loss, x, retain_graph=keep_graph)
    return g.sign(), (logits if keep_graph else None)


def project(x_adv, x, eps):
    """x_adv clipped to the l-inf eps-ball around x and to [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


@dataclass
class AttackResult:
    """What a training attack produced.

    x_adv:        the adversarial batch (detached).
    x_start:      where the attack started (x, x + noise, or x~ for FGSM-N).
    logits_start: f(x_start) from the attack's first forward pass with its graph kept,
                  so a regulariser can reuse it as the clean branch (Sec. 5: "two forward
                  passes are shared"); None unless asked for.
    """

    x_adv: torch.Tensor
    x_start: torch.Tensor
    logits_start: torch.Tensor | None = None


def run_attack(
    model,
    x,
    y,
    *,
    name: str,
    eps: float,
    alpha: float,
    steps: int = 1,
    random_start: bool = False,
    noise: float | None = None,
    train_mode: bool = False,
    keep_start_logits: bool = False,
) -> AttackResult:
    """Run the named training attack. `keep_start_logits` keeps f(x_start) with its graph."""
    if name == "none":
        return AttackResult(x.detach(), x.detach(), None)
    with model_mode(model, train_mode):
        if name == "fgsm":
            start = x.detach()
        elif name == "fgsm_rs":
            start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0.0, 1.0)
        elif name == "fgsm_n":
            k = eps if noise is None else noise
            start = (x + torch.empty_like(x).uniform_(-k, k)).clamp(0.0, 1.0)
        elif name == "pgd":
            start = x.detach()
            if random_start:
                start = (start + torch.empty_like(x).uniform_(-eps, eps)).clamp(0.0, 1.0)
        else:
            raise ValueError(f"unknown attack {name!r}")
        start = start.detach()
        g, logits_start = grad_sign(model, start, y, keep_graph=keep_start_logits)
        if name == "fgsm":
            x_adv = (start + eps * g).clamp(0.0, 1.0)
        elif name == "fgsm_rs":
            x_adv = project(start + alpha * g, x, eps)
        elif name == "fgsm_n":
            x_adv = (start + alpha * g).clamp(0.0, 1.0)
        else:  # pgd
            x_adv = project(start + alpha * g, x, eps)
            for _ in range(steps - 1):
                g, _ = grad_sign(model, x_adv, y)
                x_adv = project(x_adv + alpha * g, x, eps)
    return AttackResult(x_adv.detach(), start, logits_start)


# -- public, evaluation-style API -------------------------------------------------------


def fgsm(model, x, y, *, eps: float, train_mode: bool = False) -> torch.Tensor:
    """FGSM: one signed-gradient step of size eps from x. Returns x_adv in [0, 1]."""
    return run_attack(model, x, y, name="fgsm", eps=eps, alpha=eps, train_mode=train_mode).x_adv


def fgsm_rs(model, x, y, *, eps: float, alpha: float | None = None, train_mode: bool = False) -> torch.Tensor:
    """FGSM-R: random start U(-eps, eps), one step of size alpha (default eps), projected."""
    return run_attack(
        model, x, y, name="fgsm_rs", eps=eps, alpha=eps if alpha is None else alpha, train_mode=train_mode
    ).x_adv


def fgsm_n(
    model, x, y, *, eps: float, alpha: float | None = None, noise: float | None = None, train_mode: bool = False
) -> torch.Tensor:
    """FGSM-N: noise U(-k, k) (k = noise, default eps), one step alpha (default eps), no projection."""
    return run_attack(
        model, x, y, name="fgsm_n", eps=eps, alpha=eps if alpha is None else alpha, noise=noise, train_mode=train_mode
    ).x_adv


def pgd(
    model, x, y, *, eps: float, alpha: float, steps: int, random_start: bool = False, train_mode: bool = False
) -> torch.Tensor:
    """PGD-k under l-inf: `steps` signed steps of size alpha, projected to the eps-ball and [0, 1].

    Args: x (B, C, H, W) in [0, 1]; y (B,) int64; eps, alpha in pixel units.
    The model runs in eval mode unless train_mode; the caller's mode is restored.
    """
    return run_attack(
        model, x, y, name="pgd", eps=eps, alpha=alpha, steps=steps, random_start=random_start, train_mode=train_mode
    ).x_adv
