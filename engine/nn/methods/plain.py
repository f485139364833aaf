"""Standard training and plain adversarial training with each training attack.

`standard`: CE on the clean batch. `fgsm`, `fgsm_rs`, `fgsm_n`, `pgd`: CE on the
adversarial batch produced by the attack of the same name (settings in [attack]).
"""

import torch.nn.functional as F

from engine.nn.methods import TRAIN_ATTACKS, register


@register("standard", fixed_attack="none", doc="Standard training: CE(f(x), y).")
def standard(model, x, y, ctx):
    logits = model(x)
    return F.cross_entropy(logits, y), {"logits": logits}


def _plain(attack):
    def loss(model, x, y, ctx):
        x_adv = ctx.attack(model, x, y).x_adv
        logits = model(x_adv)
        return F.cross_entropy(logits, y), {"logits": logits}

    loss.__name__ = f"{attack}_at"
    return loss


_DOCS = {
    "fgsm": "FGSM AT: CE on x + eps*sign(grad) (no random start).",
    "fgsm_rs": "FGSM-R AT: random start U(-eps, eps), one step of size alpha, projected.",
    "fgsm_n": "FGSM-N AT (Zhang et al. 2022): noise U(-k, k), one step, not projected back.",
    "pgd": "PGD-k AT (Madry et al. 2018): k steps of size alpha (paper: 10 steps, eps/4).",
}

for _name in TRAIN_ATTACKS:
    register(_name, fixed_attack=_name, doc=_DOCS[_name])(_plain(_name))
