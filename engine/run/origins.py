"""Origins for runs made before runs recorded how they were made.

A run created by this version carries `run.origin` in its config.json (engine.config.origin). A
run of an older store has none: `backfill_origins` derives it once, from the run's resolved
config against its preset's resolution (`engine.config.origin.derive`), and keeps it in the run's
runtime.json marked `derived` (config.json is never rewritten). A preset that can no longer be
loaded gives an origin with no overrides and `derived` set, so the work is not repeated. Reads
only JSON and presets: no torch.
"""

from __future__ import annotations

from engine.config import origin as O
from engine.errors import CorruptFile
from engine.store.index import Store
from engine.store.rundir import RunDir


def needs_origin(rd: RunDir) -> bool:
    """A readable run with no recorded or derived origin."""
    try:
        return rd.config().run.origin is None
    except CorruptFile:
        return False


def backfill_origins(store: Store, rds: list[RunDir] | None = None) -> int:
    """Derive and keep the origin of each run that has none (all runs whose index row says so,
    or `rds`); returns how many were derived."""
    if rds is None:
        rds = [
            store.run_dir(r["id"])
            for r in store.runs(archived=None)
            if r.get("origin_known") is False and r["state"] != "corrupt"
        ]
    todo = [rd for rd in rds if needs_origin(rd)]
    done = []
    cache: dict[str, dict | None] = {}
    for rd in todo:
        config = rd.config_json()
        key = O.config_key(config) + repr(rd.config().run.preset)
        if key not in cache:
            cache[key] = O.derive(config, store.home)
        origin = cache[key] or {
            "overrides": [],
            "resolved": {},
            "changed": {},
            "derived": True,
            "note": "the preset could not be loaded",
        }
        try:
            rd.update_runtime(origin=origin)
        except OSError:
            continue  # a read-only store: derived again next time
        done.append(rd)
    store.sync_many(done)
    return len(done)
