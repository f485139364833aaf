"""Compare: runs grouped into rows (by label or preset), mean ± std over seeds.

The table is the engine's `compare_runs` — the same table `advlc compare` prints and
`x` exports (Markdown, LaTeX, CSV, JSON through its `export`). The best value
of each column (as the report decides it) is bold and coloured. Below it, one chosen
metric (`m` cycles) is drawn per row as the mean over that row's runs at each epoch.
Runs average into one row only when their configs are equal but for the seed; rows of one
preset made with different overrides are named by them (`fgsm_n · attack.eps=0.05`). `c` opens
a box for config columns (`method.lam,attack.eps`: each key's value per row, shown after the
row name and exported with the table); a bad key is one line under the table and the columns in
effect stay. Everything is read in a thread worker; the screen reloads every
`COMPARE_REFRESH_S` while any of its runs is running.
"""

from __future__ import annotations

import time
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from engine.errors import UserError
from engine.facade import CompareTable, fmt_cell, parse_columns
from engine.service import Service
from tui.messages import ActionDone
from tui.safe_text import SafeText
from tui.screens.export import ExportScreen
from tui.widgets.key_bar import KeyBar
from tui.widgets.metric_plot import MetricPlot
from tui.widgets.palette import palette

METRICS = (
    ("robust_acc", "robust accuracy (%)", 100),
    ("clean_acc", "clean accuracy (%)", 100),
    ("train_acc", "training accuracy (%)", 100),
    ("ig", "input gradient norm (IG)", 1),
    ("hs", "HS (mean |λ| top-20)", 1),
    ("av", "adversarial vulnerability (AV)", 1),
    ("train_loss", "training loss", 1),
)
"""(record key, title, scale) of the curves `m` cycles through."""

BY = ("label", "preset")
"""What makes a row: `b` cycles."""

ROLES = ("primary", "accent", "success", "error", "muted", "foreground", "secondary")
COMPARE_REFRESH_S = 5.0


def mean_curves(service: Service, table: CompareTable, metric: str, scale: float) -> dict[str, tuple[list, list]]:
    """Row name -> (epochs, mean over the row's runs of `metric` * scale at each epoch)."""
    return {
        name: ([p["epoch"] for p in pts], [p["mean"] for p in pts])
        for name, pts in service.curves(table, metric, scale).items()
    }


class CompareLoaded(Message):
    def __init__(self, table, curves: dict, states: dict, error: str | None = None):
        super().__init__()
        self.table, self.curves, self.states, self.error = table, curves, states, error


class CompareScreen(Screen):
    """Mean ± std table of a set of runs, with overlaid curves and export."""

    BINDINGS = [
        Binding("escape", "back", "Back", show=True),
        Binding("m", "metric", "Metric", show=True),
        Binding("b", "by", "Rows by", show=True),
        Binding("c", "columns", "Columns", show=True),
        Binding("x", "export", "Export", show=True),
        Binding("u", "unfinished", "Unfinished runs", show=False),
        Binding("ctrl+r", "reload", "Reload", show=False),
    ]

    DEFAULT_CSS = """
    CompareScreen #compare-title { height: auto; padding: 0 1; background: $panel; }
    CompareScreen #compare-table { height: auto; max-height: 45%; }
    CompareScreen #compare-plot { height: 1fr; min-height: 6; }
    CompareScreen #compare-note { height: auto; max-height: 4; padding: 0 1; color: $foreground-muted; }
    CompareScreen #compare-paths { height: auto; padding: 0 1; color: $success; }
    CompareScreen #compare-columns { dock: bottom; display: none; height: 3; border: tall $accent; }
    CompareScreen #compare-columns.-active { display: block; }
    CompareScreen #compare-columns.-error { border: tall $error; }
    """

    def __init__(
        self,
        *,
        run_ids: list[str] | None = None,
        preset: str | None = None,
        group: str | None = None,
        title: str = "",
        columns: list[str] | None = None,
    ):
        super().__init__()
        self.columns: list[str] = parse_columns(columns)
        """Config keys shown as columns (`c`)."""
        self.columns_error: str | None = None
        """Why the text in the columns box was not taken (one line), or None."""
        self.run_ids, self.preset, self.group = run_ids, preset, group
        self.title_text = title or preset or group or "runs"
        self.metric_index = 0
        self.by_index = 0
        self.table: CompareTable | None = None
        """The CompareTable shown."""
        self.curves: dict[str, dict[str, tuple[list, list]]] = {}
        """metric -> row name -> (epochs, mean values): what the plot draws."""
        self.exported: list[Path] = []
        self.include_unfinished = False
        """Count running/stopped runs too (the exported paper table counts finished runs only)."""
        self._loading = False

    def compose(self) -> ComposeResult:
        yield Static("", id="compare-title")
        yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="compare-note")
        yield MetricPlot(METRICS[0][1], id="compare-plot")
        yield Static("", id="compare-paths")
        yield Input(
            placeholder="config columns, e.g. method.lam,attack.eps — enter applies (empty: none), esc closes",
            id="compare-columns",
        )
        yield KeyBar()  # ? and q first, whole entries only, at any width

    def on_mount(self) -> None:
        self._draw_title()
        self.reload()
        self.set_interval(COMPARE_REFRESH_S, self._auto_reload)

    # -- loading -------------------------------------------------------------------
    def _auto_reload(self) -> None:
        if self.is_current and self.table is not None and self._any_running:
            self.reload()

    def reload(self) -> None:
        if self._loading:
            self._reload_again = True  # e.g. new columns while a load is under way
            return
        self._loading = True
        if self.table is None:
            self.query_one("#compare-note", Static).update(SafeText("loading the runs…", style="italic"))
        self.app.work(self, self._load, name="compare")

    def _load(self) -> None:
        try:
            service = self.app.service
            table = service.compare(
                run_ids=self.run_ids,
                preset=self.preset,
                group=self.group,
                by=BY[self.by_index],
                include_unfinished=self.include_unfinished,
                columns=self.columns,
            )
            curves = {key: mean_curves(service, table, key, scale) for key, _t, scale in METRICS}
            states = {}
            for rid in self.run_ids or [r for row in table.rows for r in row.runs]:
                states[rid] = service.status(rid).state
            self.post_message(CompareLoaded(table, curves, states))
        except UserError as exc:
            self.post_message(CompareLoaded(None, {}, {}, str(exc)))
        except Exception as exc:
            self.post_message(CompareLoaded(None, {}, {}, f"{type(exc).__name__}: {exc}"))
        finally:
            self._loading = False

    def on_compare_loaded(self, message: CompareLoaded) -> None:
        if self._reload_again:  # the load is over (whether or not its worker has returned yet)
            self._reload_again = self._loading = False
            self.reload()
        if message.error:
            self.query_one("#compare-note", Static).update(SafeText("✖ " + message.error, style="bold"))
            return
        self.table, self.curves = message.table, message.curves
        self._any_running = any(s in ("running", "queued") for s in message.states.values())
        self._draw_table()
        self._draw_plot()
        self._draw_title()

    _any_running = False
    _reload_again = False

    # -- drawing -------------------------------------------------------------------
    def _draw_title(self) -> None:
        c = palette(self.app)
        t = SafeText(no_wrap=True, overflow="ellipsis", end="")
        t.append("Compare ", style=f"bold {c.get('accent', '')}")
        t.append(self.title_text)
        if self.table is not None:
            t.append(f"   {getattr(self.table, 'title', '')}", style=c.get("muted", ""))
        t.append(f"   rows by {BY[self.by_index]}", style=c.get("muted", ""))
        self.query_one("#compare-title", Static).update(t)

    def _draw_table(self) -> None:
        c = palette(self.app)
        dt = self.query_one("#compare-table", DataTable)
        dt.clear(columns=True)
        tbl = self.table
        if tbl is None:  # drawn only after a table arrived
            return
        headers = tbl.headers()
        dt.add_column("rows", key="__name")
        dt.add_column("seeds", key="__seeds")
        for i, key in enumerate(tbl.config_columns):
            dt.add_column(key, key=f"__config{i}")
        for col in tbl.columns:
            dt.add_column(headers.get(col, col), key=col)
        best = getattr(tbl, "best", {}) or {}
        notes = []
        for row in tbl.rows:
            cells = [SafeText(str(row.name), style="bold", end=""), SafeText(str(_fmt_seeds(row)), end="")]
            cells += [SafeText(v, justify="right", end="") for v in tbl.config_texts(row)]
            for col in tbl.columns:
                text = fmt_cell(col, row.cells[col])
                hl = best.get(col) == row.name
                cells.append(
                    SafeText(text, style=f"bold {c.get('success', '')}" if hl else "", justify="right", end="")
                )
            dt.add_row(*cells, key=str(row.name))
            if row.missing:
                notes.append(f"{row.name} {len(row.missing)}")
        note = (
            f"accuracies in % · mean ± std over seeds · best per column in bold · time in {tbl.time_unit}"
            f" · {'all runs' if self.include_unfinished else 'finished runs only (u: include unfinished)'}"
        )
        if notes:
            note += "\nnot counted (unfinished or never run; listed in the export): " + " · ".join(notes)
        if self.columns_error:
            note += f"\n⚠ {self.columns_error} — the columns stay {', '.join(self.columns) or 'none'}"
        self.query_one("#compare-note", Static).update(SafeText(note, end=""))

    def _draw_plot(self) -> None:
        key, title, _scale = METRICS[self.metric_index]
        plot = self.query_one("#compare-plot", MetricPlot)
        plot.title = f"{title} — mean over seeds (m: next)"
        plot.clear_series()
        for i, (name, (xs, ys)) in enumerate(self.curves.get(key, {}).items()):
            if xs:
                plot.set_series(str(name), xs, ys, role=ROLES[i % len(ROLES)])
        plot.replot()

    # -- actions -------------------------------------------------------------------
    def action_back(self) -> None:
        box = self.query_one("#compare-columns", Input)
        if box.has_focus:  # esc in the columns box closes it, not the screen
            self._close_columns()
            return
        self.app.pop_screen()

    def action_columns(self) -> None:
        box = self.query_one("#compare-columns", Input)
        box.value = ",".join(self.columns)
        box.add_class("-active")
        box.focus()

    def _close_columns(self) -> None:
        box = self.query_one("#compare-columns", Input)
        box.remove_class("-active", "-error")
        self.query_one("#compare-table", DataTable).focus()

    @on(Input.Submitted, "#compare-columns")
    def _columns_done(self, event: Input.Submitted) -> None:
        self.set_columns(event.value)

    def set_columns(self, text: str) -> bool:
        """Show the config keys of `text` ("method.lam,attack.eps"; empty: none) as columns; a bad key
        leaves the columns as they were and says why under the table. Whether it was taken."""
        try:
            keys = parse_columns(text)
        except UserError as exc:
            self.columns_error = str(exc)
            self.query_one("#compare-columns", Input).add_class("-error")
            if self.table is not None:
                self._draw_table()
            else:
                self.query_one("#compare-note", Static).update(SafeText("⚠ " + self.columns_error, end=""))
            return False
        self.columns, self.columns_error = keys, None
        self._close_columns()
        self.reload()
        return True

    def action_metric(self) -> None:
        self.metric_index = (self.metric_index + 1) % len(METRICS)
        self._draw_plot()

    def action_by(self) -> None:
        self.by_index = (self.by_index + 1) % len(BY)
        self._draw_title()
        self.reload()

    def action_unfinished(self) -> None:
        self.include_unfinished = not self.include_unfinished
        self.reload()

    def action_reload(self) -> None:
        self.reload()

    def default_export_dir(self) -> Path:
        slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in self.title_text)[:40].strip("-")
        return self.app.service.home / "exports" / f"compare-{slug or 'runs'}-{time.strftime('%Y%m%d-%H%M%S')}"

    def action_export(self) -> None:
        if self.table is None:
            self.notify("The table is still loading.", severity="warning")
            return

        def done(result) -> None:
            if result:
                folder, formats = result
                self.app.work(self, lambda: self._export(folder, formats), name="export")

        self.app.push_screen(ExportScreen(self.default_export_dir()), done)

    def _export(self, folder: Path, formats: list[str]) -> None:
        try:
            paths = self.app.service.export(self.table, folder, formats)
        except Exception as exc:
            self.post_message(ActionDone("export", False, f"export failed: {exc}"))
        else:
            self.post_message(ActionDone("export", True, "exported: " + "  ".join(str(p) for p in paths), data=paths))

    def on_action_done(self, message) -> None:
        if message.what != "export":
            return
        if message.ok:
            self.exported = list(message.data)
            self.query_one("#compare-paths", Static).update(SafeText(message.text, end=""))
            self.notify(message.text, title="export", timeout=8)
        else:
            self.query_one("#compare-paths", Static).update(SafeText("✖ " + message.text, end=""))
            self.notify(message.text, severity="error")


def _fmt_seeds(row) -> str:
    seeds = getattr(row, "seeds", None)
    if isinstance(seeds, (list, tuple)):
        return ",".join(str(s) for s in seeds) if len(seeds) <= 5 else f"{len(seeds)} seeds"
    return str(seeds if seeds is not None else "")
