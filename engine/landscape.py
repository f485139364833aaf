"""Deprecated import path of IG and HS (kept for one release): import from `engine.api` (docs/API.md)."""

import warnings

from engine.api import hessian_spectrum, input_gradient_norm

warnings.warn(
    "engine.landscape is deprecated: import hessian_spectrum, input_gradient_norm from engine.api (docs/API.md)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["hessian_spectrum", "input_gradient_norm"]
