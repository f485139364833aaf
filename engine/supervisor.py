"""Creating runs and (later) launching, stopping, resuming and reconciling them.

The CLI and the app call only this layer to start or stop work; it writes run directories
through `RunDir` and the index through `Store`.
"""

from __future__ import annotations

import dataclasses
import secrets
import time

from engine.config import RunConfig
from engine.rundir import RunDir
from engine.store import Store


def create_runs(store: Store, preset: str, cfg: RunConfig, *, seeds: list[int] | None = None,
                group: str | None = None) -> list[RunDir]:
    """Create one queued run directory per seed (sharing a group id when more than one)."""
    seeds = seeds if seeds else [cfg.train.seed]
    if group is None and len(seeds) > 1:
        group = f"g{secrets.token_hex(3)}"
    out = []
    for seed in seeds:
        c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
        config = c.to_dict()
        config["run"] = {"preset": preset, "label": cfg.label, "seed": seed, "group": group,
                         "created": time.time()}
        out.append(store.create_run(config))
    return out
