"""Summaries and comparison tables of runs in the paper's terms (Li & Spratling 2023, Tables 1-3).

Per run: `best` is the epoch with the highest PGD robust accuracy on the test data (the paper's
checkpoint selection; ties go to the later epoch, as in the authors' code); `end` is the last
evaluated epoch; `diff` = best - end (the robust-overfitting gap). `run_summary` /
`summary_from` (engine.report.runs) give that for one run (fractions, as stored).

Across runs, `compare_runs` builds a `CompareTable` (engine.report.model) in the layout of the
paper's Table 1:

    row | clean best  end  diff | robust best  end  diff | IG | HS | time

- one row per training scheme (`by="label"`, e.g. `fgsm_n+advlc`; a scheme launched from
  several presets gives one row per preset, "label (preset)") or per preset (`by="preset"`),
  sweep point and configuration: runs are averaged only when their resolved configs are equal
  but for the seed, device and threads; configurations of one preset made with different
  overrides are rows of their own, named by the overrides that tell them apart
  (`fgsm_n · train.epochs=3`; engine.report.rows); a sweep point (config.json `run.point`,
  inferred from the config for runs launched with the swept key pinned) is part of the row
  name; a run with an `swa` table adds a row `<name> + SWA` computed from it; post-hoc
  experiment runs (Fig. 4, A.1) are left out (the figures use them);
- every cell is mean ± sample standard deviation (n - 1 in the denominator, as papers report)
  over the row's runs (seeds); a row of one run has std None;
- `diff` is the difference of the row's means, mean(best) - mean(end), as in the paper's
  Table 1 (which gives no ± for it); it equals the mean of the per-run diffs when every run
  has both numbers;
- accuracies and diffs are in percent; IG and HS as recorded at the end of training (last
  evaluated epoch; HS: the last epoch that recorded it); time is training seconds per
  mini-batch (time_s / batches per epoch, mean over epochs) when the batches per epoch can be
  derived, otherwise seconds per epoch for the whole table (`CompareTable.time_unit` says which);
- `best[column]` names the row with the best value: the highest accuracy, the lowest |diff|
  (for clean and robust diff alike), the lowest IG, HS and time; ties go to the earlier row;
  no column is marked when fewer than two rows have a value;
- with `ckpt_eval` naming a final attack (`aa`, `aa-torchattacks`, `pgd50`, `apgd50x5`, ...),
  clean and robust best/end come from the run's `evals` records of that attack on the `best`
  and `end` checkpoints (`swa_best`/`swa_end` for SWA rows) instead of the per-epoch PGD;
  the title names the evaluation (attack and implementation) that produced the numbers;
- `columns` adds config keys as columns (engine.report.columns).

The module layout: `runs` (a run's data and numbers, selection), `rows` (grouping and names),
`missing` (holes and fill commands), `columns`, `model` (the table's data classes), this module
(the numbers of a table), `render` (md, latex, csv, json, plain text, export), `curves` (per-epoch
series for plots) and `figures`. The names this module used to define are importable from it.

By default only finished runs are counted; unfinished ones (and, for a preset or group
selection, seeds or sweep points that were never run) are listed in `CompareRow.missing`
with the command that fills the hole in `CompareRow.fill`.
"""

from __future__ import annotations

import re

from engine.errors import UserError
from engine.report.columns import add_columns, column_values, parse_columns
from engine.report.curves import row_curves, series
from engine.report.missing import fill_command, grid_holes, missing, overrides_for
from engine.report.model import COLUMN_INFO, COLUMNS, DIFFS, VAL_COLUMNS, Cell, CompareRow, CompareTable, cell
from engine.report.render import EXTENSIONS, SIG_DIGITS, export, fmt_cell, md_escape, render, to_json
from engine.report.resolver import Resolver
from engine.report.rows import LABEL_KEYS, RowSpec, group_rows, infer_points, point_text, row_name, shared_overrides
from engine.report.runs import (
    TRAIN_SIZES,
    RunData,
    batches_per_epoch,
    load_run,
    run_summary,
    run_values,
    seconds_saved,
    select_runs,
    summary_from,
    time_per_batch,
    time_per_epoch,
)

__all__ = [  # what this module defines, and the names it defined before the split (still importable)
    "ATTACK_NAMES",
    "COLUMNS",
    "COLUMN_INFO",
    "Cell",
    "CompareRow",
    "CompareTable",
    "DIFFS",
    "EXTENSIONS",
    "LABEL_KEYS",
    "RowSpec",
    "RunData",
    "SIG_DIGITS",
    "TRAIN_SIZES",
    "add_columns",
    "batches_per_epoch",
    "cell",
    "column_values",
    "compare_runs",
    "export",
    "fill_command",
    "fmt_cell",
    "group_rows",
    "infer_points",
    "load_run",
    "md_escape",
    "overrides_for",
    "point_text",
    "render",
    "row_curves",
    "row_name",
    "run_summary",
    "run_values",
    "select_runs",
    "series",
    "summary_from",
    "table_from_specs",
    "time_per_batch",
    "time_per_epoch",
    "to_json",
]

ATTACK_NAMES = {
    "aa": "AutoAttack",
    "aa-torchattacks": "AutoAttack",
    "apgd50x5": "APGD-50, 5 restarts",
}


def compare_runs(
    store,
    *,
    run_ids=None,
    preset=None,
    group=None,
    by: str = "label",
    ckpt_eval: str | None = None,
    include_unfinished: bool = False,
    where: str | None = None,
    columns=None,
) -> CompareTable:
    """The paper's Table 1 for the selected runs (see the module docstring for every rule);
    `columns`: config keys ("method.lam,attack.eps" or a list) shown as columns."""
    keys = parse_columns(columns)
    if by not in ("label", "preset"):
        raise UserError(f"--by {by}: must be label or preset")
    rds = select_runs(store, run_ids=run_ids, preset=preset, group=group, where=where)
    runs = [load_run(rd) for rd in rds]
    if ckpt_eval and not any(e.get("attack") == ckpt_eval for r in runs for e in r.evals):
        have = sorted({str(e.get("attack")) for r in runs for e in r.evals})
        raise UserError(
            f"--eval {ckpt_eval}: no selected run has a final evaluation with that attack"
            + (f" (they have: {', '.join(have)})" if have else " (run `advlc eval` first)")
        )
    resolver = Resolver(store.home)
    infer_points(runs, resolver=resolver)
    specs = group_rows(runs, by, include_unfinished, resolver=resolver)
    return table_from_specs(
        specs, home=store.home, grid=bool(preset or group), ckpt_eval=ckpt_eval, by=by, resolver=resolver, columns=keys
    )


def table_from_specs(
    specs: list[RowSpec],
    *,
    home=None,
    grid: bool = False,
    ckpt_eval: str | None = None,
    by: str = "label",
    resolver: Resolver | None = None,
    columns=None,
) -> CompareTable:
    """The table of rows already grouped (engine.report.rows.group_rows): with `grid`, the seeds
    and sweep points the presets ask for are checked and what is missing listed with commands."""
    resolver = resolver or Resolver(home)
    keys = parse_columns(columns)
    experiments = [s for s in specs if s.table == "points"]
    specs = [s for s in specs if s.table != "points"]
    holes = grid_holes(specs, resolver, by) if grid else []
    miss = missing(specs, grid, resolver)
    for spec, m, fill in holes:
        miss[len(specs)] = (m, fill)
        specs = specs + [spec]

    per_row = [[(r, run_values(r, s.table, ckpt_eval)) for r in s.counted] for s in specs]
    counted = [r for s in specs for r in s.counted]
    all_vals = [v for rows in per_row for _, v in rows]
    time_key = "time_batch" if all_vals and all(v["time_batch"] is not None for v in all_vals) else "time_epoch"
    rows, notes = [], []
    for i, (s, vals) in enumerate(zip(specs, per_row)):
        m, fill = miss.get(i, ([], []))
        rows.append(_row(s, vals, time_key, list(m), list(fill), ckpt_eval, notes))
        rows[-1].config_values = column_values([r.config_json for r in s.counted or s.runs] or [s.config], keys)
    source = _eval_source(counted or [r for s in specs for r in s.runs], ckpt_eval)
    batch_sizes = sorted({r.config.value("train.batch_size") for r in counted} - {None})
    time_unit = "s/batch" if time_key == "time_batch" else "s/epoch"
    notes[:0] = _notes(source, ckpt_eval, time_unit, batch_sizes)
    shared = shared_overrides(specs, by)
    if shared:
        notes.append("Overrides every row of a preset shares (not in the row names): " + "; ".join(shared) + ".")
    if experiments:
        notes.append(
            "Not in the table: post-hoc experiment runs ("
            + ", ".join(s.name for s in experiments)
            + "); `advlc report` plots them."
        )
    stopped = _early_stops(specs)
    if stopped:
        notes.append(
            "Stopped early on robust overfitting (train.stop_on_overfit; end = the last trained epoch): "
            + "; ".join(stopped)
            + "."
        )
    if any(r.missing for r in rows):
        notes.append("Incomplete: " + "; ".join(f"{r.name}: {', '.join(r.missing)}" for r in rows if r.missing))
    title = f"Clean and robust accuracy (%); robust: {source}"
    on_val = [s.name for s in specs if any(r.select_on == "val" for r in s.counted or s.runs)]
    columns = list(COLUMNS)
    if on_val:
        at = columns.index("robust_diff") + 1
        columns[at:at] = VAL_COLUMNS
        notes.insert(
            3,
            "Rows whose best is selected on a validation split held out of the training set "
            '(train.select_on = "val"): ' + ", ".join(on_val) + "; the others select on the test "
            "set (the paper). Robust best (test-sel.) = the same runs' best per-epoch PGD robust "
            "accuracy selected on the test set: an optimistic upper bound, shown for comparison.",
        )
    return CompareTable(title, columns, rows, _best(rows, columns), notes, time_unit, source, ckpt_eval, keys)


def _row(s: RowSpec, vals: list, time_key: str, miss: list, fill: list, ckpt_eval, notes: list) -> CompareRow:
    """One row's cells from its runs' values; missing final evaluations and repeated seeds noted."""
    cells = {
        col: cell([v[col] for _, v in vals])
        for col in ("clean_best", "clean_end", "robust_best", "robust_end", "robust_best_test", "ig", "hs")
    }
    cells["time"] = cell([v[time_key] for _, v in vals])
    for col, (b, e) in DIFFS.items():
        cb, ce = cells[b], cells[e]
        cells[col] = Cell(None if cb.mean is None or ce.mean is None else cb.mean - ce.mean, None, min(cb.n, ce.n))
    cells = {col: cells[col] for col in COLUMNS + VAL_COLUMNS}
    if ckpt_eval:
        for r, v in vals:
            for which in ("best", "end"):
                if v["evals"].get(which) is None:
                    ck = ("swa_" if s.table == "swa" else "") + which
                    miss.append(f"seed {r.seed}: no {ckpt_eval} evaluation of {ck} (run {r.rd.id})")
                    fill.append(f"advlc eval {r.rd.id} --ckpt {ck} --attack {ckpt_eval}")
    seeds = [r.seed for r, _ in vals]
    dup = sorted({x for x in seeds if seeds.count(x) > 1}, key=str)
    if dup:
        notes.append(
            f"{s.name}: seed {', '.join(map(str, dup))} counted more than once "
            f"(runs {', '.join(r.rd.id for r, _ in vals if r.seed in dup)})"
        )
    return CompareRow(
        s.name,
        [r.rd.id for r, _ in vals],
        seeds,
        cells,
        miss,
        fill,
        s.table,
        s.preset,
        dict(s.point),
        dict(s.overrides),
        config=s.config,
    )


def _early_stops(specs: list[RowSpec]) -> list[str]:
    """Per row with runs that stopped early: their last epochs and what they did not train."""
    out = []
    for s in specs:
        stops = [(r, r.status.early_stop) for r in s.counted if r.status.early_stop is not None]
        if not stops:
            continue
        saved = [seconds_saved(r.status, r.epochs) for r, _ in stops]
        minutes = sum(x for x in saved if x is not None) / 60
        out.append(
            f"{s.name}: {len(stops)} of {len(s.counted)} runs, at epoch "
            f"{', '.join(str(st.epoch) for _, st in stops)} of {stops[0][1].planned} "
            f"({sum(st.saved_epochs for _, st in stops)} epochs, about {minutes:.0f} min, not trained)"
        )
    return out


def _best(rows: list[CompareRow], columns: list[str]) -> dict[str, str]:
    best = {}
    for col in columns:
        rule = COLUMN_INFO[col][1]
        cand = [(r.cells[col].mean, i, r.name) for i, r in enumerate(rows) if r.cells[col].mean is not None]
        if len(cand) < 2:
            continue
        if rule == "max":
            pick = min(cand, key=lambda t: (-t[0], t[1]))
        elif rule == "absmin":
            pick = min(cand, key=lambda t: (abs(t[0]), t[1]))
        else:
            pick = min(cand, key=lambda t: (t[0], t[1]))
        best[col] = pick[2]
    return best


def _notes(source: str, ckpt_eval, time_unit: str, batch_sizes: list) -> list[str]:
    sel = "best = epoch of highest per-epoch PGD robust accuracy on the selection split (ties: later epoch)"
    if ckpt_eval:
        sel += f"; clean and robust best/end measured by {source} on the best and end checkpoints"
    bs = f" of {batch_sizes[0]}" if len(batch_sizes) == 1 else ""
    return [
        "Each cell: mean ± sample standard deviation (n−1 denominator) over the row's runs (seeds); "
        "one run: no ±. A row's runs share their whole configuration but the seed (and device).",
        "diff = mean(best) − mean(end), the difference of the row's means as in the paper (no ±).",
        sel + "; end = last evaluated epoch.",
        "IG and HS on the test data at the end of training (HS: last epoch that recorded it).",
        (
            f"Time: training seconds per mini-batch{bs} (epoch time_s / batches per epoch, mean over epochs)."
            if time_unit == "s/batch"
            else "Time: training seconds per epoch (batches per epoch could not be derived for every run)."
        ),
        "Best per column (bold / *): highest accuracy; lowest |diff|, IG, HS and time.",
    ]


def _eval_source(runs: list[RunData], ckpt_eval: str | None) -> str:
    if ckpt_eval:
        impls = sorted(
            {
                str(e.get("implementation"))
                for r in runs
                for e in r.evals
                if e.get("attack") == ckpt_eval and e.get("implementation")
            }
        )
        m = re.fullmatch(r"pgd(\d+)", ckpt_eval)
        name = ATTACK_NAMES.get(ckpt_eval) or (f"PGD-{m.group(1)}" if m else ckpt_eval)
        ns = sorted({e.get("n") for r in runs for e in r.evals if e.get("attack") == ckpt_eval and e.get("n")})
        text = f"final evaluation {name}"
        if impls:
            text += f" ({', '.join(impls)})"
        if ckpt_eval == "aa-torchattacks" and not any("weaker" in i for i in impls):
            text += " (torchattacks' 10-step sub-attacks; weaker than AutoAttack)"
        if ns:
            text += f" on {'/'.join(str(n) for n in ns)} test images"
        return text
    parts = []
    for r in runs:
        ev = r.config.section("eval")
        steps = ev.get("pgd_steps")
        eps = ev.get("eps") if ev.get("eps") is not None else r.config.value("attack.eps")
        n = ev.get("n")
        text = f"per-epoch PGD-{steps} (eps {_short(eps)}, step eps/4) on {'all' if not n else n} test images"
        if text not in parts:
            parts.append(text)
    return "; ".join(parts) or "per-epoch PGD"


def _short(v) -> str:
    if v is None:
        return "?"
    k = v * 255
    if abs(k - round(k)) < 1e-6 and round(k) != 0:
        return f"{round(k)}/255"
    return f"{v:.4g}"
