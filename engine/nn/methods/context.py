"""What a method's loss gets besides the batch: the config, the epoch, the scheduled lambda,
the bound training attack and extras (teachers, the un-augmented batch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.nn.attacks import AttackResult, run_attack
from engine.sections import RunConfig


@dataclass
class StepContext:
    """What a method may use besides the batch."""

    cfg: RunConfig
    epoch: int  # 0-based
    lam: float  # lambda for this epoch (after the schedule)
    extras: dict = field(default_factory=dict)  # e.g. teacher models for KDSA

    @property
    def params(self) -> Any:
        """The method's own parameters (its `[method.<name>]` table), e.g. `ctx.params.top_n`."""
        return self.cfg.method.params

    def attack(self, model, x, y, keep_start_logits: bool = False) -> AttackResult:
        """Run the configured training attack on (x, y); see engine.nn.attacks.run_attack."""
        a = self.cfg.attack
        return run_attack(
            model,
            x,
            y,
            name=a.name,
            eps=a.eps,
            alpha=a.alpha,
            steps=a.steps,
            random_start=a.random_start,
            noise=a.noise,
            train_mode=a.train_mode,
            keep_start_logits=keep_start_logits,
        )
