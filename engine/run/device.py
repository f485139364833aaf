"""The torch device a run asks for (`train.device`), checked against this machine."""

from __future__ import annotations

import torch

from engine.errors import UserError


def pick_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; a CUDA device on a machine without CUDA is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device = {name!r}: CUDA is not available on this machine (use cpu)")
    return dev
