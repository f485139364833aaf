"""Building blocks shared by the regularised methods (no method is registered here).

Conventions, used by every method that calls these:
- Input gradients are of the batch-*mean* cross-entropy, taken w.r.t. the whole batch
  tensor X, as the paper's IG metric does: g = d/dX (1/B sum_i CE_i). Its squared l2 norm
  is therefore sum_i ||grad CE_i||^2 / B^2, i.e. (1/B) * the mean per-sample squared norm.
  This is what makes the paper's strengths (IGR 1200, CURE 1500 at B = 100) land the penalty
  at the scale of the CE (see igr.py); it also means these strengths scale with B.
- Divergences come per row (per sample); callers sum or average them.
- Nothing here reads a tensor back to the host: no .item(), no data-dependent Python branch,
  and no torch.linalg SVD/eigh (which synchronise on CUDA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def input_grad(model, x, y, *, create_graph: bool, retain_graph: bool | None = None):
    """(g, logits, loss): g = d mean-CE(f(x), y) / dx for the whole batch, in the model's mode.

    With create_graph the gradient is itself differentiable (double backprop) and the forward
    graph stays alive, so `loss`/`logits` can be back-propagated as well; without it `g` is a
    constant and the forward graph is freed unless retain_graph.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        (g,) = torch.autograd.grad(
            loss, x, create_graph=create_graph, retain_graph=create_graph if retain_graph is None else retain_graph
        )
    return g, logits, loss


def sq_norm(g: torch.Tensor) -> torch.Tensor:
    """Squared l2 norm of the whole tensor (summed over the batch)."""
    return g.pow(2).sum()


def kl_rows(logits_p: torch.Tensor, logits_q: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(P || Q) per row, P = softmax(logits_p / T), Q = softmax(logits_q / T). Shape (B,)."""
    logp = F.log_softmax(logits_p / temperature, dim=1)
    logq = F.log_softmax(logits_q / temperature, dim=1)
    return (logp.exp() * (logp - logq)).sum(1)


def js_rows(logits_p: torch.Tensor, logits_q: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Jensen-Shannon divergence per row: (KL(P || M) + KL(Q || M)) / 2, M = (P + Q) / 2. Shape (B,).

    As Tack et al.'s code: log M is taken of M clamped at 1e-8 (only matters for exact zeros).
    """
    logp = F.log_softmax(logits_p / temperature, dim=1)
    logq = F.log_softmax(logits_q / temperature, dim=1)
    p, q = logp.exp(), logq.exp()
    logm = (0.5 * (p + q)).clamp_min(1e-8).log()
    return 0.5 * ((p * (logp - logm)).sum(1) + (q * (logq - logm)).sum(1))


def nuclear_norm(d: torch.Tensor, iters: int = 50) -> torch.Tensor:
    """Nuclear norm (sum of singular values) of a 2-D matrix, without an SVD.

    torch.linalg.svdvals/matrix_norm('nuc') synchronise a CUDA device with the host, so the
    polar factor P = U V^T is found by the Newton-Schulz iteration X <- X (3 I - X^T X) / 2
    from X0 = D / ||D||_F (every singular value s in (0, 1] goes to 1; small ones grow by
    1.5x per step, then converge quadratically), and ||D||_* = <P, D>. P is held constant in
    the backward pass, so the gradient is P = U V^T, the gradient of the nuclear norm.
    With 50 steps every singular value above ~1e-7 ||D||_F is converged to float precision;
    smaller ones are under-counted by at most their own size. D = 0 gives 0 (gradient 0).
    The iteration runs on the Gram side of the smaller dimension (C x C for a B x C matrix),
    in float32 or better even under autocast.
    """
    if d.dim() != 2:
        raise ValueError(f"nuclear_norm: expected a matrix, got shape {tuple(d.shape)}")
    with torch.no_grad(), torch.autocast(d.device.type, enabled=False):  # bf16: ~1e-2 accuracy
        a = d.detach()
        a = a.float() if a.dtype in (torch.float16, torch.bfloat16) else a
        tall = a.shape[0] >= a.shape[1]
        x = a if tall else a.T
        x = x / torch.linalg.vector_norm(x).clamp_min(torch.finfo(x.dtype).tiny)
        eye3 = 3.0 * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        for _ in range(iters):
            x = 0.5 * x @ (eye3 - x.T @ x)
        p = (x if tall else x.T).to(d.dtype)
    return (p * d).sum()


def adversarial_ce_plus(model, x, y, ctx, penalty):
    """CE on the training attack's examples + lambda * penalty(), for regularisers whose term
    is computed on the clean batch. The attack runs first (fixing the RNG order), then the
    penalty, then the forward pass on the adversarial batch."""
    x_adv = ctx.attack(model, x, y).x_adv
    reg = penalty()
    logits_adv = model(x_adv)
    return F.cross_entropy(logits_adv, y) + ctx.lam * reg, {"logits": logits_adv, "reg": reg.detach()}
