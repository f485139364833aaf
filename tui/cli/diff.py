"""`advlc diff RUN_A RUN_B`: the config keys that differ, where the numbers came from, and the headline metrics."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from engine.facade import diff_runs
from engine.printable import printable
from tui.cli.common import compact, out, pct, print_table, runs_of
from tui.cli.root import app


def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.6g}"
    return json.dumps(v) if not isinstance(v, str) else v


@app.command("diff")
def diff_cmd(
    ctx: typer.Context,
    run_a: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
    run_b: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
):
    """Compare two runs: resolved config, code commit and diff hash, versions, device, and their results."""
    _, rds = runs_of(ctx, [run_a, run_b])
    if len(rds) < 2:
        rds = rds * 2
    d = diff_runs(rds[0], rds[1])
    if as_json:
        print(json.dumps({**d, **{k: [list(r) for r in d[k]] for k in ("config", "origin", "metrics")}}, indent=1))
        return
    a, b = d["runs"]
    heads = [
        Text(f"{ab}: {rid} ({printable(d['titles'][i] or d['labels'][i])})")  # Text: never read as markup
        for i, (ab, rid) in enumerate((("A", a), ("B", b)))
    ]
    for title, rows in (("config: keys that differ", d["config"]), ("origin: what differs", d["origin"])):
        if not rows:
            out.print(f"{title}: none", highlight=False, markup=False)
            continue
        t = Table(title=title, box=None, pad_edge=False, title_justify="left")
        for c in ("key", *heads):
            t.add_column(c, overflow="fold")
        for key, va, vb in rows:
            t.add_row(key, Text(_cell(va)), Text(_cell(vb)))
        print_table(t)
    t = Table(
        title="results (accuracies in %; Δ = B − A, in points for accuracies)",
        box=None,
        pad_edge=False,
        title_justify="left",
    )
    for c in ("key", *heads):
        t.add_column(c, overflow="fold", justify="left" if c == "key" else "right")
    t.add_column("Δ", justify="right", no_wrap=True)
    for key, va, vb in d["metrics"]:
        t.add_row(
            key + (" %" if key.endswith("_acc") else ""),
            Text(_metric(key, va)),
            Text(_metric(key, vb)),
            _delta(key, va, vb),
        )
    print_table(t)


def _metric(key: str, v) -> str:
    """A result as the tables show it: accuracies in %, other numbers in 4 significant digits."""
    if key.endswith("_acc"):
        return pct(v)
    if isinstance(v, float):
        return compact(v)
    return _cell(v)


def _delta(key: str, va, vb) -> str:
    """B − A for numbers (accuracies in percentage points), blank otherwise."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
    if not numbers:
        return ""
    dv = vb - va
    if key.endswith("_acc"):
        return f"{100 * dv:+.2f}"
    if isinstance(va, int) and isinstance(vb, int):
        return f"{dv:+d}"
    return "0" if dv == 0 else f"{dv:+.4g}"
