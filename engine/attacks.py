"""Stable import path of the attacks (docs/API.md); the code lives in `engine.nn.attacks`."""

from engine.nn.attacks import fgsm, fgsm_n, fgsm_rs, pgd, run_attack

__all__ = ["fgsm", "fgsm_n", "fgsm_rs", "pgd", "run_attack"]
