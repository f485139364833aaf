"""Evaluation of a model on held-out data: clean and PGD-k robust accuracy/loss, AV, IG.

The per-epoch evaluation follows the authors' code: eval mode, PGD with step eps/4 and no
random start, over the test set (or its first `n` images). Numbers stay on the device
until the end, where one `.tolist()` reads them all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.nn.attacks import model_mode, pgd


@torch.no_grad()
def _clean_sums(model, x, y, batch_size):
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size])
        loss += F.cross_entropy(out, y[i:i + batch_size], reduction="sum")
        correct += (out.argmax(1) == y[i:i + batch_size]).sum()
    return loss, correct


def _pgd_sums(model, x, y, *, eps, alpha, steps, batch_size):
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        xa = pgd(model, xb, yb, eps=eps, alpha=alpha, steps=steps)
        with torch.no_grad():
            out = model(xa)
        loss += F.cross_entropy(out, yb, reduction="sum")
        correct += (out.argmax(1) == yb).sum()
    return loss, correct


def evaluate(model, x, y, *, eps: float, alpha: float, steps: int, batch_size: int = 500,
             ig: bool = True) -> dict:
    """Clean and PGD-`steps` loss/accuracy (fractions), AV = robust_loss - clean_loss, IG."""
    from engine.nn.metrics.landscape import input_gradient_norm

    n = len(x)
    with model_mode(model, False):
        cl, cc = _clean_sums(model, x, y, batch_size)
        rl, rc = _pgd_sums(model, x, y, eps=eps, alpha=alpha, steps=steps, batch_size=batch_size)
        clean_loss, clean_correct, robust_loss, robust_correct = torch.stack(
            [cl, cc.to(cl.dtype), rl, rc.to(rl.dtype)]).tolist()
        out = {
            "clean_loss": clean_loss / n,
            "clean_acc": clean_correct / n,
            "robust_loss": robust_loss / n,
            "robust_acc": robust_correct / n,
        }
        out["av"] = out["robust_loss"] - out["clean_loss"]
        out["ig"] = input_gradient_norm(model, x, y, batch_size=batch_size) if ig else None
    return out
