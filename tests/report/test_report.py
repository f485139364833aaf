"""Comparison tables, figures and reports: every number against a direct computation.

Two stores: real short digits runs (2 presets x 2 seeds, 3 epochs) for the end-to-end checks,
and fabricated run directories with known records where exact control is needed.
"""

import csv
import io
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import force_status, pilot_wait

from engine.config import schema as C
from engine.config.presets import preset_runs
from engine.errors import UserError
from engine.launch.supervisor import create_runs
from engine.report import tables as R
from engine.report.document import build_report
from engine.run.process import run as train_run
from engine.store.index import Store
from engine.store.records import RunRecord

ADVLC = [sys.executable, "-c", "from tui.cli import main; main()"]
OV = ["train.epochs=3", "eval.n=100", "eval.hs_every=3", "eval.hs_samples=50"]  # HS at the end
PRESETS = ("quick/digits-fgsm_n", "quick/digits-fgsm_n-advlc")
DIGITS_TRAIN = 1437


def close(a, b, tol=1e-9):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


# ----------------------------------------------------------------------------- stores
@pytest.fixture(scope="module")
def real_home(tmp_path_factory):
    import torch

    home = tmp_path_factory.mktemp("real") / "home"
    store = Store(home)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and the machine is shared
    try:
        for p in PRESETS:
            for rd in create_runs(store, preset_runs(p, OV, seeds=2)):
                assert train_run(rd, store, log=lambda s: None) == "finished"
    finally:
        torch.set_num_threads(threads)
    return home


def fab_run(
    store,
    preset,
    seed,
    epochs,
    *,
    overrides=(),
    group="gfab",
    point=None,
    state="finished",
    evals=(),
    swa=(),
    label=None,
    experiment=None,
    points=(),
):
    """A run directory with the given records, its config resolved from the preset like a real run."""
    [p] = preset_runs(preset, list(overrides) + [f"train.seed={seed}"])
    config = p.cfg.to_dict()
    config["run"] = {
        "preset": preset,
        "label": label or C.label(p.cfg),
        "seed": seed,
        "group": group,
        "point": point or {},
        "created": 1000.0 + len(store.run_dirs()),
    }
    if experiment:
        config["experiment"] = {"kind": experiment}
    config["provenance"] = {
        "commit": "0123456789abcdef",
        "dirty": True,
        "diff_sha256": "feedbeef",
        "device": "cpu",
        "device_name": "cpu (test)",
        "host": "testhost",
        "torch": "2.x",
    }
    rd = store.create_run(config)
    db = rd.metrics_db()
    for name, recs in (("epochs", epochs), ("swa", swa), ("evals", evals), ("points", points)):
        t = db.table(name, cache_size=0)
        for r in recs:
            t.insert(r)
    force_status(rd, state=state)
    store.sync(rd)
    return rd


def recs(seq, *, extra=None, time_s=0.5, ips=None):
    """Epoch records from (clean, robust, ig, hs) tuples; accuracies as fractions."""
    out = []
    for i, (c, r, ig, hs) in enumerate(seq):
        rec = {
            "epoch": i,
            "clean_acc": c,
            "robust_acc": r,
            "ig": ig,
            "hs": hs,
            "time_s": time_s + 0.01 * i,
            "images_per_s": ips,
            "clean_loss": 1.0 - c,
            "robust_loss": 2.0 - r,
            "av": 1.0 + c - r,
            "train_acc": c - 0.05,
            "lr": 0.1,
        }
        rec.update((extra or {}).get(i, {}))
        out.append(rec)
    return out


def direct(runs_epochs, time_div):
    """Independent computation of one row from raw metrics.json records."""
    vals = {k: [] for k in ("clean_best", "clean_end", "robust_best", "robust_end", "ig", "hs", "time")}
    for eps in runs_epochs:
        ev = [e for e in eps if e.get("robust_acc") is not None]
        best = ev[0]
        for e in ev:
            if e["robust_acc"] >= best["robust_acc"]:
                best = e
        end = ev[-1]
        vals["clean_best"].append(100 * best["clean_acc"])
        vals["clean_end"].append(100 * end["clean_acc"])
        vals["robust_best"].append(100 * best["robust_acc"])
        vals["robust_end"].append(100 * end["robust_acc"])
        vals["ig"].append(end["ig"])
        hs = [e["hs"] for e in eps if e.get("hs") is not None]
        if hs:
            vals["hs"].append(hs[-1])
        vals["time"].append(statistics.mean(e["time_s"] for e in eps) / time_div)
    out = {}
    for k, v in vals.items():
        out[k] = (statistics.mean(v) if v else None, statistics.stdev(v) if len(v) > 1 else None, len(v))
    out["clean_diff"] = (out["clean_best"][0] - out["clean_end"][0], None, len(runs_epochs))
    out["robust_diff"] = (out["robust_best"][0] - out["robust_end"][0], None, len(runs_epochs))
    return out


def raw_epochs(home, rid):
    data = json.loads((Path(home) / "runs" / rid / "metrics.json").read_text())
    rows = data.get("epochs", {})
    return [rows[k] for k in sorted(rows, key=int)]


# ----------------------------------------------------------------------------- tables
def test_table_numbers_equal_direct_computation(real_home):
    store = Store(real_home)
    t = R.compare_runs(store, preset="quick")
    assert [r.name for r in t.rows] == ["fgsm_n", "fgsm_n+advlc"]
    assert t.time_unit == "s/batch" and "PGD-10" in t.title and t.complete
    curves = R.row_curves(store, t, "robust_acc")  # what a Compare screen overlays
    ids0 = t.rows[0].runs
    e0 = [raw_epochs(real_home, i) for i in ids0]
    assert [p["epoch"] for p in curves["fgsm_n"]] == [0, 1, 2]
    assert all(
        close(p["mean"], statistics.mean(100 * e[k]["robust_acc"] for e in e0)) for k, p in enumerate(curves["fgsm_n"])
    )
    for row, preset in zip(t.rows, PRESETS):
        ids = [d["id"] for d in store.runs(preset=preset)]
        assert sorted(row.runs) == sorted(ids) and sorted(row.seeds) == [0, 1]
        want = direct([raw_epochs(real_home, i) for i in ids], DIGITS_TRAIN // 50)
        for col in R.COLUMNS:
            c = row.cells[col]
            m, s, n = want[col]
            assert close(c.mean, m) and close(c.std, s) and c.n == n, (row.name, col, c, want[col])

    # csv and json carry the same numbers, unrounded
    parsed = list(csv.DictReader(io.StringIO(R.render(t, "csv"))))
    js = json.loads(R.render(t, "json"))
    for row, prow, jrow in zip(t.rows, parsed, js["rows"]):
        assert prow["row"] == row.name == jrow["name"]
        for col in R.COLUMNS:
            key = "time_s_per_batch" if col == "time" else col
            c = row.cells[col]
            assert close(float(prow[key]), c.mean) and int(prow[f"{key}_n"]) == c.n
            assert (prow[f"{key}_std"] == "") == (c.std is None)
            assert close(jrow["cells"][col]["mean"], c.mean)
    # md shows percentages with 2 decimals and the best in bold
    md = R.render(t, "md")
    for row in t.rows:
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {R.md_escape(row.name)} |"))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        c = row.cells["robust_best"]
        text = f"{c.mean:.2f} ± {c.std:.2f}"
        bold = t.best.get("robust_best") == row.name
        assert cells[R.COLUMNS.index("robust_best")] == (f"**{text}**" if bold else text)


def test_best_per_column_rules(tmp_path):
    store = Store(tmp_path)
    # A: best robust, big gap; B: small |robust diff|, lowest IG/HS; C: highest clean, negative clean diff nearest 0
    fab_run(store, "quick/digits-fgsm_n", 0, recs([(0.80, 0.50, 3.0, 0.3), (0.82, 0.40, 3.0, 0.3)]), label="A")
    fab_run(
        store, "quick/digits-fgsm_n", 0, recs([(0.70, 0.45, 1.0, 0.1), (0.71, 0.44, 1.0, 0.1)], time_s=0.2), label="B"
    )
    fab_run(
        store, "quick/digits-fgsm_n", 0, recs([(0.90, 0.30, 2.0, 0.2), (0.905, 0.20, 2.0, 0.2)], time_s=0.9), label="C"
    )
    t = R.compare_runs(store, preset="quick/digits-fgsm_n")
    assert t.best == {
        "clean_best": "C",
        "clean_end": "C",
        "clean_diff": "C",
        "robust_best": "A",
        "robust_end": "B",
        "robust_diff": "B",
        "ig": "B",
        "hs": "B",
        "time": "B",
    }
    assert t.rows[0].cells["robust_diff"].mean == pytest.approx(10.0)
    assert t.rows[0].cells["clean_diff"].mean == pytest.approx(-2.0)
    assert all(r.cells["clean_best"].std is None and r.cells["clean_best"].n == 1 for r in t.rows)
    latex = R.render(t, "latex")
    assert "\\pm" not in latex.split("\\midrule")[1].split("\\bottomrule")[0]  # n = 1: no ±
    assert (
        "\\textbf{90.00}" in latex and "\\textbf{50.00}" in latex and "\\multicolumn{3}{c}{Robustness (\\%)}" in latex
    )
    plain = R.render(t, "table")
    assert "90.00*" in plain and "50.00*" in plain


def test_render_formats_parse_and_export(real_home, tmp_path):
    t = R.compare_runs(Store(real_home), preset="quick")
    latex = R.render(t, "latex")
    assert latex.count("$\\pm$") >= 2 * len(R.COLUMNS) - 4 and "\\textbf{" in latex and "fgsm\\_n" in latex
    assert latex.count("\\\\") == 2 + len(t.rows)
    md = R.render(t, "md")
    table_lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(table_lines) == 2 + len(t.rows) and all(ln.count("|") == len(R.COLUMNS) + 2 for ln in table_lines)
    js = json.loads(R.render(t, "json"))
    assert js["columns"] == R.COLUMNS and js["best"] == t.best and js["units"]["robust_best"] == "%"
    paths = R.export(t, tmp_path / "x", formats=("md", "latex", "csv", "json"))
    assert [p.name for p in paths] == ["table.md", "table.tex", "table.csv", "table.json"]
    assert all(p.stat().st_size > 0 for p in paths)
    with pytest.raises(UserError):
        R.render(t, "xml")


def test_final_evaluations_and_swa_rows(tmp_path):
    store = Store(tmp_path)
    ep = recs([(0.8, 0.5, 2.0, 0.2), (0.85, 0.45, 2.0, 0.2)])
    swa = recs([(0.81, 0.52, 1.5, 0.1), (0.84, 0.51, 1.5, 0.1)])
    ev = lambda ck, c, r: {
        "ckpt": ck,
        "attack": "aa",
        "clean_acc": c,
        "robust_acc": r,
        "n": 1000,
        "implementation": "original, pyautoattack",
    }
    fab_run(
        store,
        "quick/digits-fgsm_n-advlc",
        0,
        ep,
        swa=swa,
        evals=[ev("best", 0.79, 0.41), ev("end", 0.84, 0.37), ev("swa_best", 0.80, 0.43), ev("swa_end", 0.83, 0.42)],
    )
    fab_run(
        store,
        "quick/digits-fgsm_n-advlc",
        1,
        ep,
        swa=swa,
        evals=[ev("best", 0.78, 0.40), ev("end", 0.86, 0.35), ev("swa_best", 0.81, 0.44)],
    )
    t = R.compare_runs(store, preset="quick/digits-fgsm_n-advlc")
    assert [r.name for r in t.rows] == ["fgsm_n+advlc", "fgsm_n+advlc + SWA"]
    assert t.rows[1].cells["robust_best"].mean == pytest.approx(52.0) and t.rows[1].table == "swa"
    assert "per-epoch PGD-10" in t.title

    t = R.compare_runs(store, preset="quick/digits-fgsm_n-advlc", ckpt_eval="aa")
    assert "AutoAttack (original, pyautoattack)" in t.title and t.ckpt_eval == "aa"
    base, sw = t.rows
    assert base.cells["robust_best"].mean == pytest.approx(statistics.mean([41.0, 40.0]))
    assert base.cells["robust_best"].std == pytest.approx(statistics.stdev([41.0, 40.0]))
    assert base.cells["clean_end"].mean == pytest.approx(85.0)
    assert base.cells["ig"].mean == pytest.approx(2.0)  # IG/HS stay the per-epoch end values
    assert sw.cells["robust_best"].mean == pytest.approx(43.5) and sw.cells["robust_end"].n == 1
    assert any("no aa evaluation of swa_end" in m for m in sw.missing)
    assert any(f.startswith("advlc eval ") and "--ckpt swa_end --attack aa" in f for f in sw.fill)
    assert "(n=1)" in R.render(t, "md")
    with pytest.raises(UserError, match="no selected run has a final evaluation"):
        R.compare_runs(store, preset="quick", ckpt_eval="pgd50")


def test_time_unit_falls_back_to_seconds_per_epoch(tmp_path):
    store = Store(tmp_path)
    rd = fab_run(store, "quick/digits-fgsm_n", 0, recs([(0.8, 0.5, 1.0, None)], time_s=2.0, ips=700.0))
    t = R.compare_runs(store, run_ids=[rd.id])
    assert t.time_unit == "s/batch" and t.rows[0].cells["time"].mean == pytest.approx(2.0 / 28)  # 1400 / 50
    # a dataset of unknown size without images_per_s: seconds per epoch, said in the header and notes
    rd2 = fab_run(
        store, "quick/digits-fgsm_n", 1, recs([(0.8, 0.5, 1.0, None)], time_s=3.0), overrides=["data.dataset=synthetic"]
    )
    t = R.compare_runs(store, run_ids=[rd.id, rd2.id])
    assert t.time_unit == "s/epoch" and t.headers()["time"] == "Time (s/epoch)"
    # the two runs differ in data.dataset: two rows, never one averaging both configurations
    assert [r.name for r in t.rows] == ["fgsm_n · data.dataset=digits", "fgsm_n · data.dataset=synthetic"]
    assert [r.cells["time"].mean for r in t.rows] == [pytest.approx(2.0), pytest.approx(3.0)]
    assert any("seconds per epoch" in n for n in t.notes)


def test_group_with_missing_seed_is_incomplete_with_fill_command(tmp_path):
    store = Store(tmp_path)
    ov = ["train.epochs=3", "eval.n=100"]
    e = recs([(0.8, 0.5, 1.0, None), (0.82, 0.52, 1.0, None), (0.83, 0.51, 1.0, None)])
    fab_run(store, "quick/digits-fgsm_n", 0, e, overrides=ov, group="g1")
    fab_run(store, "quick/digits-fgsm_n", 2, e, overrides=ov, group="g1")
    bad = fab_run(store, "quick/digits-fgsm_n", 3, e[:1], overrides=ov, group="g1", state="failed")
    stopped = fab_run(store, "quick/digits-fgsm_n", 4, e[:2], overrides=ov, group="g1", state="stopped")
    t = R.compare_runs(store, group="g1")
    [row] = t.rows
    assert not t.complete and row.seeds == [0, 2]
    assert row.missing == [
        "seed 1 (not run)",
        f"seed 3 (failed; run {bad.id})",
        f"seed 4 (stopped at epoch 2/3; run {stopped.id})",
    ]
    assert row.fill[2] == f"advlc resume {stopped.id}"
    cmd = shlex.split(row.fill[0])
    assert cmd[:3] == ["advlc", "run", "quick/digits-fgsm_n"] and cmd[-4:] == ["--seed", "1", "--seeds", "1"]
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    assert sorted(sets) == ["eval.n=100", "train.epochs=3"]
    # the command plans exactly the missing run: the stored config with seed 1
    [p] = preset_runs("quick/digits-fgsm_n", sets + ["train.seed=1"], seeds=1)
    stored = json.loads((store.get(t.rows[0].runs[0]).path / "config.json").read_text())
    want = {k: v for k, v in stored.items() if k not in ("run", "provenance")}
    want["train"] = {**want["train"], "seed": 1}
    assert p.cfg.to_dict() == want
    assert "Incomplete" in " ".join(t.notes) and "†" in R.render(t, "md")
    assert "fill: advlc run quick/digits-fgsm_n" in R.render(t, "table")

    res = build_report(store, ["g1"], tmp_path / "rep", formats=("md",))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert not res.complete and "**Incomplete.**" in md and "## Missing runs" in md and row.fill[0] in md


def test_unfinished_runs_counted_only_on_request(tmp_path):
    store = Store(tmp_path)
    e = recs([(0.8, 0.5, 1.0, None), (0.9, 0.6, 1.0, None)])
    fab_run(store, "quick/digits-fgsm_n", 0, e)
    live = fab_run(store, "quick/digits-fgsm_n", 1, e[:1], state="running")
    t = R.compare_runs(store, preset="quick/digits-fgsm_n")
    assert t.rows[0].seeds == [0] and t.rows[0].missing == [f"seed 1 (running, epoch 1/20; run {live.id})"]
    assert t.rows[0].fill == []
    t = R.compare_runs(store, preset="quick/digits-fgsm_n", include_unfinished=True)
    assert t.rows[0].seeds == [0, 1] and t.rows[0].cells["robust_end"].mean == pytest.approx(55.0)


def test_sweep_grid_holes_and_fill_commands(tmp_path):
    """A sweep preset's grid (quick/digits-advlc-lam-sweep: 3 lambdas x 2 seeds) with a whole point
    missing; the fill command's run (swept key pinned by --set) joins its point's row."""
    store = Store(tmp_path)
    planned = preset_runs("quick/digits-advlc-lam-sweep", ["train.epochs=2"])
    rds = create_runs(store, planned)
    e = recs([(0.8, 0.5, 1.0, None), (0.82, 0.52, 1.0, None)])
    for rd in rds:
        db = rd.metrics_db()
        for r in e:
            db.table("epochs").insert(r)
        force_status(rd, state="finished")
        store.sync(rd)
    for rd in rds[4:]:  # method.lam = 0.3, both seeds
        store.delete(rd)
    t = R.compare_runs(store, preset="quick/digits-advlc-lam-sweep")
    assert [r.name for r in t.rows] == [f"fgsm_n+advlc [method.lam={v}]" for v in (0.05, 0.1, 0.3)]
    assert [r.seeds for r in t.rows] == [[0, 1], [0, 1], []] and t.rows[2].missing == [
        "seed 0 (not run)",
        "seed 1 (not run)",
    ]
    cmd = shlex.split(t.rows[2].fill[1])
    assert cmd[:3] == ["advlc", "run", "quick/digits-advlc-lam-sweep"] and "method.lam=0.3" in cmd
    sets = [cmd[k + 1] for k, a in enumerate(cmd) if a == "--set"]
    [p] = preset_runs(cmd[2], sets + ["train.seed=" + cmd[cmd.index("--seed") + 1]], seeds=1)
    assert (p.cfg.method.lam, p.cfg.train.epochs, p.seed) == (0.3, 2, 1)
    [rd] = create_runs(store, [p])
    db = rd.metrics_db()
    for r in e:
        db.table("epochs").insert(r)
    force_status(rd, state="finished")
    store.sync(rd)
    t = R.compare_runs(store, preset="quick/digits-advlc-lam-sweep")
    assert t.rows[2].seeds == [1] and t.rows[2].missing == ["seed 0 (not run)"]

    t = R.compare_runs(store, preset="quick", by="preset")
    assert t.rows[0].name == "quick/digits-advlc-lam-sweep [method.lam=0.05]"
    with pytest.raises(UserError, match="--by"):
        R.compare_runs(store, preset="quick", by="method")


def test_unknown_selection_is_a_user_error(tmp_path):
    store = Store(tmp_path).ensure()
    for kw in ({"run_ids": ["nope"]}, {"preset": "quick"}, {"group": "g0"}, {}):
        with pytest.raises(UserError):
            R.compare_runs(store, **kw)


# ----------------------------------------------------------------------------- figures
def _check_figure_csv(path, runs_records, scale_of):
    """Every CSV row: values equal the records, mean/std/n equal a direct computation."""
    rows = list(csv.DictReader(open(path)))
    assert rows
    for row in rows:
        key, ep = row["key"], int(row["epoch"])
        vals = [float(v) for v in row["values"].split(";")]
        ids = row["runs"].split(";")
        expect = []
        for rid in ids:
            recs_ = runs_records[(rid, "swa" if row["row"].endswith(" + SWA") else "epochs")]
            rec = next(r for r in recs_ if r["epoch"] == ep)
            v = rec.get(key) if "-" not in key else rec[key.split("-")[0]] - rec[key.split("-")[1]]
            expect.append(v * scale_of(key))
        assert all(close(a, b) for a, b in zip(vals, expect)) and len(vals) == len(expect) == int(row["n"])
        assert close(float(row["mean"]), statistics.mean(expect))
        assert (row["std"] == "") == (len(expect) < 2)
        if len(expect) > 1:
            assert close(float(row["std"]), statistics.stdev(expect))
    return rows


def test_figures_from_fabricated_records(tmp_path):
    from engine.report.figures import make_figures, moving_average

    store = Store(tmp_path)
    n = 8

    def seq(seed, act_shift=0.0):
        extra = {
            i: {
                "train_ig": 0.5 + 0.05 * i,
                "train_hs": 0.05 + 0.01 * i,
                "train_adv_loss": 1.0 - 0.05 * i,
                "train_clean_loss": 0.5 - 0.04 * i,
                "train_av": 0.5 - 0.01 * i,
                "train_clean_acc": 0.6 + 0.01 * i,
                "train_adv_acc": 0.3 + 0.02 * i + 0.01 * seed,
                "test_adv_loss20": 2.1 - 0.01 * i,
                "test_av20": 1.0 + 0.01 * i,
                "eff_fgsm": 0.9 - 0.05 * i + 0.01 * seed,
                "eff_fgsm_n": 0.8,
                "eff_pgd10": 0.95 - 0.01 * i,
                "eff_train": 0.7,
                "ga": 0.9 - 0.03 * i,
            }
            for i in range(n)
        }
        extra[3]["eff_fgsm"] = None  # not due at this epoch: skipped, not zero
        return recs(
            [
                (
                    0.5 + 0.04 * i + 0.01 * seed,
                    0.3 + 0.03 * i - 0.004 * i * i + 0.01 * seed,
                    1.0 + 0.1 * i,
                    0.1 + 0.02 * i + act_shift,
                )
                for i in range(n)
            ],
            extra=extra,
        )

    a1 = lambda d: [
        {
            "kind": "a1",
            "index": k,
            "split": sp,
            "steps": st,
            "adv_loss": 1.0 + 0.1 * k + d,
            "adv_acc": 0.5 - 0.01 * k - d,
            "clean_loss": 0.3,
            "n": 100,
            "time_s": 0.1,
        }
        for k, (sp, st) in enumerate((sp, st) for sp in ("train", "test") for st in (1, 10, 50))
    ]
    f4a = [
        {
            "kind": "fig4a",
            "index": k,
            "s": 0.01 * k,
            "hs": 0.1 + 0.05 * k,
            "eff_fgsm": 0.9 - 0.1 * k,
            "eff_pgd10": 0.95 - 0.05 * k,
            "clean_loss": 0.3,
            "clean_acc": 0.9,
        }
        for k in range(4)
    ]
    f4b = lambda d: [
        {
            "kind": "fig4b",
            "index": k,
            "p": p_,
            "hs": 0.2 - 0.1 * p_ + d,
            "eff_fgsm": 0.5 + 0.3 * p_,
            "eff_pgd10": 0.7 + 0.2 * p_,
            "train_adv_eff": 0.4 + 0.5 * p_ - d,
        }
        for k, p_ in enumerate((0.0, 0.5, 1.0))
    ]
    runs = []
    for seed in (0, 1):
        runs.append(fab_run(store, "quick/digits-fgsm_n", seed, seq(seed), swa=seq(seed)[4:]))
        runs.append(
            fab_run(store, "quick/digits-fgsm_n-advlc", seed, seq(seed, 0.05), overrides=["model.activation=softplus"])
        )
        runs.append(
            fab_run(store, "quick/digits-pgd10", seed, [], experiment="a1", label="a1:pgd", points=a1(0.01 * seed))
        )
        runs.append(
            fab_run(
                store, "quick/digits-pgd10", seed, [], experiment="fig4b", label="fig4b:pgd", points=f4b(0.01 * seed)
            )
        )
    runs.append(fab_run(store, "quick/digits-pgd10", 0, [], experiment="fig4a", label="fig4a:pgd", points=f4a))
    specs = R.group_rows([R.load_run(rd) for rd in store.run_dirs()], "label")
    figs = make_figures(specs, tmp_path / "figs")
    made = {f.name: f for f in figs if not f.skipped}
    assert set(made) == {
        "fig_accuracy",
        "fig1_landscape",
        "fig2_gap",
        "fig3_effectiveness",
        "fig4_perturbed",
        "figA1_pgd_steps",
        "figA2_hs",
    }, [(f.name, f.skipped) for f in figs]
    for f in made.values():
        assert [p.suffix for p in f.files] == [".png", ".pdf"]
        assert all(p.stat().st_size > 1000 for p in f.files) and f.csv.stat().st_size > 0
        assert f.files[0].read_bytes()[:4] == b"\x89PNG" and f.files[1].read_bytes()[:4] == b"%PDF"

    records = {}
    for rd in runs:
        records[(rd.id, "epochs")] = rd.epochs()
        records[(rd.id, "swa")] = rd.records("swa")
    scale = lambda k: 100.0 if k.endswith("_acc") else 1.0
    rows = _check_figure_csv(made["fig_accuracy"].csv, records, scale)
    assert {r["row"] for r in rows} == {"fgsm_n", "fgsm_n + SWA", "fgsm_n+advlc"}
    assert {"train_clean_acc", "train_adv_acc"} <= {r["key"] for r in rows}
    # smoothing and the best-epoch mark
    rob = [r for r in rows if r["row"] == "fgsm_n" and r["key"] == "robust_acc"]
    means = [float(r["mean"]) for r in rob]
    assert all(close(float(r["smoothed"]), s) for r, s in zip(rob, moving_average(means)))
    assert close(moving_average([1, 2, 3, 4, 5, 6])[0], 2.0) and close(moving_average([1, 2, 3, 4, 5, 6])[2], 3.0)
    best = max(range(len(means)), key=lambda i: (means[i], i))
    assert [r["marked"] for r in rob] == ["best" if i == best else "" for i in range(len(rob))]
    for name in ("fig1_landscape", "fig3_effectiveness", "figA2_hs", "fig2_gap"):
        _check_figure_csv(made[name].csv, records, scale)
    fig1 = {r["key"] for r in csv.DictReader(open(made["fig1_landscape"].csv))}
    assert {
        "train_ig",
        "train_hs",
        "ig",
        "hs",
        "clean_loss",
        "test_adv_loss20",
        "test_av20",
        "train_adv_loss",
        "train_clean_loss",
        "train_av",
    } <= fig1 and "robust_loss" not in fig1  # PGD-20 preferred, as the paper
    eff = [r for r in csv.DictReader(open(made["fig3_effectiveness"].csv)) if r["key"] == "eff_fgsm"]
    assert {"eff_fgsm", "eff_pgd10", "eff_fgsm_n", "eff_train"} <= {
        r["key"] for r in csv.DictReader(open(made["fig3_effectiveness"].csv))
    }
    assert "3" not in {r["epoch"] for r in eff}
    assert {r["key"] for r in csv.DictReader(open(made["fig2_gap"].csv))} == {"test_adv_loss20-train_adv_loss"}

    a1_rows = list(csv.DictReader(open(made["figA1_pgd_steps"].csv)))
    r50 = next(
        r for r in a1_rows if r["key"] == "adv_acc" and r["pgd_steps"] == "50" and r["series"].endswith("(test)")
    )
    assert (
        close(float(r50["mean"]), statistics.mean([100 * (0.5 - 0.05), 100 * (0.5 - 0.05 - 0.01)])) and r50["n"] == "2"
    )
    f4 = list(csv.DictReader(open(made["fig4_perturbed"].csv)))
    sc = [r for r in f4 if r["key"] == "eff_fgsm" and r["panel"].startswith("(a)")]
    assert [(float(r["x"]), float(r["mean"])) for r in sc] == [(q["hs"], q["eff_fgsm"]) for q in f4a]
    hs_b = [r for r in f4 if r["key"] == "hs" and r["panel"].startswith("(b)")]
    assert [float(r["x"]) for r in hs_b] == [0.0, 0.5, 1.0]
    assert close(float(hs_b[0]["mean"]), statistics.mean([0.2, 0.21])) and hs_b[0]["n"] == "2"

    # experiment runs stay out of the comparison table
    t = R.compare_runs(store, preset="quick")
    assert [r.name for r in t.rows] == ["fgsm_n", "fgsm_n + SWA", "fgsm_n+advlc"]
    assert any("experiment runs" in n_ for n_ in t.notes)


def test_report_from_real_runs(real_home, tmp_path):
    store = Store(real_home)
    res = build_report(store, ["quick"], tmp_path / "rep", formats=("md", "html", "pdf"))
    out = tmp_path / "rep"
    assert [p.name for p in res.files] == ["report.md", "report.html", "report.pdf"]
    assert all(p.stat().st_size > 0 for p in res.files) and res.complete
    md = (out / "report.md").read_text()
    for d in store.runs():
        assert d["id"] in md
    for ext in ("md", "tex", "csv", "json"):
        assert (out / "tables" / f"table-pgd.{ext}").stat().st_size > 0
    made = [f for f in res.figures if not f.skipped]
    assert {f.name for f in made} >= {"fig_accuracy", "fig1_landscape"}
    for f in made:
        assert f"figures/{f.name}.png" in md and all(p.stat().st_size > 1000 for p in f.files)
    records = {(d["id"], "epochs"): raw_epochs(real_home, d["id"]) for d in store.runs()}
    _check_figure_csv(out / "figures" / "fig_accuracy.csv", records, lambda k: 100.0 if k.endswith("_acc") else 1.0)
    _check_figure_csv(out / "figures" / "fig1_landscape.csv", records, lambda k: 1.0)
    html = (out / "report.html").read_text()
    assert "<table>" in html and 'src="figures/fig_accuracy.png"' in html
    assert (out / "report.pdf").read_bytes()[:4] == b"%PDF"
    # the provenance of the run's (latest) start, runtime.json
    runtime = json.loads((Path(real_home) / "runs" / store.runs()[0]["id"] / "runtime.json").read_text())
    assert runtime["starts"][-1]["commit"][:10] in md


def test_engine_report_imports_no_matplotlib_or_textual():
    code = (
        "import sys, engine.report.tables, engine.report.figures; "
        "assert 'matplotlib' not in sys.modules and 'textual' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- CLI
def advlc(*args, home):
    env = {**os.environ, "ADVLC_HOME": str(home), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run(ADVLC + list(args), capture_output=True, text=True, env=env, timeout=300)


def test_cli_compare_and_report(real_home, tmp_path):
    p = advlc("compare", "--preset", "quick", "--format", "csv", home=real_home)
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    t = R.compare_runs(Store(real_home), preset="quick")
    assert [r["row"] for r in rows] == [r.name for r in t.rows]
    assert all(close(float(r["robust_best"]), row.cells["robust_best"].mean) for r, row in zip(rows, t.rows))

    p = advlc("compare", "deadbeef", home=real_home)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == f"advlc: no run 'deadbeef' in {real_home}/runs (see `advlc runs`)\n"

    p = advlc("report", "quick", "--out", str(tmp_path / "r"), home=real_home)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "r" / "report.md").exists() and (tmp_path / "r" / "report.html").exists()
    assert (tmp_path / "r" / "figures" / "fig_accuracy.png").stat().st_size > 0
    assert "figures: fig_accuracy, fig1_landscape" in p.stdout


def _main(args, capsys):
    from tui.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_cli_in_process_formats_and_bad_input(real_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADVLC_HOME", str(real_home))
    ids = [d["id"] for d in Store(real_home).runs(preset=PRESETS[0])]
    code, out, _ = _main(["compare", *[i[:5] for i in ids], "--format", "json"], capsys)
    assert code == 0 and [r["name"] for r in json.loads(out)["rows"]] == ["fgsm_n"]
    code, _, err = _main(["compare", "--preset", "quick", "--out", str(tmp_path / "t.tex")], capsys)
    assert code == 0 and "\\pm" in (tmp_path / "t.tex").read_text() and "latex" in err
    code, out, _ = _main(["compare", "--preset", "quick"], capsys)
    assert code == 0 and "Robust best" in out and "*" in out
    for bad in (
        ["compare"],
        ["compare", "--preset", "quick", "--format", "xls"],
        ["compare", "--preset", "nosuch"],
        ["compare", "--preset", "quick", "--by", "x"],
        ["report", "nosuch"],
        ["report", "quick", "--format", "docx"],
    ):
        code, out, err = _main(bad, capsys)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (bad, err)
        assert err.startswith("advlc: ") and "Traceback" not in err


def test_row_names_of_a_method_sweep():
    """The showcase group sweeps method.name: by preset the point names the row, by label the label
    already does (no "pgd+advlc [method.name=advlc]"); other swept keys stay in both."""
    run = {
        "preset": "quick/robust-overfitting",
        "label": "pgd+advlc",
        "point": {"method.name": "advlc", "method.lam": 0.3},
    }
    assert R.row_name(RunRecord.from_json(run), "label") == "pgd+advlc [method.lam=0.3]"
    assert (
        R.row_name(RunRecord.from_json(run), "preset") == "quick/robust-overfitting [method.lam=0.3 method.name=advlc]"
    )
    run = {**run, "label": "pgd", "point": {"method.name": "pgd"}}
    assert R.row_name(RunRecord.from_json(run), "label") == "pgd"


# ----------------------------------------------------------------------------- configurations
FGSM = "quick/digits-fgsm_n"
TWO_CONFIGS = (["train.epochs=1", "eval.n=100"], ["train.epochs=1", "eval.n=100", "attack.eps=1/20"])
"""`advlc run quick/digits-fgsm_n --set … --seeds 2` twice: the second also overrides attack.eps
(written as 1/20, so a command filled from the recorded overrides can be told from a derived one)."""


def _robust(k: int, seed: int) -> tuple[float, float]:
    """The fabricated (epoch 0, epoch 1) robust accuracies of configuration k, seed `seed`."""
    return 0.30 + 0.10 * k + 0.03 * seed, 0.28 + 0.10 * k + 0.05 * seed


def two_config_store(home) -> tuple[Store, list[list]]:
    """Both configurations, two seeds each, created as `advlc run` creates them (config.json
    run.origin recorded), finished with known records (no training)."""
    store = Store(home)
    made = []
    for k, ov in enumerate(TWO_CONFIGS):
        rds = create_runs(store, preset_runs(FGSM, ov, seeds=2))
        for rd in rds:
            seed = json.loads(rd.config_path.read_text())["run"]["seed"]
            r0, r1 = _robust(k, seed)
            db = rd.metrics_db()
            for rec in recs([(0.7, r0, 1.0 + k, None), (0.72, r1, 2.0 + k, None)]):
                db.table("epochs").insert(rec)
            force_status(rd, state="finished")
            store.sync(rd)
        made.append(rds)
    return store, made


def _raw_config(rd) -> dict:
    return json.loads((rd.path / "config.json").read_text())


def _check_two_configs(store, made):
    """Two rows, one per configuration, each of exactly its two runs, named by attack.eps (the key
    that tells them apart) with each row's own value, numbers hand-computed from the records."""
    t = R.compare_runs(store, preset=FGSM, columns="attack.eps,train.seed")
    preset_eps = preset_runs(FGSM)[0].cfg.attack.eps  # the preset's own eps (0.15 for digits)
    assert len(t.rows) == 2, [r.name for r in t.rows]
    assert [r.name for r in t.rows] == [f"fgsm_n · attack.eps={preset_eps:.4g}", "fgsm_n · attack.eps=0.05"]
    for k, (row, rds) in enumerate(zip(t.rows, made)):
        assert sorted(row.runs) == sorted(rd.id for rd in rds) and row.seeds == [0, 1] and not row.missing
        best = [100 * max(_robust(k, sd)) for sd in (0, 1)]  # epoch 0 or 1, whichever is higher
        end = [100 * _robust(k, sd)[1] for sd in (0, 1)]
        for col, vals in (("robust_best", best), ("robust_end", end)):
            c = row.cells[col]
            assert c.n == 2 and close(c.mean, statistics.mean(vals)) and close(c.std, statistics.stdev(vals)), (k, col)
        assert close(row.cells["ig"].mean, 2.0 + k) and row.cells["ig"].std == 0.0
        # --columns: the value every run's config.json holds; the seed key lists the runs' seeds
        eps = {_raw_config(rd)["attack"]["eps"] for rd in rds}
        assert len(eps) == 1 and row.config_values["attack.eps"] == eps.pop()
        assert row.config_values["train.seed"] == [0, 1]
    assert t.rows[0].config_values["attack.eps"] == preset_eps and t.rows[1].config_values["attack.eps"] == 0.05
    assert any("train.epochs=1" in n and "eval.n=100" in n for n in t.notes)  # shared overrides: in the notes
    return t


def test_two_configurations_of_one_preset_are_two_rows(tmp_path):
    store, made = two_config_store(tmp_path / "home")
    t = _check_two_configs(store, made)
    # the same in every format: csv has the config columns after the run list, at full precision
    rows = list(csv.DictReader(io.StringIO(R.render(t, "csv"))))
    assert [r["row"] for r in rows] == [r.name for r in t.rows]
    assert [r["attack.eps"] for r in rows] == [repr(_raw_config(rds[0])["attack"]["eps"]) for rds in made]
    assert [r["train.seed"] for r in rows] == ["0/1", "0/1"]
    plain = R.render(t, "table")
    head = next(ln for ln in plain.splitlines() if ln.startswith("Training"))
    assert head.split()[:3] == ["Training", "attack.eps", "train.seed"]
    line = next(ln for ln in plain.splitlines() if ln.startswith("fgsm_n · attack.eps=0.05 "))
    assert line.split()[3:5] == ["0.05", "0/1"]
    md = R.render(t, "md")
    assert "| Training | attack.eps | train.seed |" in md and "| fgsm\\_n · attack.eps=0.05 | 0.05 | 0/1 |" in md
    js = json.loads(R.render(t, "json"))
    assert js["config_columns"] == ["attack.eps", "train.seed"]
    assert [r["config_values"]["attack.eps"] for r in js["rows"]] == [r.config_values["attack.eps"] for r in t.rows]
    # by preset the base is the preset; the suffix is the same
    tp = R.compare_runs(store, preset=FGSM, by="preset")
    assert [r.name for r in tp.rows] == [FGSM + r.name[len("fgsm_n") :] for r in t.rows]
    # one configuration alone keeps the plain name (its overrides in the notes)
    t1 = R.compare_runs(store, run_ids=[rd.id for rd in made[1]])
    assert [r.name for r in t1.rows] == ["fgsm_n"] and t1.rows[0].seeds == [0, 1]
    assert any("attack.eps=0.05" in n for n in t1.notes)


def test_config_key_that_ignores_overrides_is_caught(tmp_path, monkeypatch):
    """Mutation check: were configurations grouped by something that ignores the overrides, the
    two configurations would average into one row, and the check above fails."""
    from engine.config import origin as O

    store, made = two_config_store(tmp_path / "home")
    _check_two_configs(store, made)
    monkeypatch.setattr(O, "config_key", lambda config: "one configuration")
    with pytest.raises(AssertionError):
        _check_two_configs(store, made)


def test_missing_runs_are_filled_from_the_recorded_overrides(tmp_path):
    store, made = two_config_store(tmp_path / "home")
    gone = made[1][1]
    store.delete(gone)
    t = R.compare_runs(store, preset=FGSM)
    a, b = t.rows
    assert not a.missing and a.fill == [] and b.seeds == [0] and b.missing == ["seed 1 (not run)"]
    cmd = shlex.split(b.fill[0])
    assert cmd[:3] == ["advlc", "run", FGSM] and cmd[-4:] == ["--seed", "1", "--seeds", "1"]
    sets = [cmd[i + 1] for i, x in enumerate(cmd) if x == "--set"]
    recorded = _raw_config(made[1][0])["run"]["origin"]["overrides"]
    assert sets == recorded == TWO_CONFIGS[1]  # as given ("1/20"), not re-derived ("0.05")
    # the command makes exactly the missing run: the stored config of its sibling, with seed 1
    [p] = preset_runs(FGSM, sets + ["train.seed=1"], seeds=1)
    want = {k: v for k, v in _raw_config(made[1][0]).items() if k not in ("run", "provenance")}
    want["train"] = {**want["train"], "seed": 1}
    assert p.cfg.to_dict() == want
    # ... and the run it makes joins that row
    [rd] = create_runs(store, [p])
    db = rd.metrics_db()
    for rec in recs([(0.7, 0.5, 2.0, None)]):
        db.table("epochs").insert(rec)
    force_status(rd, state="finished")
    store.sync(rd)
    t = R.compare_runs(store, preset=FGSM)
    assert len(t.rows) == 2 and t.rows[1].seeds == [0, 1] and rd.id in t.rows[1].runs and t.complete


def test_runs_without_a_recorded_origin_group_by_their_derived_overrides(tmp_path):
    """Runs made before origins were recorded: the overrides are derived from the preset."""
    store = Store(tmp_path)
    e = recs([(0.8, 0.5, 1.0, None)])
    a = [fab_run(store, FGSM, s, e, overrides=["train.epochs=2"]) for s in (0, 1)]
    b = [fab_run(store, FGSM, s, e, overrides=["train.epochs=2", "attack.eps=0.1"]) for s in (0, 1)]
    assert _raw_config(a[0])["run"].get("origin") is None
    t = R.compare_runs(store, group="gfab")
    preset_eps = preset_runs(FGSM)[0].cfg.attack.eps
    assert [r.name for r in t.rows] == [f"fgsm_n · attack.eps={preset_eps:.4g}", "fgsm_n · attack.eps=0.1"]
    assert [sorted(r.runs) for r in t.rows] == [sorted(x.id for x in a), sorted(x.id for x in b)]


def test_bad_column_keys_are_one_line(real_home, monkeypatch, capsys):
    monkeypatch.setenv("ADVLC_HOME", str(real_home))
    for bad, words in (
        ("attack.epz", ["attack.epz", "keys of [attack]", "eps"]),
        ("bogus", ["bogus", "section.key", "method"]),
        ("method.lam,nosuch.key", ["nosuch.key", "section.key"]),
    ):
        code, out, err = _main(["compare", "--preset", "quick", "--columns", bad], capsys)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (bad, err)
        assert err.startswith("advlc: --columns ") and all(w in err for w in words), err
    with pytest.raises(UserError, match="attack.epz"):
        R.compare_runs(Store(real_home), preset="quick", columns=["attack.epz"])
    code, out, _ = _main(
        ["compare", "--preset", "quick", "--columns", "method.lam,attack.eps", "--format", "csv"], capsys
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["row"] for r in rows] == ["fgsm_n", "fgsm_n+advlc"]
    for r, preset in zip(rows, PRESETS):
        cfgs = [_raw_config(Store(real_home).run_dir(d["id"])) for d in Store(real_home).runs(preset=preset)]
        assert {repr(c["method"]["lam"]) for c in cfgs} == {r["method.lam"]}
        assert {repr(c["attack"]["eps"]) for c in cfgs} == {r["attack.eps"]}


async def test_compare_screen_sets_config_columns(tmp_path):
    from textual.widgets import DataTable, Input

    from tui.app import make_app
    from tui.screens.compare import CompareScreen

    store, made = two_config_store(tmp_path / "home")
    app = make_app(store.home)

    async with app.run_test(size=(200, 40)) as pilot:
        app.push_screen(CompareScreen(preset=FGSM))
        await pilot_wait(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.table is not None)
        scr = app.screen
        assert [r.name for r in scr.table.rows] == ["fgsm_n · attack.eps=0.15", "fgsm_n · attack.eps=0.05"]
        await pilot.press("c")
        box = scr.query_one("#compare-columns", Input)
        assert box.has_focus
        await pilot.press(*"attack.epz", "enter")  # a bad key: said, nothing changes
        await pilot.pause(0.1)
        assert scr.columns == [] and "attack.epz" in (scr.columns_error or "") and box.has_focus
        box.value = ""
        await pilot.press(*"attack.eps", "enter")
        await pilot_wait(pilot, lambda: scr.table is not None and scr.table.config_columns == ["attack.eps"])
        dt = scr.query_one("#compare-table", DataTable)
        labels = [str(c.label) for c in dt.columns.values()]
        assert labels[:3] == ["rows", "seeds", "attack.eps"]
        shown = [str(dt.get_cell(r.name, "__config0")) for r in scr.table.rows]
        assert shown == [f"{_raw_config(rds[0])['attack']['eps']:.4g}" for rds in made] == ["0.15", "0.05"]
        assert not box.has_focus and scr.columns_error is None
        await pilot.press("escape")  # the box is closed: esc leaves
        await pilot_wait(pilot, lambda: not isinstance(app.screen, CompareScreen))
