"""Summaries and comparison tables of runs in the paper's terms (Li & Spratling 2023, Tables 1-3).

Per run: `best` is the epoch with the highest PGD robust accuracy on the test data (the paper's
checkpoint selection; ties go to the later epoch, as in the authors' code); `end` is the last
evaluated epoch; `diff` = best - end (the robust-overfitting gap). `run_summary` /
`summary_from` give that for one run (fractions, as stored).

Across runs, `compare_runs` builds a `CompareTable` in the layout of the paper's Table 1:

    row | clean best  end  diff | robust best  end  diff | IG | HS | time

- one row per training scheme (`by="label"`, e.g. `fgsm_n+advlc`; a scheme launched from
  several presets gives one row per preset, "label (preset)") or per preset (`by="preset"`);
  a sweep point (config.json `run.point`, inferred from the config for runs launched with the
  swept key pinned) is part of the row name; a run with an `swa` table adds a row
  `<name> + SWA` computed from it; post-hoc experiment runs (Fig. 4, A.1) are left out (the
  figures use them);
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
  the title names the evaluation (attack and implementation) that produced the numbers.

By default only finished runs are counted; unfinished ones (and, for a preset or group
selection, seeds or sweep points that were never run) are listed in `CompareRow.missing`
with the command that fills the hole in `CompareRow.fill`.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import re
import shlex
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean

from engine.config.presets import load_preset, plan_runs
from engine.errors import UserError
from engine.report.query import parse as parse_query
from engine.store.rundir import RunDir
from engine.store.summary import best_and_end, last_value, summarize


def _diff(a, b):
    return None if a is None or b is None else a - b


def summary_from(config: dict, status: dict, epochs: list[dict]) -> dict:
    best, end = best_and_end(epochs)
    run = config.get("run", {})
    times = [e["time_s"] for e in epochs if e.get("time_s") is not None]
    out = {
        "label": run.get("label"),
        "preset": run.get("preset"),
        "seed": run.get("seed"),
        "state": status.get("state"),
        "epochs_done": len(epochs),
        "best_epoch": best["epoch"] if best else None,
        "clean_best": best["clean_acc"] if best else None,
        "clean_end": end["clean_acc"] if end else None,
        "robust_best": best["robust_acc"] if best else None,
        "robust_end": end["robust_acc"] if end else None,
        "ig": end.get("ig") if end else None,
        "hs": last_value(epochs, "hs"),
        "epoch_time_s": fmean(times) if times else None,
    }
    out["clean_diff"] = _diff(out["clean_best"], out["clean_end"])
    out["robust_diff"] = _diff(out["robust_best"], out["robust_end"])
    return out


def run_summary(rd: RunDir) -> dict:
    return {"id": rd.id, **summary_from(rd.config(), rd.status(), rd.epochs())}


# =========================================================================================
# Comparison tables
# =========================================================================================

COLUMNS = ["clean_best", "clean_end", "clean_diff", "robust_best", "robust_end", "robust_diff",
           "ig", "hs", "time"]

# key -> (plain header, rule for "best": max | min | absmin, unit)
COLUMN_INFO = {
    "clean_best": ("Clean best", "max", "%"),
    "clean_end": ("Clean end", "max", "%"),
    "clean_diff": ("Clean diff", "absmin", "%"),
    "robust_best": ("Robust best", "max", "%"),
    "robust_end": ("Robust end", "max", "%"),
    "robust_diff": ("Robust diff", "absmin", "%"),
    "ig": ("IG", "min", ""),
    "hs": ("HS", "min", ""),
    "time": ("Time", "min", "s"),
}
DIFFS = {"clean_diff": ("clean_best", "clean_end"), "robust_diff": ("robust_best", "robust_end")}

# Training-set sizes, for seconds per batch when a record has no images_per_s.
TRAIN_SIZES = {"digits": 1437, "cifar10": 50000, "cifar100": 50000, "svhn": 73257, "tinyimagenet": 100000}

ATTACK_NAMES = {
    "aa": "AutoAttack",
    "aa-torchattacks": "AutoAttack",
    "apgd50x5": "APGD-50, 5 restarts",
}


@dataclass
class Cell:
    """mean ± std over the n runs of a row that have this number (std None when n < 2)."""

    mean: float | None
    std: float | None
    n: int


@dataclass
class CompareRow:
    name: str
    runs: list[str]                      # run ids counted in the cells
    seeds: list[int]
    cells: dict[str, Cell]
    missing: list[str]                   # e.g. "seed 2 (not run)", "seed 1 (failed)"
    fill: list[str] = field(default_factory=list)   # commands that fill the holes
    table: str = "epochs"                # the metrics table the row is computed from ("swa")
    preset: str | None = None
    point: dict = field(default_factory=dict)


@dataclass
class CompareTable:
    title: str
    columns: list[str]
    rows: list[CompareRow]
    best: dict[str, str]                 # column -> name of the row with the best value
    notes: list[str] = field(default_factory=list)
    time_unit: str = "s/batch"           # "s/batch" or "s/epoch"
    source: str = ""                     # the evaluation that produced the accuracies
    ckpt_eval: str | None = None

    @property
    def complete(self) -> bool:
        return not any(r.missing for r in self.rows)

    def headers(self) -> dict[str, str]:
        h = {k: COLUMN_INFO[k][0] for k in self.columns}
        h["time"] = f"Time ({self.time_unit})"
        return h


# ----------------------------------------------------------------------------- runs
@dataclass
class RunData:
    rd: RunDir
    config: dict
    status: dict
    epochs: list[dict]
    swa: list[dict]
    evals: list[dict]
    points: list[dict] = field(default_factory=list)   # experiment runs (Fig. 4, A.1)

    @property
    def experiment(self) -> str | None:
        """The experiment kind (fig4a, fig4b, fig4c, a1) of a post-hoc analysis run, else None."""
        return (self.config.get("experiment") or {}).get("kind") or None

    @property
    def run(self) -> dict:
        return self.config.get("run", {})

    @property
    def state(self) -> str:
        return self.status.get("state", "queued")

    @property
    def seed(self):
        return self.run.get("seed")

    @property
    def point(self) -> dict:
        return self.run.get("point") or {}

    def has_evaluated(self, table: str = "epochs") -> bool:
        return any(e.get("robust_acc") is not None for e in self.records(table))

    def records(self, table: str) -> list[dict]:
        return {"swa": self.swa, "points": self.points, "evals": self.evals}.get(table, self.epochs)

    def progress(self) -> str:
        total = self.config.get("train", {}).get("epochs")
        return f"epoch {len(self.epochs)}/{total}"


def load_run(rd: RunDir) -> RunData:
    """Config, status and every metrics table of a run (metrics.json is read once)."""
    m = rd.metrics()
    return RunData(rd, rd.config(), rd.status(), m.get("epochs", []), m.get("swa", []), m.get("evals", []),
                m.get("points", []))


def batches_per_epoch(config: dict, rec: dict | None = None) -> int | None:
    """Mini-batches per epoch: from the record's images_per_s * time_s, else data.n_train,
    else the dataset's known training-set size; None when none of those is known."""
    bs = config.get("train", {}).get("batch_size")
    if not bs:
        return None
    if rec and rec.get("images_per_s") and rec.get("time_s"):
        seen = rec["images_per_s"] * rec["time_s"]
        if seen >= bs:
            return max(1, round(seen / bs))
    n = config.get("data", {}).get("n_train") or 0
    size = TRAIN_SIZES.get(config.get("data", {}).get("dataset"))
    if n and size:
        n = min(n, size)
    n = n or size
    return n // bs if n and n >= bs else None


def time_per_batch(config: dict, epochs: list[dict]) -> float | None:
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


def time_per_epoch(epochs: list[dict]) -> float | None:
    vals = [e["time_s"] for e in epochs if e.get("time_s") is not None]
    return fmean(vals) if vals else None


def _pct(v):
    return None if v is None else 100.0 * v


def _final_eval(run: RunData, ckpt: str, attack: str) -> dict | None:
    """The run's evaluation of `ckpt` under `attack`: the one on the most images, then the latest."""
    recs = [(e.get("n") or 0, i, e) for i, e in enumerate(run.evals)
            if e.get("ckpt") == ckpt and e.get("attack") == attack and e.get("robust_acc") is not None]
    return max(recs, key=lambda t: (t[0], t[1]))[2] if recs else None


def run_values(run: RunData, table: str = "epochs", ckpt_eval: str | None = None) -> dict:
    """One run's numbers in the table's units (accuracies in %); None where not available."""
    recs = run.records(table)
    best, end = best_and_end(recs)
    out = {"clean_best": _pct(best["clean_acc"]) if best else None,
           "clean_end": _pct(end["clean_acc"]) if end else None,
           "robust_best": _pct(best["robust_acc"]) if best else None,
           "robust_end": _pct(end["robust_acc"]) if end else None,
           "best_epoch": best["epoch"] if best else None,
           "ig": end.get("ig") if end else None,
           "hs": last_value(recs, "hs"),
           "time_batch": time_per_batch(run.config, run.epochs),
           "time_epoch": time_per_epoch(run.epochs),
           "evals": {}}
    if ckpt_eval:
        prefix = "swa_" if table == "swa" else ""
        for which in ("best", "end"):
            ev = _final_eval(run, prefix + which, ckpt_eval)
            out["evals"][which] = ev
            out[f"clean_{which}"] = _pct(ev.get("clean_acc")) if ev else None
            out[f"robust_{which}"] = _pct(ev.get("robust_acc")) if ev else None
    return out


def cell(values: list) -> Cell:
    """mean ± sample std (n - 1) of the non-None values."""
    vals = [v for v in values if v is not None]
    if not vals:
        return Cell(None, None, 0)
    return Cell(statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


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
        chosen[rd.id] = (rd.config().get("run", {}).get("created") or 0, rd)
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
        out = [rd for rd in out if q.matches(docs.get(rd.id) or summarize(rd), rd.config() if q.needs_config else None)]
        if not out:
            raise UserError(f"--where {where!r}: no selected run matches")
    return out


def point_text(point: dict) -> str:
    return " ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(point.items()))


def _point_key(point: dict) -> str:
    return json.dumps(point or {}, sort_keys=True)


LABEL_KEYS = ("method.name", "attack.name")
"""Sweep keys a run's label already names (e.g. "pgd+advlc"): left out of its row name by label."""


def row_name(run_cfg: dict, by: str) -> str:
    run = run_cfg.get("run", {})
    base = (run.get("label") if by == "label" else run.get("preset")) or "?"
    point = {k: v for k, v in (run.get("point") or {}).items() if by != "label" or k not in LABEL_KEYS}
    return f"{base} [{point_text(point)}]" if point else base


@dataclass
class RowSpec:
    """The runs of one row (before numbers): what `compare_runs` and the figures share."""

    name: str
    preset: str | None
    point: dict
    table: str                      # "epochs" or "swa"
    runs: list[RunData]                # every selected run of the row, any state
    counted: list[RunData] = field(default_factory=list)


def infer_points(runs: list[RunData], home=None) -> None:
    """Give runs of a sweep preset that carry no `run.point` (launched with the swept key pinned by
    --set, e.g. by a fill command) the point their config stands for, so they join their row.
    The swept keys come from the other selected runs of the preset and from the preset's grid."""
    keys: dict[str, set] = {}
    for r in runs:
        if r.point and r.run.get("preset"):
            keys.setdefault(r.run["preset"], set()).update(r.point)
    for preset in {r.run.get("preset") for r in runs if not r.point and r.run.get("preset")}:
        try:
            keys.setdefault(preset, set()).update(k for p in plan_runs(preset, home=home) for k in p.point)
        except Exception:  # an unloadable preset: keep what the runs say
            pass
    for r in runs:
        ks = keys.get(r.run.get("preset")) or ()
        if r.point or not ks or r.experiment:
            continue
        point = {}
        for k in sorted(ks):
            sec, _, fld = k.partition(".")
            if fld in (r.config.get(sec) or {}):
                point[k] = r.config[sec][fld]
        if point:
            r.config.setdefault("run", {})["point"] = point


def group_rows(runs: list[RunData], by: str = "label", include_unfinished: bool = False) -> list[RowSpec]:
    if by not in ("label", "preset"):
        raise UserError(f"--by {by}: must be label or preset")
    specs: dict[tuple, RowSpec] = {}
    # by label, runs of one scheme from different presets (digits vs CIFAR, 6 vs 200 epochs) stay
    # apart: such rows are named "label (preset)"; one preset's seeds always share a row
    presets_of: dict[str, set] = {}
    for r in runs:
        presets_of.setdefault((bool(r.experiment), row_name(r.config, by)), set()).add(r.run.get("preset"))
    for r in runs:
        name = row_name(r.config, by)
        if by == "label" and len(presets_of[(bool(r.experiment), name)]) > 1:
            base = f"{r.run.get('label') or '?'} ({r.run.get('preset')})"
            name = f"{base} [{point_text(r.point)}]" if r.point else base
        table = "points" if r.experiment else "epochs"
        spec = specs.setdefault((table, name), RowSpec(name, r.run.get("preset"), r.point, table, []))
        spec.runs.append(r)
    out = []
    for spec in specs.values():
        if spec.table == "points":   # post-hoc experiments: figures only (Fig. 4, A.1)
            spec.counted = [r for r in spec.runs if (r.state == "finished" or include_unfinished) and r.points]
            out.append(spec)
            continue
        spec.counted = [r for r in spec.runs if (r.state == "finished" or include_unfinished)
                        and r.has_evaluated("epochs")]
        out.append(spec)
        swa_runs = [r for r in spec.runs if r.swa]
        if swa_runs:
            out.append(RowSpec(spec.name + " + SWA", spec.preset, spec.point, "swa", swa_runs,
                               [r for r in swa_runs if r in spec.counted and r.has_evaluated("swa")]))
    return out


# ----------------------------------------------------------------------------- missing runs
def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v) if not isinstance(v, float) else repr(v)


_DERIVED = {("attack", "alpha"), ("attack", "noise"), ("attack", "name"), ("eval", "eps"), ("eval", "pgd_alpha")}
_SECTIONS = ("data", "model", "attack", "method", "train", "eval", "swa")


def overrides_for(config: dict, home=None) -> list[str] | None:
    """The `--set section.key=value` list that turns the run's preset into its stored config
    (the seed aside); None when the preset can no longer be loaded. Derived keys (attack step,
    eval eps, ...) are added only where re-resolving the other overrides does not give them."""
    preset = config.get("run", {}).get("preset")
    if not preset:
        return None
    sets: dict[str, str] = {}
    for it in range(4):
        try:
            _, cfg, _ = load_preset(preset, [f"{k}={v}" for k, v in sets.items()], home)
        except UserError:
            return None
        ref = cfg.to_dict()
        diff = {}
        for section in _SECTIONS:
            mine, theirs = config.get(section, {}) or {}, ref.get(section, {}) or {}
            for key, value in mine.items():
                if (section, key) == ("train", "seed") or value is None or key not in theirs:
                    continue
                if theirs[key] != value:
                    diff[f"{section}.{key}"] = _fmt_value(value)
        if not diff:
            break
        if it == 0:
            diff = {k: v for k, v in diff.items() if tuple(k.split(".")) not in _DERIVED} or diff
        sets.update(diff)
    return [f"{k}={v}" for k, v in sets.items()]


def fill_command(config: dict, seed: int, home=None) -> str:
    preset = config.get("run", {}).get("preset") or "?"
    sets = overrides_for(config, home)
    point = [f"{k}={_fmt_value(v)}" for k, v in (config.get("run", {}).get("point") or {}).items()]
    if sets is not None:  # the sweep point always goes in, even where it equals the preset's value
        sets = point + [s for s in sets if s.split("=")[0] not in {q.split("=")[0] for q in point}]
    parts = ["advlc", "run", preset]
    for s in sets or []:
        parts += ["--set", s]
    parts += ["--seed", str(seed), "--seeds", "1"]
    cmd = " ".join(shlex.quote(p) for p in parts)
    return cmd if sets is not None else cmd + "  # preset not found: check the overrides"


def _planned(preset: str, home) -> tuple[list[dict], list[int]] | None:
    """Sweep points and seeds the preset asks for (without overrides); None if unreadable."""
    try:
        planned = plan_runs(preset, home=home)
    except Exception:  # an unloadable preset must not break a comparison
        return None
    points, seeds = [], []
    for p in planned:
        if p.point not in points:
            points.append(p.point)
        if p.seed not in seeds:
            seeds.append(p.seed)
    return points, seeds


def _missing(specs: list[RowSpec], grid: bool, home, by: str) -> dict[int, tuple[list[str], list[str]]]:
    """Per row (index into specs): (what is missing, commands to fill it)."""
    out = {}
    all_seeds = [r.seed for s in specs for r in s.counted if isinstance(r.seed, int)]
    all_seeds += [r.seed for s in specs for r in s.runs if isinstance(r.seed, int)]
    plans = {}
    if grid:
        for s in specs:
            if s.preset and s.preset not in plans:
                plans[s.preset] = _planned(s.preset, home)
    for i, s in enumerate(specs):
        missing, fill = [], []
        expected = set()
        if grid and s.table == "epochs":
            if all_seeds:
                expected |= set(range(min(all_seeds), max(all_seeds) + 1))
            plan = plans.get(s.preset)
            if plan:
                expected |= set(plan[1])
        counted_seeds = {r.seed for r in s.counted}
        by_seed: dict = {}
        for r in s.runs:
            by_seed.setdefault(r.seed, []).append(r)
        for seed in sorted(expected | set(by_seed), key=lambda x: (x is None, x if isinstance(x, int) else 0)):
            if seed in counted_seeds:
                continue
            rs = by_seed.get(seed, [])
            if not rs:
                missing.append(f"seed {seed} (not run)")
                if s.runs:
                    fill.append(fill_command(s.runs[0].config, seed, home))
                continue
            r = rs[-1]
            if r.state in ("running", "queued"):
                missing.append(f"seed {seed} ({r.state}, {r.progress()}; run {r.rd.id})")
            elif r.state in ("stopped", "lost"):
                missing.append(f"seed {seed} ({r.state} at {r.progress()}; run {r.rd.id})")
                fill.append(f"advlc resume {r.rd.id}")
            elif r.state == "failed":
                missing.append(f"seed {seed} (failed; run {r.rd.id})")
                fill.append(fill_command(r.config, seed, home))
            elif s.table == "swa":
                missing.append(f"seed {seed} (no SWA records; run {r.rd.id})")
            else:
                missing.append(f"seed {seed} ({r.state}, no evaluated epoch; run {r.rd.id})")
        out[i] = (missing, fill)
    return out


def _grid_holes(specs: list[RowSpec], home, by: str) -> list[tuple[RowSpec, list[str], list[str]]]:
    """Rows for sweep points the presets ask for that no selected run stands for, with what is
    missing and the commands that fill them (based on a sibling run's overrides)."""
    seen = {(s.preset, _point_key(s.point)) for s in specs}
    sibling = {}
    for s in specs:
        if s.runs and s.preset not in sibling:
            sibling[s.preset] = s.runs[0].config
    holes: dict[tuple, tuple] = {}
    for preset in dict.fromkeys(s.preset for s in specs if s.preset):
        try:
            planned = plan_runs(preset, home=home)
        except Exception:  # an unloadable preset must not break a comparison
            continue
        if all(not p.point for p in planned) and any(s.point for s in specs if s.preset == preset):
            continue  # the runs come from a sweep the preset file no longer defines
        for p in planned:
            key = (preset, _point_key(p.point))
            if key in seen:
                continue
            if key not in holes:
                base = p.cfg.label if by == "label" else preset
                name = f"{base} [{point_text(p.point)}]" if p.point else base
                cfgd = copy.deepcopy(sibling.get(preset) or p.cfg.to_dict())
                for k, v in p.point.items():
                    sec, _, fld = k.partition(".")
                    cfgd.setdefault(sec, {})[fld] = v
                cfgd["run"] = {"preset": preset, "point": p.point}
                holes[key] = (RowSpec(name, preset, p.point, "epochs", []), cfgd, [])
            holes[key][2].append(p.seed)
    return [(spec, [f"seed {sd} (not run)" for sd in seeds], [fill_command(cfgd, sd, home) for sd in seeds])
            for spec, cfgd, seeds in holes.values()]


# ----------------------------------------------------------------------------- the table
def _eval_source(runs: list[RunData], ckpt_eval: str | None) -> str:
    if ckpt_eval:
        impls = sorted({str(e.get("implementation")) for r in runs for e in r.evals
                        if e.get("attack") == ckpt_eval and e.get("implementation")})
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
        ev = r.config.get("eval", {})
        steps = ev.get("pgd_steps")
        eps = ev.get("eps") if ev.get("eps") is not None else r.config.get("attack", {}).get("eps")
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


def compare_runs(store, *, run_ids=None, preset=None, group=None, by: str = "label",
                 ckpt_eval: str | None = None, include_unfinished: bool = False, where: str | None = None) -> CompareTable:
    """The paper's Table 1 for the selected runs (see the module docstring for every rule)."""
    rds = select_runs(store, run_ids=run_ids, preset=preset, group=group, where=where)
    runs = [load_run(rd) for rd in rds]
    if ckpt_eval and not any(e.get("attack") == ckpt_eval for r in runs for e in r.evals):
        have = sorted({str(e.get("attack")) for r in runs for e in r.evals})
        raise UserError(f"--eval {ckpt_eval}: no selected run has a final evaluation with that attack"
                        + (f" (they have: {', '.join(have)})" if have else " (run `advlc eval` first)"))
    infer_points(runs, store.home)
    specs = group_rows(runs, by, include_unfinished)
    return table_from_specs(specs, home=store.home, grid=bool(preset or group), ckpt_eval=ckpt_eval, by=by)


def table_from_specs(specs: list[RowSpec], *, home=None, grid: bool = False, ckpt_eval: str | None = None,
                     by: str = "label") -> CompareTable:
    experiments = [s for s in specs if s.table == "points"]
    specs = [s for s in specs if s.table != "points"]
    holes = _grid_holes(specs, home, by) if grid else []
    missing = _missing(specs, grid, home, by)
    for spec, miss, fill in holes:
        missing[len(specs)] = (miss, fill)
        specs = specs + [spec]

    per_row = []
    for s in specs:
        per_row.append([(r, run_values(r, s.table, ckpt_eval)) for r in s.counted])
    counted = [r for s in specs for r in s.counted]
    all_vals = [v for rows in per_row for _, v in rows]
    time_key = "time_batch" if all_vals and all(v["time_batch"] is not None for v in all_vals) else "time_epoch"
    time_unit = "s/batch" if time_key == "time_batch" else "s/epoch"
    batch_sizes = sorted({r.config.get("train", {}).get("batch_size") for r in counted} - {None})

    rows = []
    notes = []
    for i, (s, vals) in enumerate(zip(specs, per_row)):
        cells = {}
        for col in ("clean_best", "clean_end", "robust_best", "robust_end", "ig", "hs"):
            cells[col] = cell([v[col] for _, v in vals])
        cells["time"] = cell([v[time_key] for _, v in vals])
        for col, (b, e) in DIFFS.items():
            cb, ce = cells[b], cells[e]
            cells[col] = Cell(_diff(cb.mean, ce.mean), None, min(cb.n, ce.n))
        cells = {col: cells[col] for col in COLUMNS}
        miss, fill = missing.get(i, ([], []))
        miss = list(miss)
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
            notes.append(f"{s.name}: seed {', '.join(map(str, dup))} counted more than once "
                         f"(runs {', '.join(r.rd.id for r, _ in vals if r.seed in dup)})")
        rows.append(CompareRow(s.name, [r.rd.id for r, _ in vals], seeds, cells, miss, fill,
                               s.table, s.preset, dict(s.point)))

    best = {}
    for col in COLUMNS:
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

    source = _eval_source(counted or [r for s in specs for r in s.runs], ckpt_eval)
    what = "Clean and robust accuracy (%)"
    title = f"{what}; robust: {source}"
    sel = "best = epoch of highest per-epoch PGD robust accuracy (ties: later epoch)"
    if ckpt_eval:
        sel += f"; clean and robust best/end measured by {source} on the best and end checkpoints"
    bs = f" of {batch_sizes[0]}" if len(batch_sizes) == 1 else ""
    notes[:0] = [
        "Each cell: mean ± sample standard deviation (n−1 denominator) over the row's runs (seeds); "
        "one run: no ±.",
        "diff = mean(best) − mean(end), the difference of the row's means as in the paper (no ±).",
        sel + "; end = last evaluated epoch.",
        "IG and HS on the test data at the end of training (HS: last epoch that recorded it).",
        (f"Time: training seconds per mini-batch{bs} (epoch time_s / batches per epoch, mean over epochs)."
         if time_unit == "s/batch" else
         "Time: training seconds per epoch (batches per epoch could not be derived for every run)."),
        "Best per column (bold / *): highest accuracy; lowest |diff|, IG, HS and time.",
    ]
    if experiments:
        notes.append("Not in the table: post-hoc experiment runs (" + ", ".join(s.name for s in experiments)
                     + "); `advlc report` plots them.")
    if any(r.missing for r in rows):
        notes.append("Incomplete: " + "; ".join(f"{r.name}: {', '.join(r.missing)}" for r in rows if r.missing))
    return CompareTable(title, list(COLUMNS), rows, best, notes, time_unit, source, ckpt_eval)


# ----------------------------------------------------------------------------- rendering
SIG_DIGITS = {"ig": 4, "hs": 3, "time": 3}   # like the paper: IG 48.00 / 276.0, HS 0.230, time 0.047


def _decimals(col: str, v: float) -> int:
    """Decimals shown: 2 for percentages; otherwise SIG_DIGITS significant digits of the mean."""
    if COLUMN_INFO[col][2] == "%":
        return 2
    if v == 0 or not math.isfinite(v):
        return 3
    return max(0, SIG_DIGITS.get(col, 4) - 1 - int(math.floor(math.log10(abs(v)))))


def fmt_cell(col: str, c: Cell, pm: str = " ± ") -> str:
    if c.mean is None:
        return "—"
    d = _decimals(col, c.mean)
    text = f"{c.mean:.{d}f}"
    if c.std is not None:
        text += f"{pm}{c.std:.{d}f}"
    return text


def _cell_texts(table: CompareTable, row: CompareRow, pm: str = " ± ") -> list[str]:
    out = []
    for col in table.columns:
        c = row.cells[col]
        text = fmt_cell(col, c, pm)
        if c.mean is not None and c.n < len(row.runs):
            text += f" (n={c.n})"
        out.append(text)
    return out


def _latex_escape(s: str) -> str:
    rep = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
           "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
           "−": "-", "…": "..."}
    return "".join(rep.get(ch, ch) for ch in s)


def md_escape(s: str) -> str:
    return s.replace("|", r"\|").replace("*", r"\*").replace("_", r"\_")


def render(table: CompareTable, fmt: str) -> str:
    """The table as text: "table" (plain, best marked *), "md", "latex", "csv" or "json"."""
    fmt = {"markdown": "md", "tex": "latex", "text": "table"}.get(fmt, fmt)
    if fmt == "json":
        return json.dumps(to_json(table), indent=1)
    if fmt == "csv":
        return _render_csv(table)
    if fmt == "md":
        return _render_md(table)
    if fmt == "latex":
        return _render_latex(table)
    if fmt == "table":
        return _render_plain(table)
    raise UserError(f"--format {fmt}: must be one of table, md, latex, csv, json")


def to_json(table: CompareTable) -> dict:
    d = asdict(table)
    d["headers"] = table.headers()
    d["units"] = {k: (table.time_unit if k == "time" else COLUMN_INFO[k][2]) for k in table.columns}
    d["complete"] = table.complete
    return d


def _render_csv(table: CompareTable) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["row", "n_runs", "seeds", "runs"]
    for col in table.columns:
        name = "time" if col != "time" else f"time_{table.time_unit.replace('s/', 's_per_')}"
        name = col if col != "time" else name
        head += [name, f"{name}_std", f"{name}_n"]
    head += ["best_in", "missing"]
    w.writerow(head)
    for r in table.rows:
        line = [r.name, len(r.runs), " ".join(map(str, r.seeds)), " ".join(r.runs)]
        for col in table.columns:
            c = r.cells[col]
            line += ["" if c.mean is None else repr(c.mean), "" if c.std is None else repr(c.std), c.n]
        line += [" ".join(col for col in table.columns if table.best.get(col) == r.name), "; ".join(r.missing)]
        w.writerow(line)
    return buf.getvalue()


def _render_md(table: CompareTable) -> str:
    heads = table.headers()
    lines = [f"**{table.title}**", ""]
    lines.append("| Training | " + " | ".join(heads[c] for c in table.columns) + " |")
    lines.append("|---|" + "---:|" * len(table.columns))
    for r in table.rows:
        texts = _cell_texts(table, r)
        cells = [f"**{t}**" if table.best.get(c) == r.name else t for c, t in zip(table.columns, texts)]
        name = md_escape(r.name) + (" †" if r.missing else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for n in table.notes:
        lines.append(f"- {n}")
    if any(r.missing for r in table.rows):
        lines.append("- † incomplete row (see above).")
    return "\n".join(lines) + "\n"


def _render_latex(table: CompareTable) -> str:
    cols = table.columns
    acc = [c for c in cols if c.startswith("clean_")]
    rob = [c for c in cols if c.startswith("robust_")]
    rest = [c for c in cols if c not in acc and c not in rob]
    sub = {"clean_best": "best", "clean_end": "end", "clean_diff": "diff.",
           "robust_best": "best", "robust_end": "end", "robust_diff": "diff."}
    heads = {"ig": "IG", "hs": "HS", "time": f"Time ({table.time_unit})"}
    out = ["% requires \\usepackage{booktabs}",
           "\\begin{table}[t]", "\\centering",
           f"\\caption{{{_latex_escape(table.title)}}}",
           "\\begin{tabular}{l" + "c" * len(cols) + "}", "\\toprule"]
    top = ["Training"]
    if acc:
        top.append(f"\\multicolumn{{{len(acc)}}}{{c}}{{Accuracy (\\%)}}")
    if rob:
        top.append(f"\\multicolumn{{{len(rob)}}}{{c}}{{Robustness (\\%)}}")
    top += [heads.get(c, _latex_escape(c)) for c in rest]
    out.append(" & ".join(top) + " \\\\")
    rules, start = [], 2
    for group in (acc, rob):
        if group:
            rules.append(f"\\cmidrule(lr){{{start}-{start + len(group) - 1}}}")
            start += len(group)
    out.append(" ".join(rules))
    out.append(" & ".join([""] + [sub[c] for c in acc + rob] + [""] * len(rest)) + " \\\\")
    out.append("\\midrule")
    for r in table.rows:
        texts = []
        for c in cols:
            cl = r.cells[c]
            t = fmt_cell(c, cl, " $\\pm$ ") if cl.mean is not None else "--"
            if cl.mean is not None and cl.n < len(r.runs):
                t += f" ($n{{=}}{cl.n}$)"
            if table.best.get(c) == r.name:
                t = f"\\textbf{{{t}}}"
            texts.append(t)
        name = _latex_escape(r.name) + ("$^\\dagger$" if r.missing else "")
        out.append(" & ".join([name] + texts) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    out.append("% " + "\n% ".join(table.notes))
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


def _render_plain(table: CompareTable) -> str:
    heads = table.headers()
    header = ["Training"] + [heads[c] for c in table.columns]
    body = []
    for r in table.rows:
        texts = _cell_texts(table, r)
        texts = [t + ("*" if table.best.get(c) == r.name else "") for c, t in zip(table.columns, texts)]
        body.append([r.name + (" †" if r.missing else "")] + texts)
    widths = [max(len(x[i]) for x in [header] + body) for i in range(len(header))]
    lines = [table.title, ""]
    for k, line in enumerate([header] + body):
        lines.append("  ".join(s.ljust(widths[i]) if i == 0 else s.rjust(widths[i]) for i, s in enumerate(line)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines += [f"  {n}" for n in table.notes]
    for r in table.rows:
        for cmd in r.fill:
            lines.append(f"  fill: {cmd}")
    return "\n".join(lines) + "\n"


EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv", "json": "json", "table": "txt"}


def export(table: CompareTable, out_dir, formats=("md", "latex", "csv"), stem: str = "table") -> list[Path]:
    """Write the table in each format as OUT_DIR/STEM.{md,tex,csv,json,txt}; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        fmt = {"markdown": "md", "tex": "latex"}.get(fmt, fmt)
        if fmt not in EXTENSIONS:
            raise UserError(f"export format {fmt!r}: must be one of {', '.join(EXTENSIONS)}")
        p = out_dir / f"{stem}.{EXTENSIONS[fmt]}"
        p.write_text(render(table, fmt))
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------- curves (for plots)
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
        out.append({"epoch": ep, "mean": statistics.mean(vals),
                    "std": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals),
                    "values": vals, "runs": [rid for rid, _ in by_epoch[ep]]})
    return out


def row_curves(store, table: CompareTable, key: str, scale: float | None = None) -> dict[str, list[dict]]:
    """For a Compare screen: the per-epoch mean/std of `key` for every row of `table`
    (accuracies scaled to % unless `scale` is given)."""
    if scale is None:
        scale = 100.0 if key.endswith("_acc") else 1.0
    out = {}
    for r in table.rows:
        runs = [load_run(store.run_dir(rid)) for rid in r.runs]
        out[r.name] = series(runs, key, r.table, scale)
    return out
