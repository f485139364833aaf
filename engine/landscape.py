"""Stable import path of the landscape metrics (docs/API.md); the code lives in `engine.nn.metrics`.
Only what docs/API.md declares stable is exported here."""

from engine.nn.metrics.gradients import input_gradient_norm
from engine.nn.metrics.hessian import hessian_spectrum

__all__ = ["hessian_spectrum", "input_gradient_norm"]
