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

`[method.cure] form` picks the penalty (Li & Spratling publish no CURE code, so which form their
lambda = 1500 belongs to is not known; docs/FIDELITY.md):

  "batch_sq"  (default) the above: || g(x + h) - g(x) ||_2^2 over the whole batch tensor,
              model in the mode the trainer put it in (train: BN batch statistics).
  "original"  the public CURE code's form (F-Salehi/CURE_robustness, CURE/CURE.py,
              `_find_z` and `regularizer`): the model in EVAL mode for the whole penalty (h
              and both gradients), and the mean over samples of the UNSQUARED per-sample l2
              norms of the difference,
                  (1/B) sum_i || g_i(x + h) - g_i(x) ||_2,   g_i = the rows of g (mean CE),
              i.e. what that code computes with its batch-mean criterion (sum_i ||Delta_i|| / B^2
              in per-sample gradients Delta_i; read with per-sample losses, as its
              grad_outputs=ones(B) suggests, it would be B times this). The adversarial CE
              stays in train mode, as in that code. The neighbour stays the paper's
              h = eps * sign(g(x)) (the code's z has l2 length h per sample). The order is
              that code's too: the train-mode forward pass (which updates the BN running
              statistics) first, then the eval-mode penalty, so the penalty uses the updated
              statistics and nothing changes them before the backward pass (an eval-mode
              BatchNorm's backward reads its running statistics in place: a later train-mode
              pass would silently change the penalty's gradient).
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from engine.nn.attacks import model_mode
from engine.nn.methods import register
from engine.nn.methods.penalties import adversarial_ce_plus, sq_norm
from engine.sections import opt

CURE_FORMS = ("batch_sq", "original")


@dataclass
class CUREParams:
    """[method.cure]: which CURE penalty (docs/FIDELITY.md, row 5.1)."""

    form: str = opt(
        "batch_sq",
        "'batch_sq' = the squared l2 norm of the difference of the batch-mean-CE input gradients, "
        "model in train mode (the form under which the paper's lambda = 1500 is on the scale of the CE); "
        "'original' = the public CURE code's mean over samples of the unsquared per-sample norms, model in "
        "eval mode.",
        choices=("batch_sq", "original"),
    )
    FLAT_KEYS: ClassVar[dict[str, str]] = {"cure_form": "form"}


def _grad_difference(model, x, y, eps: float):
    """g(x + eps * sign g(x)) - g(x), g the gradient of the batch-mean CE, with its graph."""
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss_x = F.cross_entropy(model(xr), y)
        (g,) = torch.autograd.grad(loss_x, xr, retain_graph=True)
        loss_h = F.cross_entropy(model(xr + eps * g.sign()), y)
        (gd,) = torch.autograd.grad(loss_h - loss_x, xr, create_graph=True)
    return gd


def cure_penalty(model, x, y, eps: float, form: str = "batch_sq"):
    """The CURE penalty with its graph (double backprop): "batch_sq" = || g(x + h) - g(x) ||^2
    in the model's current mode; "original" = mean_i || g_i(x + h) - g_i(x) ||_2 in eval mode
    (the caller's mode restored). h = eps * sign(g(x)) in the same mode."""
    if form == "batch_sq":
        return sq_norm(_grad_difference(model, x, y, eps))
    if form == "original":
        with model_mode(model, False):
            gd = _grad_difference(model, x, y, eps)
        return torch.linalg.vector_norm(gd.flatten(1), dim=1).mean()
    raise ValueError(f"unknown CURE form {form!r}; choose one of {CURE_FORMS}")


@register(
    "cure",
    lam="> 0",
    paper_lam=(1500.0, 1500.0),
    needs=("double_backprop",),
    params=CUREParams,
    lam_error="CURE needs lambda > 0 (paper: 1500 with FGSM-N and with PGD10)",
    doc="CURE (Moosavi-Dezfooli et al. 2019): adversarial CE + lambda * ||g(x + eps sign g) - g(x)||^2 "
    "([method.cure] form: batch_sq, or the public code's 'original').",
)
def cure(model, x, y, ctx):
    eps, form = ctx.cfg.attack.eps, ctx.params.form
    if form != "original":
        return adversarial_ce_plus(model, x, y, ctx, lambda: cure_penalty(model, x, y, eps, form))
    # the original's order: attack, train-mode forward pass, then the eval-mode penalty (see above)
    x_adv = ctx.attack(model, x, y).x_adv
    logits_adv = model(x_adv)
    reg = cure_penalty(model, x, y, eps, form)
    return F.cross_entropy(logits_adv, y) + ctx.lam * reg, {"logits": logits_adv, "reg": reg.detach()}
