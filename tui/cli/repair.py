"""`advlc repair [RUN…]`: rebuild what damaged run directories and the index can still give."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from engine.facade import repair
from tui.cli.common import out, runs_of, store_of
from tui.cli.root import app


@app.command("repair")
def repair_cmd(
    ctx: typer.Context,
    runs: Annotated[
        Optional[list[str]], typer.Argument(help="Run ids (default: every run).", show_default=False)
    ] = None,
):
    """Check runs and the index; rebuild each damaged file and keep the damaged one beside it (with a
    timestamp): config from its copy, status from the checkpoint, every record that can still be
    read; rebuild the index. Killed midway, running it again finishes the job."""
    if runs:
        store, rds = runs_of(ctx, runs)
    else:
        store, rds = store_of(ctx), None
    reps, notes = repair(store, rds)
    healthy = not any(r.done or r.found or r.unrecoverable for r in reps) and all(
        line.startswith("index rebuilt") for line in notes
    )
    if healthy:  # the index is rebuilt every time: nothing to tell but that all is well
        out.print(
            f"healthy: {len(reps)} run(s) checked in {store.home}, nothing to repair",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return
    bad = 0
    for rep in reps:
        for line in rep.done:
            out.print(f"{rep.run_id}  repaired: {line}", markup=False, highlight=False)
        for line in rep.found:
            out.print(f"{rep.run_id}  found: {line}", markup=False, highlight=False)
        for line in rep.unrecoverable:
            bad += 1
            out.print(f"{rep.run_id}  NOT repaired: {line}", markup=False, highlight=False)
    for line in notes:
        out.print(line, markup=False, highlight=False)
    fixed = sum(1 for r in reps if r.done)
    out.print(f"{len(reps)} run(s) checked, {fixed} repaired, {bad} not repairable", highlight=False)
    if bad:
        raise typer.Exit(1)
