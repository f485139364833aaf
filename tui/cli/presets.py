"""`advlc presets` and `advlc preset show NAME`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from engine.facade import list_presets, load_preset
from tui.cli.common import out, print_table, term_width
from tui.cli.root import app, preset_app


@app.command("presets")
def presets_cmd(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False):
    """List the presets (built-in and $ADVLC_HOME/presets)."""
    entries = list_presets(ctx.obj["home"])
    if as_json:
        print(json.dumps([{"name": e.name, "group": e.group, "description": e.description,
                           "reference": e.reference, "path": str(e.path)} for e in entries], indent=1))
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
def preset_show(ctx: typer.Context, name: str,
                set_: Annotated[list[str], typer.Option("--set", help="Override section.key=value.")] = [],
                as_json: Annotated[bool, typer.Option("--json")] = False):
    """Show a preset's fully resolved config."""
    pname, cfg, _ = load_preset(name, set_, ctx.obj["home"])
    d = cfg.to_dict()
    if as_json:
        print(json.dumps({"name": pname, "label": cfg.label, "config": d}, indent=1))
        return
    out.print(f"[bold]{pname}[/]  ({cfg.label})")
    if cfg.preset.description:
        out.print(cfg.preset.description)
    if cfg.preset.reference:
        out.print(f"reproduces: {cfg.preset.reference}")
    for section, table in d.items():
        if section == "preset":
            continue
        out.print(f"[bold]\\[{section}][/]")
        for k, v in table.items():
            out.print(f"  {k} = {json.dumps(v)}")
