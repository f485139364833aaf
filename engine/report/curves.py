"""Per-epoch series over a row's runs (mean, sample std, n, the raw values) and what the figures
share to draw them: the moving average, the best-epoch mark, and a collector that keeps every
plotted point for the figure's CSV. Nothing here imports matplotlib."""

from __future__ import annotations

import csv
import re
import statistics
from pathlib import Path
from typing import Callable

from engine.report.rows import RowSpec
from engine.report.runs import RunData, load_run

SMOOTH = 5
BEST_MARK = "best"


def series(runs: list[RunData], key, table: str = "epochs", scale: float = 1.0) -> list[dict]:
    """Per epoch over runs: {"epoch", "mean", "std", "n", "values", "runs"} of records[key] * scale
    (epochs where no run has the key are left out; std is the sample std, None for n < 2).
    `key` is a record key, or a function of the record for derived values."""
    get = key if callable(key) else (lambda rec: rec.get(key))
    by_epoch: dict[int, list] = {}
    for r in runs:
        for rec in r.records(table):
            v = get(rec)
            if v is None or not isinstance(v, (int, float)) or rec.get("epoch") is None:
                continue
            by_epoch.setdefault(rec["epoch"], []).append((r.rd.id, v * scale))
    out = []
    for ep in sorted(by_epoch):
        vals = [v for _, v in by_epoch[ep]]
        out.append(
            {
                "epoch": ep,
                "mean": statistics.mean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else None,
                "n": len(vals),
                "values": vals,
                "runs": [rid for rid, _ in by_epoch[ep]],
            }
        )
    return out


def row_curves(store, table, key: str, scale: float | None = None) -> dict[str, list[dict]]:
    """For a Compare screen: the per-epoch mean/std of `key` for every row of `table`
    (accuracies scaled to % unless `scale` is given)."""
    if scale is None:
        scale = 100.0 if key.endswith("_acc") else 1.0
    out = {}
    for r in table.rows:
        runs = [load_run(store.run_dir(rid)) for rid in r.runs]
        out[r.name] = series(runs, key, r.table, scale)
    return out


# ----------------------------------------------------------------------------- figure data
def moving_average(values: list, window: int = SMOOTH) -> list:
    """Centred moving average over `window` points, shrinking at the ends; None entries are skipped."""
    half = window // 2
    out = []
    for i in range(len(values)):
        win = [v for v in values[max(0, i - half) : i + half + 1] if v is not None]
        out.append(sum(win) / len(win) if win else None)
    return out


def best_index(points: list[dict]) -> int | None:
    if not points:
        return None
    return max(range(len(points)), key=lambda i: (points[i]["mean"], points[i]["epoch"]))


def keys_of(specs: list[RowSpec]) -> set[str]:
    keys = set()
    for s in specs:
        for r in s.counted:
            for rec in r.records(s.table):
                keys.update(k for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    return keys


def first_key(keys: set[str], *cands: str) -> str | None:
    return next((k for k in cands if k in keys), None)


class Collector:
    """Plots series and keeps what it plotted as CSV rows."""

    def __init__(self, x_name: str = "epoch"):
        self.x_name = x_name
        self.rows: list[dict] = []

    def plot(
        self,
        ax,
        runs,
        key,
        *,
        table="epochs",
        label: str,
        row: str,
        panel: str,
        color,
        style="-",
        scale: float = 1.0,
        mark_best: bool = False,
        value: Callable | None = None,
        smooth: bool = True,
        points: list[dict] | None = None,
    ) -> bool:
        pts = points if points is not None else series(runs, value or key, table, scale)
        if not pts:
            return False
        xs = [p["epoch"] for p in pts]
        means = [p["mean"] for p in pts]
        stds = [p["std"] for p in pts]
        sm = moving_average(means) if smooth else means
        ss = moving_average(stds) if smooth else stds
        best = best_index(pts) if mark_best else None
        if smooth:
            ax.plot(xs, means, style, color=color, alpha=0.3, lw=0.8)
        ax.plot(xs, sm, style, color=color, lw=1.5, label=label, marker="o" if len(xs) == 1 else None, ms=3)
        if any(s is not None for s in ss):
            lo = [m - (s or 0.0) for m, s in zip(sm, ss)]
            hi = [m + (s or 0.0) for m, s in zip(sm, ss)]
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)
        if best is not None:
            ax.plot([xs[best]], [means[best]], marker="*", color=color, ms=9, mec="black", mew=0.5, zorder=5)
            ax.axvline(xs[best], color=color, ls=":", lw=0.8)
        kname = key if isinstance(key, str) else getattr(key, "__name__", "value")
        for i, p in enumerate(pts):
            self.rows.append(
                {
                    "panel": panel,
                    "series": label,
                    "row": row,
                    "key": kname,
                    self.x_name: p["epoch"],
                    "mean": p["mean"],
                    "std": p["std"],
                    "n": p["n"],
                    "smoothed": sm[i],
                    "smoothed_std": ss[i],
                    "marked": BEST_MARK if i == best else "",
                    "values": ";".join(repr(v) for v in p["values"]),
                    "runs": ";".join(p["runs"]),
                }
            )
        return True

    def write(self, path: Path) -> None:
        cols = [
            "panel",
            "series",
            "row",
            "key",
            self.x_name,
            "mean",
            "std",
            "n",
            "smoothed",
            "smoothed_std",
            "marked",
            "values",
            "runs",
        ]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
            w.writeheader()
            for r in self.rows:
                w.writerow(
                    {k: ("" if r[k] is None else (repr(r[k]) if isinstance(r[k], float) else r[k])) for k in cols}
                )


def training(specs: list[RowSpec]) -> list[RowSpec]:
    """The rows of training runs that have counted runs."""
    return [s for s in specs if s.counted and s.table == "epochs"]


EFF_NAMES = {
    "eff_pgd10": "PGD10 Eff.",
    "eff_fgsm": "FGSM Eff.",
    "eff_fgsm_n": "FGSM-N Eff.",
    "eff_train": "training attack Eff.",
    "train_adv_eff": "Train Adv. Eff.",
}


def agg(runs, kind, x_key, y_key, scale=1.0, where=None):
    """Experiment points of `kind` grouped by x: mean ± std over runs (and repeated points)."""
    by_x: dict = {}
    for r in runs:
        for rec in r.points:
            if rec.get("kind") != kind or rec.get(x_key) is None or rec.get(y_key) is None:
                continue
            if where and any(rec.get(k) != v for k, v in where.items()):
                continue
            by_x.setdefault(rec[x_key], []).append((r.rd.id, rec[y_key] * scale))
    out = []
    for x in sorted(by_x):
        vals = [v for _, v in by_x[x]]
        out.append(
            {
                "epoch": x,
                "mean": statistics.mean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else None,
                "n": len(vals),
                "values": vals,
                "runs": [rid for rid, _ in by_x[x]],
            }
        )
    return out


def pgd_points(runs, ckpt, key, scale):
    """Final evaluations pgdN of one checkpoint as points over N (A.1 without an a1 experiment)."""
    by_steps: dict = {}
    for r in runs:
        for e in r.evals:
            m = re.fullmatch(r"pgd(\d+)", str(e.get("attack")))
            if not m or e.get("ckpt") != ckpt or e.get(key) is None:
                continue
            by_steps.setdefault(int(m.group(1)), {})[r.rd.id] = e[key] * scale  # latest per run
    out = []
    for st in sorted(by_steps):
        d = by_steps[st]
        vals = list(d.values())
        out.append(
            {
                "epoch": st,
                "mean": statistics.mean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else None,
                "n": len(vals),
                "values": vals,
                "runs": list(d),
            }
        )
    return out
