"""`advlc export RUN… --tensorboard DIR`: runs of the store as TensorBoard event files.

    advlc export RUN… | --preset P | --group G --tensorboard DIR

Each run goes to DIR/<preset>/<label>/seed<seed>-<run id>/ (engine/report/tensorboard.py);
exporting again replaces it. `tensorboard --logdir DIR` then shows every run, its epoch
curves, final evaluations, HParams and config. TensorBoard is optional:
`pip install 'advlc[tensorboard]'` (without it the command says so in one line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from engine.errors import UserError
from engine.facade import export_tensorboard
from tui.cli.common import err, store_of
from tui.cli.root import app


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    runs: Annotated[
        Optional[list[str]], typer.Argument(help="Run ids (or unique prefixes).", show_default=False)
    ] = None,
    tensorboard: Annotated[
        Optional[Path], typer.Option("--tensorboard", help="Write TensorBoard event files into this folder.")
    ] = None,
    preset: Annotated[
        Optional[str], typer.Option("--preset", help="All runs of a preset (or preset folder, e.g. quick).")
    ] = None,
    group: Annotated[Optional[str], typer.Option("--group", help="All runs of a launch group.")] = None,
):
    """Export runs for other tools: TensorBoard event files (--tensorboard DIR)."""
    if tensorboard is None:
        raise UserError("export: say where to: --tensorboard DIR")
    if not (runs or preset or group):
        raise UserError("export: which runs? give run ids, --preset or --group")
    done = export_tensorboard(store_of(ctx), tensorboard, run_ids=runs or None, preset=preset, group=group)
    for rid, tag, _folder in done:
        print(f"{rid}  {tag}")
    err.print(
        f"wrote {len(done)} run{'s' if len(done) != 1 else ''} to {tensorboard}; "
        f"view with: tensorboard --logdir {tensorboard}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
