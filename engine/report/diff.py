"""`advlc diff RUN_A RUN_B`: what differs between two runs, and how they came out.

The resolved config is compared key by key (`section.key`), then where the numbers came from
(preset, sweep point, the `--set` overrides the run was made with, seed, code commit and
uncommitted-diff hash, torch/CUDA versions, device, host), and the headline metrics are shown
side by side whether or not they differ.
"""

from __future__ import annotations

from engine.config.origin import flat
from engine.store.records import ConfigRecord
from engine.store.rundir import RunDir
from engine.store.summary import summarize

RUN_KEYS = ("preset", "point", "overrides", "seed", "group")
"""What of config.json's run block is compared (`overrides`: the run's origin, as one text)."""
PROVENANCE_KEYS = ("commit", "dirty", "diff_sha256", "python", "torch", "cuda", "device_name", "host")
METRICS = (
    "state",
    "epoch",
    "best_epoch",
    "best_clean_acc",
    "end_clean_acc",
    "best_robust_acc",
    "end_robust_acc",
    "end_ig",
    "end_hs",
    "epoch_time_s_mean",
)


def _origin_values(cfg: ConfigRecord) -> dict:
    """{"run.preset": …, "provenance.commit": …}: the origin fields compared."""
    run = cfg.run
    values = {
        "preset": run.preset,
        "point": dict(run.point) or None,
        "overrides": (run.origin.text or "") if run.origin is not None else None,
        "seed": run.seed,
        "group": run.group,
    }
    prov = cfg.provenance.to_json() if cfg.provenance is not None else {}
    return {**{f"run.{k}": values[k] for k in RUN_KEYS}, **{f"provenance.{k}": prov.get(k) for k in PROVENANCE_KEYS}}


def diff_runs(a: RunDir, b: RunDir) -> dict:
    """{"runs": [id_a, id_b], "config": [(key, a, b)...], "origin": [...], "metrics": [...]}: config and
    origin rows only where the two differ, every headline metric."""
    ca, cb = a.config(), b.config()
    fa, fb = flat(ca.sections), flat(cb.sections)
    config = [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    oa, ob = _origin_values(ca), _origin_values(cb)
    origin = [(k, oa[k], ob[k]) for k in oa if oa[k] != ob[k]]
    sa, sb = summarize(a), summarize(b)
    metrics = [(k, sa.get(k), sb.get(k)) for k in METRICS]
    return {
        "runs": [a.id, b.id],
        "config": config,
        "origin": origin,
        "metrics": metrics,
        "labels": [sa.get("label"), sb.get("label")],
        "titles": [sa.get("title"), sb.get("title")],
    }
