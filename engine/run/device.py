"""The torch device a run asks for (`train.device`), checked against this machine, and its CPU threads."""

from __future__ import annotations

import os

import torch

from engine.errors import UserError
from engine.paths import THREADS_ENV


def pick_device(name: str | None, what: str = "train.device") -> torch.device:
    """auto (or empty) -> cuda when available, else cpu; a name that is not cpu, cuda or cuda:N, or a
    CUDA device on a machine without CUDA, is a UserError naming `what` (the key or the option)."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"{what} = {name!r}: must be auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"{what} = {name!r}: must be auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{what} = {name!r}: CUDA is not available on this machine (use cpu)")
    return dev


def apply_threads(requested: int = 0) -> str | None:
    """Set torch's intra-op threads: `train.threads` when > 0, else the launcher's budget
    ($ADVLC_THREADS), else leave torch's default. Returns the log line, or None when nothing was set."""
    env = os.environ.get(THREADS_ENV, "")
    n, why = (requested, "train.threads") if requested else (int(env) if env.isdigit() else 0, "launcher budget")
    if n <= 0:
        return None
    torch.set_num_threads(n)
    return f"CPU threads: {n} ({why})"
