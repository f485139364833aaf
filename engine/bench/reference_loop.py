"""The plain reference loop: how the authors' code trains, kept as the baseline of the fast path.

Follows TreeLLi/Combating-RO-AdvLC (src/data/factory.py, src/utils/train.py `update`):

- data: a torchvision-style Dataset holding the images as uint8 HWC arrays (as
  `torchvision.datasets.CIFAR10` does in `.data` / `.targets`); `__getitem__` makes a PIL
  image and applies `T.Compose([RandomHorizontalFlip(), RandomCrop(size, padding=4), ToTensor()])`
  (the authors' order: flip, then crop), one image at a time on the CPU;
- a `DataLoader(batch_size=100, shuffle=True, pin_memory=..., num_workers=..., drop_last=True)`;
- per batch: `.to(device, non_blocking=True)`, the method's loss, `zero_grad`, `backward`,
  `step`, and the loss and accuracy read back to the host (`loss.item()`: the authors'
  AverageMeter), i.e. one host-device synchronisation per batch;
- fp32, NCHW, `model.train()`, no autocast, no compile.

The loss of each method is the same function (`engine.nn.methods`) in both loops, so the
reference differs from the fast path only in how data reach the model and in precision /
memory-format settings. `reference_step` and `engine.nn.fastpath.train_step` on the same batch
with the same seed give the same loss (tests/nn/test_fastpath.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["ReferenceDataset", "authors_transform", "make_loader", "reference_step", "train_epoch"]


def authors_transform(size: int, padding: int = 4, flip: bool = True):
    """The authors' training transform: RandomHorizontalFlip, RandomCrop(size, padding), ToTensor."""
    import torchvision.transforms as T

    steps = []
    if flip:
        steps.append(T.RandomHorizontalFlip())
    if padding > 0:
        steps.append(T.RandomCrop(size, padding=padding))
    steps.append(T.ToTensor())
    return T.Compose(steps)


def _to_hwc_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) uint8, or float in [0, 1] -> (N, H, W, C) uint8 numpy (C = 1: (N, H, W))."""
    x = x.detach().cpu()
    if x.dtype != torch.uint8:
        x = (x.float().clamp(0, 1) * 255.0).round().to(torch.uint8)
    a = x.permute(0, 2, 3, 1).contiguous().numpy()
    return a[..., 0] if a.shape[-1] == 1 else a


class ReferenceDataset(Dataset):
    """Images as torchvision's CIFAR10 keeps them (`data`: uint8 (N, H, W, C); `targets`: ints);
    each item is `transform(PIL image)`, target."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform=None):
        self.data = _to_hwc_uint8(x)
        self.targets = [int(v) for v in y.cpu().tolist()]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.data[i])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[i]


def make_loader(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 100,
    padding: int = 4,
    flip: bool = True,
    workers: int = 0,
    pin_memory: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """The authors' training DataLoader over images x (N, C, H, W; uint8 or float in [0, 1])."""
    ds = ReferenceDataset(x, y, authors_transform(int(x.shape[-1]), padding, flip))
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        pin_memory=pin_memory,
        num_workers=workers,
        drop_last=True,
        generator=generator,
        persistent_workers=workers > 0,
    )


def reference_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, method, ctx, x: torch.Tensor, y: torch.Tensor, device
) -> tuple[float, float]:
    """One step as the authors' `update` loop: move the batch, loss, SGD step, read back
    the loss and the accuracy (host sync). Returns (loss, accuracy) as Python floats."""
    x = x.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    loss, stats = method.loss(model, x, y, ctx)
    acc = (stats["logits"].detach().argmax(1) == y).float().mean().item()
    loss_value = loss.item()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss_value, acc


def train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, loader, method, ctx, device, max_batches: int | None = None
) -> dict:
    """One epoch (or its first `max_batches` batches) of the reference loop.

    Returns {"loss", "acc"} (sample means) and "batches"."""
    model.train()
    n = loss_sum = correct = 0.0
    batches = 0
    for x, y in loader:
        if max_batches is not None and batches >= max_batches:
            break
        loss, acc = reference_step(model, optimizer, method, ctx, x, y, device)
        loss_sum += loss * len(y)
        correct += acc * len(y)
        n += len(y)
        batches += 1
    return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1), "batches": batches}
