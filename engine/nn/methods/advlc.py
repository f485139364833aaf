"""AdvLC: adversarial logit consistency (Li & Spratling 2023, Sec. 5, Eqs 13-16, Alg. 1).

    o_ij  = |f_j(x_i + delta) - f_j(x_i)|          raw logits, (B, C)
    w_ij  = 1 for the top-N o_ij in the whole batch, else 0
    L_reg = sum_ij w_ij o_ij
    loss  = (sum_i CE(f(x_i + delta), y_i) + lambda * L_reg) / M

Both branches are forward passes in train mode and gradients flow through both (the
clean branch is not detached). By default the clean logits are those of the attack's own
first forward pass (f(x), or f(x~) for FGSM-N), so AdvLC adds no forward pass.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from engine.nn.methods import register
from engine.sections import opt


@dataclass
class AdvLCParams:
    """[method.advlc]: AdvLC's own parameters."""

    top_n: int = opt(
        100,
        "N, the number of logit differences in the batch that are penalised (Eq. 15).",
        unit="entries",
        min=1,
        max=10_000_000,
    )
    clean: str = opt(
        "start",
        "The clean logits: 'start' shares the attack's first forward pass (f(x) for FGSM/PGD, "
        "f(x~) for FGSM-N, as in the authors' code); 'x' adds a separate forward pass on x.",
        choices=("start", "x"),
    )
    FLAT_KEYS: ClassVar[dict[str, str]] = {"top_n": "top_n", "clean": "clean"}


def advlc_penalty(logits_adv: torch.Tensor, logits_clean: torch.Tensor, top_n: int) -> torch.Tensor:
    """L_reg of Eqs 13-15: the sum of the `top_n` largest |logit differences| in the batch.

    Not divided by the batch size (Algorithm 1 divides the whole objective by M).
    """
    diff = (logits_adv - logits_clean).abs().flatten()
    k = min(int(top_n), diff.numel())
    return diff.topk(k, sorted=False).values.sum()


def clean_and_adv(model, x, y, ctx):
    """Train-mode clean logits and the adversarial batch, sharing a forward pass when possible."""
    a, m = ctx.cfg.attack, ctx.params
    share = m.clean == "start" and a.train_mode
    res = ctx.attack(model, x, y, keep_start_logits=share)
    if share:
        logits_clean = res.logits_start
    else:
        start = res.x_start if m.clean == "start" else x
        logits_clean = model(start)
    return logits_clean, res.x_adv


@register(
    "advlc",
    lam="> 0",
    paper_lam=(0.55, 0.4),
    params=AdvLCParams,
    lam_error="AdvLC needs lambda > 0 (paper: 0.55 with FGSM-N, 0.4 with PGD10)",
    doc="AdvLC: adversarial CE + lambda * top-N |f(x+delta) - f(x)| over the batch, / M (Eq. 16).",
)
def advlc(model, x, y, ctx):
    logits_clean, x_adv = clean_and_adv(model, x, y, ctx)
    logits_adv = model(x_adv)
    ce_sum = F.cross_entropy(logits_adv, y, reduction="sum")
    reg = advlc_penalty(logits_adv, logits_clean, ctx.params.top_n)
    loss = (ce_sum + ctx.lam * reg) / x.shape[0]
    return loss, {"logits": logits_adv, "reg": reg.detach() / x.shape[0]}
