"""Deprecated import path of PGD (kept for one release): import from `engine.api` (docs/API.md)."""

import warnings

from engine.api import pgd

warnings.warn(
    "engine.attacks is deprecated: import pgd from engine.api (docs/API.md)", DeprecationWarning, stacklevel=2
)

__all__ = ["pgd"]
