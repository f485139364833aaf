"""Where advlc's code and its run store live, and the environment a launcher hands a run process:
what every layer may need."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

CODE_ROOT = Path(__file__).resolve().parent.parent
"""The folder holding engine/, tui/ and presets/ (a source checkout, or site-packages)."""


def default_home() -> Path:
    """The run store: $ADVLC_HOME, else ~/.advlc."""
    env = os.environ.get("ADVLC_HOME")
    return Path(env).expanduser() if env else Path.home() / ".advlc"


THREADS_ENV = "ADVLC_THREADS"
"""The CPU thread budget a launcher gives a run process (engine.run.process applies it)."""


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask, capped at the physical cores
    (torch's own default; hyper-threads do not speed up its kernels)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, psutil.cpu_count(logical=False) or n))
