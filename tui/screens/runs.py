"""The Runs screen (home): every run of the store, live.

A `RunTable` (tui/widgets/run_table.py: renders only the visible lines) keyed by run id.
A timer polls the store in a thread worker every `REFRESH_S` (engine.store.watch: the index is
re-parsed only when it changed); the UI thread then re-renders only the rows whose content changed, so the cursor, the scroll position and the
selection survive refreshes. When the set or the order of the visible runs changes (a new
run, a filter, a sort) the row list is replaced (cheap: nothing is measured) and the cursor
stays on the run it was on.

Filter (`/`): words, all of which must match; a bare word matches id, preset, label, title,
tags, method, attack, dataset, group or state; `state:running`, `seed:0`, `group:g1a2b3`,
`preset:quick/`, `method:advlc` match one field (prefix match); `#robust` or `tag:robust` a tag
exactly. Or an expression (`--where` of the CLI, engine/report/query.py), recognised by its
operators: `method.lam > 0.1 and state == "finished"`, `"robust" in tags`, `preset ~ "table1"`.
A config key (`section.key`) has each run's config.json read once, in a thread worker (it does
not change). A mistake is one line in the info line and the previous filter stays in effect.

Archived runs (`x` archives, meta.json) are hidden; `A` shows only them (like `advlc runs
--archived`). `e` edits the title, tags and note (tui/screens/annotate.py), `D` diffs two runs
(tui/screens/diff.py).
"""

from __future__ import annotations

import re
import time

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from engine.errors import UserError
from engine.facade import IndexSnapshot, Meta, parse_query
from tui.messages import REFRESH_S, ActionDone, IndexChanged
from tui.safe_text import SafeText
from tui.screens.annotate import AnnotateScreen, Annotation, describe
from tui.screens.compare import CompareScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.diff import DiffScreen
from tui.screens.run_detail import RunDetailScreen
from tui.widgets.alert_bar import robust_overfit
from tui.widgets.palette import palette
from tui.widgets.progress_cell import eta_text, progress_cell
from tui.widgets.run_table import Column, RunTable
from tui.widgets.status_badge import badge
from tui.widgets.store_header import StoreHeader

COLUMNS = (
    Column("id", "  id", 10),
    Column("preset", "preset", 16, stretch=True, overflow="start"),
    Column("seed", "seed", 4, "right"),
    Column("state", "status", 9),
    Column("epoch", "epoch", 14),
    Column("robust", "robust b/now", 13),
    Column("clean", "clean", 5, "right", drop=2),
    Column("ig", "IG", 6, "right", drop=1),
    Column("hs", "HS", 6, "right", drop=3),
    Column("eta", "ETA", 6, "right"),
)
"""The runs table, left to right: the preset column takes the room left over and, when too
narrow, keeps the distinctive end of the name (`…ts-fgsm_n-advlc`); at 80 columns HS, then
clean, then IG are hidden (the detail screen has them all)."""

SORTS = (
    ("created", "newest first", lambda r: (r.get("created") or 0, r["id"]), True),
    ("state", "status", lambda r: (_STATE_ORDER.get(r.get("state"), 9), -(r.get("created") or 0)), False),
    ("preset", "preset", lambda r: (r.get("preset") or "", r.get("seed") or 0, r["id"]), False),
    ("robust", "best robust acc", lambda r: (r.get("best_robust_acc") is not None, r.get("best_robust_acc") or 0), True),
    ("progress", "progress", lambda r: ((r.get("epoch") or 0) / (r.get("epochs") or 1)), True),
)
"""(key, description, sort key, descending by default) — `o` cycles through them."""

_STATE_ORDER = {"running": 0, "queued": 1, "lost": 2, "failed": 3, "stopped": 4, "finished": 5}

FIELDS = ("id", "preset", "label", "title", "tags", "method", "attack", "dataset", "group", "state")

_EXPRESSION = re.compile(r"==|!=|[<>~]|\s(?:in|and|or)\s|^not\s")
"""What makes the filter text an expression rather than words (no word or key:value has these)."""


def is_expression(text: str) -> bool:
    return bool(_EXPRESSION.search(text.strip()))


def _text(row: dict, key: str) -> str:
    v = row.get(key)
    return " ".join(map(str, v)).lower() if isinstance(v, list) else str(v or "").lower()


def _tags(row: dict) -> list[str]:
    return [str(t).lower() for t in row.get("tags") or []]


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _num(v, digits=3) -> str:
    if v is None:
        return "—"
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"


def matches(row: dict, query: str) -> bool:
    """Filter semantics for words (see the module docstring)."""
    for word in query.lower().split():
        if word.startswith("#") and len(word) > 1:
            if word[1:] not in _tags(row):
                return False
        elif ":" in word:
            key, _, val = word.partition(":")
            key = {"is": "state", "status": "state", "tags": "tag"}.get(key, key)
            if key == "tag":
                if val not in _tags(row):
                    return False
                continue
            got = row.get(key)
            if got is None or not str(got).lower().startswith(val):
                return False
        elif not any(word in _text(row, k) for k in FIELDS):
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
        Binding("e", "edit", "Edit", show=True),
        Binding("x", "archive", "Archive/restore", show=False),
        Binding("A", "toggle_archived", "Archived", show=False),
        Binding("D", "diff", "Diff", show=False),
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
    RunsScreen #runs-filter.-error { border: tall $error; }
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
        """The filter in effect (the last valid one: a bad expression leaves it)."""
        self.filter_query = None
        """The parsed expression when `query_text` is one (facade.parse_query), else None."""
        self.filter_error: str | None = None
        """Why the text in the filter box is not in effect (one line), or None."""
        self.show_archived = False
        """False: the runs not archived (the default view); True: only the archived ones (`A`)."""
        self._configs: dict[str, dict] = {}
        """run id -> config.json, read when an expression names a config key (it does not change)."""
        self.sort_index = 0
        self.sort_desc = SORTS[0][3]
        self._ids: list[str] = []
        self._keys: dict[str, tuple] = {}
        self._rows_by_id: dict[str, dict] = {}
        self._cache: dict[str, tuple] = {}
        self._multi_label: set[str] = set()
        """Presets whose runs have different labels (a sweep of method.name): their rows show the label."""
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
        yield Input(placeholder='filter: words, key:value, #tag, or an expression (method.lam > 0.1 and state == '
                                '"finished") — enter keeps, esc clears', id="runs-filter")
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
                self._read_configs(snap.rows)  # new runs, when the filter names config keys
                self.post_message(IndexChanged(snap))
        finally:
            self._polling = False

    def on_index_changed(self, message: IndexChanged) -> None:
        self._apply(message.snapshot)

    # -- table ---------------------------------------------------------------------
    def visible_rows(self) -> list[dict]:
        if not self.snapshot:
            return []
        rows = [r for r in self.snapshot.rows if bool(r.get("archived")) == self.show_archived and self._passes(r)]
        _key, _desc, keyfn, _d = SORTS[self.sort_index]
        return sorted(rows, key=keyfn, reverse=self.sort_desc)

    def _passes(self, r: dict) -> bool:
        """Whether a row passes the filter in effect (words, or an expression)."""
        q = self.filter_query
        if q is not None:
            try:
                return q.matches(r, self._configs.get(r["id"]) if q.needs_config else None)
            except Exception:  # noqa: BLE001 - a value the query cannot compare: the row does not match
                return False
        return not self.query_text or matches(r, self.query_text)

    def _read_configs(self, rows: list[dict]) -> int:
        """Read (in a thread worker) the config.json of the runs not read yet, when the filter names a
        config key (`section.key`); each is read once: it does not change. How many were read."""
        q = self.filter_query
        if q is None or not q.needs_config:
            return 0
        n = 0
        for r in rows:
            if r["id"] not in self._configs:
                try:
                    self._configs[r["id"]] = self.app.store.run_dir(r["id"]).config_json()
                    n += 1
                except (UserError, OSError):
                    pass  # damaged or half-made: no config keys (null), read again next time
        return n

    def _load_configs(self) -> None:
        """After a filter naming config keys is set: read the configs it needs, then filter again."""
        rows = list(self.snapshot.rows) if self.snapshot else []

        def work() -> None:
            if self._read_configs(rows):
                self.app.call_from_thread(self._refresh_rows)

        self.app.work(self, work, name="runs-configs")

    def _row_key(self, r: dict, live: dict | None) -> tuple:
        """Everything a row's cells depend on (compared to find the rows to redraw)."""
        return (tuple(r.get(k) for k in ("state", "epoch", "epochs", "best_robust_acc", "end_robust_acc",
                                         "end_clean_acc", "end_ig", "end_hs", "epoch_time_s_mean", "preset", "seed", "title",
                                         "overrides_text")),
                tuple(r.get("tags") or ()), live.batch if live else None, live.batches if live else None,
                r["id"] in self.selected, r.get("preset") in self._multi_label)

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
        if robust_overfit(r):
            rob.append(" ⚠", style=c.get("warning", ""))
        cells = (
            idt,
            self._preset_cell(r),
            Text("" if r.get("seed") is None else str(r["seed"]), justify="right", end=""),
            badge(state, c),
            progress_cell(r.get("epoch"), r.get("epochs"), c, batch=live.batch if live else None,
                          batches=live.batches if live else None, state=state, width=6),
            rob,
            Text(_pct(r.get("end_clean_acc")), justify="right", end=""),
            Text(_num(r.get("end_ig")), justify="right", end=""),
            Text(_num(r.get("end_hs")), justify="right", end=""),
            Text(eta_text(r, live), justify="right", end=""),
        )
        return cells

    def _preset_cell(self, r: dict) -> Text:
        """`preset · title #tag #tag` (title muted, tags in the accent colour)."""
        c = self._colors
        t = SafeText(str(r.get("preset") or r.get("label") or "?"), end="")
        if r.get("preset") in self._multi_label and r.get("label"):
            t.append(f" [{r['label']}]")          # a sweep of method.name: the label tells its runs apart
        if r.get("title"):
            t.append(f" · {r['title']}", style=c.get("muted", ""))
        for tag in r.get("tags") or []:
            t.append(f" #{tag}", style=c.get("accent", ""))
        return t

    def _apply(self, snap: IndexSnapshot, rebuild: bool = False) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        self.snapshot = snap
        table = self.query_one("#runs-table", RunTable)
        self._rows_by_id = {r["id"]: r for r in snap.rows}
        labels: dict[str, set] = {}
        for r in snap.rows:
            labels.setdefault(r.get("preset"), set()).add(r.get("label"))
        self._multi_label = {p for p, ls in labels.items() if len(ls) > 1}
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
        self._update_empty(snap, rows)
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
            if r.get("state") == "running" and robust_overfit(r):
                gap = 100 * (r["best_robust_acc"] - r["end_robust_acc"])
                lines.append(f"⚠ {r['id']}: robust overfitting since epoch {r['overfit_epoch']} — robust accuracy "
                             f"{gap:.1f} pts below its best (epoch {r.get('best_epoch')})")
        more = f"  (+{len(lines) - 2} more)" if len(lines) > 2 else ""
        self.query_one("#runs-alerts", Static).update(Text("\n".join(lines[:2]) + more, end=""))

    def _update_empty(self, snap: IndexSnapshot, rows: list[dict]) -> None:
        empty = self.query_one("#runs-empty", Static)
        if not snap.rows:
            text = "No runs yet. Press n to pick a preset and launch one."
        elif rows or self.query_text:
            text = ""
        elif self.show_archived:
            text = "No archived runs. x archives the run under the cursor (or the selection); A goes back."
        else:
            text = "Every run is archived: A shows them."
        empty.update(text)
        empty.set_class(bool(text), "-active")

    def _selection_note(self) -> str:
        return f"{len(self.selected)} selected" if self.selected else ""

    def _update_info(self) -> None:
        _key, desc, _fn, _d = SORTS[self.sort_index]
        parts = [f"sort: {desc}{'' if self.sort_desc == SORTS[self.sort_index][3] else ' (reversed)'}"]
        if self.show_archived:
            parts.append("archived runs only (A: the others)")
        if self.query_text:
            n = len(self._ids)
            parts.append(f"filter: {self.query_text!r} ({n} shown)")
        if self.selected:
            parts.append(f"{len(self.selected)} selected")
        parts.append("? help · q quit (runs keep going)")
        t = Text("  ·  ".join(parts), end="")
        if self.filter_error:
            t.append(f"\n⚠ {self.filter_error} — {'the filter above stays' if self.query_text else 'no filter'}",
                     style=self._colors.get("error", ""))
        self.query_one("#runs-info", Static).update(t)
        self.query_one("#runs-filter", Input).set_class(bool(self.filter_error), "-error")

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
        elif self.query_text or self.filter_error:
            self.set_filter("")
            box.value = ""
            box.remove_class("-active")
        self._refresh_rows()

    def action_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.add_class("-active")
        box.focus()

    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.set_filter(event.value)

    def set_filter(self, text: str) -> None:
        """Put `text` (words, or an expression) in effect; a bad expression leaves the filter as it was
        and says why in the info line."""
        text = text.strip()
        query = None
        if is_expression(text):
            try:
                query = parse_query(text, where="filter")
            except Exception as exc:  # noqa: BLE001 - a UserError (one line), or a decode error of a "string"
                self.filter_error = str(exc) if isinstance(exc, UserError) else f"filter {text!r}: {exc}"
                self._update_info()
                return
        self.query_text, self.filter_query, self.filter_error = text, query, None
        self._refresh_rows()
        if query is not None and query.needs_config:
            self._load_configs()

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

        what = (f"{len(rows)} selected run{'' if len(rows) == 1 else 's'}" if self.selected else
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

    def action_edit(self) -> None:
        """Title, tags and note of the run under the cursor; the tags of the selected runs."""
        rows = self.targets()
        if not rows:
            return
        ids = [r["id"] for r in rows]
        if len(rows) > 1:
            common = [t for t in rows[0].get("tags") or [] if all(t in (r.get("tags") or []) for r in rows)]
            self.app.push_screen(AnnotateScreen(ids, tags=common, heading=f"Tags of {len(ids)} runs ({_list(ids)})"),
                                 self._edited)
            return
        rd, heading = self.app.store.run_dir(ids[0]), f"Edit run {ids[0]}  {rows[0].get('preset') or ''}"

        def work() -> None:  # the whole note is in meta.json (the index has its first line)
            meta = rd.meta()  # a damaged file: a UserError, which AdvlcApp.work notifies
            self.app.call_from_thread(self._open_editor, ids, meta, heading)

        self.app.work(self, work, name="edit")

    def _open_editor(self, ids: list[str], meta: Meta, heading: str) -> None:
        self.app.push_screen(AnnotateScreen(ids, tags=list(meta.tags), title=meta.title or "",
                                            note=meta.note or "", heading=heading), self._edited)

    def _edited(self, a: Annotation | None) -> None:
        if a is not None and not a.empty():
            self.notify(describe(a), title="edit")
            self.request_poll(force=True)

    def action_archive(self) -> None:
        """Archive the targets; restore them when they are all archived already (reversible: no question)."""
        rows = self.targets()
        if not rows:
            return
        ids = [r["id"] for r in rows]
        archive = not all(r.get("archived") for r in rows)
        what = "archive" if archive else "restore"
        store = self.app.store

        def work() -> None:
            for rid in ids:
                store.annotate(store.run_dir(rid), archived=archive)
            text = (f"archived {_list(ids)} (A shows archived runs; x there restores)" if archive else
                    f"restored {_list(ids)}")
            self.app.call_from_thread(self.notify, text, title=what)
            self.post_message(ActionDone(what, True, text, ids))

        self.selected -= set(ids)
        self.app.work(self, work, name=what, group="actions")

    def action_toggle_archived(self) -> None:
        """Show only the archived runs, or back to the others (the selection is cleared: it would be hidden)."""
        self.show_archived = not self.show_archived
        self.selected.clear()
        self._refresh_rows()
        self._update_info()

    def action_diff(self) -> None:
        """Diff two runs: the two selected, or the one selected and the one under the cursor."""
        pair = [r["id"] for r in self.targets()] if len(self.selected) == 2 else []
        cursor = self.cursor_id()
        if len(self.selected) == 1 and cursor and cursor not in self.selected:
            pair = [next(iter(self.selected)), cursor]
        if len(pair) != 2:
            self.notify("select two runs (space) to diff", severity="warning")
            return
        self.app.push_screen(DiffScreen(*pair))

    def on_action_done(self, message: ActionDone) -> None:
        self.request_poll(force=True)


def _list(ids: list[str], n: int = 4) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


__all__ = ["RunsScreen", "matches", "is_expression", "COLUMNS", "SORTS"]
