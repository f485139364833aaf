"""The figures of post-hoc experiments and final evaluations (Li & Spratling 2023, Fig. 4, A.1, A.2),
drawn as engine.report.figures draws the per-epoch ones (each function gets the rows, pyplot and
the row colours, and returns the figure, its CSV collector and its caption, or the reason it
has nothing to draw)."""

from __future__ import annotations

from engine.report.curves import EFF_NAMES, Collector, agg, first_key, keys_of, pgd_points, training


def figA1(specs, plt, colors):
    a1 = [
        s
        for s in specs
        if s.table == "points" and s.counted and any(p.get("kind") == "a1" for r in s.counted for p in r.points)
    ]
    col = Collector("pgd_steps")
    if a1:
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8), squeeze=False, layout="constrained")
        for s in a1:
            for split, st in (("train", "-"), ("test", "--")):
                where = {"split": split}
                for ax, key, scale, panel in (
                    (axes[0][0], "adv_acc", 100.0, "Robust accuracy (%)"),
                    (axes[0][1], "adv_loss", 1.0, "Adversarial loss"),
                ):
                    col.plot(
                        ax,
                        s.counted,
                        key,
                        label=f"{s.name} ({split})",
                        row=s.name,
                        panel=panel,
                        color=colors[s.name],
                        style=st,
                        smooth=False,
                        points=agg(s.counted, "a1", "steps", key, scale, where),
                    )
        source = "a1 experiment runs (PGD-k of one checkpoint, k = its steps)"
    else:
        combos = [
            (s, ck)
            for s in training(specs)
            for ck in ("best", "end")
            if len(pgd_points(s.counted, ck, "robust_acc", 100.0)) >= 2
        ]
        if not combos:
            return (
                None,
                None,
                (
                    "needs an a1 experiment run (quick/digits-figA1) or final evaluations with at "
                    "least two PGD step counts on one checkpoint; the store has neither"
                ),
            )
        fig, axes = plt.subplots(1, 1, figsize=(3.6, 2.8), squeeze=False, layout="constrained")
        for s, ckpt in combos:
            col.plot(
                axes[0][0],
                s.counted,
                "robust_acc",
                label=f"{s.name} ({ckpt})",
                row=s.name,
                panel="Robust accuracy (%)",
                color=colors[s.name],
                style="-" if ckpt == "best" else "--",
                smooth=False,
                points=pgd_points(s.counted, ckpt, "robust_acc", 100.0),
            )
        source = "final evaluations pgdN"
    for ax, t in zip(axes[0], ("Robust accuracy (%)", "Adversarial loss")):
        ax.set_title(t)
        ax.set_xlabel("PGD steps")
        ax.set_xscale("log")
    axes[0][0].legend(loc="best", frameon=False)
    caption = (
        f"Fig. A.1: robust accuracy and adversarial loss against the number of PGD steps ({source}); "
        "mean ± std over runs, not smoothed."
    )
    return fig, col, caption


def _fig4a_panel(ax, specs, col, panel: str) -> None:
    """Fig. 4a: one point per model variant, effectiveness against HS."""
    kind = "fig4a"
    for s in specs:
        for k, (key, marker) in enumerate((("eff_fgsm", "o"), ("eff_pgd10", "^"))):
            pts = []
            for r in s.counted:
                for rec in r.points:
                    if rec.get("kind") == kind and rec.get("hs") is not None and rec.get(key) is not None:
                        pts.append(
                            {
                                "epoch": rec["hs"],
                                "mean": rec[key],
                                "std": None,
                                "n": 1,
                                "values": [rec[key]],
                                "runs": [r.rd.id],
                            }
                        )
            pts.sort(key=lambda q: q["epoch"])
            if pts:
                ax.scatter(
                    [q["epoch"] for q in pts],
                    [q["mean"] for q in pts],
                    marker=marker,
                    s=14,
                    color=["#1f77b4", "#d62728"][k],
                    label=f"{EFF_NAMES[key]} ({s.name})",
                )
                col.rows += [
                    {
                        "panel": panel,
                        "series": f"{EFF_NAMES[key]} vs HS",
                        "row": s.name,
                        "key": key,
                        "x": q["epoch"],
                        "mean": q["mean"],
                        "std": None,
                        "n": 1,
                        "smoothed": None,
                        "smoothed_std": None,
                        "marked": "",
                        "values": repr(q["mean"]),
                        "runs": q["runs"][0],
                    }
                    for q in pts
                ]
    ax.set_xlabel("HS")
    ax.set_ylabel("effectiveness")


def _fig4bc_panel(ax, specs, kind: str, col, panel: str) -> None:
    """Fig. 4b/c: HS (dotted, right axis) and the effectiveness of each attack against p."""
    ax2 = ax.twinx()
    ax2.grid(False)
    ax2.spines["right"].set_visible(True)
    for s in specs:
        col.plot(
            ax2,
            s.counted,
            "hs",
            label="HS",
            row=s.name,
            panel=panel,
            color="0.2",
            style=":",
            smooth=False,
            points=agg(s.counted, kind, "p", "hs"),
        )
        for k, key in enumerate(("eff_fgsm", "eff_pgd10", "train_adv_eff")):
            col.plot(
                ax,
                s.counted,
                key,
                label=EFF_NAMES[key],
                row=s.name,
                panel=panel,
                color=["#1f77b4", "#d62728", "#2ca02c"][k],
                smooth=False,
                points=agg(s.counted, kind, "p", key),
            )
    ax.set_xlabel("p (multiplier)" if kind == "fig4b" else "p (fraction flipped)")
    ax.set_ylabel("effectiveness")
    ax2.set_ylabel("HS (dotted)")


def fig4(specs, plt, colors):
    exp = {
        k: [
            s
            for s in specs
            if s.table == "points" and s.counted and any(p.get("kind") == k for r in s.counted for p in r.points)
        ]
        for k in ("fig4a", "fig4b", "fig4c")
    }
    kinds = [k for k in ("fig4a", "fig4b", "fig4c") if exp[k]]
    if not kinds:
        return (
            None,
            None,
            (
                "needs fig4a / fig4b / fig4c experiment runs (quick/digits-fig4a, -fig4b, -fig4c), "
                "which the selection does not include"
            ),
        )
    col = Collector("x")
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 2.9), squeeze=False, layout="constrained")
    titles = {
        "fig4a": "(a) parameter noise",
        "fig4b": "(b) perturbation scaled by p",
        "fig4c": "(c) sign flipped for p",
    }
    for ax, kind in zip(axes[0], kinds):
        panel = titles[kind]
        if kind == "fig4a":
            _fig4a_panel(ax, exp[kind], col, panel)
        else:
            _fig4bc_panel(ax, exp[kind], kind, col, panel)
        ax.set_title(panel)
        ax.legend(loc="best", frameon=False)
    caption = (
        "Fig. 4: HS and the effectiveness of FGSM and PGD-10 (against PGD-50) for (a) models with noisy "
        "parameters (one point per model), (b) one epoch of training on PGD-20 perturbations scaled by p, "
        "(c) the same with the sign of a fraction p flipped; from experiment runs, mean ± std over runs."
    )
    return fig, col, caption


def figA2(specs, plt, colors):
    specs = training(specs)
    keys = keys_of(specs)
    ga = first_key(keys, "train_ga", "ga")
    hs = first_key(keys, "train_hs", "hs")
    acts = {}
    for s in specs:
        acts.setdefault(s.counted[0].config.value("model.activation", "relu"), []).append(s)
    part_a = bool(ga and hs)
    part_b = bool(hs and len(acts) > 1)
    if not (part_a or part_b):
        return (
            None,
            None,
            (
                "needs gradient alignment (eval.extra = ga) next to HS, or HS of both ReLU and "
                "softplus networks (quick/digits-figA2-relu and -softplus); the store has neither"
            ),
        )
    col = Collector()
    n = int(part_a) + int(part_b)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 2.8), squeeze=False, layout="constrained")
    k = 0
    if part_a:
        ax = axes[0][k]
        ax2 = ax.twinx()
        for s in specs:
            col.plot(ax, s.counted, hs, label=f"{s.name} HS", row=s.name, panel="(a) HS and GA", color=colors[s.name])
            col.plot(
                ax2,
                s.counted,
                ga,
                label=f"{s.name} GA",
                row=s.name,
                panel="(a) HS and GA",
                color=colors[s.name],
                style="--",
            )
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
                col.plot(
                    ax,
                    s.counted,
                    hs,
                    label=f"{s.name} ({act})",
                    row=s.name,
                    panel="(b) HS ReLU vs softplus",
                    color=colors[s.name],
                    style="-" if act == "relu" else "--",
                )
        ax.set_title("(b) HS: ReLU vs softplus")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"HS ({hs})")
        ax.legend(loc="best", frameon=False)
    caption = (
        "Fig. A.2: HS against (a) gradient alignment for the same networks and (b) HS of softplus "
        "networks (dashed) vs ReLU networks (solid); smoothed over 5 epochs."
    )
    return fig, col, caption
