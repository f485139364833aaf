"""The one evaluation loop: per-sample loss and correctness of a model, on clean or attacked inputs.

Everything that measures accuracy or loss over a data set goes through `per_sample`: the
per-epoch clean / PGD-k evaluation (`evaluate`, the authors' protocol: eval mode, step eps/4,
no random start), adversarial vulnerability (`adversarial_vulnerability`, Eq. 2: PGD-20 loss
minus clean loss), the effectiveness of attacks (engine.nn.metrics.effectiveness) and the
final evaluation's AutoAttack counts (engine.run.final_eval). Numbers stay on the device until
the end, where one `.tolist()` reads them all; sums are taken in float64.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from engine.nn.attacks import model_mode, pgd
from engine.nn.metrics.batches import batches
from engine.nn.metrics.gradients import input_gradient_norm

Perturb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def per_sample(
    model, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500, perturb: Perturb | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE per sample in float64, correct per sample) of `model` on x, or on perturb(x_b, y_b)
    batch by batch. The model runs in the mode the caller set; the perturbation may need
    gradients, the measurement takes none."""
    losses, correct = [], []
    for s in batches(len(x), batch_size):
        xb, yb = x[s], y[s]
        if perturb is not None:
            xb = perturb(xb, yb)
        with torch.no_grad():
            out = model(xb)
        losses.append(F.cross_entropy(out, yb, reduction="none").double())
        correct.append(out.argmax(1) == yb)
    if not losses:
        return x.new_zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.bool, device=x.device)
    return torch.cat(losses), torch.cat(correct)


def pgd_perturb(model, *, eps: float, alpha: float, steps: int) -> Perturb:
    """The per-batch PGD-`steps` perturbation of the evaluations (no random start)."""
    return lambda xb, yb: pgd(model, xb, yb, eps=eps, alpha=alpha, steps=steps, random_start=False)


def clean_and_robust(model, x, y, *, eps: float, alpha: float, steps: int, batch_size: int = 500) -> dict:
    """Mean CE and accuracy (fractions) on x and on its PGD-`steps` examples, in eval mode."""
    n = len(x)
    if n == 0:
        raise ValueError("clean_and_robust: empty input")
    with model_mode(model, False):
        cl, cc = per_sample(model, x, y, batch_size=batch_size)
        rl, rc = per_sample(
            model, x, y, batch_size=batch_size, perturb=pgd_perturb(model, eps=eps, alpha=alpha, steps=steps)
        )
    clean_loss, clean_correct, robust_loss, robust_correct = torch.stack(
        [cl.sum(), cc.sum().double(), rl.sum(), rc.sum().double()]
    ).tolist()
    return {
        "clean_loss": clean_loss / n,
        "clean_acc": clean_correct / n,
        "robust_loss": robust_loss / n,
        "robust_acc": robust_correct / n,
    }


def evaluate(model, x, y, *, eps: float, alpha: float, steps: int, batch_size: int = 500, ig: bool = True) -> dict:
    """The per-epoch evaluation: clean and PGD-`steps` loss/accuracy (fractions),
    AV = robust_loss - clean_loss, and IG (None unless `ig`)."""
    out = clean_and_robust(model, x, y, eps=eps, alpha=alpha, steps=steps, batch_size=batch_size)
    out["av"] = out["robust_loss"] - out["clean_loss"]
    out["ig"] = input_gradient_norm(model, x, y, batch_size=batch_size) if ig else None
    return out


def adversarial_vulnerability(
    model, x, y, *, eps: float, steps: int = 20, alpha: float | None = None, batch_size: int = 500
) -> dict:
    """AV (Eq. 2): mean CE on PGD-`steps` examples (step alpha = eps/4 by default, no random
    start, eval mode) minus mean clean CE. Returns plain floats: clean_loss, adv_loss, av,
    clean_acc, adv_acc (one host sync)."""
    r = clean_and_robust(
        model, x, y, eps=eps, alpha=eps / 4 if alpha is None else alpha, steps=steps, batch_size=batch_size
    )
    return {
        "clean_loss": r["clean_loss"],
        "adv_loss": r["robust_loss"],
        "av": r["robust_loss"] - r["clean_loss"],
        "clean_acc": r["clean_acc"],
        "adv_acc": r["robust_acc"],
    }


def clean_loss_and_accuracy(model, x, y, *, batch_size: int = 500) -> tuple[float, float]:
    """Mean CE and accuracy on x, in eval mode (one host sync)."""
    with model_mode(model, False):
        losses, correct = per_sample(model, x, y, batch_size=batch_size)
    loss, acc = torch.stack([losses.mean(), correct.double().mean()]).tolist()
    return loss, acc
