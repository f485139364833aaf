"""The comparison table's data: its columns, cells (mean ± std over a row's seeds), rows and the
table itself, as `engine.report.tables` builds them and `engine.report.render` writes them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from engine.report.columns import fmt_value

COLUMNS = ["clean_best", "clean_end", "clean_diff", "robust_best", "robust_end", "robust_diff", "ig", "hs", "time"]

# key -> (plain header, rule for "best": max | min | absmin, unit)
COLUMN_INFO = {
    "clean_best": ("Clean best", "max", "%"),
    "clean_end": ("Clean end", "max", "%"),
    "clean_diff": ("Clean diff", "absmin", "%"),
    "robust_best": ("Robust best", "max", "%"),
    "robust_end": ("Robust end", "max", "%"),
    "robust_diff": ("Robust diff", "absmin", "%"),
    "robust_best_test": ("Robust best (test-sel.)", "max", "%"),
    "ig": ("IG", "min", ""),
    "hs": ("HS", "min", ""),
    "time": ("Time", "min", "s"),
}
VAL_COLUMNS = ["robust_best_test"]
"""Shown after robust_diff when a row selects its best on a validation split: the test-selected best
of the same runs (an optimistic upper bound beside the honest number)."""
DIFFS = {"clean_diff": ("clean_best", "clean_end"), "robust_diff": ("robust_best", "robust_end")}


@dataclass
class Cell:
    """mean ± std over the n runs of a row that have this number (std None when n < 2)."""

    mean: float | None
    std: float | None
    n: int


def cell(values: list) -> Cell:
    """mean ± sample std (n - 1) of the non-None values."""
    vals = [v for v in values if v is not None]
    if not vals:
        return Cell(None, None, 0)
    return Cell(statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


@dataclass
class CompareRow:
    name: str
    runs: list[str]  # run ids counted in the cells
    seeds: list[int]
    cells: dict[str, Cell]
    missing: list[str]  # e.g. "seed 2 (not run)", "seed 1 (failed)"
    fill: list[str] = field(default_factory=list)  # commands that fill the holes
    table: str = "epochs"  # the metrics table the row is computed from ("swa")
    preset: str | None = None
    point: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)  # {key: value}: the overrides that made its config
    config_values: dict = field(default_factory=dict)  # {config key: value} of the table's config_columns
    config: dict = field(default_factory=dict, repr=False, compare=False)  # its configuration (not in json)


@dataclass
class CompareTable:
    title: str
    columns: list[str]
    rows: list[CompareRow]
    best: dict[str, str]  # column -> name of the row with the best value
    notes: list[str] = field(default_factory=list)
    time_unit: str = "s/batch"  # "s/batch" or "s/epoch"
    source: str = ""  # the evaluation that produced the accuracies
    ckpt_eval: str | None = None
    config_columns: list[str] = field(default_factory=list)  # config keys shown after the row name

    @property
    def complete(self) -> bool:
        return not any(r.missing for r in self.rows)

    def config_texts(self, row: CompareRow, *, full: bool = False) -> list[str]:
        """The row's values of `config_columns` as text (4 significant digits; all with `full`)."""
        return [fmt_value(k, row.config_values.get(k), full=full) for k in self.config_columns]

    def headers(self) -> dict[str, str]:
        h = {k: COLUMN_INFO[k][0] for k in self.columns}
        h["time"] = f"Time ({self.time_unit})"
        return h
