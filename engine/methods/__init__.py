"""Stable import path of the training methods (docs/API.md); the code lives in `engine.nn.methods`."""
