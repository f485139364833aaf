"""The paper's figures (Li & Spratling 2023, Figs 1-3, A.1, A.2) drawn from what the run store holds.

Every figure is written as PNG and PDF, and the data it plots as CSV beside it (one row per
x value - an epoch, or PGD steps for A.1 - per series). What is drawn:

- each series is the mean over the row's runs (seeds) of one record key per epoch; the raw
  mean is a faint line, the smoothed mean a solid one (a centred moving average over 5
  points, shrinking at the ends, like the paper's "smoothed with a moving average over 5
  epochs"), and ± one sample standard deviation over the seeds (smoothed the same way) is
  shaded;
- the best epoch (highest mean per-epoch robust accuracy, unsmoothed; ties: later epoch) is
  marked with a star and a dotted line, and flagged `best` in the CSV's `marked` column;
- keys that no run recorded are skipped; a figure with nothing to draw is not written, and
  the reason is returned (the report lists it).

Figures (key names as engine.run.epoch_metrics and engine.run.experiments record them):

    fig_accuracy        clean and robust test accuracy per epoch, all rows (SWA rows too); dashed:
                        train_clean_acc / train_adv_acc (else train_acc) where recorded
    fig1_landscape      Fig. 1: loss (clean_loss; test_adv_loss20 else robust_loss; test_av20 else av),
                        IG and HS per training scheme; test solid, train_* dashed
    fig2_gap            Fig. 2: adversarial-loss gap test - train (test_adv_loss20 - train_adv_loss) per
                        row (sweep points are rows); one panel per swept key set
    fig3_effectiveness  Fig. 3: HS, IG (train_* preferred) and eff_fgsm, eff_fgsm_n, eff_pgd10, eff_train
    fig4_perturbed      Fig. 4: from fig4a/b/c experiment runs (`points` table): (a) effectiveness against
                        HS, one point per noisy model; (b)/(c) HS and effectiveness against p
    figA1_pgd_steps     A.1: from a1 experiment runs, accuracy and loss of PGD-k against k (train solid,
                        test dashed); without one, from final evaluations pgdN of one checkpoint
    figA2_hs            A.2: HS against gradient alignment (ga) and HS of ReLU vs softplus runs

Experiment-figure points are not smoothed (x is not an epoch); their CSV has `x` (or
`pgd_steps`) in place of `epoch`.

matplotlib is imported inside the functions (Agg backend), so importing this module is cheap.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engine.report.tables import RowSpec, series

SMOOTH = 5
BEST_MARK = "best"


@dataclass
class FigureResult:
    name: str
    title: str
    caption: str
    files: list[Path] = field(default_factory=list)     # png, pdf
    csv: Path | None = None
    skipped: str | None = None                          # why it was not produced


# ----------------------------------------------------------------------------- data helpers
def moving_average(values: list, window: int = SMOOTH) -> list:
    """Centred moving average over `window` points, shrinking at the ends; None entries are skipped."""
    half = window // 2
    out = []
    for i in range(len(values)):
        win = [v for v in values[max(0, i - half): i + half + 1] if v is not None]
        out.append(sum(win) / len(win) if win else None)
    return out


def _best_index(points: list[dict]) -> int | None:
    if not points:
        return None
    return max(range(len(points)), key=lambda i: (points[i]["mean"], points[i]["epoch"]))


def _keys(specs: list[RowSpec]) -> set[str]:
    keys = set()
    for s in specs:
        for r in s.counted:
            for rec in r.records(s.table):
                keys.update(k for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    return keys


def _first(keys: set[str], *cands: str) -> str | None:
    return next((k for k in cands if k in keys), None)


class _Collector:
    """Plots series and keeps what it plotted as CSV rows."""

    def __init__(self, x_name: str = "epoch"):
        self.x_name = x_name
        self.rows: list[dict] = []

    def plot(self, ax, runs, key, *, table="epochs", label: str, row: str, panel: str, color, style="-",
             scale: float = 1.0, mark_best: bool = False, value: Callable | None = None, smooth: bool = True,
             points: list[dict] | None = None) -> bool:
        pts = points if points is not None else series(runs, value or key, table, scale)
        if not pts:
            return False
        xs = [p["epoch"] for p in pts]
        means = [p["mean"] for p in pts]
        stds = [p["std"] for p in pts]
        sm = moving_average(means) if smooth else means
        ss = moving_average(stds) if smooth else stds
        best = _best_index(pts) if mark_best else None
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
            self.rows.append({
                "panel": panel, "series": label, "row": row, "key": kname, self.x_name: p["epoch"],
                "mean": p["mean"], "std": p["std"], "n": p["n"], "smoothed": sm[i], "smoothed_std": ss[i],
                "marked": BEST_MARK if i == best else "",
                "values": ";".join(repr(v) for v in p["values"]), "runs": ";".join(p["runs"])})
        return True

    def write(self, path: Path) -> None:
        cols = ["panel", "series", "row", "key", self.x_name, "mean", "std", "n", "smoothed", "smoothed_std",
                "marked", "values", "runs"]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
            w.writeheader()
            for r in self.rows:
                w.writerow({k: ("" if r[k] is None else (repr(r[k]) if isinstance(r[k], float) else r[k]))
                            for k in cols})


# ----------------------------------------------------------------------------- style
STYLE = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 150, "savefig.dpi": 150,
    "savefig.bbox": "tight", "lines.linewidth": 1.5, "pdf.fonttype": 42,
}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _colors(specs: list[RowSpec]) -> dict[str, str]:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    return {s.name: palette[i % len(palette)] for i, s in enumerate(specs)}


# ----------------------------------------------------------------------------- figures
def _training(specs):
    return [s for s in specs if s.counted and s.table == "epochs"]


_TRAIN_CURVE = {"clean_acc": (("train_clean_acc", "clean accuracy on the first eval.extra_samples training images"),
                              ("train_acc", "accuracy on the training batches as trained (the training attack's examples)")),
                "robust_acc": (("train_adv_acc", "PGD-20 accuracy on the first eval.extra_samples training images"),
                               ("train_robust_acc", "robust accuracy on training images"))}


def _fig_accuracy(specs, plt, colors):
    specs = [s for s in specs if s.counted and s.table in ("epochs", "swa")]
    keys = _keys(specs)
    if "robust_acc" not in keys and "clean_acc" not in keys:
        return None, None, "no run recorded clean_acc or robust_acc"
    col = _Collector()
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8), layout="constrained")
    used = []
    for ax, key, title in ((axes[0], "clean_acc", "Clean accuracy (%)"), (axes[1], "robust_acc", "Robust accuracy (%)")):
        train = next(((k, what) for k, what in _TRAIN_CURVE[key] if k in keys), None)
        for s in specs:
            c = colors[s.name]
            col.plot(ax, s.counted, key, table=s.table, label=s.name, row=s.name, panel=title, color=c,
                     scale=100.0, mark_best=(key == "robust_acc"))
            if train and s.table == "epochs" and col.plot(ax, s.counted, train[0], label=f"{s.name} (train)",
                                                          row=s.name, panel=title, color=c, style="--", scale=100.0):
                if f"{train[0]}: {train[1]}" not in used:
                    used.append(f"{train[0]}: {train[1]}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[1].legend(loc="best", frameon=False)
    if used:
        from matplotlib.lines import Line2D

        axes[0].legend([Line2D([], [], color="0.3"), Line2D([], [], color="0.3", ls="--")], ["test", "train"],
                       loc="lower right", frameon=False)
    caption = ("Clean and PGD robust accuracy on the test data per epoch, mean over seeds (faint: raw; solid: "
               "5-epoch moving average; shaded: ± std over seeds); star and dotted line: best epoch (highest "
               "mean robust accuracy)." + (" Dashed: " + "; ".join(used) + "." if used else ""))
    return fig, col, caption


# Fig. 1 loss panel: (name, test keys, train keys), the first key some run recorded wins (PGD-20 as the paper)
_LOSS = (("Clean loss", ("clean_loss",), ("train_clean_loss",)),
         ("Adv. loss", ("test_adv_loss20", "robust_loss"), ("train_adv_loss", "train_robust_loss")),
         ("AV", ("test_av20", "av"), ("train_av",)))


def _fig1(specs, plt, colors):
    specs = _training(specs)
    keys = _keys(specs)
    pick = lambda cands: next((k for k in cands if k in keys), None)  # noqa: E731
    panels = []
    loss = [(name, pick(te), pick(tr)) for name, te, tr in _LOSS]
    loss = [x for x in loss if x[1] or x[2]]
    if loss:
        panels.append(("Loss", loss))
    if "ig" in keys or "train_ig" in keys:
        panels.append(("IG", [("IG", pick(("ig",)), pick(("train_ig",)))]))
    if "hs" in keys or "train_hs" in keys:
        panels.append(("HS", [("HS", pick(("hs",)), pick(("train_hs",)))]))
    if not panels or not specs:
        return None, None, "no run recorded losses, IG or HS"
    col = _Collector()
    ncol = len(specs)
    # one y scale per row, so the schemes' IG and HS are compared by height, not by tick labels
    fig, axes = plt.subplots(len(panels), ncol, figsize=(2.6 * ncol + 0.6, 2.0 * len(panels)), squeeze=False,
                             sharey="row", layout="constrained")
    mcolors = ["#1f77b4", "#d62728", "#2ca02c"]
    for j, s in enumerate(specs):
        for i, (pname, lines) in enumerate(panels):
            ax = axes[i][j]
            for k, (name, test, train) in enumerate(lines):
                c = mcolors[k % 3] if len(lines) > 1 else colors[s.name]
                if test:
                    col.plot(ax, s.counted, test, label=f"{name} (test)", row=s.name, panel=pname, color=c)
                if train:
                    col.plot(ax, s.counted, train, label=f"{name} (train)", row=s.name, panel=pname, color=c,
                             style="--")
            if i == 0:
                ax.set_title(s.name)
            if j == 0:
                ax.set_ylabel(pname)
            if i == len(panels) - 1:
                ax.set_xlabel("epoch")
            if j == ncol - 1 and ax.get_legend_handles_labels()[0]:
                ax.legend(loc="best", frameon=False)
    src = ", ".join(f"{name}: {te or '—'} / {tr or '—'}" for name, te, tr in loss)
    caption = ("Fig. 1: loss, IG and HS per epoch for each training scheme on the test (solid) and training "
               "(dashed) data; AV = adversarial − clean loss. Each row shares its y axis across schemes. Lines "
               f"smoothed over 5 epochs (raw faint), ± std over seeds shaded. Keys (test / train): {src}.")
    return fig, col, caption


def _gap_fn(keys):
    """Test adversarial loss - train adversarial loss per record, from the keys that exist (Fig. 2)."""
    test = next((k for k in ("test_adv_loss20", "robust_loss") if k in keys), None)
    train = next((k for k in ("train_adv_loss", "train_robust_loss") if k in keys), None)
    if test is None:
        return None
    if train:
        def gap(rec):
            a, b = rec.get(test), rec.get(train)
            return None if a is None or b is None else a - b
        gap.__name__ = f"{test}-{train}"
        return gap
    if {"train_clean_loss", "train_av"} <= keys:
        def gap2(rec):
            a, b, c = rec.get(test), rec.get("train_clean_loss"), rec.get("train_av")
            return None if a is None or b is None or c is None else a - (b + c)
        gap2.__name__ = f"{test}-(train_clean_loss+train_av)"
        return gap2
    return None


def _fig2(specs, plt, colors):
    specs = _training(specs)
    gap = _gap_fn(_keys(specs))
    if gap is None:
        return None, None, ("needs the training-set adversarial loss per epoch (eval.extra = train_adv_loss, "
                            "as the quick/digits-fig1-* presets record), which no run recorded")
    groups: dict[tuple, list] = {}
    for s in specs:
        groups.setdefault(tuple(sorted(s.point)), []).append(s)
    col = _Collector()
    fig, axes = plt.subplots(1, len(groups), figsize=(3.4 * len(groups), 2.8), squeeze=False, layout="constrained")
    for ax, (swept, ss) in zip(axes[0], groups.items()):
        title = "sweep of " + ", ".join(swept) if swept else "adversarial-loss gap"
        for s in ss:
            col.plot(ax, s.counted, gap, label=s.name, row=s.name, panel=title, color=colors[s.name])
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("adv. loss: test − train")
        ax.legend(loc="best", frameon=False)
    caption = ("Fig. 2: the gap between the adversarial losses on the test and training data per epoch "
               f"({gap.__name__}), one line per row (sweep points are rows); smoothed over 5 epochs, ± std over "
               "seeds shaded.")
    return fig, col, caption


EFF_NAMES = {"eff_pgd10": "PGD10 Eff.", "eff_fgsm": "FGSM Eff.", "eff_fgsm_n": "FGSM-N Eff.",
             "eff_train": "training attack Eff.", "train_adv_eff": "Train Adv. Eff."}


def _eff_keys(keys):
    return sorted(k for k in keys if re.match(r"^(train_)?eff_", k))


def _fig3(specs, plt, colors):
    specs = _training(specs)
    keys = _keys(specs)
    effs = _eff_keys(keys)
    if not effs:
        return None, None, ("needs attack-effectiveness records (eval.extra = eff_fgsm, eff_pgd10, ... as the "
                            "quick/digits-fig3-* presets record), which no run recorded")
    hs = _first(keys, "train_hs", "hs")
    ig = _first(keys, "train_ig", "ig")
    panels = [p for p in (("HS", [hs]) if hs else None, ("IG", [ig]) if ig else None, ("Effectiveness", effs)) if p]
    col = _Collector()
    ncol = len(specs)
    fig, axes = plt.subplots(len(panels), ncol, figsize=(2.6 * ncol + 0.6, 2.0 * len(panels)), squeeze=False,
                             layout="constrained")
    mcolors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"]
    for j, s in enumerate(specs):
        for i, (pname, ks) in enumerate(panels):
            ax = axes[i][j]
            for k, key in enumerate(ks):
                c = mcolors[k % len(mcolors)] if len(ks) > 1 else colors[s.name]
                col.plot(ax, s.counted, key, label=EFF_NAMES.get(key, key), row=s.name, panel=pname, color=c)
            if i == 0:
                ax.set_title(s.name)
            if j == 0:
                ax.set_ylabel(pname + ("" if pname == "Effectiveness" else f" ({ks[0]})"))
            if i == len(panels) - 1:
                ax.set_xlabel("epoch")
            if j == ncol - 1 and pname == "Effectiveness":
                ax.legend(loc="best", frameon=False)
    caption = ("Fig. 3: HS, IG and the effectiveness (Eq. 7, against PGD-50) of adversarial examples per epoch for "
               "each training scheme (training-set HS and IG where recorded); smoothed as in Fig. 1.")
    return fig, col, caption


def _agg(runs, kind, x_key, y_key, scale=1.0, where=None):
    """Experiment points of `kind` grouped by x: mean ± std over runs (and repeated points)."""
    import statistics

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
        out.append({"epoch": x, "mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None,
                    "n": len(vals), "values": vals, "runs": [rid for rid, _ in by_x[x]]})
    return out


def _pgd_points(runs, ckpt, key, scale):
    """Final evaluations pgdN of one checkpoint as points over N (A.1 without an a1 experiment)."""
    import statistics

    by_steps: dict = {}
    for r in runs:
        for e in r.evals:
            m = re.fullmatch(r"pgd(\d+)", str(e.get("attack")))
            if not m or e.get("ckpt") != ckpt or e.get(key) is None:
                continue
            by_steps.setdefault(int(m.group(1)), {})[r.rd.id] = e[key] * scale   # latest per run
    out = []
    for st in sorted(by_steps):
        d = by_steps[st]
        vals = list(d.values())
        out.append({"epoch": st, "mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None,
                    "n": len(vals), "values": vals, "runs": list(d)})
    return out


def _figA1(specs, plt, colors):
    a1 = [s for s in specs if s.table == "points" and s.counted and any(p.get("kind") == "a1" for r in s.counted
                                                                         for p in r.points)]
    col = _Collector("pgd_steps")
    if a1:
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8), squeeze=False, layout="constrained")
        for s in a1:
            for split, st in (("train", "-"), ("test", "--")):
                where = {"split": split}
                for ax, key, scale, panel in ((axes[0][0], "adv_acc", 100.0, "Robust accuracy (%)"),
                                              (axes[0][1], "adv_loss", 1.0, "Adversarial loss")):
                    col.plot(ax, s.counted, key, label=f"{s.name} ({split})", row=s.name, panel=panel,
                             color=colors[s.name], style=st, smooth=False,
                             points=_agg(s.counted, "a1", "steps", key, scale, where))
        source = "a1 experiment runs (PGD-k of one checkpoint, k = its steps)"
    else:
        combos = [(s, ck) for s in _training(specs) for ck in ("best", "end")
                  if len(_pgd_points(s.counted, ck, "robust_acc", 100.0)) >= 2]
        if not combos:
            return None, None, ("needs an a1 experiment run (quick/digits-figA1) or final evaluations with at "
                                "least two PGD step counts on one checkpoint; the store has neither")
        fig, axes = plt.subplots(1, 1, figsize=(3.6, 2.8), squeeze=False, layout="constrained")
        for s, ckpt in combos:
            col.plot(axes[0][0], s.counted, "robust_acc", label=f"{s.name} ({ckpt})", row=s.name,
                     panel="Robust accuracy (%)", color=colors[s.name], style="-" if ckpt == "best" else "--",
                     smooth=False, points=_pgd_points(s.counted, ckpt, "robust_acc", 100.0))
        source = "final evaluations pgdN"
    for ax, t in zip(axes[0], ("Robust accuracy (%)", "Adversarial loss")):
        ax.set_title(t)
        ax.set_xlabel("PGD steps")
        ax.set_xscale("log")
    axes[0][0].legend(loc="best", frameon=False)
    caption = (f"Fig. A.1: robust accuracy and adversarial loss against the number of PGD steps ({source}); "
               "mean ± std over runs, not smoothed.")
    return fig, col, caption


def _fig4(specs, plt, colors):
    exp = {k: [s for s in specs if s.table == "points" and s.counted
               and any(p.get("kind") == k for r in s.counted for p in r.points)] for k in ("fig4a", "fig4b", "fig4c")}
    kinds = [k for k in ("fig4a", "fig4b", "fig4c") if exp[k]]
    if not kinds:
        return None, None, ("needs fig4a / fig4b / fig4c experiment runs (quick/digits-fig4a, -fig4b, -fig4c), "
                            "which the selection does not include")
    col = _Collector("x")
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 2.9), squeeze=False, layout="constrained")
    titles = {"fig4a": "(a) parameter noise", "fig4b": "(b) perturbation scaled by p", "fig4c": "(c) sign flipped for p"}
    for ax, kind in zip(axes[0], kinds):
        panel = titles[kind]
        if kind == "fig4a":   # one point per model variant: effectiveness against HS
            for s in exp[kind]:
                for k, (key, marker) in enumerate((("eff_fgsm", "o"), ("eff_pgd10", "^"))):
                    pts = []
                    for r in s.counted:
                        for rec in r.points:
                            if rec.get("kind") == kind and rec.get("hs") is not None and rec.get(key) is not None:
                                pts.append({"epoch": rec["hs"], "mean": rec[key], "std": None, "n": 1,
                                            "values": [rec[key]], "runs": [r.rd.id]})
                    pts.sort(key=lambda q: q["epoch"])
                    if pts:
                        ax.scatter([q["epoch"] for q in pts], [q["mean"] for q in pts], marker=marker, s=14,
                                   color=["#1f77b4", "#d62728"][k], label=f"{EFF_NAMES[key]} ({s.name})")
                        col.rows += [{"panel": panel, "series": f"{EFF_NAMES[key]} vs HS", "row": s.name, "key": key,
                                      "x": q["epoch"], "mean": q["mean"], "std": None, "n": 1, "smoothed": None,
                                      "smoothed_std": None, "marked": "", "values": repr(q["mean"]),
                                      "runs": q["runs"][0]} for q in pts]
            ax.set_xlabel("HS")
            ax.set_ylabel("effectiveness")
        else:
            ax2 = ax.twinx()
            ax2.grid(False)
            ax2.spines["right"].set_visible(True)
            for s in exp[kind]:
                col.plot(ax2, s.counted, "hs", label="HS", row=s.name, panel=panel, color="0.2", style=":",
                         smooth=False, points=_agg(s.counted, kind, "p", "hs"))
                for k, key in enumerate(("eff_fgsm", "eff_pgd10", "train_adv_eff")):
                    col.plot(ax, s.counted, key, label=EFF_NAMES[key], row=s.name, panel=panel,
                             color=["#1f77b4", "#d62728", "#2ca02c"][k], smooth=False,
                             points=_agg(s.counted, kind, "p", key))
            ax.set_xlabel("p (multiplier)" if kind == "fig4b" else "p (fraction flipped)")
            ax.set_ylabel("effectiveness")
            ax2.set_ylabel("HS (dotted)")
        ax.set_title(panel)
        ax.legend(loc="best", frameon=False)
    caption = ("Fig. 4: HS and the effectiveness of FGSM and PGD-10 (against PGD-50) for (a) models with noisy "
               "parameters (one point per model), (b) one epoch of training on PGD-20 perturbations scaled by p, "
               "(c) the same with the sign of a fraction p flipped; from experiment runs, mean ± std over runs.")
    return fig, col, caption


def _figA2(specs, plt, colors):
    specs = _training(specs)
    keys = _keys(specs)
    ga = _first(keys, "train_ga", "ga")
    hs = _first(keys, "train_hs", "hs")
    acts = {}
    for s in specs:
        acts.setdefault(s.counted[0].config.get("model", {}).get("activation", "relu"), []).append(s)
    part_a = bool(ga and hs)
    part_b = bool(hs and len(acts) > 1)
    if not (part_a or part_b):
        return None, None, ("needs gradient alignment (eval.extra = ga) next to HS, or HS of both ReLU and "
                            "softplus networks (quick/digits-figA2-relu and -softplus); the store has neither")
    col = _Collector()
    n = int(part_a) + int(part_b)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 2.8), squeeze=False, layout="constrained")
    k = 0
    if part_a:
        ax = axes[0][k]
        ax2 = ax.twinx()
        for s in specs:
            col.plot(ax, s.counted, hs, label=f"{s.name} HS", row=s.name, panel="(a) HS and GA", color=colors[s.name])
            col.plot(ax2, s.counted, ga, label=f"{s.name} GA", row=s.name, panel="(a) HS and GA",
                     color=colors[s.name], style="--")
        ax.set_ylabel(f"HS ({hs}, solid)")
        ax2.set_ylabel(f"GA ({ga}, dashed)")
        ax2.grid(False)
        ax2.spines["right"].set_visible(True)
        ax.set_title("(a) HS and gradient alignment")
        ax.set_xlabel("epoch")
        ax.legend(loc="best", frameon=False)
        k += 1
    if part_b:
        ax = axes[0][k]
        for act, ss in acts.items():
            for s in ss:
                col.plot(ax, s.counted, hs, label=f"{s.name} ({act})", row=s.name, panel="(b) HS ReLU vs softplus",
                         color=colors[s.name], style="-" if act == "relu" else "--")
        ax.set_title("(b) HS: ReLU vs softplus")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"HS ({hs})")
        ax.legend(loc="best", frameon=False)
    caption = ("Fig. A.2: HS against (a) gradient alignment for the same networks and (b) HS of softplus "
               "networks (dashed) vs ReLU networks (solid); smoothed over 5 epochs.")
    return fig, col, caption


FIGURES = [
    ("fig_accuracy", "Accuracy per epoch", _fig_accuracy),
    ("fig1_landscape", "Fig. 1: loss, IG and HS", _fig1),
    ("fig2_gap", "Fig. 2: adversarial-loss gap (test − train)", _fig2),
    ("fig3_effectiveness", "Fig. 3: HS, IG and attack effectiveness", _fig3),
    ("fig4_perturbed", "Fig. 4: curvature and attack effectiveness of modified models", _fig4),
    ("figA1_pgd_steps", "Fig. A.1: PGD convergence", _figA1),
    ("figA2_hs", "Fig. A.2: HS vs GA and softplus", _figA2),
]


def make_figures(specs: list[RowSpec], out_dir, *, pdf_pages=None, formats=("png", "pdf")) -> list[FigureResult]:
    """Draw every figure the runs of `specs` have data for into OUT_DIR (NAME.png, NAME.pdf,
    NAME.csv); `pdf_pages` (a matplotlib PdfPages) also receives each figure. Returns one
    FigureResult per figure, produced or skipped (with the reason)."""
    plt = _plt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = _colors(specs)
    results = []
    with plt.rc_context(STYLE):
        for name, title, fn in FIGURES:
            fig, col, caption = fn(specs, plt, colors)
            if fig is None:
                results.append(FigureResult(name, title, "", skipped=caption))
                continue
            fig.suptitle(title, fontsize=9)
            files = []
            for ext in formats:
                p = out_dir / f"{name}.{ext}"
                fig.savefig(p)
                files.append(p)
            if pdf_pages is not None:
                pdf_pages.savefig(fig)
            plt.close(fig)
            csv_path = out_dir / f"{name}.csv"
            col.write(csv_path)
            results.append(FigureResult(name, title, caption, files, csv_path))
    return results
