"""Creating runs and (later) launching, stopping, resuming and reconciling them.

The CLI and the app call only this layer to start or stop work; it writes run directories
through `RunDir` and the index through `Store`.
"""

from __future__ import annotations

import secrets
import time

from engine.presets import PlannedRun
from engine.rundir import RunDir
from engine.store import Store


def create_runs(store: Store, planned: list[PlannedRun], *, group: str | None = None) -> list[RunDir]:
    """Create one queued run directory per planned run (sharing a group id when several)."""
    if group is None and len(planned) > 1:
        group = f"g{secrets.token_hex(3)}"
    out = []
    for p in planned:
        config = p.cfg.to_dict()
        config["run"] = {"preset": p.preset, "label": p.cfg.label, "seed": p.seed, "group": group,
                         "point": p.point, "created": time.time()}
        out.append(store.create_run(config))
    return out
