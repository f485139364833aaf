"""What every command shares: the consoles and the width they fit, the store of `--home`, number
formats, the progress bar of a foreground run and the summary table printed after it."""

from __future__ import annotations

import os
import re
import sys

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from engine.errors import UserError
from engine.printable import printable
from engine.facade import backfill_origins, format_epoch, percent, reconcile, run_summary
from engine.service import Service
from tui.widgets.pace import duration

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)

FULL_WIDTH = 100_000
"""The consoles' width when the output is not a terminal and $COLUMNS is unset (piped into a file,
`less` or `grep`): whole lines, never cut or wrapped."""


def term_width(stream=None) -> int | None:
    """The columns output to `stream` (stdout by default) must fit: $COLUMNS when it is set, else
    the terminal's width when the stream is a terminal, else None (piped: whole lines)."""
    cols = os.environ.get("COLUMNS", "").strip()
    if cols.isdigit() and int(cols) > 0:
        return int(cols)
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # a StringIO, a closed or odd stream
        pass
    return None


def fit_consoles(*consoles) -> None:
    """Size the consoles for this command (called at every start, so a test's or a resized
    terminal's width counts): the terminal's width, $COLUMNS, or whole lines when piped."""
    for con in (out, err, *consoles):
        w = term_width(sys.stderr if con.stderr else sys.stdout)
        con.width = w or FULL_WIDTH


def print_table(renderable, console: Console | None = None) -> None:
    """Print a table; to a file or pipe without the spaces that pad its last column (a terminal
    gets it as rich draws it, styles and all)."""
    con = console or out
    if con.is_terminal:
        con.print(renderable)
        return
    with con.capture() as cap:
        con.print(renderable)
    con.file.write("".join(line.rstrip() + "\n" for line in cap.get().splitlines()))
    con.file.flush()


def store_of(ctx: typer.Context):
    """The run store of this invocation (--home, $ADVLC_HOME or ~/.advlc), created when missing: what
    the commands pass to the facade's functions."""
    store = Service((ctx.obj or {}).get("home")).store
    backfill_origins(store)  # runs of an older store: their overrides, derived once
    return store


def runs_of(ctx: typer.Context, refs: list[str]):
    """(store, the runs named by ids or unique prefixes, each once, in the order given)."""
    store = store_of(ctx)
    seen, rds = set(), []
    for ref in refs:
        rd = store.get(ref)
        if rd.id not in seen:
            seen.add(rd.id)
            rds.append(rd)
    return store, rds


def run_or_latest(ctx: typer.Context, ref: str | None, command: str):
    """(store, the run `ref` names; with no ref, the most recently created run (archived ones
    aside), named in one line on stderr so a glance shows which run this is)."""
    if ref is not None:
        store, [rd] = runs_of(ctx, [ref])
        return store, rd
    store = store_of(ctx)
    rows = store.runs()
    if not rows:
        raise UserError(f"{command}: no runs in {store.home} to show (start one with `advlc run PRESET`)")
    row = rows[-1]
    print(
        f"advlc: {command} {row['id']}, the most recent run ({printable(row.get('preset'))}, seed "
        f"{printable(row.get('seed'))}, {printable(row.get('state'))})",
        file=sys.stderr,
        flush=True,
    )
    return store, store.get(row["id"])


_ACC_COMPARED = re.compile(
    r"""(?P<name>\b[A-Za-z_][A-Za-z0-9_]*_acc)\s*(?:==|!=|<=|>=|<|>)\s*(?P<num>-?[\d.]+(?:[eE][-+]?\d+)?)
                             |(?P<num2>-?[\d.]+(?:[eE][-+]?\d+)?)\s*(?:==|!=|<=|>=|<|>)\s*(?P<name2>\b[A-Za-z_][A-Za-z0-9_]*_acc)\b""",
    re.X,
)


def percent_hint(query) -> str | None:
    """When a parsed --where compares an accuracy with a number above 1 (`best_robust_acc > 60`,
    as the tables show 66.3): a hint that accuracies are fractions, with the number to write."""
    if query is None:
        return None
    for m in _ACC_COMPARED.finditer(query.text):
        name, number = (m["name"], m["num"]) if m["name"] else (m["name2"], m["num2"])
        try:
            value = float(number)
        except ValueError:
            continue
        if name in query.names and value > 1:
            return f"accuracies are fractions ({name}: write {value / 100:.4g} for {number} %)"
    return None


def safe(v, *, multiline: bool = False) -> str:
    """A string from the store inside console markup: control characters shown as `cat -v` does
    (engine.printable), markup escaped; it may come from someone else's archive."""
    return escape(printable(v, multiline=multiline))


def pct(v) -> str:
    """A fraction as the CLI's tables write it: 45.67 (engine.numbers.percent)."""
    return percent(v, 2)


def num(v, fmt="{:.4g}") -> str:
    return "—" if v is None else fmt.format(v)


def compact(v) -> str:
    """A number in at most 8 characters: 4 significant digits, or 1.23e-05 when tiny or huge
    (-4.2e-05 when negative)."""
    if v is None:
        return "—"
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    return f"{v:.2e}" if v > 0 else f"{v:.1e}"


def reconcile_home(home) -> None:
    """Called at every start: make run states truthful (dead `running` runs -> `lost`)."""
    try:
        store = Service(home, create=False).store
        if store.runs_dir.exists():
            reconcile(store)
            if store.repaired:
                print(
                    f"advlc: warning: index.json was damaged: rebuilt from the run directories "
                    f"(the damaged copy: {store.repaired})",
                    file=sys.stderr,
                )
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - never block a command on this; say so in one line
        print(f"advlc: warning: could not check run states: {type(exc).__name__}: {exc}", file=sys.stderr)


class Progress:
    """Rich progress for a foreground run: epochs, batches and the latest metrics."""

    def __init__(self, run_id: str):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.p = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=out,
            transient=True,
        )  # gone when the run ends: the summary follows, no stale bar
        self.run_id = run_id
        self.ep = self.b = None

    def __enter__(self):
        if out.is_terminal:  # piped, the bar is never drawn: the epoch lines alone, nothing after them
            self.p.__enter__()
        return self

    def __exit__(self, *exc):
        return self.p.__exit__(*exc) if out.is_terminal else None

    def event(self, kind: str, info: dict):
        if kind == "start":
            self.ep = self.p.add_task("epoch", total=info["epochs"], completed=info["start_epoch"], info="")
            self.b = self.p.add_task("batch", total=info["batches"], info="")
        elif kind == "batch":
            self.p.update(self.b, completed=info["batch"])
        elif kind == "epoch":
            r = info
            text = f"clean {pct(r['clean_acc'])} robust {pct(r['robust_acc'])} IG {num(r['ig'], '{:.3g}')}"
            self.p.console.print(epoch_line(self.run_id, r), highlight=False, markup=False)
            self.p.update(self.ep, completed=r["epoch"] + 1, info=text)
            self.p.update(self.b, completed=0)


def epoch_line(run_id: str, rec) -> str:
    """One line per epoch of a foreground run: the run log's line (engine format_epoch) when it
    fits the console, else the numbers that matter in fewer columns."""
    line = f"{run_id} {format_epoch(rec)}"
    if len(line) <= out.width:
        return line
    return (
        f"{run_id} ep {rec['epoch']:>3}  clean {pct(rec.get('clean_acc'))}  robust {pct(rec.get('robust_acc'))}  "
        f"IG {num(rec.get('ig'), '{:.3g}')}  HS {num(rec.get('hs'), '{:.3g}')}  {rec['time_s']:.1f}s"
    )


SUMMARY_TITLE = "accuracy % at best (highest PGD robust accuracy) / end epoch; diff = best − end"


def print_summary(runs) -> None:
    """Best/end clean and robust accuracy, their differences and IG of finished foreground runs,
    in two-line headers that fit 80 columns (a long label wraps rather than cut a number)."""
    sums = [run_summary(rd) for rd in runs]
    title = SUMMARY_TITLE
    if any(s["select_on"] == "val" for s in sums):
        title = title.replace("(highest PGD robust accuracy)", "(highest PGD robust accuracy on the selection split)")
    out.print(title, markup=False)
    t = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), collapse_padding=True)
    for head in ("run", "label", "seed", "clean %\nbest/end", "\ndiff", "robust %\nbest/end", "\ndiff", "\nIG"):
        left = head in ("run", "label")
        t.add_column(
            head,
            justify="left" if left else "right",
            no_wrap=head != "label",
            overflow="fold" if head == "label" else "ellipsis",
        )
    for rd, s in zip(runs, sums):
        label = s["label"] if s["state"] == "finished" else f"{s['label']} ({s['state']})"
        t.add_row(
            rd.id,
            Text(printable(label)),
            str(s["seed"]),
            f"{pct(s['clean_best'])}/{pct(s['clean_end'])}",
            pct(s["clean_diff"]),
            f"{pct(s['robust_best'])}/{pct(s['robust_end'])}",
            pct(s["robust_diff"]),
            num(s["ig"], "{:.3g}"),
        )
    out.print(t)
    for rd, s in zip(runs, sums):
        if s["select_on"] == "val" and s["robust_best_test"] is not None:
            out.print(
                f"{rd.id}: best chosen on validation; test-chosen best: {pct(s['robust_best_test'])} % "
                f"robust (optimistic)",
                markup=False,
                highlight=False,
            )
        if s["stopped_early_at"] is not None:
            saved = f" (about {duration(s['seconds_saved'])} saved)" if s["seconds_saved"] is not None else ""
            out.print(f"{rd.id}: {s['stopped_early']}{saved}", markup=False, highlight=False)
