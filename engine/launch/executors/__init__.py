"""The executors, one module each, and the registry that maps a run's launch record to its executor:
the supervisor asks the executor instead of comparing executor names (docs/SUPERVISOR.md, "Executors")."""

from __future__ import annotations

from engine.errors import UserError
from engine.launch.executors.base import Executor
from engine.launch.executors.gpuqueue import GPU_QUEUE
from engine.launch.executors.local import LOCAL
from engine.launch.executors.slurm import SLURM

EXECUTORS: tuple[Executor, ...] = (LOCAL, GPU_QUEUE, SLURM)
"""Every executor; the launch records of status.json are their RECORDs (engine.store.records.Launch)."""


def executor_for(launch) -> Executor:
    """The executor of a status's `launch` record; None (a run never launched, or trained in the
    foreground) is the local executor's."""
    if launch is None:
        return LOCAL
    for ex in EXECUTORS:
        if isinstance(launch, ex.RECORD):
            return ex
    raise TypeError(f"no executor for a launch record {type(launch).__name__}")


def executor_named(name: str) -> Executor:
    """The executor of `--executor NAME` (a one-line UserError for a name no executor has)."""
    for ex in EXECUTORS:
        if ex.NAMED and ex.TAG == name:
            return ex
    raise UserError(f"--executor {name}: must be {' or '.join(ex.TAG for ex in EXECUTORS if ex.NAMED)}")


__all__ = ["EXECUTORS", "Executor", "executor_for", "executor_named"]
