"""Which runs are seeds of one row, and what the row is called.

A row is the runs of one training scheme (`by="label"`) or preset (`by="preset"`), one sweep
point, and one configuration: runs average into a row only when their resolved configs are
equal apart from the seed, device and thread count (`engine.config.origin.config_key`). Runs
of one preset made with different `--set` overrides are separate rows, named after the base
name by the keys that tell them apart, each row with its own value of each key:

    advlc run quick/digits-fgsm_n --set train.epochs=1 --seeds 2
    advlc run quick/digits-fgsm_n --set train.epochs=1 --set attack.eps=0.05 --seeds 2
    ->  fgsm_n · attack.eps=0.03137      (the preset's eps: this row did not override it)
        fgsm_n · attack.eps=0.05

A configuration's overrides come from its runs' origin (config.json `run.origin`, or derived
from the preset for runs made before origins were recorded). Overrides that every row of a
preset shares (train.epochs=1 above) are left out of the names (the table's notes list them);
a preset with one configuration keeps the plain name. Rows that the overrides still do not
tell apart (made from an edited preset) get the keys in which their configs differ. Sweep
points stay in brackets (`fgsm_n+advlc [method.lam=0.3]`); by label, a scheme launched from
several presets gives one row per preset ("pgd (quick/x)").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from engine.config import origin as O
from engine.errors import UserError
from engine.report.resolver import Resolver, overrides_of
from engine.report.runs import RunData
from engine.store.records import RunRecord

SEP = " · "

LABEL_KEYS = ("method.name", "attack.name")
"""Sweep keys a run's label already names (e.g. "pgd+advlc"): left out of its row name by label."""


def _canon(v) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def point_text(point: dict) -> str:
    return " ".join(f"{k}={O.fmt_value(v)}" for k, v in sorted(point.items()))


def point_key(point: dict) -> str:
    return json.dumps(point or {}, sort_keys=True, default=str)


def row_name(run: RunRecord, by: str, point: dict | None = None) -> str:
    """The base name of a run's row: its label (or preset) and its sweep point (`point`, else the
    run's recorded one)."""
    base = (run.label if by == "label" else run.preset) or "?"
    return with_point(base, dict(run.point) if point is None else point, by)


def with_point(base: str, point: dict, by: str) -> str:
    point = {k: v for k, v in (point or {}).items() if by != "label" or k not in LABEL_KEYS}
    return f"{base} [{point_text(point)}]" if point else base


def group_key(config: dict, experiment: bool = False) -> str:
    """What runs of one row share: the configuration without seed, device and threads (and, for
    post-hoc experiments, without the analysed run's id: one experiment over seeds of a source)."""
    if experiment and isinstance(config.get("experiment"), dict):
        config = {**config, "experiment": {k: v for k, v in config["experiment"].items() if k != "source"}}
    return O.config_key(config)


@dataclass
class RowSpec:
    """The runs of one row (before numbers): what `compare_runs` and the figures share."""

    name: str
    preset: str | None
    point: dict
    table: str  # "epochs", "swa" or "points" (experiments)
    runs: list[RunData]  # every selected run of the row, any state
    counted: list[RunData] = field(default_factory=list)
    base: str = ""  # the name without the overrides (label or preset, sweep point)
    config: dict = field(default_factory=dict, repr=False)  # the configuration (its first run's)
    overrides: dict = field(default_factory=dict)  # {key: value} that made it (point aside)
    suffix: str = ""  # the overrides in the name (after " · ")


def infer_points(runs: list[RunData], home=None, resolver: Resolver | None = None) -> None:
    """Give runs of a sweep preset that carry no `run.point` (launched with the swept key pinned by
    --set, e.g. by a fill command) the point their config stands for (`RunData.inferred_point`),
    so they join their row. The swept keys come from the other selected runs of the preset and
    from the preset's grid."""
    resolver = resolver or Resolver(home)
    keys: dict[str, set] = {}
    for r in runs:
        if r.point and r.run.preset:
            keys.setdefault(r.run.preset, set()).update(r.point)
    for preset in {r.run.preset for r in runs if not r.point and r.run.preset}:
        keys.setdefault(preset, set()).update(k for p in resolver.plan(preset) or [] for k in p.point)
    for r in runs:
        ks = keys.get(r.run.preset) or ()
        if r.point or not ks or r.experiment:
            continue
        point = {}
        for k in sorted(ks):
            sec, _, fld = k.partition(".")
            if fld in r.config.section(sec):
                point[k] = r.config.section(sec)[fld]
        if point:
            r.inferred_point = point


def _bases(runs: list[RunData], by: str) -> dict[str, str]:
    """Run id -> base name. By label, one scheme from several presets (digits vs CIFAR, 6 vs 200
    epochs) gives one base per preset: "label (preset)"."""
    presets_of: dict[tuple, set] = {}
    for r in runs:
        presets_of.setdefault((bool(r.experiment), row_name(r.run, by, r.point)), set()).add(r.run.preset)
    out = {}
    for r in runs:
        name = row_name(r.run, by, r.point)
        if by == "label" and len(presets_of[(bool(r.experiment), name)]) > 1:
            name = with_point(f"{r.run.label or '?'} ({r.run.preset})", r.point, by)
        out[r.rd.id] = name
    return out


def group_rows(
    runs: list[RunData],
    by: str = "label",
    include_unfinished: bool = False,
    *,
    home=None,
    resolver: Resolver | None = None,
) -> list[RowSpec]:
    """One RowSpec per (scheme or preset, sweep point, configuration), named (see the module
    docstring), each followed by its `+ SWA` row when its runs have SWA records; experiment
    runs get rows of table "points" (figures only)."""
    if by not in ("label", "preset"):
        raise UserError(f"--by {by}: must be label or preset")
    resolver = resolver or Resolver(home)
    bases = _bases(runs, by)
    specs: dict[tuple, RowSpec] = {}
    for r in runs:
        table = "points" if r.experiment else "epochs"
        key = (table, bases[r.rd.id], group_key(r.config_json, bool(r.experiment)))
        if key not in specs:
            specs[key] = RowSpec(
                bases[r.rd.id],
                r.run.preset,
                r.point,
                table,
                [],
                base=bases[r.rd.id],
                config=r.config_json,
                overrides=overrides_of(resolver.origin(r.config), r.point),
            )
        specs[key].runs.append(r)
    ordered = list(specs.values())
    # the rows of one base name stay together, in the order their first runs were made
    first: dict[tuple, int] = {}
    for s in ordered:
        first.setdefault((s.table, s.base), len(first))
    ordered.sort(key=lambda s: first[(s.table, s.base)])
    name_rows(ordered, by)
    out = []
    for spec in ordered:
        if spec.table == "points":  # post-hoc experiments: figures only (Fig. 4, A.1)
            spec.counted = [r for r in spec.runs if (r.state == "finished" or include_unfinished) and r.points]
            out.append(spec)
            continue
        spec.counted = [
            r for r in spec.runs if (r.state == "finished" or include_unfinished) and r.has_evaluated("epochs")
        ]
        out.append(spec)
        swa_runs = [r for r in spec.runs if r.swa]
        if swa_runs:
            out.append(
                RowSpec(
                    spec.name + " + SWA",
                    spec.preset,
                    spec.point,
                    "swa",
                    swa_runs,
                    [r for r in swa_runs if r in spec.counted and r.has_evaluated("swa")],
                    base=spec.base,
                    config=spec.config,
                    overrides=spec.overrides,
                    suffix=spec.suffix,
                )
            )
    return out


# ----------------------------------------------------------------------------- names
def family(spec: RowSpec) -> str:
    """The configuration modulo the sweep point: rows of one family differ only in their point."""
    return json.dumps(
        [spec.table if spec.table != "swa" else "epochs", spec.preset, spec.overrides], sort_keys=True, default=str
    )


def _scope(spec: RowSpec) -> tuple:
    return (spec.table, spec.preset) if spec.preset else (spec.table, spec.base)


def suffixes(specs: list[RowSpec], by: str) -> tuple[dict[str, str], dict[tuple, dict]]:
    """family -> its name suffix, and scope (a preset) -> the overrides every family of it shares.

    The suffix names the keys that tell the families of a preset apart (overridden in one of
    them, not to the same value in all) with this family's value of each: its override, else
    its configuration's value (the preset's), so every row of the preset says where it stands
    ("attack.eps=0.03137" next to "attack.eps=0.05"). A preset's only family has no suffix."""
    scopes: dict[tuple, dict[str, tuple[dict, RowSpec]]] = {}
    for s in specs:
        parts = {k: v for k, v in s.overrides.items() if by != "label" or k not in LABEL_KEYS}
        scopes.setdefault(_scope(s), {}).setdefault(family(s), (parts, s))
    out, shared = {}, {}
    for scope, fams in scopes.items():
        overrides = [parts for parts, _ in fams.values()]
        keys = sorted({k for p in overrides for k in p})
        same = {k for k in keys if all(k in p for p in overrides) and len({_canon(p[k]) for p in overrides}) == 1}
        shared[scope] = {k: v for k, v in overrides[0].items() if k in same}
        telling = [k for k in keys if k not in same]
        for fam, (parts, spec) in fams.items():
            if len(fams) < 2:
                out[fam] = ""
                continue
            mine = O.flat(spec.config)
            out[fam] = O.describe(
                {"resolved": {k: parts[k] if k in parts else mine.get(k) for k in telling if k not in spec.point}}
            )
    return out, shared


def name_rows(specs: list[RowSpec], by: str) -> dict[tuple, dict]:
    """Set every spec's suffix and name (base · overrides); rows that would still share a name
    (configurations the overrides do not tell apart, e.g. made from an edited preset) get the
    keys in which their configs differ. Returns scope -> overrides shared by all its rows."""
    suf, shared = suffixes(specs, by)
    for s in specs:
        s.suffix = suf.get(family(s), "")
        s.name = s.base + (SEP + s.suffix if s.suffix else "")
    by_name: dict[tuple, list[RowSpec]] = {}
    for s in specs:
        by_name.setdefault((s.table, s.name), []).append(s)
    for same in by_name.values():
        if len(same) < 2:
            continue
        flats = [O.flat(s.config) for s in same]
        skip = set(O.NON_RESULT_KEYS) | {k for s in same for k in s.point}
        if same[0].table == "points":
            skip.add("experiment.source")
        keys = sorted(k for k in set().union(*flats) if k not in skip and len({_canon(f.get(k)) for f in flats}) > 1)
        for i, (s, f) in enumerate(zip(same, flats)):
            text = O.describe({"resolved": {k: f.get(k) for k in keys[:3]}}) + ("…" if len(keys) > 3 else "")
            s.suffix = ", ".join(x for x in (s.suffix, text or f"#{i + 1}") if x)
            s.name = s.base + SEP + s.suffix
    return shared


def shared_overrides(specs: list[RowSpec], by: str) -> list[str]:
    """Notes: per preset, the overrides every row shares (left out of the names)."""
    _, shared = suffixes([s for s in specs if s.table != "swa"], by)
    out = []
    for (table, scope), parts in shared.items():
        if parts and table == "epochs":
            out.append(f"{scope}: {O.describe({'resolved': parts})}")
    return out
