"""What a run comes to: its best and end epochs, and the index document that lists it.

`best` is the epoch with the highest PGD robust accuracy on the test data (the paper's
checkpoint selection; ties go to the later epoch, as in the authors' code) and `end` the last
evaluated epoch. The index, the reports and the app all take best/end from `best_and_end`;
the run's log and the command line show an epoch record as `format_epoch`'s one line.
"""

from __future__ import annotations

from engine.errors import CorruptFile
from engine.store.rundir import RunDir

CORRUPT = "corrupt"
"""The state an index document shows for a run whose files cannot be read (never a run's own state)."""


def best_and_end(epochs: list[dict]) -> tuple[dict | None, dict | None]:
    """(best, end) records among those with a robust accuracy; (None, None) if none has one."""
    evald = [e for e in epochs if e.get("robust_acc") is not None]
    if not evald:
        return None, None
    best = max(evald, key=lambda e: (e["robust_acc"], e["epoch"]))
    return best, evald[-1]


RO_POINTS = 0.025
"""How far (fraction of test robust accuracy; 0.025 = 2.5 points) below its best a robust accuracy
must be to count towards robust overfitting."""
RO_STREAK = 10
"""How many consecutive evaluated epochs that far below the best make robust overfitting."""


def overfitting_onset(epochs: list[dict], points: float = RO_POINTS, streak: int = RO_STREAK) -> dict | None:
    """The first epoch record at which robust overfitting has set in, or None.

    Looks only at records up to each epoch (so it can fire live): after the learning rate has been
    decayed once (robust overfitting is a post-decay effect; before it, test robust accuracy swings
    by several points while the model still improves), `streak` consecutive evaluated epochs with a
    robust accuracy at least `points` below the running best, while the training accuracy has risen
    since that best epoch (the model fits its adversarial training batches better and the test set
    worse). Tuned on the robust-overfitting showcase: fires for PGD-10 and FGSM-N AT on every seed,
    never for their AdvLC runs (docs/PRESETS.md).
    """
    lr0 = epochs[0].get("lr") if epochs else None
    best, run = None, 0
    for rec in epochs:
        if rec.get("robust_acc") is None:
            continue
        if best is None or rec["robust_acc"] >= best["robust_acc"]:
            best, run = rec, 0
            continue
        run = run + 1 if rec["robust_acc"] <= best["robust_acc"] - points + 1e-12 else 0
        decayed = lr0 is not None and rec.get("lr") is not None and rec["lr"] < lr0
        rose = rec.get("train_acc") is not None and best.get("train_acc") is not None \
            and rec["train_acc"] > best["train_acc"]
        if decayed and run >= streak and rose:
            return {**rec, "best_epoch": best["epoch"], "best_robust_acc": best["robust_acc"],
                    "best_train_acc": best["train_acc"]}
    return None


def last_value(records: list[dict], key: str):
    """The newest non-None value of `key` (HS is recorded on some epochs only)."""
    return next((r[key] for r in reversed(records) if r.get(key) is not None), None)


def summarize(rd: RunDir) -> dict:
    """The index document of a run, computed from its directory alone (state "corrupt", with
    the error, when one of its files cannot be read)."""
    try:
        cfg, st, tables, meta = rd.config(), rd.status(), rd.metrics(), rd.meta()
    except CorruptFile as exc:
        return {"id": rd.id, "state": CORRUPT, "error": str(exc), "path": str(rd.path), "epoch": 0}
    run = cfg.get("run", {})
    epochs, swa = tables.get("epochs", []), tables.get("swa", [])
    best, last = best_and_end(epochs)
    onset = overfitting_onset(epochs)
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
        "overfit_epoch": onset["epoch"] if onset else None,
        "epoch_time_s": epochs[-1].get("time_s") if epochs else None,
        "updated": st.get("heartbeat") or st.get("created"),
        "error": st.get("error"),
        "path": str(rd.path),
        "title": meta.get("title") or None,
        "tags": list(meta.get("tags") or []),
        "note": (meta.get("note") or "").strip().split("\n", 1)[0] or None,
        "archived": bool(meta.get("archived")),
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
