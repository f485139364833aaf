"""`advlc diff RUN_A RUN_B`: the config keys that differ, where the numbers came from, and the headline metrics."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from engine.facade import diff_runs
from tui.cli.common import out, runs_of
from tui.cli.root import app


def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.6g}"
    return json.dumps(v) if not isinstance(v, str) else v


@app.command("diff")
def diff_cmd(ctx: typer.Context,
             run_a: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
             run_b: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
             as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False):
    """Compare two runs: resolved config, code commit and diff hash, versions, device, and their results."""
    _, rds = runs_of(ctx, [run_a, run_b])
    if len(rds) < 2:
        rds = rds * 2
    d = diff_runs(rds[0], rds[1])
    if as_json:
        print(json.dumps({**d, **{k: [list(r) for r in d[k]] for k in ("config", "origin", "metrics")}}, indent=1))
        return
    a, b = d["runs"]
    heads = [f"{a} ({d['titles'][0] or d['labels'][0]})", f"{b} ({d['titles'][1] or d['labels'][1]})"]
    for title, rows in (("config: keys that differ", d["config"]), ("origin: what differs", d["origin"]),
                        ("results", d["metrics"])):
        t = Table(title=title, box=None, pad_edge=False, title_justify="left")
        for c in ("key", *heads):
            t.add_column(c, overflow="fold")
        for key, va, vb in rows:
            t.add_row(key, _cell(va), _cell(vb))
        if rows:
            out.print(t)
        else:
            out.print(f"{title}: none", highlight=False)
