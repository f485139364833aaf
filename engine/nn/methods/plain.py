"""Standard training and plain adversarial training with each training attack.

`standard`: CE on the clean batch. `fgsm`, `fgsm_rs`, `fgsm_n`, `pgd`: CE on the
adversarial batch produced by the attack of the same name (settings in [attack]).
"""

import torch.nn.functional as F

from engine.nn.methods import register


@register("standard", fixed_attack="none", doc="Standard training: CE(f(x), y).")
def standard(model, x, y, ctx):
    logits = model(x)
    return F.cross_entropy(logits, y), {"logits": logits}


def _adversarial_ce(model, x, y, ctx):
    """CE on the adversarial batch of the method's own attack."""
    x_adv = ctx.attack(model, x, y).x_adv
    logits = model(x_adv)
    return F.cross_entropy(logits, y), {"logits": logits}


@register("fgsm", fixed_attack="fgsm", doc="FGSM AT: CE on x + eps*sign(grad) (no random start).")
def fgsm(model, x, y, ctx):
    return _adversarial_ce(model, x, y, ctx)


@register(
    "fgsm_rs", fixed_attack="fgsm_rs", doc="FGSM-R AT: random start U(-eps, eps), one step of size alpha, projected."
)
def fgsm_rs(model, x, y, ctx):
    return _adversarial_ce(model, x, y, ctx)


@register(
    "fgsm_n", fixed_attack="fgsm_n", doc="FGSM-N AT (Zhang et al. 2022): noise U(-k, k), one step, not projected back."
)
def fgsm_n(model, x, y, ctx):
    return _adversarial_ce(model, x, y, ctx)


@register(
    "pgd", fixed_attack="pgd", doc="PGD-k AT (Madry et al. 2018): k steps of size alpha (paper: 10 steps, eps/4)."
)
def pgd(model, x, y, ctx):
    return _adversarial_ce(model, x, y, ctx)
