"""CURE: curvature regularisation (Moosavi-Dezfooli, Fawzi, Uesato & Frossard 2019, "Robustness
via curvature regularization, and vice versa", CVPR), with Li & Spratling's modification
(2023, Sec. 5.1): the neighbour is at the fixed distance h = eps * sign(grad_x L(x)).

    g(z)  = d CE_mean(f(z), y) / dz                  (batch-mean CE, whole batch tensor)
    h     = eps * sign(g(x))                         eps = attack.eps, h held constant
    loss  = CE_mean(f(x + delta), y) + lambda * || g(x + h) - g(x) ||_2^2

- Normalisation as IGR (see igr.py and penalties.py): gradients of the batch-mean CE, the
  squared norm summed over the batch tensor, so = (1/B^2) sum_i ||g_i(x_i + h_i) - g_i(x_i)||^2.
  The paper's 1500 (CURE) and 1200 (IGR) are then of the same order, as they should be for two
  penalties on input gradients of similar size.
- Both gradients are differentiated (double backprop through both forward passes, as the
  original). One backward pass gives g(x) for h; a single create_graph backward of
  L(x + h) - L(x) w.r.t. x then yields g(x + h) - g(x), reusing the forward pass at x.
- x + h is not clipped to [0, 1]: the paper fixes the neighbour's distance to exactly
  eps * sign(...) (and the original CURE does not clip either).
"""

import torch
import torch.nn.functional as F

from engine.nn.methods import register
from engine.nn.methods.penalties import adversarial_ce_plus, sq_norm


def cure_penalty(model, x, y, eps: float):
    """|| g(x + eps * sign g(x)) - g(x) ||^2 with its graph (double backprop)."""
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss_x = F.cross_entropy(model(xr), y)
        (g,) = torch.autograd.grad(loss_x, xr, retain_graph=True)
        loss_h = F.cross_entropy(model(xr + eps * g.sign()), y)
        (gd,) = torch.autograd.grad(loss_h - loss_x, xr, create_graph=True)
    return sq_norm(gd)


@register("cure", lam="> 0", paper_lam=(1500.0, 1500.0), needs=("double_backprop",),
          lam_error="CURE needs lambda > 0 (paper: 1500 with FGSM-N and with PGD10)",
          doc="CURE (Moosavi-Dezfooli et al. 2019): adversarial CE + lambda * ||g(x + eps sign g) - g(x)||^2.")
def cure(model, x, y, ctx):
    return adversarial_ce_plus(model, x, y, ctx, lambda: cure_penalty(model, x, y, ctx.cfg.attack.eps))
