"""Fig. 4a, "randomly modified models": the landscape of copies of the checkpoint with noisy parameters."""

from __future__ import annotations

import copy
from typing import Iterator

import torch

from engine.errors import UserError
from engine.run.analyses.common import Context, each_point, landscape


def check(cfg, where: str) -> None:
    x = cfg.experiment.params
    if not x.values and not x.random_values:
        raise UserError(f"{where}: experiment.fig4a.values is empty: give the grid of s values")


def grid(cfg) -> list[dict]:
    """[experiment.fig4a] values, then random_values draws s ~ U(0, value_max) seeded from train.seed."""
    x = cfg.experiment.params
    vals = [float(v) for v in x.values]
    if x.random_values:
        g = torch.Generator().manual_seed(cfg.train.seed)
        vals += (torch.rand(x.random_values, generator=g, dtype=torch.float64) * x.value_max).tolist()
    return [{"index": i, "s": v} for i, v in enumerate(vals)]


def add_parameter_noise(model, s: float, *, mode: str = "absolute", seed: int = 0):
    """A copy of `model` with every parameter perturbed by U(-s, s) noise (mode "absolute") or
    multiplied by 1 + U(-s, s) ("relative"); noise drawn on the CPU from `seed` (device-independent)."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            u = torch.rand(p.shape, generator=g, dtype=torch.float64)
            noise = ((2 * u - 1) * s).to(device=p.device, dtype=p.dtype)
            if mode == "absolute":
                p.add_(noise)
            elif mode == "relative":
                p.mul_(1 + noise)
            else:
                raise ValueError(f"noise mode {mode!r}")
    return m


def point(ctx: Context, pt: dict) -> dict:
    cfg = ctx.cfg
    m = add_parameter_noise(
        ctx.model, pt["s"], mode=cfg.experiment.params.noise, seed=cfg.train.seed * 1_000_003 + pt["index"]
    )
    m.eval()
    return landscape(ctx, m)


def records(ctx: Context, pts: list[dict], done: set) -> Iterator[dict]:
    return each_point(ctx, pts, done, point)
