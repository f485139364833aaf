"""What every command shares: the consoles, the store of `--home`, number formats, the progress bar
of a foreground run and the summary table printed after it."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.errors import UserError
from engine.printable import printable
from engine.facade import Store, backfill_origins, format_epoch, reconcile, run_summary

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)


def store_of(ctx: typer.Context) -> Store:
    """The run store of this invocation (--home, $ADVLC_HOME or ~/.advlc), created when missing."""
    store = Store((ctx.obj or {}).get("home")).ensure()
    backfill_origins(store)       # runs of an older store: their overrides, derived once
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


def safe(v, *, multiline: bool = False) -> str:
    """A string from the store inside console markup: control characters shown as `cat -v` does
    (engine.printable), markup escaped; it may come from someone else's archive."""
    return escape(printable(v, multiline=multiline))


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def num(v, fmt="{:.4g}") -> str:
    return "—" if v is None else fmt.format(v)


def reconcile_home(home) -> None:
    """Called at every start: make run states truthful (dead `running` runs -> `lost`)."""
    try:
        store = Store(home)
        if store.runs_dir.exists():
            reconcile(store)
            if store.repaired:
                print(f"advlc: warning: index.json was damaged: rebuilt from the run directories "
                      f"(the damaged copy: {store.repaired})", file=sys.stderr)
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

        self.p = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=out,
                              transient=False)
        self.run_id = run_id
        self.ep = self.b = None

    def __enter__(self):
        self.p.__enter__()
        return self

    def __exit__(self, *exc):
        return self.p.__exit__(*exc)

    def event(self, kind: str, info: dict):
        if kind == "start":
            self.ep = self.p.add_task("epoch", total=info["epochs"], completed=info["start_epoch"], info="")
            self.b = self.p.add_task("batch", total=info["batches"], info="")
        elif kind == "batch":
            self.p.update(self.b, completed=info["batch"])
        elif kind == "epoch":
            r = info
            text = (f"clean {pct(r['clean_acc'])}  robust {pct(r['robust_acc'])}  "
                    f"IG {num(r['ig'])}  train {r['train_loss']:.3f}")
            self.p.console.print(f"[dim]{self.run_id}[/] " + format_epoch(r), highlight=False)
            self.p.update(self.ep, completed=r["epoch"] + 1, info=text)
            self.p.update(self.b, completed=0)


def print_summary(runs) -> None:
    """Best/end clean and robust accuracy, their differences and IG of finished foreground runs."""
    t = Table(title="accuracy % at best (highest PGD robust accuracy) / end; diff = best - end",
              box=None, pad_edge=False)
    for c in ("run", "label", "seed", "clean best/end", "diff", "robust best/end", "diff", "IG"):
        t.add_column(c, justify="left" if c in ("run", "label") else "right", no_wrap=True)
    for rd in runs:
        s = run_summary(rd)
        label = s["label"] if s["state"] == "finished" else f"{s['label']} ({s['state']})"
        t.add_row(rd.id, label, str(s["seed"]),
                  f"{pct(s['clean_best'])}/{pct(s['clean_end'])}", pct(s["clean_diff"]),
                  f"{pct(s['robust_best'])}/{pct(s['robust_end'])}", pct(s["robust_diff"]), num(s["ig"]))
    out.print(t)
