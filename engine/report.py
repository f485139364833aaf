"""Summaries of runs in the paper's terms: best/end/diff of clean and robust accuracy, IG, HS.

`best` is the epoch with the highest PGD robust accuracy on the test data (the paper's
checkpoint selection; ties go to the later epoch, as in the authors' code); `end` is the
last evaluated epoch; `diff` = best - end (the robust-overfitting gap).
"""

from __future__ import annotations

from statistics import fmean

from engine.rundir import RunDir


def best_and_end(epochs: list[dict]) -> tuple[dict | None, dict | None]:
    evald = [e for e in epochs if e.get("robust_acc") is not None]
    if not evald:
        return None, None
    best = max(evald, key=lambda e: (e["robust_acc"], e["epoch"]))
    return best, evald[-1]


def _diff(a, b):
    return None if a is None or b is None else a - b


def summary_from(config: dict, status: dict, epochs: list[dict]) -> dict:
    best, end = best_and_end(epochs)
    run = config.get("run", {})
    times = [e["time_s"] for e in epochs if e.get("time_s") is not None]
    out = {
        "label": run.get("label"),
        "preset": run.get("preset"),
        "seed": run.get("seed"),
        "state": status.get("state"),
        "epochs_done": len(epochs),
        "best_epoch": best["epoch"] if best else None,
        "clean_best": best["clean_acc"] if best else None,
        "clean_end": end["clean_acc"] if end else None,
        "robust_best": best["robust_acc"] if best else None,
        "robust_end": end["robust_acc"] if end else None,
        "ig": end.get("ig") if end else None,
        "hs": next((e["hs"] for e in reversed(epochs) if e.get("hs") is not None), None),
        "epoch_time_s": fmean(times) if times else None,
    }
    out["clean_diff"] = _diff(out["clean_best"], out["clean_end"])
    out["robust_diff"] = _diff(out["robust_best"], out["robust_end"])
    return out


def run_summary(rd: RunDir) -> dict:
    return {"id": rd.id, **summary_from(rd.config(), rd.status(), rd.epochs())}
