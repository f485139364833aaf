"""GradAlign (Andriushchenko & Flammarion 2020, "Understanding and improving fast adversarial
training", NeurIPS), added to adversarial training as in Li & Spratling 2023, Sec. 5.1.

    g(z)  = d CE_mean(f(z), y) / dz                  (batch-mean CE, whole batch tensor)
    eta   ~ U(-eps, eps)                              eps = attack.eps, not clipped to [0, 1]
    cos_i = <g_i(x), g_i(x + eta)> / (||g_i(x)|| ||g_i(x + eta)||)
    loss  = CE_mean(f(x + delta), y) + lambda * (1 - mean_i cos_i)

Details follow the authors' code (tml-epfl/understanding-fast-adv-training, train.py and
utils.get_input_grad) on its FGSM path: g(x) is computed *without* create_graph, i.e. treated
as a constant, as the authors' FGSM path does (`grad.detach()`); their PGD and no-attack paths
differentiate g(x) as well (`backprop=True`), so for PGD10 + GradAlign advlc keeps g(x)
constant where the original would not (docs/FIDELITY.md). Only g(x + eta) is
double-backpropagated; x + eta is not clipped; the cosine is per sample, and samples where
either gradient is zero are left out of the mean. The original drops
exact zeros with boolean indexing (a host sync); here a sample is left out when either
gradient's norm is below sqrt(smallest normal float) (~1e-19 in float32; such a sample's CE is
numerically 0), its cosine is masked to 0, and the mean divides by the number of valid
samples (a batch with none gives 1 - 0 = 1 instead of the original's NaN).
eta is drawn after the training attack, from the global RNG.
"""

import torch

from engine.nn.methods import register
from engine.nn.methods.penalties import adversarial_ce_plus, input_grad


def mean_cosine(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """Mean over samples of cos(g1_i, g2_i), leaving out samples where either is ~0 (see above)."""
    g1, g2 = g1.flatten(1), g2.flatten(1)
    floor = torch.finfo(g1.dtype).tiny ** 0.5  # ~1e-19 in float32: 1/floor^2 still finite
    n1 = torch.linalg.vector_norm(g1.detach(), dim=1)
    n2 = torch.linalg.vector_norm(g2.detach(), dim=1)
    valid = (n1 > floor) & (n2 > floor)
    # cos is scale-invariant: dividing each gradient by its own norm, held constant, leaves the
    # value and the gradient unchanged but keeps every intermediate O(1), so a tiny or zero
    # gradient cannot overflow the backward pass (dividing by a clamped n1 * n2 can: a zero g2
    # receives g1 / tiny, ~1e35 in float32, which double backprop turns into inf and NaN)
    u1 = g1 / n1.clamp_min(floor)[:, None]
    u2 = g2 / n2.clamp_min(floor)[:, None]
    norms = torch.linalg.vector_norm(u1, dim=1) * torch.linalg.vector_norm(u2, dim=1)
    cos = (u1 * u2).sum(1) / norms.clamp_min(floor)
    cos = torch.where(valid, cos, torch.zeros_like(cos))
    return cos.sum() / valid.sum().clamp_min(1)


def gradalign_penalty(model, x, y, eps: float):
    """1 - mean cosine between g(x) (constant) and g(x + eta) (differentiable), per sample."""
    g1, _, _ = input_grad(model, x, y, create_graph=False)
    eta = torch.empty_like(x).uniform_(-eps, eps)
    g2, _, _ = input_grad(model, x + eta, y, create_graph=True)
    return 1.0 - mean_cosine(g1, g2)


@register(
    "gradalign",
    lam="> 0",
    paper_lam=(7.0, 6.0),
    needs=("double_backprop",),
    lam_error="GradAlign needs lambda > 0 (paper: 7 with FGSM-N, 6 with PGD10)",
    doc="GradAlign (Andriushchenko & Flammarion 2020): adversarial CE + lambda * (1 - cos(g(x), g(x + eta))).",
)
def gradalign(model, x, y, ctx):
    return adversarial_ce_plus(model, x, y, ctx, lambda: gradalign_penalty(model, x, y, ctx.cfg.attack.eps))
