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

matplotlib is imported inside the functions (Agg backend), so importing this module is cheap. The
figures of post-hoc experiments (Fig. 4, A.1, A.2) are drawn in engine.report.figures_experiments; the
data helpers (series, smoothing, the CSV collector) are engine.report.curves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.report.curves import (
    BEST_MARK,
    EFF_NAMES,
    SMOOTH,
    Collector,
    first_key,
    keys_of,
    moving_average,
    training,
)
from engine.report.figures_experiments import fig4, figA1, figA2
from engine.report.rows import RowSpec

__all__ = ["BEST_MARK", "FIGURES", "SMOOTH", "FigureResult", "STYLE", "make_figures", "moving_average"]


@dataclass
class FigureResult:
    name: str
    title: str
    caption: str
    files: list[Path] = field(default_factory=list)  # png, pdf
    csv: Path | None = None
    skipped: str | None = None  # why it was not produced


# ----------------------------------------------------------------------------- style
STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 150,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "lines.linewidth": 1.5,
    "pdf.fonttype": 42,
}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _colors(specs: list[RowSpec]) -> dict[str, str]:
    palette = [
        "#1f77b4",
        "#d62728",
        "#2ca02c",
        "#ff7f0e",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    ]
    return {s.name: palette[i % len(palette)] for i, s in enumerate(specs)}


# ----------------------------------------------------------------------------- figures
_TRAIN_CURVE = {
    "clean_acc": (
        ("train_clean_acc", "clean accuracy on the first eval.extra_samples training images"),
        ("train_acc", "accuracy on the training batches as trained (the training attack's examples)"),
    ),
    "robust_acc": (
        ("train_adv_acc", "PGD-20 accuracy on the first eval.extra_samples training images"),
        ("train_robust_acc", "robust accuracy on training images"),
    ),
}


def _fig_accuracy(specs, plt, colors):
    specs = [s for s in specs if s.counted and s.table in ("epochs", "swa")]
    keys = keys_of(specs)
    if "robust_acc" not in keys and "clean_acc" not in keys:
        return None, None, "no run recorded clean_acc or robust_acc"
    col = Collector()
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8), layout="constrained")
    used = []
    for ax, key, title in (
        (axes[0], "clean_acc", "Clean accuracy (%)"),
        (axes[1], "robust_acc", "Robust accuracy (%)"),
    ):
        train = next(((k, what) for k, what in _TRAIN_CURVE[key] if k in keys), None)
        for s in specs:
            c = colors[s.name]
            col.plot(
                ax,
                s.counted,
                key,
                table=s.table,
                label=s.name,
                row=s.name,
                panel=title,
                color=c,
                scale=100.0,
                mark_best=(key == "robust_acc"),
            )
            if (
                train
                and s.table == "epochs"
                and col.plot(
                    ax,
                    s.counted,
                    train[0],
                    label=f"{s.name} (train)",
                    row=s.name,
                    panel=title,
                    color=c,
                    style="--",
                    scale=100.0,
                )
            ):
                if f"{train[0]}: {train[1]}" not in used:
                    used.append(f"{train[0]}: {train[1]}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[1].legend(loc="best", frameon=False)
    if used:
        from matplotlib.lines import Line2D

        axes[0].legend(
            [Line2D([], [], color="0.3"), Line2D([], [], color="0.3", ls="--")],
            ["test", "train"],
            loc="lower right",
            frameon=False,
        )
    caption = (
        "Clean and PGD robust accuracy on the test data per epoch, mean over seeds (faint: raw; solid: "
        "5-epoch moving average; shaded: ± std over seeds); star and dotted line: best epoch (highest "
        "mean robust accuracy)." + (" Dashed: " + "; ".join(used) + "." if used else "")
    )
    return fig, col, caption


# Fig. 1 loss panel: (name, test keys, train keys), the first key some run recorded wins (PGD-20 as the paper)
_LOSS = (
    ("Clean loss", ("clean_loss",), ("train_clean_loss",)),
    ("Adv. loss", ("test_adv_loss20", "robust_loss"), ("train_adv_loss", "train_robust_loss")),
    ("AV", ("test_av20", "av"), ("train_av",)),
)


def _fig1(specs, plt, colors):
    specs = training(specs)
    keys = keys_of(specs)
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
    col = Collector()
    ncol = len(specs)
    # one y scale per row, so the schemes' IG and HS are compared by height, not by tick labels
    fig, axes = plt.subplots(
        len(panels),
        ncol,
        figsize=(2.6 * ncol + 0.6, 2.0 * len(panels)),
        squeeze=False,
        sharey="row",
        layout="constrained",
    )
    mcolors = ["#1f77b4", "#d62728", "#2ca02c"]
    for j, s in enumerate(specs):
        for i, (pname, lines) in enumerate(panels):
            ax = axes[i][j]
            for k, (name, test, train) in enumerate(lines):
                c = mcolors[k % 3] if len(lines) > 1 else colors[s.name]
                if test:
                    col.plot(ax, s.counted, test, label=f"{name} (test)", row=s.name, panel=pname, color=c)
                if train:
                    col.plot(
                        ax, s.counted, train, label=f"{name} (train)", row=s.name, panel=pname, color=c, style="--"
                    )
            if i == 0:
                ax.set_title(s.name)
            if j == 0:
                ax.set_ylabel(pname)
            if i == len(panels) - 1:
                ax.set_xlabel("epoch")
            if j == ncol - 1 and ax.get_legend_handles_labels()[0]:
                ax.legend(loc="best", frameon=False)
    src = ", ".join(f"{name}: {te or '—'} / {tr or '—'}" for name, te, tr in loss)
    caption = (
        "Fig. 1: loss, IG and HS per epoch for each training scheme on the test (solid) and training "
        "(dashed) data; AV = adversarial − clean loss. Each row shares its y axis across schemes. Lines "
        f"smoothed over 5 epochs (raw faint), ± std over seeds shaded. Keys (test / train): {src}."
    )
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
    specs = training(specs)
    gap = _gap_fn(keys_of(specs))
    if gap is None:
        return (
            None,
            None,
            (
                "needs the training-set adversarial loss per epoch (eval.extra = train_adv_loss, "
                "as the quick/digits-fig1-* presets record), which no run recorded"
            ),
        )
    groups: dict[tuple, list] = {}
    for s in specs:
        groups.setdefault(tuple(sorted(s.point)), []).append(s)
    col = Collector()
    fig, axes = plt.subplots(1, len(groups), figsize=(3.4 * len(groups), 2.8), squeeze=False, layout="constrained")
    for ax, (swept, ss) in zip(axes[0], groups.items()):
        title = "sweep of " + ", ".join(swept) if swept else "adversarial-loss gap"
        for s in ss:
            col.plot(ax, s.counted, gap, label=s.name, row=s.name, panel=title, color=colors[s.name])
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("adv. loss: test − train")
        ax.legend(loc="best", frameon=False)
    caption = (
        "Fig. 2: the gap between the adversarial losses on the test and training data per epoch "
        f"({gap.__name__}), one line per row (sweep points are rows); smoothed over 5 epochs, ± std over "
        "seeds shaded."
    )
    return fig, col, caption


def _eff_keys(keys):
    return sorted(k for k in keys if re.match(r"^(train_)?eff_", k))


def _fig3(specs, plt, colors):
    specs = training(specs)
    keys = keys_of(specs)
    effs = _eff_keys(keys)
    if not effs:
        return (
            None,
            None,
            (
                "needs attack-effectiveness records (eval.extra = eff_fgsm, eff_pgd10, ... as the "
                "quick/digits-fig3-* presets record), which no run recorded"
            ),
        )
    hs = first_key(keys, "train_hs", "hs")
    ig = first_key(keys, "train_ig", "ig")
    panels = [p for p in (("HS", [hs]) if hs else None, ("IG", [ig]) if ig else None, ("Effectiveness", effs)) if p]
    col = Collector()
    ncol = len(specs)
    fig, axes = plt.subplots(
        len(panels), ncol, figsize=(2.6 * ncol + 0.6, 2.0 * len(panels)), squeeze=False, layout="constrained"
    )
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
    caption = (
        "Fig. 3: HS, IG and the effectiveness (Eq. 7, against PGD-50) of adversarial examples per epoch for "
        "each training scheme (training-set HS and IG where recorded); smoothed as in Fig. 1."
    )
    return fig, col, caption


FIGURES = [
    ("fig_accuracy", "Accuracy per epoch", _fig_accuracy),
    ("fig1_landscape", "Fig. 1: loss, IG and HS", _fig1),
    ("fig2_gap", "Fig. 2: adversarial-loss gap (test − train)", _fig2),
    ("fig3_effectiveness", "Fig. 3: HS, IG and attack effectiveness", _fig3),
    ("fig4_perturbed", "Fig. 4: curvature and attack effectiveness of modified models", fig4),
    ("figA1_pgd_steps", "Fig. A.1: PGD convergence", figA1),
    ("figA2_hs", "Fig. A.2: HS vs GA and softplus", figA2),
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
