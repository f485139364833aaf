"""Stable import path of the landscape metrics (docs/API.md); the code lives in `engine.nn.metrics`."""

from engine.nn.metrics.landscape import hessian_spectrum, hs_metric, input_gradient_norm

__all__ = ["hessian_spectrum", "hs_metric", "input_gradient_norm"]
