"""What a run comes to: its best and end epochs, and the index document that lists it.

`best` is the epoch with the highest PGD robust accuracy on the test data (the paper's
checkpoint selection; ties go to the later epoch, as in the authors' code) and `end` the last
evaluated epoch. The index, the reports and the app all take best/end from `best_and_end`;
the run's log and the command line show an epoch record as `format_epoch`'s one line.
"""

from __future__ import annotations

from engine.store.files import read_json, table_rows
from engine.store.rundir import RunDir


def best_and_end(epochs: list[dict]) -> tuple[dict | None, dict | None]:
    """(best, end) records among those with a robust accuracy; (None, None) if none has one."""
    evald = [e for e in epochs if e.get("robust_acc") is not None]
    if not evald:
        return None, None
    best = max(evald, key=lambda e: (e["robust_acc"], e["epoch"]))
    return best, evald[-1]


def last_value(records: list[dict], key: str):
    """The newest non-None value of `key` (HS is recorded on some epochs only)."""
    return next((r[key] for r in reversed(records) if r.get(key) is not None), None)


def summarize(rd: RunDir) -> dict:
    """The index document of a run, computed from its directory alone."""
    cfg = rd.config()
    run = cfg.get("run", {})
    st = rd.status()
    data = read_json(rd.metrics_path, {}) or {}
    epochs, swa = table_rows(data, "epochs"), table_rows(data, "swa")
    best, last = best_and_end(epochs)
    doc = {
        "id": rd.id,
        "preset": run.get("preset"),
        "label": run.get("label"),
        "method": cfg.get("method", {}).get("name"),
        "attack": cfg.get("attack", {}).get("name"),
        "dataset": cfg.get("data", {}).get("dataset"),
        "arch": cfg.get("model", {}).get("arch"),
        "seed": run.get("seed"),
        "group": run.get("group"),
        "created": run.get("created"),
        "state": st.get("state", "queued"),
        "epoch": len(epochs),
        "epochs": cfg.get("train", {}).get("epochs"),
        "best_epoch": best["epoch"] if best else None,
        "best_robust_acc": best["robust_acc"] if best else None,
        "best_clean_acc": best["clean_acc"] if best else None,
        "end_robust_acc": last["robust_acc"] if last else None,
        "end_clean_acc": last["clean_acc"] if last else None,
        "ig": last.get("ig") if last else None,
        "hs": last_value(epochs, "hs"),
        "epoch_time_s": epochs[-1].get("time_s") if epochs else None,
        "updated": st.get("heartbeat") or st.get("created"),
        "error": st.get("error"),
        "path": str(rd.path),
    }
    # the SWA model's own records (table `swa`, same keys), when the run averages weights
    swa_best, swa_last = best_and_end(swa)
    doc.update({
        "swa_best_epoch": swa_best["epoch"] if swa_best else None,
        "swa_best_robust_acc": swa_best["robust_acc"] if swa_best else None,
        "swa_best_clean_acc": swa_best["clean_acc"] if swa_best else None,
        "swa_end_robust_acc": swa_last["robust_acc"] if swa_last else None,
        "swa_end_clean_acc": swa_last["clean_acc"] if swa_last else None,
        "swa_ig": swa_last.get("ig") if swa_last else None,
        "swa_hs": last_value(swa, "hs"),
    })
    return doc


def format_epoch(rec: dict) -> str:
    """One log line per epoch."""
    def f(key, fmt):
        return "—" if rec.get(key) is None else fmt.format(rec[key])

    return (f"epoch {rec['epoch']:>3}  lr {rec['lr']:.4g}  train {rec['train_loss']:.4f}/{rec['train_acc']:.4f}  "
            f"clean {f('clean_acc', '{:.4f}')}  robust {f('robust_acc', '{:.4f}')}  IG {f('ig', '{:.4g}')}  "
            f"HS {f('hs', '{:.4g}')}  {rec['time_s']:.2f}s")
