"""The stable Python API (docs/API.md): the paper's functions, for notebooks and other code.

    from engine.api import pgd, advlc_penalty, input_gradient_norm, hessian_spectrum

Their import path and signatures stay as docs/API.md writes them (tests/test_architecture.py
checks both); the modules behind them are internal and may move.
"""

from engine.nn.attacks import pgd
from engine.nn.methods.advlc import advlc_penalty
from engine.nn.metrics.gradients import input_gradient_norm
from engine.nn.metrics.hessian import hessian_spectrum

__all__ = ["pgd", "advlc_penalty", "input_gradient_norm", "hessian_spectrum"]
