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

Find (`f`, htop's search): typing moves the cursor to the first run from where it was whose id,
preset (with its label or kind), title or tag contains the text; `enter` keeps it there, `F` goes to
the next one (wrapping); unlike the filter, every run stays in the table.

Sort: `o` / `O` cycle through the orders / reverse; `<` / `>` sort by the column left / right of the
one sorted by (every column has an order, `SORT_OF_COLUMN`), as does a click on its header. The sort
and the filter are remembered across restarts (`AdvlcApp.remember`: $ADVLC_HOME/app-state.json,
section "runs"; read in the first poll worker, a bad value ignored with a notification).

Archived runs (`x` archives, meta.json) are hidden; `A` shows only them (like `advlc runs
--archived`). `e` edits the title, tags and note (tui/screens/annotate.py), `D` diffs two runs
(tui/screens/diff.py), `y` copies the run id under the cursor (OSC 52).

Columns: the preset (and, where it tells runs apart, the label; an experiment run's kind) is never
hidden by a title or tags, which have their own column that gets only the room left over and goes
before any number. ETA, elapsed and launch time come from tui/widgets/pace.py (one rate for the
app). An experiment run (config `experiment.kind`: its index row has no epochs) shows its kind and
its points done / planned (status.json); its config and status are read in the poll worker (a
config once; a status when its index row changes), only for runs without epoch records.
"""

from __future__ import annotations

import re
import time

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Input, Static

from engine.errors import UserError
from engine.facade import IndexSnapshot, Meta, Status, parse_query, percent
from engine.printable import printable
from tui.messages import REFRESH_S, ActionDone, IndexChanged
from tui.safe_text import SafeText
from tui.screens.annotate import AnnotateScreen, Annotation, describe
from tui.screens.compare import CompareScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.diff import DiffScreen
from tui.screens.run_detail import RunDetailScreen
from tui.widgets.alert_bar import robust_overfit
from tui.widgets.palette import palette
from tui.widgets.key_bar import KeyBar
from tui.widgets.pace import clock, duration, row_pace
from tui.widgets.progress_cell import progress_cell
from tui.widgets.run_table import Column, RunTable
from tui.widgets.status_badge import badge
from tui.widgets.store_header import StoreHeader

COLUMNS = (
    Column("id", "  id", 10),
    Column("preset", "preset", 16, stretch=1, overflow="start"),
    Column("seed", "seed", 4, "right"),
    Column("state", "status", 9),
    Column("epoch", "progress", 12),
    Column("robust", "robust b/now", 12),
    Column("clean", "clean", 5, "right", drop=2),
    Column("ig", "IG", 6, "right", drop=1),
    Column("hs", "HS", 6, "right", drop=3),
    Column("eta", "ETA", 6, "right"),
    Column("launched", "launched", 12, drop=6),
    Column("title", "title #tags", 16, stretch=2, drop=5, yields=True),
)
"""The runs table, left to right. The preset column is as wide as its longest name (with the label
or the experiment kind) when there is room and, when too narrow, keeps the distinctive end of the
name (`…ts-fgsm_n-advlc`); the title column (hidden while no run shown has a title or tags) gets
what is left. When the terminal is narrow, columns go in this order: launch time and elapsed,
title and tags, HS, clean, IG — at 80 columns all of them (the detail screen has them all); the
title column also goes while the preset column is narrower than its longest name."""

TICK_S = 20.0
"""Seconds between two redraws of the elapsed time of queued and running runs (nothing else changes them)."""

_STATE_ORDER = {"running": 0, "queued": 1, "lost": 2, "failed": 3, "stopped": 4, "finished": 5}

SORTS = (
    ("created", "newest first", lambda r: (r.get("created") or 0, r["id"]), True),
    ("state", "status", lambda r: (_STATE_ORDER.get(r.get("state"), 9), -(r.get("created") or 0)), False),
    ("preset", "preset", lambda r: (r.get("preset") or "", r.get("seed") or 0, r["id"]), False),
    (
        "robust",
        "best robust acc",
        lambda r: (r.get("best_robust_acc") is not None, r.get("best_robust_acc") or 0),
        True,
    ),
    ("progress", "progress", lambda r: (r.get("epoch") or 0) / (r.get("epochs") or 1), True),
    ("eta", "time left", lambda r: (r.get("state") != "running", _eta(r), r["id"]), False),
    ("title", "title", lambda r: (not r.get("title"), (r.get("title") or "").lower(), r["id"]), False),
    ("seed", "seed", lambda r: (r.get("seed") is None, r.get("seed") or 0, r["id"]), False),
    ("clean", "clean acc", lambda r: (r.get("end_clean_acc") is not None, r.get("end_clean_acc") or 0), True),
    ("ig", "IG", lambda r: (r.get("end_ig") is None, r.get("end_ig") or 0, r["id"]), False),
    ("hs", "HS", lambda r: (r.get("end_hs") is None, r.get("end_hs") or 0, r["id"]), False),
    ("id", "id", lambda r: r["id"], False),
)
"""(key, description, sort key, descending by default) — `o` cycles through them, `O` reverses; `<` / `>`
and a click on a column's header sort by a column (SORT_OF_COLUMN). Runs without the value go last."""

SORT_OF_COLUMN = {
    "id": "id",
    "preset": "preset",
    "seed": "seed",
    "state": "state",
    "epoch": "progress",
    "robust": "robust",
    "clean": "clean",
    "ig": "ig",
    "hs": "hs",
    "eta": "eta",
    "launched": "created",
    "title": "title",
}
"""Every column's order (the id column: by id; the launch time: newest first)."""

FILTER_MAX = 1000
"""The longest filter the state file may give back (a longer one is not ours)."""


FIELDS = ("id", "preset", "label", "title", "tags", "method", "attack", "dataset", "group", "state")
ACTIVE = ("running", "queued")
ROW_KEYS = (
    "state",
    "epoch",
    "epochs",
    "best_robust_acc",
    "end_robust_acc",
    "end_clean_acc",
    "end_ig",
    "end_hs",
    "overfit_epoch",
    "best_epoch",
    "epoch_time_s_mean",
    "eval_time_s_mean",
    "preset",
    "label",
    "seed",
    "title",
    "overrides_text",
    "created",
    "updated",
    "stopped_early_at",
)
"""The index keys a Runs row shows (with its tags): a change to one of them redraws the row."""

_EXPRESSION = re.compile(r"==|!=|[<>~]|\s(?:in|and|or)\s|^not\s")
"""What makes the filter text an expression rather than words (no word or key:value has these)."""


NO_RUNS = "No runs in the store yet. Press n to pick a preset and launch one."


class Remembered(Message):
    """The state file's "runs" section (sort and filter), read by the first poll; `problem`: why it was not."""

    def __init__(self, state: dict, problem: str | None):
        super().__init__()
        self.state, self.problem = state, problem
        self.good, self.bad = restore(state)


def restore(state) -> tuple[dict, list[str]]:
    """The valid parts of a remembered "runs" section ({"sort", "desc", "filter"}) and what was wrong."""
    if not isinstance(state, dict):
        return {}, [f"runs: {type(state).__name__}, not an object"] if state is not None else []
    good, bad = {}, []
    sort = state.get("sort")
    if sort is not None:
        if sort in [k for k, *_rest in SORTS]:
            good["sort"] = sort
        else:
            bad.append(f"runs.sort {printable(str(sort))[:40]!r} is not an order")
    desc = state.get("desc")
    if desc is not None:
        if isinstance(desc, bool):
            good["desc"] = desc
        else:
            bad.append("runs.desc is not true or false")
    text = state.get("filter")
    if text is not None:
        if isinstance(text, str) and len(text) <= FILTER_MAX and printable(text) == text and "\n" not in text:
            good["filter"] = text
        else:
            bad.append("runs.filter is not one line of printable text")
    return good, bad


class FindBox(Input):
    """The find line (`f`): each change moves the cursor at once, in the order the keys were typed."""

    def watch_value(self, value: str) -> None:
        screen = self.screen
        if isinstance(screen, RunsScreen):
            screen.find_typed(value)


def _eta(r: dict) -> float:
    eta = row_pace(r).eta
    return float("inf") if eta is None else eta


def is_expression(text: str) -> bool:
    return bool(_EXPRESSION.search(text.strip()))


def _text(row: dict, key: str) -> str:
    v = row.get(key)
    return " ".join(map(str, v)).lower() if isinstance(v, list) else str(v or "").lower()


def _tags(row: dict) -> list[str]:
    return [str(t).lower() for t in row.get("tags") or []]


def _pct(v) -> str:
    """A fraction as the Runs table writes it, one decimal (engine.numbers.percent)."""
    return percent(v, 1)


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
        # the key bar (tui/widgets/key_bar.py) shows `?` and `q`, then these in this order while they fit
        Binding("enter", "open", "Open", show=True),
        Binding("space", "toggle_select", "Select", show=True),
        # `/` and `e` open a text field, `esc` and `enter` leave the filter box: as priority bindings they run
        # in the order keys were typed, so the keys typed after them reach the field (or the table) they
        # meant; `/` and `e` are off while the filter box has focus, `enter` on only then
        Binding("slash", "filter", "Filter", show=True, priority=True),
        Binding("e", "edit", "Edit", show=True, priority=True),
        Binding("n", "new_run", "New run", show=True),
        Binding("c", "compare", "Compare", show=True),
        Binding("s", "stop", "Stop", show=True),
        Binding("r", "resume", "Resume", show=True),
        Binding("o", "sort", "Sort", show=True),
        Binding("y", "copy_id", "Copy id", show=True),
        Binding("f", "find", "Find", show=True, priority=True),  # priority: as `/` (the text typed after it)
        Binding("x", "archive", "Archive/restore", show=False),
        Binding("A", "toggle_archived", "Archived", show=False),
        Binding("D", "diff", "Diff", show=False),
        Binding("d", "delete", "Delete", show=False),
        Binding("O", "sort_reverse", "Reverse sort", show=False),
        Binding("<", "sort_column(-1)", "Sort by the column to the left", show=False),
        Binding(">", "sort_column(1)", "Sort by the column to the right", show=False),
        Binding("F", "find_next", "Find the next match", show=False),
        Binding("g", "jump(0)", "First run", show=False),
        Binding("G", "jump(-1)", "Last run", show=False),
        Binding("a", "select_all", "Select all/none", show=False),
        Binding("escape", "clear", "Clear filter/selection", show=False, priority=True),
        Binding("enter", "filter_done", "Keep the filter / found run", show=False, priority=True),  # in a box only
    ]

    DEFAULT_CSS = """
    RunsScreen #runs-table { height: 1fr; }
    RunsScreen #runs-filter { dock: bottom; display: none; height: 3; border: tall $accent; }
    RunsScreen #runs-filter.-active { display: block; }
    RunsScreen #runs-filter.-error { border: tall $error; }
    RunsScreen #runs-find { dock: bottom; display: none; height: 3; border: tall $primary; }
    RunsScreen #runs-find.-active { display: block; }
    RunsScreen #runs-find.-error { border: tall $error; }
    RunsScreen #runs-info {
        height: auto; max-height: 2; padding: 0 1; color: $foreground-muted; text-wrap: nowrap; text-overflow: ellipsis;
    }
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
        self.find_text = ""
        """The text of the last find (`f`); `F` goes to the next run it matches."""
        self._find_start = 0
        """The cursor row when `f` was pressed: typing finds from there."""
        self._remembered = False
        """The state file was read (the first poll reads it)."""
        self._ids: list[str] = []
        self._keys: dict[str, tuple] = {}
        self._rows_by_id: dict[str, dict] = {}
        self._cache: dict[str, tuple] = {}
        self._multi_label: set[str] = set()
        """Presets whose runs have different labels (a sweep of method.name): their rows show the label."""
        self._polling = False
        self._colors: dict[str, str] = {}
        self._focus_ids: list[str] = []
        self._kinds: dict[str, str] = {}
        """run id -> its experiment kind ("" for a training run), read once for runs without epochs."""
        self._lens: dict[str, tuple[int, int]] = {}
        """run id -> (preset cell, title cell) lengths when the columns were last sized."""
        self._exp_status: dict[str, tuple] = {}
        """run id -> (index `updated`, Status) of experiment runs that are not running (their points)."""
        self.last_apply_s = 0.0
        """Seconds the UI thread spent applying the last snapshot (for the benchmark)."""
        self.last_apply_cpu_s = 0.0
        """CPU seconds of the same (independent of the machine's load)."""

    # -- layout --------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StoreHeader(self.app.service.home, id="header")
        with Vertical():
            yield Static(NO_RUNS, id="runs-empty")
            yield RunTable(list(COLUMNS), id="runs-table")
            yield Static("", id="runs-alerts")
            yield Static("", id="runs-info")
        yield Input(
            placeholder="filter: words, key:value, #tag, or an expression (method.lam > 0.1 and state == "
            '"finished") — enter keeps, esc clears',
            id="runs-filter",
        )
        yield FindBox(
            placeholder="find: id, preset, title or tag — the cursor jumps; enter stays, esc closes, F finds the next",
            id="runs-find",
        )
        yield KeyBar(id="runs-keys")

    def on_mount(self) -> None:
        self._colors = palette(self.app)
        self.app.theme_changed_signal.subscribe(self, self._on_theme)
        self.set_interval(REFRESH_S, self.request_poll)
        self.set_interval(TICK_S, self._tick)
        self.request_poll(force=True)
        self._update_info()

    def on_screen_resume(self) -> None:
        self.request_poll()

    def _tick(self) -> None:
        """Redraw the rows of active runs: their elapsed time moves on while nothing is written."""
        if self.snapshot and self.is_current and any(r.get("state") in ACTIVE for r in self.snapshot.rows):
            self._apply(self.snapshot)

    def check_action(self, action: str, parameters) -> bool | None:
        # the priority keys type into the filter box while it has focus; enter keeps the filter only there
        typing = isinstance(self.focused, Input)
        if action in ("filter", "edit", "find"):
            return not typing
        if action == "filter_done":
            return typing
        return True

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
            remembered = None
            if not self._remembered:  # first: the sort and filter of the last session
                self._remembered = True
                sections, problem = self.app.state.load()
                remembered = Remembered(sections.get("runs"), problem)
            snap = self.app.reader.poll(force=force)
            if snap is not None:
                self._read_configs(snap.rows)  # new runs, when the filter names config keys
                self._read_experiments(snap)
            if remembered is not None:
                self.post_message(remembered)  # before the snapshot: the first table is sorted and filtered
            if snap is not None:
                self.post_message(IndexChanged(snap))
        finally:
            self._polling = False

    def on_index_changed(self, message: IndexChanged) -> None:
        self._apply(message.snapshot)

    # -- remembered across restarts --------------------------------------------------
    def on_remembered(self, message: Remembered) -> None:
        """Put the last session's sort and filter back (what is wrong in them is left out, and said)."""
        good = message.good
        problems = ([message.problem] if message.problem else []) + message.bad
        if problems:
            self.notify("; ".join(problems), title="app state", severity="warning", timeout=10)
        if "sort" in good:
            self.sort_index = [k for k, *_rest in SORTS].index(good["sort"])
            self.sort_desc = good.get("desc", SORTS[self.sort_index][3])
        if good.get("filter"):
            box = self.query_one("#runs-filter", Input)
            box.add_class("-active")
            self.set_filter(good["filter"])
            # its Changed message, after the first snapshot, sets the filter again: the configs an expression
            # names are read then (there are no rows yet)
            box.value = good["filter"]
        self._refresh_rows()
        self._update_info()

    def remember(self) -> None:
        """Keep the sort and the filter in effect for the next session."""
        self.app.remember(
            "runs", {"sort": SORTS[self.sort_index][0], "desc": self.sort_desc, "filter": self.query_text}
        )

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
                    self._configs[r["id"]] = self.app.service.config(r["id"]).to_json()
                    n += 1
                except (UserError, OSError):
                    pass  # damaged or half-made: no config keys (null), read again next time
        return n

    def _read_experiments(self, snap: IndexSnapshot) -> None:
        """(Thread worker.) The experiment kind of runs without epoch records (config.json, once), and
        the points done / planned of experiment runs that are not running (status.json, when their
        index row changed; a running run's status is in the snapshot already)."""
        for r in snap.rows:
            rid = r["id"]
            if rid not in self._kinds and not r.get("epoch") and r.get("state") != "corrupt":
                try:
                    self._kinds[rid] = str(self.app.service.config(r).value("experiment.kind") or "")
                except (UserError, OSError):
                    continue  # half-made or damaged: read again next time
            if (
                self._kinds.get(rid)
                and rid not in snap.live
                and self._exp_status.get(rid, (None,))[0] != r.get("updated")
            ):
                try:
                    self._exp_status[rid] = (r.get("updated"), self.app.service.status(r))
                except (UserError, OSError):
                    pass

    def experiment(self, rid: str) -> tuple[str, Status | None]:
        """(experiment kind or "", the status that counts its points) of a run."""
        kind = self._kinds.get(rid, "")
        if not kind:
            return "", None
        live = self.snapshot.live.get(rid) if self.snapshot else None
        return kind, live if live is not None else self._exp_status.get(rid, (None, None))[1]

    def _load_configs(self) -> None:
        """After a filter naming config keys is set: read the configs it needs, then filter again."""
        rows = list(self.snapshot.rows) if self.snapshot else []

        def work() -> None:
            if self._read_configs(rows):
                self.app.call_from_thread(self._refresh_rows)

        self.app.work(self, work, name="runs-configs")

    def _row_key(self, r: dict, live: Status | None, minute: int) -> tuple:
        """Everything a row's cells depend on (compared to find the rows to redraw)."""
        d = r.to_json() if hasattr(r, "to_json") else r  # a plain dict: its .get is C, a record's is Python
        kind, st = self.experiment(d["id"])
        return (
            tuple(map(d.get, ROW_KEYS)),
            tuple(d.get("tags") or ()),
            live.batch if live else None,
            live.batches if live else None,
            live.heartbeat if live else None,
            kind,
            st.point if st else None,
            st.points if st else None,
            minute if d.get("state") in ACTIVE else None,
            d["id"] in self.selected,
            d.get("preset") in self._multi_label,
        )

    def cells_for(self, rid: str) -> tuple:
        """The cells of one row, made when the row is first drawn (and again after it changed)."""
        r = self._rows_by_id[rid]
        live = self.snapshot.live.get(rid) if self.snapshot else None
        key = self._keys.get(rid) or self._row_key(r, live, int(time.time() // 60))
        hit = self._cache.get(rid)
        if hit and hit[0] == key:
            return hit[1]
        cells = self._row_cells(r, live)
        self._cache[rid] = (key, cells)
        return cells

    def _row_cells(self, r: dict, live: Status | None) -> tuple:
        rid = r["id"]
        sel = rid in self.selected
        c = self._colors
        idt = Text(("◉ " if sel else "  ") + rid, style=f"bold {c.get('accent', '')}" if sel else "", end="")
        state = r.get("state") or "queued"
        best, end = r.get("best_robust_acc"), r.get("end_robust_acc")
        rob = Text(f"{_pct(best):>5}/{_pct(end):<5}", end="")
        if robust_overfit(r):
            rob.append("⚠", style=c.get("warning", ""))
        kind, st = self.experiment(rid)
        if kind:  # points, not epochs
            progress = progress_cell(
                st.point if st else 0, st.points if st else None, c, state=state, width=4, unit="pts"
            )
        else:
            progress = progress_cell(
                r.get("epoch"),
                r.get("epochs"),
                c,
                batch=live.batch if live else None,
                batches=live.batches if live else None,
                state=state,
                width=4,
            )
            if r.get("stopped_early_at") is not None:  # finished early on robust overfitting
                progress.append("⏹", style=c.get("warning", ""))
        pace = row_pace(r, live)
        when = Text(clock(pace.launched), end="")
        if pace.elapsed is not None:
            when.append(f" {duration(pace.elapsed)}", style=c.get("muted", ""))
        return (
            idt,
            self._preset_cell(r, kind),
            Text("" if r.get("seed") is None else str(r["seed"]), justify="right", end=""),
            badge(state, c),
            progress,
            rob,
            Text(_pct(r.get("end_clean_acc")), justify="right", end=""),
            Text(_num(r.get("end_ig")), justify="right", end=""),
            Text(_num(r.get("end_hs")), justify="right", end=""),
            Text(
                duration(pace.eta)
                if state == "running" and pace.eta is not None
                else ("…" if state == "running" else ""),
                justify="right",
                end="",
            ),
            when,
            self._title_cell(r),
        )

    def _preset_text(self, r: dict, kind: str = "") -> str:
        """The preset cell's words: the preset, then the label where the preset's runs differ in it,
        or an experiment run's kind (its label once started: `fig4a:pgd`)."""
        text = str(r.get("preset") or r.get("label") or "?")
        label = r.get("label") or ""
        if kind:
            text += f" [{label if label.startswith(kind) else kind}]"
        elif r.get("preset") in self._multi_label and label:
            text += f" [{label}]"  # a sweep of method.name: the label tells its runs apart
        return text

    def _preset_cell(self, r: dict, kind: str = "") -> Text:
        return SafeText(self._preset_text(r, kind), end="")

    def _title_cell(self, r: dict) -> Text:
        """`title #tag #tag` (title muted, tags in the accent colour): its own column, after the numbers."""
        c = self._colors
        t = SafeText(str(r.get("title") or ""), style=c.get("muted", ""), end="")
        for tag in r.get("tags") or []:
            t.append(f"{' ' if t.plain else ''}#{tag}", style=c.get("accent", ""))
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
        minute = int(time.time() // 60)
        keys = {r["id"]: self._row_key(r, snap.live.get(r["id"]), minute) for r in rows}
        if rebuild or ids != self._ids:
            self._size_columns(table, rows)
            cursor_id = None
            if self._focus_ids:
                cursor_id = next((i for i in self._focus_ids if i in ids), None)
                self._focus_ids = []
            self._keys = keys
            table.set_rows(ids, self.cells_for, cursor_key=cursor_id)
            self._ids = ids
        else:
            changed = [rid for rid, key in keys.items() if self._keys.get(rid) != key]
            self._keys = keys
            if any(self._lens.get(rid) != self._cell_lens(self._rows_by_id[rid]) for rid in changed):
                self._size_columns(table, rows)
            for rid in changed:
                table.invalidate(rid)
        self._update_empty(snap, rows)
        if snap.version == 1 and not snap.rows and self.is_current:
            self.app.action_presets()  # an empty store: start where a new user starts, at the presets
        self.query_one("#header", StoreHeader).set_counts(snap.counts(), self._selection_note())
        self._update_alerts(rows)
        self._update_info()
        self.last_apply_s = time.perf_counter() - t0
        self.last_apply_cpu_s = time.thread_time() - c0

    def _cell_lens(self, r: dict) -> tuple[int, int]:
        """(preset cell, title cell) lengths of a row."""
        return (
            len(self._preset_text(r, self._kinds.get(r["id"], ""))),
            len(r.get("title") or "") + sum(len(t) + 2 for t in r.get("tags") or []),
        )

    def _size_columns(self, table: RunTable, rows: list[dict]) -> None:
        """The preset column as wide as its longest cell; the title column only when a run shown has one."""
        self._lens = {r["id"]: self._cell_lens(r) for r in rows}
        preset = max((p for p, _t in self._lens.values()), default=0)
        title = max((t for _p, t in self._lens.values()), default=0)
        table.configure("preset", max_width=max(preset, COLUMNS[1].width))
        table.configure("title", max_width=max(title, COLUMNS[-1].width), hidden=title == 0)

    def _update_alerts(self, rows: list[dict]) -> None:
        lines = []
        for r in rows:
            if r.get("state") == "running" and robust_overfit(r):
                gap = 100 * (r["best_robust_acc"] - r["end_robust_acc"])
                lines.append(
                    f"⚠ {r['id']}: robust overfitting since epoch {r['overfit_epoch']} — robust accuracy "
                    f"{gap:.1f} pts below its best (epoch {r.get('best_epoch')})"
                )
        more = f"  (+{len(lines) - 2} more)" if len(lines) > 2 else ""
        self.query_one("#runs-alerts", Static).update(Text("\n".join(lines[:2]) + more, end=""))

    def _update_empty(self, snap: IndexSnapshot, rows: list[dict]) -> None:
        empty = self.query_one("#runs-empty", Static)
        if not snap.rows:
            text = NO_RUNS
        elif rows:
            text = ""
        elif self.query_text:
            n = sum(bool(r.get("archived")) == self.show_archived for r in snap.rows)
            text = (
                f"No runs match the filter {self.query_text!r} ({n} {'archived ' if self.show_archived else ''}"
                f"run{'' if n == 1 else 's'} in the store). esc clears it."
            )
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
        if self.find_text.strip() and self.query_one("#runs-find", FindBox).has_class("-active"):
            found = self.find(self.find_text, self._find_start) is not None
            parts.append(f"find: {self.find_text!r}{'' if found else ' — no run matches'}")
        if self.selected:
            parts.append(f"{len(self.selected)} selected")
        parts.append("q quits, runs keep going")
        t = SafeText("  ·  ".join(parts), no_wrap=True, overflow="ellipsis", end="")  # a remembered filter too
        if self.filter_error:  # one line: the filter in effect stays the last one that parsed
            t.append(
                f"\n⚠ {self.filter_error} — {'the filter above stays' if self.query_text else 'no filter'}",
                style=self._colors.get("error", ""),
            )
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
            return [by_id[i] for i in self._ids if i in self.selected] + [
                by_id[i] for i in sorted(self.selected) if i not in self._ids and i in by_id
            ]
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

    def focused_find_closes(self) -> None:
        """Close the find line after the keys typed before (still on their way to it)."""
        self.query_one("#runs-find", FindBox).call_later(self._close_find)

    def action_clear(self) -> None:
        box = self.query_one("#runs-filter", Input)
        if isinstance(self.focused, FindBox):  # esc in the find line: closed, the cursor stays
            self.set_focus(self.query_one("#runs-table"))
            self.focused_find_closes()
            return
        if self.focused is box:  # (has_focus follows a Focus event, later than the keys typed ahead)
            # the focus moves now (the keys typed after esc are the table's); the box is emptied after the
            # letters typed before esc, which are still on their way to it
            self.set_focus(self.query_one("#runs-table"))
            box.call_later(self._empty_filter_box)
            return
        elif self.selected:
            self.selected.clear()
        elif self.query_text or self.filter_error:
            self.set_filter("")
            box.value = ""
            box.remove_class("-active")
        self._refresh_rows()

    def _empty_filter_box(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.value = ""
        box.remove_class("-active")
        self.set_filter("")

    def action_filter_done(self) -> None:
        """`enter` in the filter box: keep the filter, back to the table (now, for the keys typed after it);
        in the find line: the cursor stays on the run found."""
        if isinstance(self.focused, FindBox):
            self.set_focus(self.query_one("#runs-table"))
            self.focused_find_closes()
            return
        box = self.query_one("#runs-filter", Input)
        self.set_focus(self.query_one("#runs-table"))
        box.call_later(lambda: box.set_class(bool(box.value), "-active"))

    def action_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.add_class("-active")
        self.set_focus(box)  # now, not after the keys already typed: they are the filter's

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
        if self._remembered:
            self.remember()
        if query is not None and query.needs_config:
            self._load_configs()

    @on(Input.Submitted, "#runs-filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        box = self.query_one("#runs-filter", Input)
        box.set_class(bool(box.value), "-active")
        self.set_focus(self.query_one("#runs-table"))

    def action_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        self.sort_desc = SORTS[self.sort_index][3]
        self._sorted()

    def action_sort_reverse(self) -> None:
        self.sort_desc = not self.sort_desc
        self._sorted()

    def _sorted(self) -> None:
        self._refresh_rows()
        self._update_info()
        self.remember()

    def sort_by(self, key: str) -> None:
        """Sort by `key` (SORTS); the order it has already: reverse it."""
        keys = [s[0] for s in SORTS]
        if keys.index(key) == self.sort_index:
            self.sort_desc = not self.sort_desc
        else:
            self.sort_index = keys.index(key)
            self.sort_desc = SORTS[self.sort_index][3]
        self._sorted()

    def sort_column(self) -> str | None:
        """The column shown whose order is the one in effect (None: the column is not shown)."""
        key = SORTS[self.sort_index][0]
        shown = self.query_one("#runs-table", RunTable).shown_columns
        return next((c for c in shown if SORT_OF_COLUMN.get(c) == key), None)

    def action_sort_column(self, step: int) -> None:
        """`<` / `>`: sort by the column shown left / right of the one sorted by (htop's `<` `>`)."""
        shown = [c for c in self.query_one("#runs-table", RunTable).shown_columns if c in SORT_OF_COLUMN]
        if not shown:
            return
        cur = self.sort_column()
        i = (shown.index(cur) + step) % len(shown) if cur in shown else (0 if step > 0 else len(shown) - 1)
        keys = [s[0] for s in SORTS]
        self.sort_index = keys.index(SORT_OF_COLUMN[shown[i]])
        self.sort_desc = SORTS[self.sort_index][3]
        self._sorted()

    @on(RunTable.HeaderClicked, "#runs-table")
    def _header_clicked(self, event: RunTable.HeaderClicked) -> None:
        col = SORT_OF_COLUMN.get(event.column)
        if col:
            self.sort_by(col)

    def action_jump(self, where: int) -> None:
        """`g` / `G`: the first / last run (vim)."""
        self.query_one("#runs-table", RunTable).action_jump(where)

    # -- find (f, F) -----------------------------------------------------------------
    def action_find(self) -> None:
        box = self.query_one("#runs-find", FindBox)
        self._find_start = self.query_one("#runs-table", RunTable).cursor_row
        box.value = ""
        box.remove_class("-error")
        box.add_class("-active")
        self.set_focus(box)  # now: the keys typed after `f` are the text

    def find_words(self, rid: str) -> str:
        """What find matches in a run: its id, its preset as shown (label or kind), title and #tags."""
        r = self._rows_by_id.get(rid) or {}
        return " ".join(
            [
                rid,
                self._preset_text(r, self._kinds.get(rid, "")),
                str(r.get("title") or ""),
                *(f"#{t}" for t in r.get("tags") or []),
            ]
        ).lower()

    def find(self, text: str, start: int, *, include_start: bool = True) -> int | None:
        """The row of the first run from `start` (wrapping) that `text` matches, or None."""
        text = text.strip().lower()
        n = len(self._ids)
        if not text or not n:
            return None
        for k in range(0 if include_start else 1, n + (0 if include_start else 1)):
            i = (start + k) % n
            if text in self.find_words(self._ids[i]):
                return i
        return None

    def find_typed(self, value: str) -> None:
        """(The find line changed.) The cursor to the first match from where `f` found it."""
        self.find_text = value
        box = self.query_one("#runs-find", FindBox)
        i = self.find(value, self._find_start)
        box.set_class(bool(value.strip()) and i is None, "-error")
        if i is not None:
            self.query_one("#runs-table", RunTable).move_cursor(i)
        self._update_info()

    def action_find_next(self) -> None:
        # after the keys still on their way to the find line (typed before this one)
        self.query_one("#runs-find", FindBox).call_later(self._find_next)

    def _find_next(self) -> None:
        if not self.find_text.strip():
            self.notify("f first: find a run by id, preset, title or tag", severity="warning")
            return
        table = self.query_one("#runs-table", RunTable)
        i = self.find(self.find_text, table.cursor_row, include_start=False)
        if i is None:
            self.notify(f"no run matches {self.find_text!r}", severity="warning")
            return
        table.move_cursor(i)

    def _close_find(self) -> None:
        box = self.query_one("#runs-find", FindBox)
        box.remove_class("-active")
        box.remove_class("-error")

    def action_new_run(self) -> None:
        self.app.action_presets()

    def action_compare(self) -> None:
        rows = self.targets() if self.selected else self.visible_rows()
        if not rows:
            self.notify("Nothing to compare: select runs (space) or filter (/) first.", severity="warning")
            return

        what = (
            f"{len(rows)} selected run{'' if len(rows) == 1 else 's'}"
            if self.selected
            else (f"filter {self.query_text!r}" if self.query_text else "all runs")
        )
        self.app.push_screen(CompareScreen(run_ids=[r["id"] for r in rows], title=what))

    def action_stop(self) -> None:
        rows = [r for r in self.targets() if r.get("state") in ("running", "queued")]
        if not rows:
            self.notify("No running or queued run to stop here.", severity="warning")
            return

        ids = [r["id"] for r in rows]
        text = (
            f"Stop {len(ids)} run{'s' if len(ids) > 1 else ''} ({_list(ids)})?\n"
            "Each keeps its last checkpoint; resume later with r."
        )

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
        text = (
            f"Delete {len(ids)} run{'s' if len(ids) > 1 else ''} ({_list(ids)}) and their files "
            f"(checkpoints, metrics, logs)? This cannot be undone."
        )
        if running:
            text += f"\n{_list(running)} {'is' if len(running) == 1 else 'are'} still active: stop first."

        def done(ok: bool | None) -> None:
            if ok:
                self.selected -= set(ids)
                self.app.supervise("delete", ids, on_screen=self)

        self.app.push_screen(ConfirmScreen(text, yes="Delete", danger=True), done)

    def action_edit(self) -> None:
        """Title, tags and note of the run under the cursor; the tags of the selected runs.

        The keys typed after `e` are held until the editor has focus (AdvlcApp.hold_keys): they are
        the title (or tags) typed ahead, not Runs keys."""
        rows = self.targets()
        if not rows:
            return
        ids = [r["id"] for r in rows]
        self.app.hold_keys()
        if len(rows) > 1:
            common = [t for t in rows[0].get("tags") or [] if all(t in (r.get("tags") or []) for r in rows)]
            self.app.push_screen(
                AnnotateScreen(ids, tags=common, heading=f"Tags of {len(ids)} runs ({_list(ids)})"), self._edited
            )
            return
        heading = f"Edit run {ids[0]}  {rows[0].get('preset') or ''}"

        def work() -> None:  # the whole note is in meta.json (the index has its first line)
            try:
                meta = self.app.service.meta(ids[0])  # a damaged file: a UserError, which AdvlcApp.work notifies
            except BaseException:
                self.app.call_from_thread(self.app.release_keys)
                raise
            self.app.call_from_thread(self._open_editor, ids, meta, heading)

        self.app.work(self, work, name="edit")

    def action_copy_id(self) -> None:
        """Copy the id of the run under the cursor to the clipboard (OSC 52: works over SSH where the
        terminal allows it)."""
        rid = self.cursor_id()
        if rid:
            self.app.copy_to_clipboard(rid)
            self.notify(f"copied {rid} (OSC 52: if nothing was copied, the terminal does not allow it)", title="copy")

    def _open_editor(self, ids: list[str], meta: Meta, heading: str) -> None:
        self.app.push_screen(
            AnnotateScreen(ids, tags=list(meta.tags), title=meta.title or "", note=meta.note or "", heading=heading),
            self._edited,
        )

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

        def work() -> None:
            self.app.service.annotate(ids, archived=archive)
            text = (
                f"archived {_list(ids)} (A shows archived runs; x there restores)"
                if archive
                else f"restored {_list(ids)}"
            )
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
