"""Consistency regularisation (Tack, Yu, Jeong, Kim, Hwang & Shin 2022, "Consistency
regularization for adversarial robustness", AAAI), added to adversarial training as in
Li & Spratling 2023, Sec. 5.1 (lambda = 50, temperature 1).

    v1, v2  = two random augmentations of the batch
    a1, a2  = attack([v1; v2])                       one attack on the stacked 2B batch
    loss    = CE_mean(f([a1; a2]), [y; y]) + lambda * mean_i JS(softmax(f(a1_i)/T), softmax(f(a2_i)/T))

As the authors' code (alinlab/consistency-adversarial, training/adv_train/
adv_train_consistency.py and training/__init__.py): the two views are concatenated into one
batch for the attack and for a single forward pass (so BatchNorm sees both views together),
the CE is the mean over all 2B examples, and the JS divergence is averaged over the B pairs
('batchmean', log of the mean distribution clamped at 1e-8). T = `[method.consistency] temperature`.

The views: the trainer hands the method a batch already augmented with the run's
`data.crop_padding` / `data.flip`; that is view 1, and view 2 is a fresh augmentation
(`engine.nn.datasets.augment`, same settings, global RNG) of the un-augmented batch when the trainer
provides it as `ctx.extras["x_unaugmented"]` (exactly the original's two independent
views), else of the given batch. In that fallback view 2 is an augmentation of view 1: the
views differ by a crop offset of at most `crop_padding` px (independent views: up to twice
that) and a flip with p = 0.5, and view 2 is shifted up to 2 * crop_padding px from the
original image. Without augmentation (digits: padding 0, no flip) the views are equal and the
JS term only sees the two attacks' randomness (FGSM-N noise, random starts).
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from engine.nn.datasets import as_float, augment
from engine.nn.methods import register
from engine.nn.methods.penalties import js_rows
from engine.sections import opt


@dataclass
class ConsistencyParams:
    """[method.consistency]: Consistency's own parameter."""

    temperature: float = opt(
        1.0,
        "Softmax temperature tau of the JS term, softmax(logits / tau) (the paper: 1; Tack et al. 2022: 0.5).",
        min=0.01,
        max=100.0,
    )
    FLAT_KEYS: ClassVar[dict[str, str]] = {"temperature": "temperature"}


@register(
    "consistency",
    lam="> 0",
    paper_lam=(50.0, 50.0),
    needs=("raw_batch", "doubled_batch"),
    params=ConsistencyParams,
    lam_error="Consistency needs lambda > 0 (paper: 50 with FGSM-N and with PGD10)",
    doc="Consistency (Tack et al. 2022): adversarial CE on two augmented views + lambda * JS between them.",
)
def consistency(model, x, y, ctx):
    d = ctx.cfg.data
    base = ctx.extras.get("x_unaugmented", x)
    x2 = as_float(augment(base, padding=d.crop_padding, flip=d.flip, generator=None))
    pair_adv = ctx.attack(model, torch.cat([x, x2]), torch.cat([y, y])).x_adv
    logits = model(pair_adv)
    ce = F.cross_entropy(logits, torch.cat([y, y]))
    logits1, logits2 = logits.chunk(2)
    reg = js_rows(logits1, logits2, ctx.params.temperature).mean()
    loss = ce + ctx.lam * reg
    return loss, {"logits": logits1, "reg": reg.detach()}
