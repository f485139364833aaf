"""`advlc compare` and `advlc report`: the paper's tables and figures from the run store.

    advlc compare RUN… | --preset P | --group G [--by label|preset] [--eval ATTACK]
                  [--columns KEY,…] [--format table|md|latex|csv|json] [--out FILE] [--include-unfinished]
    advlc report PRESET|GROUP|RUN… [--out DIR] [--format md|html|pdf]… [--by label|preset] [--columns KEY,…]

Both call engine.report.tables only; bad input ends in one line and exit code 2 (tui.cli.main).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from engine.errors import UserError
from engine.facade import build_report, compare_runs, parse_columns, parse_query, render
from tui.cli.common import percent_hint, store_of, term_width
from tui.cli.root import app

COMPARE_FORMATS = ("table", "md", "latex", "csv", "json")
SUFFIX_FORMATS = {".md": "md", ".markdown": "md", ".tex": "latex", ".csv": "csv", ".json": "json", ".txt": "table"}


@contextmanager
def where_hint(where: str | None):
    """A selection that fails while --where compares an accuracy with a percentage (`> 60`): the
    one-line error says that accuracies are fractions."""
    try:
        yield
    except UserError as exc:
        try:
            hint = percent_hint(parse_query(where)) if where else None
        except UserError:  # the expression itself is wrong: that is the error
            hint = None
        if hint is None:
            raise
        raise UserError(f"{exc}; {hint}", exc.code) from None


@app.command("compare")
def compare_cmd(
    ctx: typer.Context,
    runs: Annotated[
        Optional[list[str]], typer.Argument(help="Run ids (or unique prefixes).", show_default=False)
    ] = None,
    preset: Annotated[
        Optional[str], typer.Option("--preset", help="All runs of a preset (or preset folder, e.g. quick).")
    ] = None,
    group: Annotated[
        Optional[str], typer.Option("--group", help="All runs of a launch group (see `advlc runs --json`).")
    ] = None,
    where: Annotated[
        Optional[str],
        typer.Option(
            "--where",
            help="Only runs this expression selects, e.g. "
            "'method.lam > 0.3 and \"robust\" in tags' (see `advlc runs --help`).",
        ),
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Rows: label (training scheme) or preset.")] = "label",
    eval_: Annotated[
        Optional[str],
        typer.Option(
            "--eval",
            help="Take clean/robust best/end from final evaluations "
            "with this attack (aa, aa-torchattacks, pgd50, apgd50x5).",
        ),
    ] = None,
    fmt: Annotated[
        Optional[str],
        typer.Option("--format", help="table | md | latex | csv | json (default: from --out's suffix, else table)."),
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of stdout.")] = None,
    include_unfinished: Annotated[
        bool, typer.Option("--include-unfinished", help="Count runs that have not finished (default: finished only).")
    ] = False,
    columns: Annotated[
        Optional[list[str]],
        typer.Option(
            "--columns",
            help="Config keys shown as columns after the row name, e.g. method.lam,attack.eps (repeatable).",
        ),
    ] = None,
):
    """Compare runs in the layout of the paper's Table 1: mean ± std over seeds; runs average into
    a row only when their configs are equal but for the seed (rows named by their overrides)."""
    if fmt is None:
        fmt = SUFFIX_FORMATS.get(out.suffix.lower(), "table") if out else "table"
    if fmt not in COMPARE_FORMATS:
        raise UserError(f"--format {fmt}: must be one of {', '.join(COMPARE_FORMATS)}")
    if by not in ("label", "preset"):
        raise UserError(f"--by {by}: must be label or preset")
    keys = parse_columns(columns)  # a bad key: one line, before any run is read
    with where_hint(where):
        table = compare_runs(
            store_of(ctx),
            run_ids=runs or None,
            preset=preset,
            group=group,
            by=by,
            ckpt_eval=eval_,
            include_unfinished=include_unfinished,
            where=where,
            columns=keys,
        )
    # the plain table fits the terminal (or $COLUMNS); written to a file or piped, its lines are whole
    text = render(table, fmt, width=None if out else term_width()) if fmt == "table" else render(table, fmt)
    if out:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
        except OSError as exc:
            raise UserError(f"--out {out}: cannot write ({exc.strerror})") from None
        print(f"wrote {out} ({len(table.rows)} rows, {fmt})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if not table.complete and fmt not in ("table", "md"):
        print(
            "advlc: note: incomplete: "
            + "; ".join(f"{r.name}: {', '.join(r.missing)}" for r in table.rows if r.missing),
            file=sys.stderr,
        )


@app.command("report")
def report_cmd(
    ctx: typer.Context,
    refs: Annotated[
        Optional[list[str]],
        typer.Argument(help="Presets (or preset folders), group ids or run ids.", show_default=False),
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default ./report-NAME).")] = None,
    fmt: Annotated[
        list[str],
        typer.Option(
            "--format", help="md | html | pdf, repeatable or comma-separated (default md,html; md is always written)."
        ),
    ] = [],
    by: Annotated[str, typer.Option("--by", help="Rows: label (training scheme) or preset.")] = "label",
    include_unfinished: Annotated[
        bool, typer.Option("--include-unfinished", help="Count runs that have not finished.")
    ] = False,
    where: Annotated[Optional[str], typer.Option("--where", help="Only runs this expression selects.")] = None,
    columns: Annotated[
        Optional[list[str]],
        typer.Option("--columns", help="Config keys shown as columns of every table, e.g. method.lam,attack.eps."),
    ] = None,
):
    """Write the paper's tables and figures for a preset group or runs into one report folder."""
    formats = [f.strip() for item in fmt for f in item.split(",") if f.strip()] or ["md", "html"]
    formats = ["md"] + [f for f in formats if f != "md"]
    if by not in ("label", "preset"):
        raise UserError(f"--by {by}: must be label or preset")
    with where_hint(where):
        res = build_report(
            store_of(ctx),
            refs or [],
            out,
            formats=tuple(formats),
            by=by,
            include_unfinished=include_unfinished,
            where=where,
            columns=parse_columns(columns),
        )
    made = [f.name for f in res.figures if not f.skipped]
    print(f"report: {res.out_dir}")
    for p in res.files:
        print(f"  {p}")
    print(f"  {len(res.runs)} runs; tables: {', '.join(t.source for t in res.tables)}")
    print(
        f"  figures: {', '.join(made) or 'none'}"
        f" (not produced: {', '.join(f.name for f in res.figures if f.skipped) or 'none'})"
    )
    if not res.complete:
        rows = [r for t in res.tables[:1] for r in t.rows if r.missing]
        print("  incomplete: " + "; ".join(f"{r.name}: {', '.join(r.missing)}" for r in rows))
        for c in dict.fromkeys(c for t in res.tables for r in t.rows for c in r.fill):
            print(f"    {c}")
