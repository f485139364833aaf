"""The registry of training objectives.

Each module in this package defines one objective and registers it under its paper name
with `@register(...)`. A method is a function

    loss(model, x, y, ctx) -> (loss, stats)

where `x` is the (augmented) float batch in [0, 1], `ctx` a `StepContext` (config, epoch,
scheduled lambda, a bound attack), `loss` the scalar to back-propagate and `stats` a dict
of tensors (no host sync) with at least `logits`: the outputs the training accuracy is
measured on. Adding a method is one new file here plus a preset; nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable


from engine.errors import UserError

TRAIN_ATTACKS = ("fgsm", "fgsm_rs", "fgsm_n", "pgd")


@dataclass
class StepContext:
    """What a method may use besides the batch."""

    cfg: Any                      # RunConfig
    epoch: int                    # 0-based
    lam: float                    # lambda for this epoch (after the schedule)
    extras: dict = field(default_factory=dict)   # e.g. teacher models for KDSA

    def attack(self, model, x, y, keep_start_logits: bool = False):
        """Run the configured training attack on (x, y); see engine.nn.attacks.run_attack."""
        from engine.nn.attacks import run_attack

        a = self.cfg.attack
        return run_attack(model, x, y, name=a.name, eps=a.eps, alpha=a.alpha, steps=a.steps,
                          random_start=a.random_start, noise=a.noise, train_mode=a.train_mode,
                          keep_start_logits=keep_start_logits)


@dataclass
class Method:
    name: str
    fn: Callable
    doc: str
    fixed_attack: str | None = None          # plain methods: the attack their name implies
    attacks: tuple[str, ...] = TRAIN_ATTACKS  # attacks a regulariser combines with
    validate: Callable = lambda cfg, where: None

    def loss(self, model, x, y, ctx: StepContext):
        return self.fn(model, x, y, ctx)


METHODS: dict[str, Method] = {}


def register(name: str, *, doc: str, fixed_attack: str | None = None,
             attacks: tuple[str, ...] = TRAIN_ATTACKS, validate: Callable | None = None):
    """Decorator: register `fn(model, x, y, ctx) -> (loss, stats)` under `name`."""

    def deco(fn):
        if name in METHODS:
            raise RuntimeError(f"method {name!r} registered twice")
        METHODS[name] = Method(name, fn, doc, fixed_attack, attacks,
                               validate or (lambda cfg, where: None))
        return fn

    return deco


def needs_positive_lam(label: str | None, paper: str):
    """A validator rejecting lambda <= 0 in one line that names the paper's strength.

    `label` names the method in the message (None: the configured method name)."""

    def validate(cfg, where):
        if cfg.method.lam <= 0:
            raise UserError(f"{where}: method.lam = {cfg.method.lam}: {label or cfg.method.name} "
                            f"needs lambda > 0 ({paper})")

    return validate


def get_method(name: str) -> Method:
    _load_all()
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown method {name!r} (known: {', '.join(sorted(METHODS))})") from None


def lam_at(cfg, epoch: int) -> float:
    """The scheduled regularisation strength at 0-based `epoch`."""
    m = cfg.method
    if m.lam_schedule == "linear":
        return m.lam * (epoch + 1) / cfg.train.epochs
    return m.lam


_loaded = False


def _load_all():
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_load_all()
