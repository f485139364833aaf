"""The machine's processes as psutil sees them: how many CPU cores advlc's processes may use (what
the launcher divides among concurrent CPU runs and what `advlc bench concurrency` measures with),
and when a process started (how a recorded pid is told from a recycled one; the run process records
its own). Kept apart from engine.paths, which config imports under bare interpreters
(tests/test_py310.py), because it needs psutil."""

from __future__ import annotations

import os

import psutil


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask, capped at the physical cores
    (torch's own default; hyper-threads do not speed up its kernels)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, psutil.cpu_count(logical=False) or n))


def create_time(pid: int) -> float | None:
    """The create time of process `pid`, or None when there is none."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError, TypeError):
        return None
