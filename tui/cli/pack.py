"""`advlc pack RUN… -o FILE.tar.gz` and `advlc unpack FILE`: hand runs to a colleague, with their checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from engine.errors import UserError
from engine.facade import FINAL_STATES, pack, unpack
from tui.cli.common import err, out, runs_of, store_of
from tui.cli.root import app


@app.command("pack")
def pack_cmd(
    ctx: typer.Context,
    runs: Annotated[
        Optional[list[str]], typer.Argument(help="Run ids (or unique prefixes).", show_default=False)
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="The archive to write, e.g. runs.tar.gz.")] = ...,  # type: ignore[assignment]  # typer: required
    preset: Annotated[
        Optional[str],
        typer.Option("--preset", help="Every run of this preset (or preset folder, e.g. quick), archived ones aside."),
    ] = None,
    ckpt: Annotated[
        str,
        typer.Option("--ckpt", help="Checkpoints to include: best, end, swa_best, swa_end, comma-separated, or none."),
    ] = "best,end",
):
    """Pack runs (config, status, records, log, notes and the chosen checkpoints) into one file:
    the runs named, and with --preset every run of a preset."""
    if not runs and not preset:
        raise UserError("pack: name runs (ids or prefixes) or --preset P")
    store, rds = runs_of(ctx, runs or [])
    if preset:
        docs = store.runs(preset=preset)
        if not docs:
            raise UserError(f"pack --preset {preset}: no runs of that preset in {store.home} (see `advlc runs`)")
        seen = {rd.id for rd in rds}
        ended = [d for d in docs if d.get("state") in FINAL_STATES]
        going = [d["id"] for d in docs if d not in ended and d["id"] not in seen]
        if not ended:
            raise UserError(
                f"pack --preset {preset}: none of its {len(docs)} run(s) has ended yet "
                f"({', '.join(going[:5])}); pack runs that have ended"
            )
        if going:
            err.print(
                f"advlc: pack --preset {preset}: left out {len(going)} run(s) still going: "
                f"{' '.join(going[:5])}{' …' if len(going) > 5 else ''}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        rds += [store.get(d["id"]) for d in ended if d["id"] not in seen]
    ckpts = [] if ckpt.strip() == "none" else [c.strip() for c in ckpt.split(",") if c.strip()]
    if output.exists():
        raise UserError(f"-o {output}: exists already; choose another name")
    manifest = pack(store, rds, output, ckpts)
    size = output.stat().st_size
    out.print(
        f"packed {len(rds)} run(s), {len(manifest['files'])} files, {size / 1e6:.1f} MB → {output}",
        highlight=False,
        markup=False,
    )


@app.command("unpack")
def unpack_cmd(
    ctx: typer.Context, archive: Annotated[Path, typer.Argument(help="An archive written by `advlc pack`.")]
):
    """Add the runs of an archive to this store as data, ids kept: a run that was running arrives stopped
    (resumable here), no launch settings or processes of the sender are kept, each config is checked like
    a preset; refused if an id is taken or the archive is damaged or over the size limits."""
    rds = unpack(store_of(ctx), archive)
    for rd in rds:
        out.print(f"{rd.id}  {rd.status().state}  {rd.config().run.preset}  → {rd.path}", highlight=False)
