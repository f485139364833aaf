"""Where a run's numbers came from: code version, library versions, device, host."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch

from engine.paths import CODE_ROOT


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(CODE_ROOT), *args], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.decode(errors="replace") if out.returncode == 0 else None


def _is_checkout() -> bool:
    """CODE_ROOT is itself the top of a git work tree (a source checkout), not a folder inside
    someone else's repository (an installed advlc in site-packages of a `.venv/` in a project)."""
    top = _git("rev-parse", "--show-toplevel")
    if not top:
        return False
    try:
        return Path(top.strip()).resolve() == CODE_ROOT.resolve()
    except OSError:
        return False


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version("advlc")
    except importlib.metadata.PackageNotFoundError:
        return None


def code_version() -> dict:
    """The git commit of the code and a hash of its uncommitted diff, when the code is a git
    checkout; otherwise (an installed wheel) commit None and the installed advlc version."""
    if not _is_checkout():
        return {"commit": None, "dirty": None, "diff_sha256": None, "version": _installed_version()}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "diff_sha256": None, "version": _installed_version()}
    diff = _git("diff", "HEAD", "--", "engine", "tui", "presets") or ""
    return {
        "commit": commit.strip(),
        "dirty": bool(diff),
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None,
        "version": _installed_version(),
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
