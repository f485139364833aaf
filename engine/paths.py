"""Where advlc's code and its run store live, and the environment a launcher hands a run process:
what every layer may need."""

from __future__ import annotations

import os
from pathlib import Path

CODE_ROOT = Path(__file__).resolve().parent.parent
"""The folder holding engine/, tui/ and presets/ (a source checkout, or site-packages)."""


def default_home() -> Path:
    """The run store: $ADVLC_HOME, else ~/.advlc."""
    env = os.environ.get("ADVLC_HOME")
    return Path(env).expanduser() if env else Path.home() / ".advlc"


THREADS_ENV = "ADVLC_THREADS"
"""The CPU thread budget a launcher gives a run process (engine.run.process applies it)."""
