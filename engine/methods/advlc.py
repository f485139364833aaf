"""Stable import path of AdvLC's penalty (docs/API.md); the code lives in `engine.nn.methods.advlc`."""

from engine.nn.methods.advlc import advlc_penalty

__all__ = ["advlc_penalty"]
