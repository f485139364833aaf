"""`advlc diff RUN_A RUN_B`: what differs between two runs, and how they came out.

The resolved config is compared key by key (`section.key`), then where the numbers came from
(preset, sweep point, seed, code commit and uncommitted-diff hash, torch/CUDA versions, device,
host), and the headline metrics are shown side by side whether or not they differ.
"""

from __future__ import annotations

from engine.store.rundir import RunDir
from engine.store.summary import summarize

SECTIONS = ("data", "model", "attack", "method", "train", "eval", "swa", "experiment")
ORIGIN = (("run", "preset"), ("run", "point"), ("run", "seed"), ("run", "group"), ("provenance", "commit"),
          ("provenance", "dirty"), ("provenance", "diff_sha256"), ("provenance", "python"), ("provenance", "torch"),
          ("provenance", "cuda"), ("provenance", "device_name"), ("provenance", "host"))
METRICS = ("state", "epoch", "best_epoch", "best_clean_acc", "end_clean_acc", "best_robust_acc", "end_robust_acc",
           "ig", "hs", "epoch_time_s")


def _flat(config: dict, sections) -> dict:
    return {f"{s}.{k}": v for s in sections for k, v in (config.get(s) or {}).items()}


def diff_runs(a: RunDir, b: RunDir) -> dict:
    """{"runs": [id_a, id_b], "config": [(key, a, b)...], "origin": [...], "metrics": [...]}: config and
    origin rows only where the two differ, every headline metric."""
    ca, cb = a.config(), b.config()
    fa, fb = _flat(ca, SECTIONS), _flat(cb, SECTIONS)
    config = [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    origin = []
    for section, key in ORIGIN:
        va, vb = (ca.get(section) or {}).get(key), (cb.get(section) or {}).get(key)
        if va != vb:
            origin.append((f"{section}.{key}", va, vb))
    sa, sb = summarize(a), summarize(b)
    metrics = [(k, sa.get(k), sb.get(k)) for k in METRICS]
    return {"runs": [a.id, b.id], "config": config, "origin": origin, "metrics": metrics,
            "labels": [sa.get("label"), sb.get("label")], "titles": [sa.get("title"), sb.get("title")]}
