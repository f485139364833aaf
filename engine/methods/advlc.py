"""Deprecated import path of AdvLC's penalty (kept for one release): import from `engine.api` (docs/API.md)."""

import warnings

from engine.api import advlc_penalty

warnings.warn(
    "engine.methods.advlc is deprecated: import advlc_penalty from engine.api (docs/API.md)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["advlc_penalty"]
