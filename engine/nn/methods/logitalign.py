"""LogitAlign (Zhang et al. 2022, "Noise augmentation is all you need for FGSM fast adversarial
training: catastrophic overfitting and robust overfitting require different augmentation",
arXiv:2202.05488), as described and used by Li & Spratling 2023 (Sec. 2, 5.1): a random
neighbour of x gets its own adversarial example, and the outputs of the two adversarial
examples are pulled together with a KL divergence.

    x'    = clip(x + eta, 0, 1),  eta ~ U(-eps, eps)      eps = attack.eps
    a, a' = attack(x), attack(x')                         the configured training attack, twice
    P, Q  = softmax(f(a)), softmax(f(a'))
    loss  = CE_mean(f(a), y) + lambda * mean_i KL(P_i || Q_i)

- KL direction: the adversarial example of x itself (the one carrying the CE) is the
  reference P, the neighbour's is Q, the same anchor-first convention as TRADES and as
  `advlc_kl`. Both branches are forward passes in train mode and both carry gradient.
- KL is averaged over the batch ('batchmean'), the reduction that makes the paper's
  lambda = 100 (FGSM-N) / 50 (PGD10) of the order of the CE.
- The neighbour noise is drawn after the first attack, so with lambda = 0 the random stream
  of the base attack is that of plain AT.
- Cost: one extra attack and one extra forward pass (Table 1: ~2x the base with PGD10).
"""

import torch
import torch.nn.functional as F

from engine.nn.methods import register
from engine.nn.methods.penalties import kl_rows


@register(
    "logitalign",
    lam="> 0",
    paper_lam=(100.0, 50.0),
    lam_error="LogitAlign needs lambda > 0 (paper: 100 with FGSM-N, 50 with PGD10)",
    doc="LogitAlign (Zhang et al. 2022): adversarial CE + lambda * KL(f(adv of x) || f(adv of x + eta)).",
)
def logitalign(model, x, y, ctx):
    eps = ctx.cfg.attack.eps
    x_adv = ctx.attack(model, x, y).x_adv
    x_nb = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0.0, 1.0)
    x_nb_adv = ctx.attack(model, x_nb, y).x_adv
    logits_adv = model(x_adv)
    logits_nb = model(x_nb_adv)
    reg = kl_rows(logits_adv, logits_nb).mean()
    loss = F.cross_entropy(logits_adv, y) + ctx.lam * reg
    return loss, {"logits": logits_adv, "reg": reg.detach()}
