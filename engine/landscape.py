"""Stable import path of the landscape metrics (docs/API.md); the code lives in `engine.nn.metrics`."""

from engine.nn.metrics.gradients import input_gradient_norm
from engine.nn.metrics.hessian import hessian_spectrum, hs_metric

__all__ = ["hessian_spectrum", "hs_metric", "input_gradient_norm"]
