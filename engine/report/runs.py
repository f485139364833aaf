"""A run's data as the reports read it: config, status and every metrics table (`RunData`), the
paper's per-run numbers (`run_values`, `summary_from`), seconds per mini-batch, and which runs a
comparison is about (`select_runs`).

Per run: `best` is the epoch with the highest PGD robust accuracy on the run's selection split
(train.select_on: the test data, the paper's checkpoint selection, or the held-out validation
split; ties go to the later epoch, as in the authors' code); `end` is the last evaluated epoch;
`diff` = best - end (the robust-overfitting gap). With a validation split the test-selected best
is kept beside it (`robust_best_test`), an optimistic upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from statistics import fmean

from engine.errors import UserError
from engine.report.query import parse as parse_query
from engine.store.records import ConfigRecord, MetricRecord, RunRecord, Status
from engine.store.rundir import RunDir
from engine.store.alerts import robust_key
from engine.store.summary import best_and_end, last_value, summarize, summarize_epochs

# Training-set sizes, for seconds per batch when a record has no images_per_s.
TRAIN_SIZES = {"digits": 1437, "cifar10": 50000, "cifar100": 50000, "svhn": 73257, "tinyimagenet": 100000}


def _in_percent(v):
    """A fraction as a number of percent (the summary's unit), None kept."""
    return None if v is None else 100.0 * v


def seconds_saved(status: Status, epochs: list) -> float | None:
    """About how long the epochs an early stop left out would have taken: their number times the
    run's mean wall time per epoch (training + evaluation), None for a run that did not stop early."""
    stop = status.early_stop
    per_epoch = [
        (e.get("time_s") or 0.0) + (e.get("eval_time_s") or 0.0) for e in epochs if e.get("time_s") is not None
    ]
    if stop is None or not per_epoch:
        return None
    return stop.saved_epochs * fmean(per_epoch)


def summary_from(config: ConfigRecord, status: Status, epochs: list) -> dict:
    """One run's headline numbers (fractions, as stored), named as the reports name them: the index's
    summary of its epochs (engine.store.summary.summarize_epochs, best on the selection split)."""
    select_on = config.value("train.select_on") or "test"
    s = summarize_epochs(epochs, select_on)
    run, stop = config.run, status.early_stop
    return {
        "label": run.label,
        "preset": run.preset,
        "seed": run.seed,
        "state": status.state,
        "epochs_done": len(epochs),
        "best_epoch": s["best_epoch"],
        "clean_best": s["best_clean_acc"],
        "clean_end": s["end_clean_acc"],
        "robust_best": s["best_robust_acc"],
        "robust_end": s["end_robust_acc"],
        "select_on": select_on,
        "robust_best_test": s["test_best_robust_acc"],
        "best_epoch_test": s["test_best_epoch"],
        "val_robust_best": s["best_val_robust_acc"],
        "stopped_early_at": stop.epoch if stop else None,
        "epochs_saved": stop.saved_epochs if stop else None,
        "seconds_saved": seconds_saved(status, epochs),
        "stopped_early": stop.text() if stop else None,
        "ig": s["end_ig"],
        "hs": s["end_hs"],
        "epoch_time_s": s["epoch_time_s_mean"],
        "clean_diff": s["clean_diff"],
        "robust_diff": s["robust_diff"],
    }


def run_summary(rd: RunDir) -> dict:
    return {"id": rd.id, **summary_from(rd.config(), rd.status(), rd.epochs())}


@dataclass(eq=False)
class RunData:
    """One run as a comparison reads it: its effective config record, status and metrics tables."""

    rd: RunDir
    config: ConfigRecord
    status: Status
    epochs: list[MetricRecord]
    swa: list[MetricRecord]
    evals: list[MetricRecord]
    points: list[MetricRecord] = field(default_factory=list)  # experiment runs (Fig. 4, A.1)
    inferred_point: dict | None = None
    """The sweep point of a run that records none but was made with the swept key pinned
    (engine.report.rows.infer_points)."""

    @cached_property
    def config_json(self) -> dict:
        """The config as config.json's JSON (what engine.config.origin's functions read)."""
        return self.config.to_json()

    @property
    def experiment(self) -> str | None:
        """The experiment kind (fig4a, fig4b, fig4c, a1) of a post-hoc analysis run, else None."""
        return self.config.value("experiment.kind") or None

    @property
    def select_on(self) -> str:
        """The split that selects the run's best checkpoint (train.select_on; "test" for older runs)."""
        return self.config.value("train.select_on") or "test"

    @property
    def run(self) -> RunRecord:
        return self.config.run

    @property
    def state(self) -> str:
        return self.status.state

    @property
    def seed(self):
        return self.run.seed

    @property
    def point(self) -> dict:
        return dict(self.run.point) or dict(self.inferred_point or {})

    def has_evaluated(self, table: str = "epochs") -> bool:
        return any(e.get("robust_acc") is not None for e in self.records(table))

    def records(self, table: str) -> list:
        return {"swa": self.swa, "points": self.points, "evals": self.evals}.get(table, self.epochs)

    def progress(self) -> str:
        return f"epoch {len(self.epochs)}/{self.config.value('train.epochs')}"


def load_run(rd: RunDir) -> RunData:
    """Config, status and every metrics table of a run (metrics.json is read once)."""
    m = rd.metrics()
    return RunData(
        rd, rd.config(), rd.status(), m.get("epochs", []), m.get("swa", []), m.get("evals", []), m.get("points", [])
    )


# ----------------------------------------------------------------------------- time
def batches_per_epoch(config: ConfigRecord, rec=None) -> int | None:
    """Mini-batches per epoch: from the record's images_per_s * time_s, else data.n_train,
    else the dataset's known training-set size; None when none of those is known."""
    bs = config.value("train.batch_size")
    if not bs:
        return None
    if rec and rec.get("images_per_s") and rec.get("time_s"):
        seen = rec["images_per_s"] * rec["time_s"]
        if seen >= bs:
            return max(1, round(seen / bs))
    n = config.value("data.n_train") or 0
    size = TRAIN_SIZES.get(config.value("data.dataset"))
    if n and size:
        n = min(n, size)
    n = n or size
    return n // bs if n and n >= bs else None


def time_per_batch(config: ConfigRecord, epochs: list) -> float | None:
    """Mean over epochs of time_s / batches per epoch (None if any epoch can't be converted)."""
    vals = []
    for e in epochs:
        if e.get("time_s") is None:
            continue
        nb = batches_per_epoch(config, e)
        if nb is None:
            return None
        vals.append(e["time_s"] / nb)
    return fmean(vals) if vals else None


def time_per_epoch(epochs: list) -> float | None:
    vals = [e["time_s"] for e in epochs if e.get("time_s") is not None]
    return fmean(vals) if vals else None


# ----------------------------------------------------------------------------- one run's numbers
def _final_eval(run: RunData, ckpt: str, attack: str):
    """The run's evaluation of `ckpt` under `attack`: the one on the most images, then the latest."""
    recs = [
        (e.get("n") or 0, i, e)
        for i, e in enumerate(run.evals)
        if e.get("ckpt") == ckpt and e.get("attack") == attack and e.get("robust_acc") is not None
    ]
    return max(recs, key=lambda t: (t[0], t[1]))[2] if recs else None


def run_values(run: RunData, table: str = "epochs", ckpt_eval: str | None = None) -> dict:
    """One run's numbers in the table's units (accuracies in %); None where not available."""
    recs = run.records(table)
    best, end = best_and_end(recs, robust_key(run.select_on))
    test_best, _ = best_and_end(recs)
    out = {
        "clean_best": _in_percent(best.get("clean_acc")) if best else None,
        "clean_end": _in_percent(end.get("clean_acc")) if end else None,
        "robust_best": _in_percent(best.get("robust_acc")) if best else None,
        "robust_end": _in_percent(end.get("robust_acc")) if end else None,
        "robust_best_test": _in_percent(test_best["robust_acc"]) if test_best else None,
        "best_epoch": best["epoch"] if best else None,
        "ig": end.get("ig") if end else None,
        "hs": last_value(recs, "hs"),
        "time_batch": time_per_batch(run.config, run.epochs),
        "time_epoch": time_per_epoch(run.epochs),
        "evals": {},
    }
    if ckpt_eval:
        prefix = "swa_" if table == "swa" else ""
        for which in ("best", "end"):
            ev = _final_eval(run, prefix + which, ckpt_eval)
            out["evals"][which] = ev
            out[f"clean_{which}"] = _in_percent(ev.get("clean_acc")) if ev else None
            out[f"robust_{which}"] = _in_percent(ev.get("robust_acc")) if ev else None
    return out


# ----------------------------------------------------------------------------- selection
def select_runs(store, *, run_ids=None, preset=None, group=None, where: str | None = None) -> list[RunDir]:
    """The runs named by ids (or unique prefixes), a preset (or preset folder) and/or a group id
    (archived runs only when named by id), in creation order, each once, and of those the ones
    `where` (engine.report.query) selects; with only `where`, every run it selects. Unknown ids
    and empty selections raise UserError."""
    if not (run_ids or preset or group or where):
        raise UserError("nothing to compare: give run ids, --preset, --group or --where")
    chosen: dict[str, tuple] = {}
    if where and not (run_ids or preset or group):
        chosen = {d["id"]: (d.get("created") or 0, store.run_dir(d["id"])) for d in store.runs()}
    for ref in run_ids or []:
        rd = store.get(ref)
        chosen[rd.id] = (rd.config().run.created or 0, rd)
    for kind, value in (("preset", preset), ("group", group)):
        if not value:
            continue
        docs = store.runs(**{kind: value})
        if not docs:
            raise UserError(f"no runs of {kind} '{value}' in {store.home} (see `advlc runs`)")
        for d in docs:
            rd = store.run_dir(d["id"])
            if rd.exists():
                chosen[rd.id] = (d.get("created") or 0, rd)
    out = [rd for _, rd in sorted(chosen.values(), key=lambda t: (t[0], t[1].id))]
    if where:
        q = parse_query(where)
        docs = {d["id"]: d for d in store.index()}
        out = [
            rd
            for rd in out
            if q.matches(docs.get(rd.id) or summarize(rd), rd.config_json() if q.needs_config else None)
        ]
        if not out:
            raise UserError(f"--where {where!r}: no selected run matches")
    return out
