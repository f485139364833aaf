"""`advlc experiment PRESET` (run a Fig. 4 / A.1 analysis in the foreground) and `advlc points RUN`."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from engine import facade
from engine.errors import UserError
from engine.facade import POINT_KEYS, create_runs, plan_runs
from tui.cli.common import err, out, store_of
from tui.cli.root import app


def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_points(rd) -> None:
    """The points of an experiment run as a table, never squeezed (wide tables overflow)."""
    rows = rd.records("points")
    kind = rd.config().value("experiment.kind") or ""
    cols = ["index"] + [k for k in POINT_KEYS.get(kind, ()) if k != "hs_method"] + ["time_s"]
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    t = Table(box=None, pad_edge=False, title=f"{rd.id} {kind} points")
    for c, w in zip(cols, widths):
        t.add_column(c, justify="left" if c == "split" else "right", min_width=w, no_wrap=True)
    for row in cells:
        t.add_row(*row)
    out.print(t, width=max(out.width, sum(widths) + 2 * len(cols)), crop=False)


@app.command("experiment")
def experiment_cmd(
    ctx: typer.Context,
    preset: Annotated[
        str, typer.Argument(help="An experiment preset (with an [experiment] table), e.g. quick/digits-fig4b.")
    ],
    set_: Annotated[list[str], typer.Option("--set", help="Override section.key=value.")] = [],
    source: Annotated[
        Optional[str], typer.Option("--source", help="Run id or preset of the model analysed (default: the preset's).")
    ] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu | cuda | cuda:N.")] = None,
):
    """Run an analysis experiment (Fig. 4a/b/c, A.1) in the foreground; its points go to the run's
    `points` table (see `advlc points RUN`)."""
    overrides = list(set_)
    if source:
        overrides.append(f"experiment.source={source}")
    if device:
        overrides.append(f"train.device={device}")
    store = store_of(ctx)
    planned = plan_runs(preset, overrides, home=ctx.obj["home"])
    cfg = planned[0].cfg
    if not cfg.experiment.kind:
        raise UserError(
            f"preset {preset} has no [experiment] kind: it is a training preset (train it with `advlc run {preset}`)"
        )
    facade.validate_experiment(cfg, f"preset {preset}")
    src = facade.experiment_source(store, cfg.experiment.source)
    failed = False
    for rd in create_runs(store, planned):
        out.print(f"experiment [bold]{rd.id}[/]  {preset}  {cfg.experiment.kind} of run {src.id}  → {rd.path}")
        state = facade.train_foreground(rd, store, log=lambda line: out.print(line, markup=False))
        print_points(rd)
        if state != "finished":
            err.print(f"advlc: experiment {rd.id} {state}: {(rd.status().error or '').strip()}", markup=False)
            failed = failed or state == "failed"
    if failed:
        raise typer.Exit(1)


@app.command("points")
def points_cmd(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
):
    """The `points` records of an experiment run."""
    rd = store_of(ctx).get(run)
    conf = rd.config()
    if not conf.is_experiment:
        raise UserError(
            f"run {rd.id} is a training run, not an experiment: it has no points (see `advlc show {rd.id}`)"
        )
    if as_json:
        src = conf.source.to_json() if conf.source else None
        print(
            json.dumps(
                {
                    "id": rd.id,
                    "experiment": conf.section("experiment"),
                    "source": src,
                    "points": [r.to_json() for r in rd.records("points")],
                },
                indent=1,
            )
        )
        return
    print_points(rd)
