"""What a run comes to: its best and end epochs, and the index document that lists it.

`best` is the epoch with the highest PGD robust accuracy on the selection split: the test data
(`train.select_on = "test"`, the paper's checkpoint selection; ties go to the later epoch, as in the
authors' code) or a validation split held out of the training set (`"val"`); `end` is the last
evaluated epoch. The index, the reports and the app all take best/end from `best_and_end`;
the run's log and the command line show an epoch record as `format_epoch`'s one line.
"""

from __future__ import annotations

from engine.errors import CorruptFile
from engine.store.alerts import catastrophic_event, overfitting_onset, robust_key
from engine.store.records import ConfigRecord, IndexRow, Meta, Shape, Status
from engine.store.rundir import RunDir

CORRUPT = "corrupt"
"""The state an index document shows for a run whose files cannot be read (never a run's own state)."""


def best_and_end(epochs: list[dict], key: str = "robust_acc") -> tuple[dict | None, dict | None]:
    """(best, end) records among those with a robust accuracy on the selection split (`key`:
    robust_acc, or val_robust_acc for train.select_on = "val"); (None, None) if none has one."""
    evald = [e for e in epochs if e.get(key) is not None]
    if not evald:
        return None, None
    best = max(evald, key=lambda e: (e[key], e["epoch"]))
    return best, evald[-1]


def last_value(records: list[dict], key: str):
    """The newest non-None value of `key` (HS is recorded on some epochs only)."""
    return next((r[key] for r in reversed(records) if r.get(key) is not None), None)


INDEX_VERSION = 3
"""The version of the index row's vocabulary; rows of an older version are rebuilt on read."""

SUMMARY_KEYS = (
    "best_epoch",
    "best_clean_acc",
    "best_robust_acc",
    "end_epoch",
    "end_clean_acc",
    "end_robust_acc",
    "clean_diff",
    "robust_diff",
    "end_ig",
    "end_hs",
    "epoch_time_s_last",
    "epoch_time_s_mean",
    "eval_time_s_mean",
    "best_val_robust_acc",
    "best_val_clean_acc",
    "test_best_epoch",
    "test_best_clean_acc",
    "test_best_robust_acc",
)
"""What `summarize_epochs` says of a table of epoch records, one key per quantity: `best` is the
epoch with the highest PGD robust accuracy, `end` the last evaluated one, `*_diff` = best - end,
`end_hs` the newest recorded HS, `epoch_time_s_*` the training time of an epoch, `eval_time_s_mean`
the per-epoch evaluation time (PGD, IG, HS on the test data) where it was recorded. With a validation
split (data.val_size), `best` is chosen on it when train.select_on = "val": `best_val_*` are its
validation accuracies and `test_best_*` the test-selected best, an optimistic upper bound shown
beside the honest one (always filled: equal to best_* when the test set selects)."""


def _diff(a, b):
    return None if a is None or b is None else a - b


def _mean(values):
    vals = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(vals) / len(vals) if vals else None


def summarize_epochs(epochs: list, select_on: str | None = "test") -> dict:
    """The SUMMARY_KEYS of one table of epoch records (`epochs`, or `swa` for the averaged model)."""
    best, end = best_and_end(epochs, robust_key(select_on))
    test_best, _ = best_and_end(epochs)
    out = {
        "best_epoch": best["epoch"] if best else None,
        "best_clean_acc": best.get("clean_acc") if best else None,
        "best_robust_acc": best.get("robust_acc") if best else None,
        "best_val_clean_acc": best.get("val_clean_acc") if best else None,
        "best_val_robust_acc": best.get("val_robust_acc") if best else None,
        "test_best_epoch": test_best["epoch"] if test_best else None,
        "test_best_clean_acc": test_best.get("clean_acc") if test_best else None,
        "test_best_robust_acc": test_best["robust_acc"] if test_best else None,
        "end_epoch": end["epoch"] if end else None,
        "end_clean_acc": end.get("clean_acc") if end else None,
        "end_robust_acc": end.get("robust_acc") if end else None,
        "end_ig": end.get("ig") if end else None,
        "end_hs": last_value(epochs, "hs"),
        "epoch_time_s_last": epochs[-1].get("time_s") if epochs else None,
        "epoch_time_s_mean": _mean(e.get("time_s") for e in epochs),
        "eval_time_s_mean": _mean(e.get("eval_time_s") for e in epochs),
    }
    out["clean_diff"] = _diff(out["best_clean_acc"], out["end_clean_acc"])
    out["robust_diff"] = _diff(out["best_robust_acc"], out["end_robust_acc"])
    return out


def summarize_records(rid: str, path, cfg: ConfigRecord, st: Status, tables: dict, meta: Meta) -> dict:
    """The summary of a run from its records: the one function behind the index, `advlc runs`,
    `show`, the app, compare, report and the TensorBoard export."""
    run = cfg.run
    epochs, swa = tables.get("epochs", []), tables.get("swa", [])
    select_on = cfg.value("train.select_on") or "test"
    key = robust_key(select_on)
    onset = overfitting_onset(epochs, key=key)
    collapse = catastrophic_event(epochs, key)
    stop = st.early_stop
    origin = run.origin
    doc = {
        "v": INDEX_VERSION,
        "id": rid,
        "preset": run.preset,
        "label": run.label,
        "method": cfg.value("method.name"),
        "attack": cfg.value("attack.name"),
        "dataset": cfg.value("data.dataset"),
        "arch": cfg.value("model.arch"),
        "seed": run.seed,
        "group": run.group,
        "point": dict(run.point),
        "overrides": list(origin.resolved) if origin else [],
        "overrides_text": (origin.text or "") if origin else "",
        "overrides_derived": bool(origin and origin.derived),
        "origin_known": origin is not None,
        "created": run.created,
        "state": st.state,
        "epoch": len(epochs),
        "epochs": cfg.value("train.epochs"),
        "overfit_epoch": onset["epoch"] if onset else None,
        "catastrophic_epoch": collapse[1]["epoch"] if collapse else None,
        "select_on": select_on,
        "stopped_early_at": stop.epoch if stop else None,
        "epochs_saved": stop.saved_epochs if stop else None,
        "updated": st.heartbeat or st.created,
        "error": st.error,
        "path": str(path),
        "title": meta.title or None,
        "tags": list(meta.tags),
        "note": (meta.note or "").strip().split("\n", 1)[0] or None,
        "archived": meta.archived,
    }
    doc.update(summarize_epochs(epochs, select_on))
    # the SWA model's own records (table `swa`, same keys), when the run averages weights
    doc.update(
        {
            f"swa_{k}": v
            for k, v in summarize_epochs(swa, select_on).items()
            if not k.startswith(("epoch_time", "eval_time"))
        }
    )
    return doc


def summarize(rd: RunDir) -> IndexRow:
    """The index document of a run, computed from its directory alone (state "corrupt", with
    the error, when one of its files cannot be read or has the wrong shape)."""
    try:
        cfg, st, tables, meta = rd.config(), rd.status(), rd.metrics(), rd.meta()
        return IndexRow.from_json(summarize_records(rd.id, rd.path, cfg, st, tables, meta))
    except CorruptFile as exc:
        error = str(exc)
    except Shape as exc:  # a config value the summary cannot hold ("epochs": "many")
        error = f"{rd.config_path}: has a wrong value: {exc}; run `advlc repair {rd.id}`"
    return IndexRow(
        {
            "v": INDEX_VERSION,
            "id": rd.id,
            "state": CORRUPT,
            "error": error,
            "path": str(rd.path),
            "epoch": 0,
            "tags": [],
            "archived": False,
        }
    )


def format_epoch(rec) -> str:
    """One log line per epoch."""

    def f(key, fmt):
        return "—" if rec.get(key) is None else fmt.format(rec[key])

    return (
        f"epoch {rec['epoch']:>3}  lr {rec['lr']:.4g}  train {rec['train_loss']:.4f}/{rec['train_acc']:.4f}  "
        f"clean {f('clean_acc', '{:.4f}')}  robust {f('robust_acc', '{:.4f}')}  IG {f('ig', '{:.4g}')}  "
        f"HS {f('hs', '{:.4g}')}  {rec['time_s']:.2f}s"
    )
