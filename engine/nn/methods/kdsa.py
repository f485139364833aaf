"""KDSA: adversarial training with knowledge distillation from a standard-trained and an
adversarially-trained teacher (Chen et al. 2021, "Robust overfitting may be mitigated by
properly learned smoothening", ICLR), usually with SWA ([swa], paper: from epoch 50).

Original configuration (VITA-Group/Alleviate-Robust-Overfitting, `train_epoch_adv_dual_teacher`):

    loss = (1 - a_std - a_adv) * CE(f(x_adv), y)
           + a_std * T^2 * KL(softmax(t_std(x_adv) / T) || softmax(f(x_adv) / T))
           + a_adv * T^2 * KL(softmax(t_adv(x_adv) / T) || softmax(f(x_adv) / T))

with T = 2, a_std = 0.1, a_adv = 0.6 (so the CE weight is 0.3), each term a batch mean, the
teachers in eval mode on the student's adversarial example, without gradient. The original
code writes the KD term as the soft-target cross-entropy -sum_j p_t log p_s, which is the KL
above plus the teacher's entropy: a constant for the student, so the gradients and the
training are identical; the KL form makes the logged loss 0 when the student matches.
The attack is the configured training attack (the original: PGD-10; the paper also pairs
KDSA with FGSM-N). Teachers come from teacher runs (engine/launch/plan.py) via
`ctx.extras["teachers"]`.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from engine.errors import UserError
from engine.nn.methods import register
from engine.sections import opt


@dataclass
class KDSAParams:
    """[method.kdsa]: the distillation's temperature and weights, and which checkpoint of each
    teacher run it distils from (a `<role>_checkpoint` per teacher role, read by engine.launch.plan)."""

    temperature: float = opt(
        2.0,
        "Distillation temperature T (Chen et al. 2021 code: 2); the KD terms are scaled by T^2.",
        min=1e-6,
        max=1000.0,
    )
    alpha_std: float = opt(
        0.1,
        "Weight of the KD term towards the standard-trained teacher (original code: coef_kd1 = 0.1). "
        "The CE weight is 1 - alpha_std - alpha_adv (original: 0.3).",
        min=0.0,
        max=1.0,
    )
    alpha_adv: float = opt(
        0.6,
        "Weight of the KD term towards the adversarially-trained teacher (original code: coef_kd2 = 0.6).",
        min=0.0,
        max=1.0,
    )
    standard_checkpoint: str = opt(
        "end",
        "Which checkpoint of the standard teacher run: 'end' (the last epoch; the original uses the "
        "best-clean-accuracy model, which for standard training is ~ the end) or 'best' (highest PGD robust "
        "accuracy).",
        choices=("end", "best"),
    )
    adversarial_checkpoint: str = opt(
        "best",
        "Which checkpoint of the adversarial teacher run: 'best' (highest PGD robust accuracy, the "
        "original's early-stopped RA-best teacher) or 'end'.",
        choices=("best", "end"),
    )
    FLAT_KEYS: ClassVar[dict[str, str]] = {
        "kd_temperature": "temperature",
        "kd_alpha_std": "alpha_std",
        "kd_alpha_adv": "alpha_adv",
        "kd_std_checkpoint": "standard_checkpoint",
        "kd_adv_checkpoint": "adversarial_checkpoint",
    }

    def problem(self) -> str | None:
        """The CE weight 1 - alpha_std - alpha_adv must not be negative."""
        if self.alpha_std + self.alpha_adv > 1.0 + 1e-12:
            return (
                f"method.kdsa.alpha_std + method.kdsa.alpha_adv = {self.alpha_std + self.alpha_adv:g}: "
                f"must be <= 1 (the CE weight is 1 - their sum; original: 0.1 + 0.6)"
            )
        return None


def kd_term(logits_student: torch.Tensor, logits_teacher: torch.Tensor, T: float) -> torch.Tensor:
    """T^2 * mean_i KL(softmax(t_i / T) || softmax(s_i / T))."""
    log_p_s = F.log_softmax(logits_student / T, dim=1)
    log_p_t = F.log_softmax(logits_teacher / T, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (T * T)


def kdsa_loss(logits_adv, y, t_std_logits, t_adv_logits, *, T: float, a_std: float, a_adv: float):
    ce = F.cross_entropy(logits_adv, y)
    kd_std = kd_term(logits_adv, t_std_logits, T)
    kd_adv = kd_term(logits_adv, t_adv_logits, T)
    return (1.0 - a_std - a_adv) * ce + a_std * kd_std + a_adv * kd_adv, kd_std, kd_adv


@register(
    "kdsa",
    teachers=("standard", "adversarial"),
    params=KDSAParams,
    doc="KDSA (Chen et al. 2021): (1-a_s-a_a) CE(f(x_adv)) + T^2 [a_s KL(t_std||f) + a_a KL(t_adv||f)] "
    "at temperature T, teachers from teacher runs; pair with [swa].",
)
def kdsa(model, x, y, ctx):
    teachers = ctx.extras.get("teachers") or {}
    if "standard" not in teachers or "adversarial" not in teachers:
        raise UserError(
            "method 'kdsa' needs its standard and adversarial teachers (a [teachers] table in the "
            "preset, resolved to finished teacher runs)"
        )
    p = ctx.params
    x_adv = ctx.attack(model, x, y).x_adv
    logits_adv = model(x_adv)
    with torch.no_grad():
        t_std = teachers["standard"](x_adv)
        t_adv = teachers["adversarial"](x_adv)
    loss, kd_std, kd_adv = kdsa_loss(logits_adv, y, t_std, t_adv, T=p.temperature, a_std=p.alpha_std, a_adv=p.alpha_adv)
    return loss, {"logits": logits_adv, "kd_std": kd_std.detach(), "kd_adv": kd_adv.detach()}
