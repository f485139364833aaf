"""Caveats: configs that are valid but probably not what was meant.

Validation (`schema.resolve`) refuses what cannot run. A caveat is a config that runs but
silently drops part of the experiment, e.g. an override that moves `train.epochs` below an lr
milestone: the decay never happens, and without a decay there is no robust overfitting to see.
`advlc preset show`, `advlc run` and the Presets screen print each caveat as one line.
"""

from __future__ import annotations

from engine.config.schema import RunConfig


def caveats(cfg: RunConfig) -> list[str]:
    """One line per part of `cfg` that will never take effect."""
    lines: list[str] = []
    epochs = cfg.train.epochs
    milestones = cfg.train.lr_milestones
    late = [m for m in milestones if m >= epochs]
    if late and len(late) == len(milestones):
        lines.append(
            f"train.epochs = {epochs} with train.lr_milestones = {milestones}: the lr never decays "
            f"(robust overfitting shows after the first decay)"
        )
    elif late:
        lines.append(
            f"train.epochs = {epochs} with train.lr_milestones = {milestones}: the decay"
            f"{'s' if len(late) > 1 else ''} at epoch {', '.join(map(str, late))} never happen"
            f"{'' if len(late) > 1 else 's'}"
        )
    if cfg.swa.enabled and cfg.swa.start >= epochs:
        lines.append(
            f"train.epochs = {epochs}: SWA starts at epoch {cfg.swa.start} (swa.start), so no average is ever taken"
        )
    return lines
