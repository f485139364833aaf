"""Eq. 9 ablation (Li & Spratling 2023, Sec. 4.1, Fig. 2 left): adversarial training with a
portion of the clean loss subtracted ("FGSM-R AT - ST").

    loss = CE_mean(f(x + delta), y) - alpha * CE_mean(f(x), y)        alpha = method.lam

The paper trains it with FGSM-R (step eps) and sweeps alpha from 0 (plain FGSM-R AT) to 1;
alpha > 1 would make the objective unbounded below (L(x + delta) ~ L(x) can grow without
limit), so 0 <= alpha <= 1 is enforced. Any training attack works. L(x) is at the clean x in
train mode; when the attack's first forward pass is at x (FGSM, PGD without random start, in
train mode) that pass is reused, otherwise one extra forward pass is made.
`reg` logs the clean CE.
"""

import torch.nn.functional as F

from engine.nn.methods import register


@register(
    "eq9_clean_loss",
    lam="0..1",
    lam_error="Eq. 9's alpha must be in [0, 1] (paper: a sweep from 0 to 1 with FGSM-R)",
    doc="Eq. 9 ablation: CE(f(x + delta)) - alpha * CE(f(x)), alpha = method.lam (paper: FGSM-R).",
)
def eq9_clean_loss(model, x, y, ctx):
    a = ctx.cfg.attack
    share = a.train_mode and (a.name == "fgsm" or (a.name == "pgd" and not a.random_start))
    res = ctx.attack(model, x, y, keep_start_logits=share)
    logits_clean = res.logits_start if share else model(x)
    logits_adv = model(res.x_adv)
    ce_clean = F.cross_entropy(logits_clean, y)
    loss = F.cross_entropy(logits_adv, y) - ctx.lam * ce_clean
    return loss, {"logits": logits_adv, "reg": ce_clean.detach()}
