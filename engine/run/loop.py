"""The training loop: epochs of SGD on a method's loss over on-device batches, and nothing else.

Read top to bottom: the epoch's learning rate (`lr_at`, a piecewise-constant schedule), its
batches (shuffled, cropped and flipped on the device), one SGD step of the method's loss per
batch, and the epoch's training loss and accuracy read back once. Whoever calls `train` owns
the rest through two callbacks: `on_batch` (progress) and `on_epoch` (evaluation, records,
checkpoints, status; engine.run.trainer). The loop never touches a file.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from engine.errors import UserError
from engine.nn.fastpath import autocast, epoch_stream, train_step
from engine.nn.methods import lam_at
from engine.nn.methods.context import StepContext


class Diverged(UserError):
    """A non-finite training loss: one line, which a caller with its own knobs may reword."""


@dataclass
class EpochResult:
    """What one epoch of training measured."""

    epoch: int  # 0-based
    lr: float
    train_loss: float  # mean of the method's loss over the epoch's images
    train_acc: float  # accuracy of stats["logits"] (the adversarial batch, for adversarial training)
    time_s: float  # training seconds of the epoch (the device synchronised)
    images: int


def lr_at(tcfg, epoch: int) -> float:
    """Piecewise-constant schedule: lr * gamma ** (number of milestones <= epoch)."""
    return tcfg.lr * tcfg.lr_gamma ** sum(1 for m in tcfg.lr_milestones if epoch >= m)


def train(
    model,
    optimizer,
    method,
    data,
    cfg,
    *,
    device: torch.device,
    generator: torch.Generator,
    start_epoch: int = 0,
    extras: dict | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
    on_epoch: Callable[[EpochResult], bool | None] | None = None,
) -> int:
    """Train `model` with `method` (a registered Method) from `start_epoch` to cfg.train.epochs.

    `data` is an engine.nn.datasets.Dataset on `device`; `generator` draws the batch order and
    the augmentation; `extras` reach the method as ctx.extras (teachers; the un-augmented
    batch for methods that declare `raw_batch`). A non-finite training loss is a UserError.
    `on_epoch` returning True ends training after that epoch (early stopping). Returns the number
    of epochs trained to (the last trained epoch + 1).
    """
    t, d = cfg.train, cfg.data
    extras = {} if extras is None else extras
    raw_batch = "raw_batch" in method.needs
    n_batches = len(data.train_x) // t.batch_size
    for epoch in range(start_epoch, t.epochs):
        lr = lr_at(t, epoch)
        for g in optimizer.param_groups:
            g["lr"] = lr
        ctx = StepContext(cfg=cfg, epoch=epoch, lam=lam_at(cfg, epoch), extras=extras)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        t0 = time.perf_counter()
        stream = epoch_stream(
            data.train_x,
            data.train_y,
            batch_size=t.batch_size,
            padding=d.crop_padding,
            flip=d.flip,
            generator=generator,
        )
        for i, (xb, yb, idx) in enumerate(stream):
            if raw_batch:
                extras["x_unaugmented"] = data.train_x[idx]
            loss, stats = train_step(model, optimizer, method, ctx, xb, yb, amp=lambda: autocast(cfg, device))
            loss_sum += loss.detach() * len(yb)
            correct += (stats["logits"].detach().argmax(1) == yb).sum()
            seen += len(yb)
            if on_batch is not None:
                on_batch(epoch, i + 1, n_batches)
        train_loss, train_correct = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        time_s = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise Diverged(
                f"training diverged at epoch {epoch} (train loss {train_loss}); lower method.lam or train.lr"
            )
        if on_epoch is not None and on_epoch(
            EpochResult(epoch, lr, train_loss / seen, train_correct / seen, time_s, seen)
        ):
            return epoch + 1
    return t.epochs
