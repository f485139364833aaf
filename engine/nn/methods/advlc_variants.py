"""AdvLC with other distance measures (Li & Spratling 2023, Sec. 5 and 5.5, Table 3).

Same frame as `advlc` (Eq. 16, Algorithm 1), only L_reg changes:

    loss = (sum_i CE(f(x_i + delta), y_i) + lambda * L_reg) / M

with the clean logits from `engine.nn.methods.advlc.clean_and_adv` (train mode, not detached,
shared with the attack's first forward pass when `clean = "start"`, each variant's one
parameter, `[method.advlc_l1] clean = "x"` etc.). With
D = f(x + delta) - f(x) (raw logits, B x C), P = softmax(f(x)), Q = softmax(f(x + delta)):

    advlc_l1       L_reg = sum_ij |D_ij|              (all w = 1, Eq. 15 with N = B*C)
    advlc_sql2     L_reg = sum_ij D_ij^2              (w = o: the squared l2 norm)
    advlc_kl       L_reg = sum_i KL(P_i || Q_i)       clean || adversarial, as TRADES (Zhang et
                   al. 2019): the clean prediction is the reference distribution the adversarial
                   one must match. Both branches carry gradient, so the direction only decides
                   which side the log-ratio is weighted by (the clean one).
    advlc_js       L_reg = sum_i JS(P_i, Q_i)         (symmetric; natural log)
    advlc_nuclear  L_reg = ||D||_*                    the nuclear norm of the whole batch matrix

All are sums over the batch (the division by M is the frame's), so KL/JS enter as their batch
mean. Table 3 does not state the strengths used; the quick presets give digits values.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F

from engine.nn.methods import register
from engine.nn.methods.advlc import clean_and_adv
from engine.nn.methods.penalties import js_rows, kl_rows, nuclear_norm
from engine.sections import opt


@dataclass
class VariantParams:
    """[method.advlc_<variant>]: the clean branch, as AdvLC's (`[method.advlc] clean`)."""

    clean: str = opt(
        "start",
        "The clean logits: 'start' shares the attack's first forward pass (f(x) for FGSM/PGD, "
        "f(x~) for FGSM-N, as in the authors' code); 'x' adds a separate forward pass on x.",
        choices=("start", "x"),
    )
    FLAT_KEYS: ClassVar[dict[str, str]] = {"clean": "clean"}


PENALTIES = {
    "l1": lambda adv, clean: (adv - clean).abs().sum(),
    "sql2": lambda adv, clean: (adv - clean).pow(2).sum(),
    "kl": lambda adv, clean: kl_rows(clean, adv).sum(),
    "js": lambda adv, clean: js_rows(clean, adv).sum(),
    "nuclear": lambda adv, clean: nuclear_norm(adv - clean),
}
"""L_reg of each variant, from (adversarial logits, clean logits)."""


def _frame(model, x, y, ctx, penalty):
    """(sum_i CE(f(x_i + delta), y_i) + lambda * L_reg) / M, AdvLC's frame with another L_reg."""
    logits_clean, x_adv = clean_and_adv(model, x, y, ctx)
    logits_adv = model(x_adv)
    reg = penalty(logits_adv, logits_clean)
    m = x.shape[0]
    total = (F.cross_entropy(logits_adv, y, reduction="sum") + ctx.lam * reg) / m
    return total, {"logits": logits_adv, "reg": reg.detach() / m}


@register(
    "advlc_l1",
    lam="> 0",
    params=VariantParams,
    lam_error="advlc_l1 needs lambda > 0 (Table 3 does not state it; AdvLC itself uses 0.55 with FGSM-N)",
    doc="AdvLC variant (Table 3): adversarial CE + lambda * sum |f(x+delta) - f(x)| (all w = 1), / M.",
)
def advlc_l1(model, x, y, ctx):
    return _frame(model, x, y, ctx, PENALTIES["l1"])


@register(
    "advlc_sql2",
    lam="> 0",
    params=VariantParams,
    lam_error="advlc_sql2 needs lambda > 0 (Table 3 does not state it; AdvLC itself uses 0.55 with FGSM-N)",
    doc="AdvLC variant (Table 3): adversarial CE + lambda * sum (f(x+delta) - f(x))^2 (w = o), / M.",
)
def advlc_sql2(model, x, y, ctx):
    return _frame(model, x, y, ctx, PENALTIES["sql2"])


@register(
    "advlc_kl",
    lam="> 0",
    params=VariantParams,
    lam_error="advlc_kl needs lambda > 0 (Table 3 does not state it; AdvLC itself uses 0.55 with FGSM-N)",
    doc="AdvLC variant (Table 3): adversarial CE + lambda * sum_i KL(softmax f(x) || softmax f(x+delta)), / M.",
)
def advlc_kl(model, x, y, ctx):
    return _frame(model, x, y, ctx, PENALTIES["kl"])


@register(
    "advlc_js",
    lam="> 0",
    params=VariantParams,
    lam_error="advlc_js needs lambda > 0 (Table 3 does not state it; AdvLC itself uses 0.55 with FGSM-N)",
    doc="AdvLC variant (Table 3): adversarial CE + lambda * sum_i JS(softmax f(x), softmax f(x+delta)), / M.",
)
def advlc_js(model, x, y, ctx):
    return _frame(model, x, y, ctx, PENALTIES["js"])


@register(
    "advlc_nuclear",
    lam="> 0",
    params=VariantParams,
    lam_error="advlc_nuclear needs lambda > 0 (Table 3 does not state it; AdvLC itself uses 0.55 with FGSM-N)",
    doc="AdvLC variant (Table 3): adversarial CE + lambda * nuclear norm of the B x C logit-difference matrix, / M.",
)
def advlc_nuclear(model, x, y, ctx):
    return _frame(model, x, y, ctx, PENALTIES["nuclear"])
