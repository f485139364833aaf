"""The Runs screen (home): every run of the store, live.

A `RunTable` (tui/widgets/run_table.py: renders only the visible lines) keyed by run id.
A timer polls the store in a thread worker every `REFRESH_S` (engine.store.watch: the index is
re-parsed only when it changed); the UI thread then re-renders only the rows whose content changed, so the cursor, the scroll position and the
selection survive refreshes. When the set or the order of the visible runs changes (a new
run, a filter, a sort) the row list is replaced (cheap: nothing is measured) and the cursor
stays on the run it was on.

Filter (`/`): words, all of which must match; a bare word matches id, preset, label,
method, attack, dataset, group or state; `state:running`, `seed:0`, `group:g1a2b3`,
`preset:quick/`, `method:advlc` match one field (prefix match).
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from engine.facade import IndexSnapshot
from tui.messages import REFRESH_S, ActionDone, IndexChanged
from tui.screens.compare import CompareScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.run_detail import RunDetailScreen
from tui.widgets.alert_bar import robust_overfit
from tui.widgets.palette import palette
from tui.widgets.progress_cell import eta_text, progress_cell
from tui.widgets.run_table import Column, RunTable
from tui.widgets.status_badge import badge
from tui.widgets.store_header import StoreHeader

COLUMNS = (
    Column("id", "  id", 10),
    Column("preset", "preset", 16, stretch=True, overflow="middle"),
    Column("seed", "seed", 4, "right"),
    Column("state", "status", 9),
    Column("epoch", "epoch", 14),
    Column("robust", "robust b/now", 13),
    Column("clean", "clean", 5, "right", drop=2),
    Column("ig", "IG", 6, "right", drop=1),
    Column("hs", "HS", 6, "right", drop=3),
    Column("eta", "ETA", 6, "right"),
)
"""The runs table, left to right: the preset column takes the room left over; at 80 columns
HS, then clean, then IG are hidden (the detail screen has them all)."""

SORTS = (
    ("created", "newest first", lambda r: (r.get("created") or 0, r["id"]), True),
    ("state", "status", lambda r: (_STATE_ORDER.get(r.get("state"), 9), -(r.get("created") or 0)), False),
    ("preset", "preset", lambda r: (r.get("preset") or "", r.get("seed") or 0, r["id"]), False),
    ("robust", "best robust acc", lambda r: (r.get("best_robust_acc") is not None, r.get("best_robust_acc") or 0), True),
    ("progress", "progress", lambda r: ((r.get("epoch") or 0) / (r.get("epochs") or 1)), True),
)
"""(key, description, sort key, descending by default) — `o` cycles through them."""

_STATE_ORDER = {"running": 0, "queued": 1, "lost": 2, "failed": 3, "stopped": 4, "finished": 5}

FIELDS = ("id", "preset", "label", "method", "attack", "dataset", "group", "state")


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _num(v, digits=3) -> str:
    if v is None:
        return "—"
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"


def matches(row: dict, query: str) -> bool:
    """Filter semantics (see the module docstring)."""
    for word in query.lower().split():
        if ":" in word:
            key, _, val = word.partition(":")
            key = {"is": "state", "status": "state"}.get(key, key)
            got = row.get(key)
            if got is None or not str(got).lower().startswith(val):
                return False
        elif not any(word in str(row.get(k) or "").lower() for k in FIELDS):
            return False
    return True


class RunsScreen(Screen):
    """Table of runs with live progress; the home screen."""

    BINDINGS = [
        Binding("enter", "open", "Open", show=True),
        Binding("space", "toggle_select", "Select", show=True),
        Binding("c", "compare", "Compare", show=True),
        Binding("n", "new_run", "New run", show=True),
        Binding("s", "stop", "Stop", show=True),
        Binding("r", "resume", "Resume", show=True),
        Binding("d", "delete", "Delete", show=False),
        Binding("slash", "filter", "Filter", show=True),
        Binding("o", "sort", "Sort", show=False),
        Binding("O", "sort_reverse", "Reverse sort", show=False),
        Binding("a", "select_all", "Select all/none", show=False),
        Binding("escape", "clear", "Clear filter/selection", show=False),
    ]

    DEFAULT_CSS = """
    RunsScreen #runs-table { height: 1fr; }
    RunsScreen #runs-filter { dock: bottom; display: none; height: 3; border: tall $accent; }
    RunsScreen #runs-filter.-active { display: block; }
    RunsScreen #runs-info { height: auto; max-height: 3; padding: 0 1; color: $foreground-muted; }
    RunsScreen #runs-alerts { height: auto; max-height: 2; padding: 0 1; color: $warning; }
    RunsScreen #runs-empty { padding: 1 2; color: $foreground-muted; display: none; }
    RunsScreen #runs-empty.-active { display: block; }
    """

    def __init__(self):
        super().__init__(id="runs")
        self.snapshot: IndexSnapshot | None = None
        self.selected: set[str] = set()
        self.query_text = ""
        self.sort_index = 0
        self.sort_desc = SORTS[0][3]
        self._ids: list[str] = []
        self._keys: dict[str, tuple] = {}
        self._rows_by_id: dict[str, dict] = {}
        self._cache: dict[str, tuple] = {}
        self._polling = False
        self._colors: dict[str, str] = {}
        self._focus_ids: list[str] = []
        self.last_apply_s = 0.0
        """Seconds the UI thread spent applying the last snapshot (for the benchmark)."""
        self.last_apply_cpu_s = 0.0
        """CPU seconds of the same (independent of the machine's load)."""

    # -- layout --------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StoreHeader(self.app.store.home, id="header")
        with Vertical():
            yield Static("No runs yet. Press n to pick a preset and launch one.", id="runs-empty")
            yield RunTable(list(COLUMNS), id="runs-table")
            yield Static("", id="runs-alerts")
            yield Static("", id="runs-info")
        yield Input(placeholder="filter: words or key:value (state:running seed:0 preset:quick/) — enter keeps, esc clears",
                    id="runs-filter")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._colors = palette(self.app)
        self.app.theme_changed_signal.subscribe(self, self._on_theme)
        self.set_interval(REFRESH_S, self.request_poll)
        self.request_poll(force=True)
        self._update_info()

    def on_screen_resume(self) -> None:
        self.request_poll()

    def _on_theme(self, _theme) -> None:
        self._colors = palette(self.app)
        self._cache.clear()
        if self.snapshot:
            self._apply(self.snapshot, rebuild=True)

    # -- polling -------------------------------------------------------------------
    def request_poll(self, force: bool = False) -> None:
        """Start a poll of the store in a thread worker (skipped while one is running or hidden)."""
        if self._polling or (not force and not self.is_current):
            return
        self._polling = True
        self.app.work(self, lambda: self._poll(force), name="runs-poll")

    def _poll(self, force: bool) -> None:
        try:
            snap = self.app.reader.poll(force=force)
            if snap is not None:
                self.post_message(IndexChanged(snap))
        finally:
            self._polling = False

    def on_index_changed(self, message: IndexChanged) -> None:
        self._apply(message.snapshot)

    # -- table ---------------------------------------------------------------------
    def visible_rows(self) -> list[dict]:
        if not self.snapshot:
            return []
        rows = [r for r in self.snapshot.rows if not self.query_text or matches(r, self.query_text)]
        _key, _desc, keyfn, _d = SORTS[self.sort_index]
        return sorted(rows, key=keyfn, reverse=self.sort_desc)

    def _row_key(self, r: dict, live: dict | None) -> tuple:
        """Everything a row's cells depend on (compared to find the rows to redraw)."""
        return (tuple(r.get(k) for k in ("state", "epoch", "epochs", "best_robust_acc", "end_robust_acc",
                                         "end_clean_acc", "ig", "hs", "epoch_time_s", "preset", "seed")),
                (live or {}).get("batch"), (live or {}).get("batches"), r["id"] in self.selected)

    def cells_for(self, rid: str) -> tuple:
        """The cells of one row, made when the row is first drawn (and again after it changed)."""
        r = self._rows_by_id[rid]
        live = self.snapshot.live.get(rid) if self.snapshot else None
        key = self._row_key(r, live)
        hit = self._cache.get(rid)
        if hit and hit[0] == key:
            return hit[1]
        cells = self._row_cells(r, live)
        self._cache[rid] = (key, cells)
        return cells

    def _row_cells(self, r: dict, live: dict | None) -> tuple:
        rid = r["id"]
        sel = rid in self.selected
        c = self._colors
        idt = Text(("◉ " if sel else "  ") + rid, style=f"bold {c.get('accent', '')}" if sel else "", end="")
        state = r.get("state") or "queued"
        best, end = r.get("best_robust_acc"), r.get("end_robust_acc")
        rob = Text(f"{_pct(best):>5}/{_pct(end):<5}", end="")
        if robust_overfit(best, end):
            rob.append(" ⚠", style=c.get("warning", ""))
        cells = (
            idt,
            Text(str(r.get("preset") or r.get("label") or "?"), end=""),
            Text("" if r.get("seed") is None else str(r["seed"]), justify="right", end=""),
            badge(state, c),
            progress_cell(r.get("epoch"), r.get("epochs"), c, batch=(live or {}).get("batch"),
                          batches=(live or {}).get("batches"), state=state, width=6),
            rob,
            Text(_pct(r.get("end_clean_acc")), justify="right", end=""),
            Text(_num(r.get("ig")), justify="right", end=""),
            Text(_num(r.get("hs")), justify="right", end=""),
            Text(eta_text(r, live), justify="right", end=""),
        )
        return cells

    def _apply(self, snap: IndexSnapshot, rebuild: bool = False) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        self.snapshot = snap
        table = self.query_one("#runs-table", RunTable)
        self._rows_by_id = {r["id"]: r for r in snap.rows}
        rows = self.visible_rows()
        ids = [r["id"] for r in rows]
        self.selected &= set(self._rows_by_id)
        keys = {r["id"]: self._row_key(r, snap.live.get(r["id"])) for r in rows}
        if rebuild or ids != self._ids:
            cursor_id = None
            if self._focus_ids:
                cursor_id = next((i for i in self._focus_ids if i in ids), None)
                self._focus_ids = []
            table.set_rows(ids, self.cells_for, cursor_key=cursor_id)
            self._ids = ids
        else:
            for rid, key in keys.items():
                if self._keys.get(rid) != key:
                    table.invalidate(rid)
        self._keys = keys
        self.query_one("#runs-empty").set_class(not snap.rows, "-active")
        if snap.version == 1 and not snap.rows and self.is_current:
            self.app.action_presets()  # an empty store: start where a new user starts, at the presets
        self.query_one("#header", StoreHeader).set_counts(snap.counts(), self._selection_note())
        self._update_alerts(rows)
        self._update_info()
        self.last_apply_s = time.perf_counter() - t0
        self.last_apply_cpu_s = time.thread_time() - c0

    def _update_alerts(self, rows: list[dict]) -> None:
        lines = []
        for r in rows:
            if r.get("state") == "running" and robust_overfit(r.get("best_robust_acc"), r.get("end_robust_acc")):
                gap = 100 * (r["best_robust_acc"] - r["end_robust_acc"])
                lines.append(f"⚠ {r['id']}: robust overfitting — robust accuracy {gap:.1f} pts below its best "
                             f"(epoch {r.get('best_epoch')})")
        more = f"  (+{len(lines) - 2} more)" if len(lines) > 2 else ""
        self.query_one("#runs-alerts", Static).update(Text("\n".join(lines[:2]) + more, end=""))

    def _selection_note(self) -> str:
        return f"{len(self.selected)} selected" if self.selected else ""

    def _update_info(self) -> None:
        _key, desc, _fn, _d = SORTS[self.sort_index]
        parts = [f"sort: {desc}{'' if self.sort_desc == SORTS[self.sort_index][3] else ' (reversed)'}"]
        if self.query_text:
            n = len(self._ids)
            parts.append(f"filter: {self.query_text!r} ({n} shown)")
        if self.selected:
            parts.append(f"{len(self.selected)} selected")
        parts.append("? help · q quit (runs keep going)")
        self.query_one("#runs-info", Static).update(Text("  ·  ".join(parts), end=""))

    def cursor_id(self) -> str | None:
        return self.query_one("#runs-table", RunTable).cursor_key

    def focus_runs(self, ids: list[str]) -> None:
        """Put the cursor on the first of `ids` once they appear (after a launch)."""
        self._focus_ids = list(ids)
        self.request_poll(force=True)

    def targets(self) -> list[dict]:
        """The runs an action applies to: the selection, else the run under the cursor."""
        if not self.snapshot:
            return []
        by_id = {r["id"]: r for r in self.snapshot.rows}
        if self.selected:
            return [by_id[i] for i in self._ids if i in self.selected] + \
                [by_id[i] for i in sorted(self.selected) if i not in self._ids and i in by_id]
        rid = self.cursor_id()
        return [by_id[rid]] if rid in by_id else []

    def _refresh_rows(self) -> None:
        if self.snapshot:
            self._apply(self.snapshot)

    # -- actions -------------------------------------------------------------------
    @on(RunTable.RowSelected, "#runs-table")
    def _row_selected(self, event: RunTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        rid = self.cursor_id()
        if rid:
            self.app.push_screen(RunDetailScreen(rid))

    def action_toggle_select(self) -> None:
        rid = self.cursor_id()
        if not rid:
            return
        self.selected ^= {rid}
        self._refresh_rows()
        table = self.query_one("#runs-table", RunTable)
        table.move_cursor(table.cursor_row + 1)

    def action_select_all(self) -> None:
        visible = set(self._ids)
        self.selected = set() if visible and visible <= self.selected else self.selected | visible
        self._refresh_rows()

    def action_clear(self) -> None:
        box = self.query_one("#runs-filter", Input)
        if box.has_focus:
            box.value = ""
            box.remove_class("-active")
            self.query_one("#runs-table").focus()
        elif self.selected:
            self.selected.clear()
        elif self.query_text:
            self.query_text = ""
            box.value = ""
            box.remove_class("-active")
        self._refresh_rows()

    def action_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.add_class("-active")
        box.focus()

    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value.strip()
        self._refresh_rows()

    @on(Input.Submitted, "#runs-filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        box = self.query_one("#runs-filter", Input)
        box.set_class(bool(box.value), "-active")
        self.query_one("#runs-table").focus()

    def action_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        self.sort_desc = SORTS[self.sort_index][3]
        self._refresh_rows()

    def action_sort_reverse(self) -> None:
        self.sort_desc = not self.sort_desc
        self._refresh_rows()

    @on(RunTable.HeaderClicked, "#runs-table")
    def _header_clicked(self, event: RunTable.HeaderClicked) -> None:
        keys = [s[0] for s in SORTS]
        col = {"id": "created", "state": "state", "preset": "preset", "robust": "robust", "epoch": "progress"}.get(
            event.column)
        if col:
            if keys.index(col) == self.sort_index:
                self.sort_desc = not self.sort_desc
            else:
                self.sort_index = keys.index(col)
                self.sort_desc = SORTS[self.sort_index][3]
            self._refresh_rows()

    def action_new_run(self) -> None:
        self.app.action_presets()

    def action_compare(self) -> None:
        rows = self.targets() if self.selected else self.visible_rows()
        if not rows:
            self.notify("Nothing to compare: select runs (space) or filter (/) first.", severity="warning")
            return

        what = (f"{len(rows)} selected runs" if self.selected else
                (f"filter {self.query_text!r}" if self.query_text else "all runs"))
        self.app.push_screen(CompareScreen(run_ids=[r["id"] for r in rows], title=what))

    def action_stop(self) -> None:
        rows = [r for r in self.targets() if r.get("state") in ("running", "queued")]
        if not rows:
            self.notify("No running or queued run to stop here.", severity="warning")
            return

        ids = [r["id"] for r in rows]
        text = (f"Stop {len(ids)} run{'s' if len(ids) > 1 else ''} ({_list(ids)})?\n"
                "Each keeps its last checkpoint; resume later with r.")

        def done(ok: bool | None) -> None:
            if ok:
                self.app.supervise("stop", ids, on_screen=self)

        self.app.push_screen(ConfirmScreen(text, yes="Stop"), done)

    def action_resume(self) -> None:
        rows = [r for r in self.targets() if r.get("state") in ("stopped", "failed", "lost")]
        if not rows:
            self.notify("Only stopped, failed or lost runs can be resumed.", severity="warning")
            return
        self.app.supervise("resume", [r["id"] for r in rows], on_screen=self)

    def action_delete(self) -> None:
        rows = self.targets()
        if not rows:
            return

        ids = [r["id"] for r in rows]
        running = [r["id"] for r in rows if r.get("state") in ("running", "queued")]
        text = (f"Delete {len(ids)} run{'s' if len(ids) > 1 else ''} ({_list(ids)}) and their files "
                f"(checkpoints, metrics, logs)? This cannot be undone.")
        if running:
            text += f"\n{_list(running)} {'is' if len(running) == 1 else 'are'} still active: stop first."

        def done(ok: bool | None) -> None:
            if ok:
                self.selected -= set(ids)
                self.app.supervise("delete", ids, on_screen=self)

        self.app.push_screen(ConfirmScreen(text, yes="Delete", danger=True), done)

    def on_action_done(self, message: ActionDone) -> None:
        self.request_poll(force=True)


def _list(ids: list[str], n: int = 4) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


__all__ = ["RunsScreen", "matches", "COLUMNS", "SORTS"]
