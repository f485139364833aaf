"""`advlc presets` and `advlc preset show NAME`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from engine.facade import caveats, config_label, list_presets, load_preset, plan_text, preset_runs
from tui.cli.common import err, out, print_table, term_width
from tui.cli.root import app, preset_app


@app.command("presets")
def presets_cmd(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False):
    """List the presets (built-in and $ADVLC_HOME/presets)."""
    entries = list_presets(ctx.obj["home"])
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": e.name,
                        "group": e.group,
                        "description": e.description,
                        "reference": e.reference,
                        "path": str(e.path),
                    }
                    for e in entries
                ],
                indent=1,
            )
        )
        return
    # One line per preset; names are never wrapped or cut (they are copied into `advlc run`). In a
    # terminal (or at $COLUMNS) the other columns end in "…" when it is narrow (`preset show NAME` has
    # the whole text); piped, every line is whole.
    name_w = max([len(e.name) for e in entries] + [6])
    t = Table(box=None, pad_edge=False)
    t.add_column("preset", no_wrap=True, min_width=name_w)
    width = term_width()
    if width is None:
        t.add_column("reproduces", no_wrap=True)
        t.add_column("description", no_wrap=True)
    else:
        ref_w = max([len(e.reference) for e in entries] + [10])
        rest = max(0, width - name_w - 4)  # two gaps of two spaces
        ref_w = min(ref_w, max(10, rest * 2 // 5))
        t.add_column("reproduces", no_wrap=True, overflow="ellipsis", width=ref_w)
        t.add_column("description", no_wrap=True, overflow="ellipsis", width=max(10, rest - ref_w))
    for e in entries:
        t.add_row(e.name, e.reference, e.description)
    print_table(t)


@preset_app.command("show")
def preset_show(
    ctx: typer.Context,
    name: str,
    set_: Annotated[list[str], typer.Option("--set", help="Override section.key=value.")] = [],
    as_json: Annotated[bool, typer.Option("--json")] = False,
):
    """Show a preset's fully resolved config, the runs it plans (each sweep point) and its caveats."""
    pname, cfg, _ = load_preset(name, set_, ctx.obj["home"])
    planned = preset_runs(name, set_, home=ctx.obj["home"])
    notes = list(dict.fromkeys(c for p in planned for c in caveats(p.cfg)))
    points = list({json.dumps(p.point, sort_keys=True, default=str): p for p in planned}.values())
    d = cfg.to_dict()
    if as_json:
        print(
            json.dumps(
                {
                    "name": pname,
                    "label": config_label(cfg),
                    "config": d,
                    "plan": plan_text(planned),
                    "points": [{"point": p.point, "label": config_label(p.cfg)} for p in points if p.point],
                    "caveats": notes,
                },
                indent=1,
                default=str,
            )
        )
        return
    out.print(f"[bold]{pname}[/]  ({config_label(cfg)})")
    if cfg.preset.description:
        out.print(cfg.preset.description)
    if cfg.preset.reference:
        out.print(f"reproduces: {cfg.preset.reference}")
    out.print(f"plan: {plan_text(planned)}", markup=False, highlight=False)
    if any(p.point for p in points):
        out.print(
            f"[bold]\\[sweep][/] {len(points)} point{'s' if len(points) != 1 else ''} "
            "(the tables below are the preset's own values)"
        )
        shown = [", ".join(f"{k} = {json.dumps(v, default=str)}" for k, v in p.point.items()) for p in points]
        w = max(map(len, shown))
        for values, p in zip(shown, points):
            out.print(f"  {values.ljust(w)}  → {config_label(p.cfg)}", markup=False, highlight=False)
    for line in notes:
        err.print(f"advlc: warning: {line}", markup=False, highlight=False, soft_wrap=True)
    for section, table in d.items():
        if section == "preset":
            continue
        out.print(f"[bold]\\[{section}][/]")
        for k, v in table.items():
            out.print(f"  {k} = {json.dumps(v)}")
