"""Stochastic weight averaging (Izmailov et al. 2018), as used by KDSA (Chen et al. 2021) and
with AdvLC in Table 1 of the paper.

    n-th update (n = 0, 1, ...):   avg <- avg + (w - avg) / (n + 1)

so after k updates every parameter of the averaged model is the equal-weight mean of the k
snapshots (the first update copies w). This is the reference code's
`moving_average(swa_model, model, 1 / (swa_n + 1))`.

Buffers: BatchNorm running statistics are *not* averaged; after each update they are
re-estimated by `update_bn` (a pass over clean training batches in train mode with a
cumulative-average momentum: the reference `bn_update`, = torch.optim.swa_utils.update_bn
for equal batch sizes). Every other buffer (none in the shipped architectures) is copied
from the latest snapshot. BN's `num_batches_tracked` counts the re-estimation batches.

`SWA.state_dict()` holds the averaged model's state_dict and n, so a resumed run continues
the average exactly; the averaged model's own state_dict has the plain model's keys, so
`swa_best.pt` / `swa_end.pt` load into `build_model(...)` like `best.pt`.

In a run (engine.run.process._train, config `[swa]`):
- updates at the end of 0-based epochs start, start + every, ... (paper: start 50, every 1);
- BN data: clean (non-adversarial) training images with the run's training augmentation
  (crop/flip as in [data]), shuffled, full batches of train.batch_size, all of them or the
  first `bn_batches`; like the reference, which passes its (augmented) train loader. The
  batches come from a generator seeded by (train.seed, epoch), so turning SWA on leaves the
  main model's training, and its records, bit-for-bit unchanged;
- after each update the SWA model is evaluated exactly like the main model (same test
  images, PGD, IG, HS schedule; skipped when the main evaluation is, except that the last
  update is always evaluated); its records go to metrics.json table `swa` with the keys of
  `epochs` (train_loss/train_acc/images_per_s None; time_s = seconds of update + BN pass);
- checkpoints: `swa_best.pt` (highest SWA PGD robust accuracy, later epoch on ties) and
  `swa_end.pt` (after the latest update), each {"model", "epoch", "n", "robust_acc",
  "clean_acc"}; `last.pt["swa"]` = {"model", "n", "best_robust_acc"} for exact resume.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


def bn_modules(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def update_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm's running mean/var from `batches` (inputs only).

    Running statistics are reset (mean 0, var 1) and each batch of size b after n samples
    is folded in with momentum b / (n + b), so the result is the sample-weighted average of
    the per-batch statistics (train-mode forward: each BN normalises with its batch's own
    statistics, as during training). For one batch holding all the data this is the exact
    mean and (unbiased) variance of the data. The model's mode and the BN momenta are
    restored. Returns the number of images used (0 when the model has no BatchNorm, in which
    case `batches` is not consumed).
    """
    bns = bn_modules(model)
    if not bns:
        return 0
    was_training = model.training
    momenta = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
    model.train()
    n = 0
    try:
        for x in batches:
            b = x.shape[0]
            for m in bns:
                m.momentum = b / (n + b)
            model(x)
            n += b
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        model.train(was_training)
    return n


class SWA:
    """An equal-weight running average of a model's parameters.

    `SWA(model)` keeps a private copy of `model` (same architecture and device, eval mode);
    `update(model)` folds the current parameters in; `average` is the averaged network.
    """

    def __init__(self, model: nn.Module):
        self.average = copy.deepcopy(model)
        for p in self.average.parameters():
            p.requires_grad_(False)
        self.average.eval()
        self.n = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> int:
        """avg <- avg + (w - avg) / (n + 1); non-BN-statistics buffers copied; returns the new n."""
        src = dict(model.named_parameters())
        for name, p_avg in self.average.named_parameters():
            w = src[name].detach()
            if self.n == 0:
                p_avg.copy_(w)
            else:
                p_avg.add_(w.to(p_avg.dtype) - p_avg, alpha=1.0 / (self.n + 1))
        bn_stats = {
            f"{mod_name}.{b}" if mod_name else b
            for mod_name, m in self.average.named_modules()
            if isinstance(m, _BatchNorm)
            for b in ("running_mean", "running_var", "num_batches_tracked")
        }
        src_buf = dict(model.named_buffers())
        for name, b_avg in self.average.named_buffers():
            if name not in bn_stats and name in src_buf:
                b_avg.copy_(src_buf[name])
        self.n += 1
        return self.n

    def state_dict(self) -> dict:
        return {"model": self.average.state_dict(), "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.average.load_state_dict(state["model"])
        self.n = int(state["n"])
        self.average.eval()


def is_update_epoch(cfg_swa, epoch: int) -> bool:
    """Does the end of 0-based `epoch` update the average? (epoch >= start, every `every`.)"""
    return bool(cfg_swa.enabled) and epoch >= cfg_swa.start and (epoch - cfg_swa.start) % cfg_swa.every == 0


def last_update_epoch(cfg_swa, epochs: int) -> int | None:
    """The last epoch < `epochs` that updates the average (None if none does)."""
    if not cfg_swa.enabled or cfg_swa.start >= epochs:
        return None
    return cfg_swa.start + (epochs - 1 - cfg_swa.start) // cfg_swa.every * cfg_swa.every
