"""Where a run's numbers came from: code version, library versions, device, host."""

from __future__ import annotations

import hashlib
import platform
import socket
import subprocess
import sys

import torch

from engine.paths import CODE_ROOT


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(CODE_ROOT), *args], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.decode(errors="replace") if out.returncode == 0 else None


def code_version() -> dict:
    """The git commit of the code and a hash of its uncommitted diff (None outside git)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "diff_sha256": None}
    diff = _git("diff", "HEAD", "--", "engine", "tui", "presets") or ""
    return {
        "commit": commit.strip(),
        "dirty": bool(diff),
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def collect(device: torch.device) -> dict:
    return {
        **code_version(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": device_name(device),
        "host": socket.gethostname(),
    }
