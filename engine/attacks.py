"""Stable import path of PGD (docs/API.md); the code lives in `engine.nn.attacks`. Only what
docs/API.md declares stable is exported here (the other attacks are internal)."""

from engine.nn.attacks import pgd

__all__ = ["pgd"]
