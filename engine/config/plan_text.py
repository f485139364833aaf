"""A plan in words: `2 runs: pgd, pgd+advlc × seed 0`.

The CLI (`advlc run`, `advlc preset show`) and the Presets screen say what a launch will make in
the same words: each scheme (sweep point) by its label, or by its swept values when labels do not
tell the points apart, then the seeds.
"""

from __future__ import annotations

from typing import Any

from engine.config.schema import label


def seeds_of(planned) -> list[int]:
    """The seeds of a plan, in order (each point of a sweep has the same ones)."""
    return list(dict.fromkeys(p.seed for p in planned))


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def scheme_names(planned) -> list[str]:
    """One name per point of the plan: its label (`pgd+advlc`) when the labels tell the points apart,
    else the swept values (`lam=0.3`), with the label in front when there is more than one."""
    points: dict[tuple, Any] = {}
    for p in planned:
        points.setdefault(tuple(sorted((k, repr(v)) for k, v in p.point.items())), p)
    firsts = list(points.values())
    labels = [label(p.cfg) for p in firsts]
    if len(set(labels)) == len(labels):
        return labels
    many = len(set(labels)) > 1
    return [
        (f"{label(p.cfg)} " if many else "")
        + ", ".join(f"{k.rpartition('.')[2]}={_fmt(v)}" for k, v in p.point.items())
        for p in firsts
    ]


def plan_text(planned) -> str:
    """`2 runs: pgd, pgd+advlc × seed 0` — every run a launch makes, by scheme and seed."""
    runs = [p for p in planned if not p.role.startswith("teacher")]
    seeds = seeds_of(runs)
    n, teachers = len(runs), len(planned) - len(runs)
    return (
        f"{n} run{'' if n == 1 else 's'}: {', '.join(scheme_names(runs))} × "
        f"seed{'' if len(seeds) == 1 else 's'} {', '.join(map(str, seeds))}"
        + (f" (+ {teachers} teacher run{'' if teachers == 1 else 's'} first)" if teachers else "")
    )
