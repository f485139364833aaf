"""`advlc pack RUN… -o FILE.tar.gz` and `advlc unpack FILE`: hand runs to a colleague, with their checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.errors import UserError
from engine.facade import pack, unpack
from tui.cli.common import out, runs_of, store_of
from tui.cli.root import app


@app.command("pack")
def pack_cmd(ctx: typer.Context,
             runs: Annotated[list[str], typer.Argument(help="Run ids (or unique prefixes).")],
             output: Annotated[Path, typer.Option("-o", "--output", help="The archive to write, e.g. runs.tar.gz.")],
             ckpt: Annotated[str, typer.Option("--ckpt", help="Checkpoints to include: best, end, swa_best, swa_end, "
                                                               "comma-separated, or none.")] = "best,end"):
    """Pack runs (config, status, records, log, notes and the chosen checkpoints) into one file."""
    store, rds = runs_of(ctx, runs)
    ckpts = [] if ckpt.strip() == "none" else [c.strip() for c in ckpt.split(",") if c.strip()]
    if output.exists():
        raise UserError(f"-o {output}: exists already; choose another name")
    manifest = pack(store, rds, output, ckpts)
    size = output.stat().st_size
    out.print(f"packed {len(rds)} run(s), {len(manifest['files'])} files, {size / 1e6:.1f} MB → {output}",
              highlight=False)


@app.command("unpack")
def unpack_cmd(ctx: typer.Context,
               archive: Annotated[Path, typer.Argument(help="An archive written by `advlc pack`.")]):
    """Add the runs of an archive to this store as data, ids kept: a run that was running arrives stopped
    (resumable here), no launch settings or processes of the sender are kept, each config is checked like
    a preset; refused if an id is taken or the archive is damaged or over the size limits."""
    rds = unpack(store_of(ctx), archive)
    for rd in rds:
        out.print(f"{rd.id}  {rd.status().state}  {rd.config().run.preset}  → {rd.path}",
                  highlight=False)
