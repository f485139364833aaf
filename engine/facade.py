"""What the command line calls, and what the app calls that touches no run store.

The import contract (pyproject.toml) lets `tui` import only this module, engine.service,
`engine.errors` and `engine.paths`. The app reaches the store through engine.service, which
delegates here; the command line passes its store (`Service.store`) to these functions.
Everything here is cheap to import (no torch): the store's watchers and records, presets and
plans, the supervisor's actions and the reports. What computes (training in the foreground,
evaluation, experiments, benchmarks) loads torch and is imported on first use through
`__getattr__` below, so `advlc runs` or `advlc preset show` never pay for it.
"""

from __future__ import annotations

import importlib

from engine.config.caveats import caveats
from engine.config.plan_text import plan_text, seeds_of
from engine.config.presets import (
    DEFAULT_PRESET,
    list_presets,
    load_preset,
    read_preset,
)
from engine.config.presets import preset_runs as preset_runs
from engine.config.schema import (
    DEVICES_RE,
    EXPERIMENT_KINDS,
    FINAL_ATTACKS,
    FINAL_CKPTS,
    POINT_KEYS,
    SEED_MAX,
    load_toml,
)
from engine.config.schema import label as config_label
from engine.launch.plan import plan_runs
from engine.launch.request import MAX_SLOTS_PER_GPU, LaunchRequest, parse_gpus, split_overrides
from engine.launch.supervisor import (
    check_resumable,
    create_runs,
    delete,
    follow,
    launch,
    prepare_resume,
    queue_info,
    reconcile,
    resume,
    resume_epoch,
    stop,
    tail,
    unpack,
)
from engine.nn.methods import get_method
from engine.report.diff import diff_runs
from engine.report.document import build_report
from engine.report.query import parse as parse_query
from engine.report.query import select as select_runs_where
from engine.report.columns import add_columns, parse_columns
from engine.report.curves import row_curves
from engine.report.model import CompareTable
from engine.report.render import export, fmt_cell, render
from engine.report.runs import run_summary, summary_from
from engine.report.tables import compare_runs
from engine.report.tensorboard import TensorBoardMissing
from engine.run.origins import backfill_origins
from engine.report.tensorboard import export_runs as export_tensorboard
from engine.numbers import percent
from engine.store.files import atomic_write_text
from engine.store.pack import pack
from engine.store.repair import repair
from engine.launch.executors import executor_named
from engine.store.records import Meta, Origin, Status
from engine.store.states import FINAL_STATES, STATES
from engine.store.alerts import (
    CO_DROP,
    CO_MIN_ROBUST,
    CO_WINDOW,
    RO_POINTS,
    RO_STREAK,
    Alert,
    detect_alerts,
    overfitting_onset,
    robust_key,
)
from engine.store.summary import format_epoch
from engine.store.watch import (
    IndexSnapshot,
    RunDelta,
    RunFollower,
    RunHistory,
)

_LAZY = {
    "train_foreground": ("engine.run.process", "run"),
    "eval_run": ("engine.run.final_eval", "eval_run"),
    "check_eval_choices": ("engine.run.final_eval", "check_choices"),
    "validate_experiment": ("engine.run.experiments", "validate"),
    "experiment_source": ("engine.run.experiments", "resolve_source"),
    "bench_steps": ("engine.bench.steps", "bench_steps"),
    "bench_epoch": ("engine.bench.epoch", "bench_epoch"),
    "bench_hs": ("engine.bench.hs", "bench_hs"),
    "bench_concurrency": ("engine.bench.concurrency", "bench_concurrency"),
    "bench_markdown": ("engine.bench.markdown", None),
}
"""name -> (module, attribute; None for the module itself): imported on first use (they load torch)."""


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _LAZY[name]
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_PRESET",
    "DEVICES_RE",
    "EXPERIMENT_KINDS",
    "FINAL_ATTACKS",
    "FINAL_CKPTS",
    "FINAL_STATES",
    "POINT_KEYS",
    "STATES",
    "CompareTable",
    "add_columns",
    "parse_columns",
    "IndexSnapshot",
    "RunDelta",
    "RunFollower",
    "RunHistory",
    "build_report",
    "check_resumable",
    "compare_runs",
    "create_runs",
    "delete",
    "export",
    "fmt_cell",
    "follow",
    "format_epoch",
    "get_method",
    "launch",
    "list_presets",
    "load_preset",
    "load_toml",
    "plan_runs",
    "prepare_resume",
    "queue_info",
    "read_preset",
    "reconcile",
    "render",
    "resume",
    "row_curves",
    "diff_runs",
    "pack",
    "parse_query",
    "select_runs_where",
    "unpack",
    "repair",
    "resume_epoch",
    "run_summary",
    "summary_from",
    "stop",
    "tail",
    "export_tensorboard",
    "RO_POINTS",
    "RO_STREAK",
    "overfitting_onset",
    "Alert",
    "detect_alerts",
    "robust_key",
    "CO_DROP",
    "CO_MIN_ROBUST",
    "CO_WINDOW",
    "TensorBoardMissing",
    "backfill_origins",
    "Meta",
    "Origin",
    "Status",
    "atomic_write_text",
    "executor_named",
    "caveats",
    "config_label",
    "percent",
    "plan_text",
    "preset_runs",
    "seeds_of",
    "LaunchRequest",
    "parse_gpus",
    "split_overrides",
    "MAX_SLOTS_PER_GPU",
    "SEED_MAX",
    *_LAZY,
]
