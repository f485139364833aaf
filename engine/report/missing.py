"""Runs a comparison is missing, and the commands that make them.

For a preset or group selection every row should have the seeds the preset asks for plus every
seed between the lowest and highest seed seen, and every configuration of a sweep preset every
grid point. What is absent or unfinished is listed per row with the command that fills it: `advlc
run PRESET --set …` with the row's own overrides (recorded in config.json `run.origin`, else
derived from the preset) and its sweep point, or `advlc resume RUN`.
"""

from __future__ import annotations

import shlex

from engine.config import origin as O
from engine.config.schema import label
from engine.report.resolver import Resolver
from engine.report.rows import SEP, RowSpec, family, point_key, suffixes, with_point
from engine.store.records import ConfigRecord


def overrides_for(config: ConfigRecord, home=None) -> list[str] | None:
    """The `--set section.key=value` list that makes a sibling of the run whose config this is
    (the seed aside): its recorded overrides, else those that turn its preset (at its sweep point)
    into its stored config; None when the preset can no longer be loaded."""
    return Resolver(home).fill_overrides(config)


def fill_command(preset: str | None, point: dict | None, seed: int, sets: list[str] | None) -> str:
    """`advlc run PRESET --set POINT… --set OVERRIDE… --seed SEED --seeds 1`: the sweep point always
    goes in (even where it equals the preset's value), then the overrides `sets` (a row's
    recorded or derived ones; None: unknown, said in a comment)."""
    point_sets = [f"{k}={O.fmt_value(v)}" for k, v in (point or {}).items()]
    if sets is not None:
        pkeys = {q.split("=")[0].strip() for q in point_sets}
        sets = point_sets + [s for s in sets if s.split("=")[0].strip() not in pkeys]
    parts = ["advlc", "run", preset or "?"]
    for s in sets or []:
        parts += ["--set", s]
    parts += ["--seed", str(seed), "--seeds", "1"]
    cmd = " ".join(shlex.quote(p) for p in parts)
    return cmd if sets is not None else cmd + "  # preset not found: check the overrides"


def _seed_order(x):
    return (x is None, x if isinstance(x, int) else 0)


def missing(specs: list[RowSpec], grid: bool, resolver: Resolver) -> dict[int, tuple[list[str], list[str]]]:
    """Per row (index into specs): (what is missing, commands to fill it)."""
    out = {}
    all_seeds = [r.seed for s in specs for r in s.runs if isinstance(r.seed, int)]
    for i, s in enumerate(specs):
        miss, fill = [], []
        expected = set()
        if grid and s.table == "epochs":
            if all_seeds:
                expected |= set(range(min(all_seeds), max(all_seeds) + 1))
            expected |= {p.seed for p in resolver.plan(s.preset) or []}
        counted_seeds = {r.seed for r in s.counted}
        by_seed: dict = {}
        for r in s.runs:
            by_seed.setdefault(r.seed, []).append(r)
        for seed in sorted(expected | set(by_seed), key=_seed_order):
            if seed in counted_seeds:
                continue
            rs = by_seed.get(seed, [])
            if not rs:
                miss.append(f"seed {seed} (not run)")
                if s.runs:
                    fill.append(fill_command(s.preset, s.point, seed, resolver.fill_overrides(s.runs[0].config)))
                continue
            r = rs[-1]
            if r.state in ("running", "queued"):
                miss.append(f"seed {seed} ({r.state}, {r.progress()}; run {r.rd.id})")
            elif r.state in ("stopped", "lost"):
                miss.append(f"seed {seed} ({r.state} at {r.progress()}; run {r.rd.id})")
                fill.append(f"advlc resume {r.rd.id}")
            elif r.state == "failed":
                miss.append(f"seed {seed} (failed; run {r.rd.id})")
                fill.append(fill_command(s.preset, s.point, seed, resolver.fill_overrides(r.config)))
            elif s.table == "swa":
                miss.append(f"seed {seed} (no SWA records; run {r.rd.id})")
            else:
                miss.append(f"seed {seed} ({r.state}, no evaluated epoch; run {r.rd.id})")
        out[i] = (miss, fill)
    return out


def grid_holes(specs: list[RowSpec], resolver: Resolver, by: str) -> list[tuple[RowSpec, list[str], list[str]]]:
    """Rows for the sweep points that a configuration (a family of rows: one preset, one set of
    overrides) lacks, with what is missing and the commands that fill them (the family's
    overrides and the point)."""
    specs = [s for s in specs if s.table == "epochs"]
    seen = {(family(s), point_key(s.point)) for s in specs}
    sibling: dict[str, RowSpec] = {}
    for s in specs:
        if s.preset and s.runs:
            sibling.setdefault(family(s), s)
    suf, _ = suffixes(specs, by)
    out = []
    for fam, sib in sibling.items():
        planned = resolver.plan(sib.preset)
        if not planned or all(not p.point for p in planned):
            continue  # no sweep, or one the preset file no longer defines: nothing to check
        if all((fam, point_key(p.point)) in seen for p in planned):
            continue
        swept = {k for p in planned for k in p.point}
        sets = resolver.fill_overrides(sib.runs[0].config)
        sets = None if sets is None else [x for x in sets if x.split("=")[0].strip() not in swept]
        labelled = by == "label" and f"({sib.preset})" in sib.base.split(" [")[0]
        holes: dict[str, tuple] = {}
        for p in (resolver.plan(sib.preset, sets) if sets else None) or planned:
            key = point_key(p.point)
            if (fam, key) in seen:
                continue
            if key not in holes:
                base = label(p.cfg) if by == "label" else sib.preset
                base = with_point(f"{base} ({sib.preset})" if labelled else base, p.point, by)
                spec = RowSpec(
                    base + (SEP + suf[fam] if suf.get(fam) else ""),
                    sib.preset,
                    dict(p.point),
                    "epochs",
                    [],
                    base=base,
                    config=p.cfg.to_dict(),
                    overrides=dict(sib.overrides),
                    suffix=suf.get(fam, ""),
                )
                holes[key] = (spec, [])
            holes[key][1].append(p.seed)
        out += [
            (
                spec,
                [f"seed {sd} (not run)" for sd in seeds],
                [fill_command(spec.preset, spec.point, sd, sets) for sd in seeds],
            )
            for spec, seeds in holes.values()
        ]
    return out
