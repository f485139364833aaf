"""Run detail: live plots of one run, its alerts, its log and its config + provenance.

A `RunFollower` (engine.store.watch, from `app.service.follow`) polls the run in a thread worker
every `REFRESH_S`; only new epoch records and new log lines come back, and the plots are redrawn
from the accumulated `RunHistory`. Plots: accuracy (clean and PGD robust on the test data,
training accuracy on the training attack's examples), losses and AV, IG, HS, learning
rate; a vertical mark at the best epoch (highest robust accuracy); SWA curves when the
run records them (`swa` table), shown dotted-thinner next to the plain model's.

The header shows the run's title and `#tags` (meta.json, written by the store: `e` edits them
here, `advlc label/tag/note` from a shell) and redraws when they change, like the config tab's
`meta` block. Its state, epoch and learning rate are never cut: when the line is too short, the
header takes two lines (who: id, preset, overrides, seed, title, tags; how far: state, epoch,
lr, then the rate, ETA, elapsed time and launch time of tui/widgets/pace.py, and the commit,
as many as fit).

An experiment run (`experiment.kind`: Fig. 4, A.1) has points, not epochs: the plots tab shows
its points table (one row per record of its `points` table, read in the poll worker when
metrics.json changed) and the header its points done / planned.

Habits of htop, less and TensorBoard: the plots share one epoch window (`+` / `-` / `0`) and one
epoch cursor (`←` / `→`: each plot's readout in its bottom border, every metric of that epoch in
the line under the plots); `y` puts the focused plot on a log axis (tui/widgets/metric_plot.py).
The log tab (`LogView`) follows the tail until scrolled up (`G` / `end` follows again), wraps
(`w`) and searches (`/`, `n`, `N`), with its state in the line under it.
"""

from __future__ import annotations

import json
import time
from bisect import bisect_left

from rich.cells import cell_len, chop_cells
from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.geometry import Size
from textual.message import Message
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from engine.errors import UserError
from engine.facade import POINT_KEYS, RunFollower, RunHistory, percent, robust_key
from engine.printable import printable
from tui.messages import REFRESH_S, ActionDone, RunChanged
from tui.safe_text import SafeText, safe_lines
from tui.screens.annotate import AnnotateScreen, Annotation, describe
from tui.screens.compare import CompareScreen
from tui.screens.confirm import ConfirmScreen
from tui.widgets.alert_bar import AlertBar, detect_alerts
from tui.widgets.key_bar import KeyBar
from tui.widgets.metric_plot import MetricPlot, fmt_value
from tui.widgets.pace import clock, duration, history_pace
from tui.widgets.palette import palette
from tui.widgets.status_badge import badge

PLOTS = (
    # id, title, [(series name, record key, table, role, scale)]
    (
        "acc",
        "accuracy (%)",
        [
            ("clean", "clean_acc", "epochs", "primary", 100),
            ("robust", "robust_acc", "epochs", "accent", 100),
            ("val robust", "val_robust_acc", "epochs", "warning", 100),
            ("train", "train_acc", "epochs", "success", 100),
            ("swa clean", "clean_acc", "swa", "muted", 100),
            ("swa robust", "robust_acc", "swa", "error", 100),
        ],
    ),
    (
        "loss",
        "losses · AV",
        [
            ("train", "train_loss", "epochs", "success", 1),
            ("clean", "clean_loss", "epochs", "primary", 1),
            ("robust", "robust_loss", "epochs", "accent", 1),
            ("AV", "av", "epochs", "error", 1),
            ("swa AV", "av", "swa", "muted", 1),
        ],
    ),
    ("ig", "IG (input gradient ‖·‖₁)", [("IG", "ig", "epochs", "primary", 1), ("swa IG", "ig", "swa", "accent", 1)]),
    (
        "hs",
        "HS (input Hessian, mean |λ| top-20)",
        [("HS", "hs", "epochs", "primary", 1), ("swa HS", "hs", "swa", "accent", 1)],
    ),
    ("lr", "learning rate", [("lr", "lr", "epochs", "primary", 1)]),
)
"""The plots of the detail screen and the series each holds."""


class PointsRead(Message):
    """The records of an experiment run's `points` table (all of them: a few dozen at most)."""

    def __init__(self, points: list):
        super().__init__()
        self.points = points


def fit(parts: list[tuple[str, str]], width: int, sep: str = "  ") -> list[tuple[str, str]]:
    """The (text, style) parts that fit in `width` cells, whole, in order (the first always)."""
    out: list[tuple[str, str]] = []
    used = 0
    for text, style in parts:
        need = len(text) + (len(sep) if out else 0)
        if out and used + need > width:
            break
        out.append((text, style))
        used += need
    return out


LOG_MAX_LINES = 5000
"""Lines the log tab keeps (the oldest go first)."""


class LogView(ScrollView, can_focus=True):  # type: ignore[call-arg]  # textual is not followed
    """The run's log as `less +F` shows it: follows the tail until scrolled up, searches, wraps.

    - Following: new lines scroll into view. Scrolling up (keys, wheel, scrollbar, a search jump)
      pauses it: the view stays put and counts the lines that arrive; `G` / `end` (or scrolling back
      to the bottom) follows again.
    - `w` wraps long lines at the widget's width (off: one line per row, scrolled sideways).
    - `/` types a search into the status line (the keys go to this widget, so a burst of keys lands in
      order); `enter` jumps to the first match from the top of the view, `esc` cancels; `n` / `N` next /
      previous match (wrapping). Every match is highlighted, the current one more. Lower-case text
      matches any case, text with a capital its case only (vim's smartcase).
    Lines are shown as given (the screen makes them printable first: tui/safe_text.py).
    """

    BINDINGS = [
        # priority: the keys typed after `/` are the search text (they must not reach bindings first)
        Binding("slash", "search", "Search", show=True, priority=True),
        Binding("n", "next_match(1)", "Next match", show=True),
        Binding("N", "next_match(-1)", "Previous match", show=False),
        Binding("w", "toggle_wrap", "Wrap", show=True),
        Binding("G,end", "follow", "Follow", show=True, key_display="G"),
        Binding("k", "scroll_up", "Up", show=False),
        Binding("j", "scroll_down", "Down", show=False),
    ]

    COMPONENT_CLASSES = {"log-view--match", "log-view--match-current"}

    DEFAULT_CSS = """
    LogView { background: $surface; height: 1fr; scrollbar-size-vertical: 1; }
    LogView:focus { background-tint: $foreground 5%; }
    LogView > .log-view--match { background: $warning 35%; }
    LogView > .log-view--match-current { background: $accent; color: $foreground; text-style: bold; }
    """

    class Status(Message):
        """Following or paused, wrap, the search: for the line under the log (the newest only counts)."""

        def __init__(self, view: "LogView"):
            super().__init__()
            self.view = view

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, LogView.Status)

    def __init__(self, *, max_lines: int = LOG_MAX_LINES, id: str | None = None):
        super().__init__(id=id)
        self.max_lines = max_lines
        self._lines: list[str] = []
        self._rows: list[tuple[int, int, int]] = []
        """Display rows: (line, start, end) — one per line, or one per piece of a wrapped line."""
        self._first_row: list[int] = []
        """line -> its first display row."""
        self._strips: dict[int, Strip] = {}
        self._width = 0
        self._wrap_width = 0
        self.wrap = False
        self.following = True
        self.new_while_paused = 0
        """Lines that arrived while paused."""
        self.prompt: str | None = None
        """The search being typed after `/` (None: not typing)."""
        self.search = ""
        self.matches: list[tuple[int, int, int]] = []
        """(line, start, end) of every match of `search`, in order."""
        self.current: int | None = None
        """Index into `matches` of the match jumped to."""
        self.wrapped_around = False
        """The last jump went past the last (first) match and started again."""
        self._moving = False

    # -- content ---------------------------------------------------------------------
    @property
    def lines(self) -> list[str]:
        return self._lines

    def clear(self) -> None:
        self._lines.clear()
        self.matches.clear()
        self.current = None
        self.new_while_paused = 0
        self._relayout()

    def write_lines(self, lines) -> None:
        """Append lines (already printable); follow the tail, or count them while paused."""
        new = [part for line in lines for part in (str(line).splitlines() or [""])]
        if not new:
            return
        start = len(self._lines)
        self._lines.extend(new)
        for i in range(start, len(self._lines)):
            self._first_row.append(len(self._rows))
            self._rows.extend(self._split(i))
            self._width = max(self._width, cell_len(self._lines[i]))
            self.matches.extend(self._find(i))
        if len(self._lines) > self.max_lines + self.max_lines // 10:
            self._prune(len(self._lines) - self.max_lines)
        if not self.following:
            self.new_while_paused += len(new)
        self._resize_virtual()
        if self.following:
            self._scroll(self.max_scroll_y)
        self.refresh()
        self._status()

    def _prune(self, n: int) -> None:
        """Drop the first `n` lines; a paused view stays on the lines it showed."""
        top_line = self._rows[int(self.scroll_y)][0] if self._rows and int(self.scroll_y) < len(self._rows) else 0
        del self._lines[:n]
        cur = self.matches[self.current] if self.current is not None else None
        self.matches = [(ln - n, a, b) for ln, a, b in self.matches if ln >= n]
        if cur is not None:
            cur = (cur[0] - n, cur[1], cur[2])
            self.current = self.matches.index(cur) if cur in self.matches else None
        self._relayout()
        if not self.following:
            line = max(0, top_line - n)
            self._scroll(self._first_row[line] if line < len(self._first_row) else 0)

    def _split(self, i: int) -> list[tuple[int, int, int]]:
        line = self._lines[i]
        w = self._wrap_width
        if not self.wrap or w <= 0 or len(line) <= w and line.isascii():
            return [(i, 0, len(line))]
        if line.isascii():
            return [(i, a, min(a + w, len(line))) for a in range(0, len(line), w)]
        out, a = [], 0
        for piece in chop_cells(line, w):
            out.append((i, a, a + len(piece)))
            a += len(piece)
        return out or [(i, 0, 0)]

    def _relayout(self) -> None:
        """Display rows from the lines again (wrap toggled, a new width, lines dropped)."""
        self._rows, self._first_row = [], []
        for i in range(len(self._lines)):
            self._first_row.append(len(self._rows))
            self._rows.extend(self._split(i))
        self._width = max((cell_len(x) for x in self._lines), default=0)
        self._strips.clear()
        self._resize_virtual()
        self.refresh()

    def _resize_virtual(self) -> None:
        self.virtual_size = Size(self._wrap_width if self.wrap else self._width, len(self._rows))

    def on_resize(self) -> None:
        width = self.scrollable_content_region.width
        if width != self._wrap_width:
            top = self._top_line()
            self._wrap_width = width
            if self.wrap:
                self._relayout()
                self._keep_top(top)
        self._strips.clear()
        if self.following:
            self.call_after_refresh(self._scroll_end_now)

    def _top_line(self) -> int:
        y = int(self.scroll_y)
        return self._rows[y][0] if 0 <= y < len(self._rows) else 0

    def _keep_top(self, line: int) -> None:
        if self.following:
            self._scroll(self.max_scroll_y)
        elif line < len(self._first_row):
            self._scroll(self._first_row[line])

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()

    # -- following -------------------------------------------------------------------
    def _scroll(self, y: float) -> None:
        """Scroll the view (not the user: following stays as it is)."""
        self._moving = True
        try:
            self.scroll_to(y=y, animate=False, immediate=True, force=True)
        finally:
            self._moving = False

    def _scroll_end_now(self) -> None:
        if self.following:
            self._scroll(self.max_scroll_y)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self._moving:
            return
        at_end = new_value >= self.max_scroll_y
        if new_value < old_value and not at_end and self.following:
            self.following = False
            self.new_while_paused = 0
            self._status()
        elif at_end and not self.following and new_value > old_value:
            self.action_follow()

    def action_follow(self) -> None:
        """Follow the tail again (`G`, `end`)."""
        self.following = True
        self.new_while_paused = 0
        self._scroll(self.max_scroll_y)
        self._status()

    def action_toggle_wrap(self) -> None:
        top = self._top_line()
        self.wrap = not self.wrap
        self._relayout()
        self._keep_top(top)
        if self.wrap:
            self._scroll_x_home()
        self._status()

    def _scroll_x_home(self) -> None:
        self._moving = True
        try:
            self.scroll_to(x=0, animate=False, immediate=True, force=True)
        finally:
            self._moving = False

    # -- search ----------------------------------------------------------------------
    def check_action(self, action: str, parameters) -> bool | None:
        return not (action == "search" and self.prompt is not None)

    def action_search(self) -> None:
        self.prompt = ""
        self._status()

    async def _on_key(self, event: events.Key) -> None:
        """While a search is typed: its letters, backspace, enter (search) and esc (cancel)."""
        if self.prompt is None:
            return
        if event.key == "escape":
            self.prompt = None
        elif event.key == "enter":
            text, self.prompt = self.prompt, None
            self.set_search(text)
            self.jump(first=True)
        elif event.key == "backspace":
            self.prompt = self.prompt[:-1]
        elif event.is_printable and event.character:
            self.prompt += event.character
        else:
            return  # other keys (ctrl+c, arrows) do what they do
        event.stop()
        event.prevent_default()
        self._status()

    def _find(self, i: int) -> list[tuple[int, int, int]]:
        needle = self.search
        if not needle:
            return []
        hay = self._lines[i] if needle != needle.lower() else self._lines[i].lower()
        out, a = [], hay.find(needle)
        while a >= 0:
            out.append((i, a, a + len(needle)))
            a = hay.find(needle, a + len(needle))
        return out

    def set_search(self, text: str) -> None:
        """Highlight every match of `text` (an empty text: no search)."""
        self.search = text
        self.matches = [m for i in range(len(self._lines)) for m in self._find(i)]
        self.current = None
        self._strips.clear()
        self.refresh()
        self._status()

    def jump(self, *, first: bool = False, step: int = 1) -> None:
        """To the first match from the top of the view (`first`), else to the next (`step` 1) or previous (-1)
        match, wrapping around; the view pauses there."""
        self.wrapped_around = False
        if not self.matches:
            self._status()
            return
        if first or self.current is None:
            top = self._top_line()
            after = [k for k, m in enumerate(self.matches) if m[0] >= top]
            k = after[0] if after else 0
            self.wrapped_around = not after
            if not first and step < 0:
                before = [k for k, m in enumerate(self.matches) if m[0] < top]
                k = before[-1] if before else len(self.matches) - 1
                self.wrapped_around = not before
        else:
            k = self.current + step
            self.wrapped_around = not 0 <= k < len(self.matches)
            k %= len(self.matches)
        self.current = k
        self._show_match()

    def action_next_match(self, step: int) -> None:
        if not self.search:
            self.notify("no search yet: / and the text", severity="warning")
            return
        self.jump(step=step)

    def _show_match(self) -> None:
        if self.current is None:
            return
        line, a, _b = self.matches[self.current]
        row = self._first_row[line]
        if self.wrap:
            row += next((j for j, r in enumerate(self._rows[row:]) if r[0] == line and r[1] <= a < max(r[2], a + 1)), 0)
        h = self.scrollable_content_region.height
        self.following = False
        self.new_while_paused = 0
        self._scroll(max(0, min(row - h // 2, self.max_scroll_y)))
        if not self.wrap:
            w = self.scrollable_content_region.width
            x = 0 if a < w - 8 else a - w // 2
            self._moving = True
            try:
                self.scroll_to(x=x, animate=False, immediate=True, force=True)
            finally:
                self._moving = False
        self._strips.clear()
        self.refresh()
        self._status()

    def status_text(self) -> str:
        """The line under the log: following or paused, wrap, the search."""
        if self.prompt is not None:
            return f"/{self.prompt}▏  enter searches, esc cancels"
        parts = [
            "● following the tail"
            if self.following
            else f"⏸ paused{f' ({self.new_while_paused} new lines)' if self.new_while_paused else ''} — G or end follows"
        ]
        parts.append(f"wrap {'on' if self.wrap else 'off'} (w)")
        if self.search:
            if not self.matches:
                parts.append(f"/{self.search}: no match")
            else:
                where = "" if self.current is None else f"match {self.current + 1}/"
                n = len(self.matches)
                parts.append(
                    f"/{self.search}: {where}{n}{'' if where else ' match' + ('' if n == 1 else 'es')}"
                    f"{' (wrapped)' if self.wrapped_around else ''} · n next, N previous"
                )
        return "  ·  ".join(parts)

    def _status(self) -> None:
        self.post_message(self.Status(self))

    # -- drawing ---------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        sx, sy = self.scroll_offset
        i = int(sy) + y
        width = self.size.width
        if i >= len(self._rows):
            return Strip.blank(width, self.rich_style)
        strip = self._strips.get(i)
        if strip is None:
            strip = self._strips[i] = self._row_strip(i)
        return strip.crop_extend(int(sx), int(sx) + width, self.rich_style)

    def _row_strip(self, i: int) -> Strip:
        line, a, b = self._rows[i]
        t = Text(self._lines[line][a:b], no_wrap=True, end="")
        if self.matches:
            hit = self.get_component_rich_style("log-view--match")
            cur = self.get_component_rich_style("log-view--match-current")
            current = self.matches[self.current] if self.current is not None else None
            for m in self._matches_of(line):
                lo, hi = max(m[1], a), min(m[2], b)
                if lo < hi:
                    t.stylize(cur if m == current else hit, lo - a, hi - a)
        segments = list(Segment.apply_style(list(t.render(self.app.console)), self.rich_style))
        return Strip(segments, t.cell_len)

    def _matches_of(self, line: int) -> list[tuple[int, int, int]]:
        k = bisect_left(self.matches, (line, -1, -1))
        out = []
        while k < len(self.matches) and self.matches[k][0] == line:
            out.append(self.matches[k])
            k += 1
        return out


class RunDetailScreen(Screen):
    """One run, live."""

    AUTO_FOCUS = "#plot-acc"
    """The plots' keys (cursor, window, log y) work from the start."""

    BINDINGS = [
        Binding("escape", "back", "Back", show=True),
        Binding("p", "tab('tab-plots')", "Plots", show=True),
        Binding("l", "tab('tab-log')", "Log", show=True),
        Binding("g", "tab('tab-config')", "Config", show=True),
        # priority: runs in the order keys were typed, so the keys typed after it reach the editor
        Binding("e", "edit", "Edit", show=True, priority=True),
        Binding("s", "stop", "Stop", show=True),
        Binding("f", "zoom", "Zoom plot", show=True),
        Binding("w", "toggle_swa", "SWA curves", show=False),
        Binding("r", "resume", "Resume", show=False),
        Binding("c", "compare_group", "Compare group", show=False),
    ]

    DEFAULT_CSS = """
    RunDetailScreen #detail-header { height: auto; max-height: 2; padding: 0 1; background: $panel; }
    RunDetailScreen #points-table { display: none; height: auto; max-height: 100%; }
    RunDetailScreen.-experiment #points-table { display: block; }
    RunDetailScreen.-experiment #plot-grid { display: none; }
    RunDetailScreen #plot-grid { grid-size: 2; grid-rows: 13; grid-gutter: 0 1; height: auto; }
    RunDetailScreen.-narrow #plot-grid { grid-size: 1; grid-rows: 12; }
    RunDetailScreen MetricPlot { height: 100%; }
    RunDetailScreen #detail-latest { height: auto; padding: 0 1; color: $foreground-muted; }
    RunDetailScreen TabbedContent { height: 1fr; }
    RunDetailScreen ContentSwitcher { height: 1fr; }
    RunDetailScreen TabPane { padding: 0; height: 1fr; }
    RunDetailScreen #plots-scroll { height: 1fr; }
    RunDetailScreen #log { height: 1fr; }
    RunDetailScreen #log-status { height: 1; padding: 0 1; background: $panel; color: $foreground-muted;
                                  text-wrap: nowrap; text-overflow: ellipsis; }
    RunDetailScreen #config-text { padding: 0 1; }
    """

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.history = RunHistory(run_id)
        self.follower: RunFollower | None = None
        self.show_swa = True
        self._polling = False
        self.plots: dict[str, MetricPlot] = {}
        self.kind = ""
        """The experiment kind of an experiment run ("" for a training run)."""
        self.points: list = []
        """An experiment run's `points` records."""
        self._points_sig: tuple[int, int, int] | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="detail-header")
        yield AlertBar(id="alerts")
        with TabbedContent(initial="tab-plots"):
            with TabPane("plots", id="tab-plots"):
                with VerticalScroll(id="plots-scroll"):
                    yield DataTable(id="points-table", cursor_type="row", zebra_stripes=True)
                    with Grid(id="plot-grid"):
                        for pid, title, _series in PLOTS:
                            plot = MetricPlot(title, id=f"plot-{pid}")
                            self.plots[pid] = plot
                            yield plot
                    yield Static("", id="detail-latest")
            with TabPane("log", id="tab-log"):
                yield LogView(id="log")
                yield Static("", id="log-status")
            with TabPane("config", id="tab-config"):
                with VerticalScroll():
                    yield Static("", id="config-text")
        yield KeyBar(id="detail-keys")

    def on_mount(self) -> None:
        self.follower = self.app.service.follow(self.run_id)
        self.set_interval(REFRESH_S, self.request_poll)
        self.request_poll(force=True)
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._draw_header())
        self.on_resize()

    def on_resize(self, event=None) -> None:
        self.set_class(self.size.width < 100, "-narrow")
        if self.history.config is not None:
            self._draw_header()

    def on_screen_resume(self) -> None:
        self.request_poll()

    # -- polling -------------------------------------------------------------------
    def request_poll(self, force: bool = False) -> None:
        if self._polling or (not force and not self.is_current) or self.follower is None:
            return
        self._polling = True
        self.app.work(self, self._poll, name="detail-poll")

    def _poll(self) -> None:
        try:
            if self.follower is None:
                return
            d = self.follower.poll()
            if d.config is not None:
                self.kind = str(d.config.value("experiment.kind") or "")
            if not d.empty():
                self.post_message(RunChanged(d))
            if self.kind:
                self._read_points()
        finally:
            self._polling = False

    def _read_points(self) -> None:
        """(Thread worker.) An experiment run's points, when metrics.json changed."""
        try:
            read = self.app.service.points(self.run_id, self._points_sig)
        except (UserError, OSError):
            return  # half-visible or damaged: read again next time
        if read is None:
            return
        self._points_sig, points = read
        self.post_message(PointsRead(points))

    def on_points_read(self, message: PointsRead) -> None:
        self.points = list(message.points)
        self._draw_points()
        self._draw_header()

    def on_run_changed(self, message: RunChanged) -> None:
        d = message.delta
        h = self.history
        h.apply(d)
        if d.reset or d.epochs or d.swa:
            self.redraw_plots()
        if d.log_reset:
            self.query_one("#log", LogView).clear()
        if d.log_lines:
            self.query_one("#log", LogView).write_lines(safe_lines(d.log_lines))
        if d.config is not None:
            self.set_class(bool(self.kind), "-experiment")
            if self.kind:
                self._draw_points()
                if isinstance(self.focused, MetricPlot):  # hidden: the points table is what there is
                    self.set_focus(self.query_one("#points-table", DataTable))
        if d.status is not None or d.config is not None or d.meta is not None or d.epochs or d.reset:
            self._draw_header()
            self._draw_alerts()
        if d.config is not None or d.status is not None or d.evals is not None or d.meta is not None:
            self._draw_config()

    # -- drawing -------------------------------------------------------------------
    def best_epoch(self) -> dict | None:
        """The best epoch on the run's selection split (train.select_on), as best.pt holds it."""
        key = robust_key("val" if self.best_on_val() else "test")
        ev = [e for e in self.history.epochs if e.get(key) is not None]
        return max(ev, key=lambda e: (e[key], e["epoch"])) if ev else None

    def best_on_val(self) -> bool:
        conf = self.history.config
        return conf is not None and conf.value("train.select_on") == "val"

    def redraw_plots(self) -> None:
        h = self.history
        tables = {"epochs": h.epochs, "swa": h.swa if self.show_swa else []}
        best = self.best_epoch()
        for pid, _title, series in PLOTS:
            plot = self.plots[pid]
            plot.clear_series()
            for name, key, table, role, scale in series:
                recs = tables[table]
                if not recs or all(r.get(key) is None for r in recs):
                    continue
                plot.set_series(
                    name,
                    [r["epoch"] for r in recs],
                    [None if r.get(key) is None else r[key] * scale for r in recs],
                    role=role,
                )
            if best is not None and plot.series:
                on_val = best.get("val_robust_acc") is not None and self.best_on_val()
                label = (
                    f"best ▼ epoch {best['epoch']}: robust {100 * best['robust_acc']:.1f}%"
                    + (f" (val {100 * best['val_robust_acc']:.1f}%)" if on_val else "")
                    if pid == "acc" and best.get("robust_acc") is not None
                    else ""
                )
                plot.mark(best["epoch"], label)
            plot.replot()
        self._draw_latest()

    def _draw_latest(self) -> None:
        """The line under the plots: every metric of the cursor's epoch, or of the last epoch."""
        h = self.history
        cursor = self.plots["acc"].cursor
        rec = next((e for e in h.epochs if e["epoch"] == cursor), None) if cursor is not None else None
        last = rec or (h.epochs[-1] if h.epochs else None)
        if last:

            def f(k, pct=False):
                v = last.get(k)
                return percent(v, 1, "%") if pct else "—" if v is None else fmt_value(v)

            self.query_one("#detail-latest", Static).update(
                Text(
                    f"{'▸ cursor ' if rec else ''}epoch {last['epoch']}: train loss {f('train_loss')} acc "
                    f"{f('train_acc', True)} · clean {f('clean_acc', True)} · robust {f('robust_acc', True)} · AV "
                    f"{f('av')} · IG {f('ig')} · HS {f('hs')} · {f('time_s')} s",
                    end="",
                )
            )

    def on_metric_plot_view_changed(self, message: MetricPlot.ViewChanged) -> None:
        """One window and one cursor for every plot (TensorBoard's linked epochs)."""
        src = message.plot
        for plot in self.plots.values():
            if plot is not src:
                plot.set_view(window=src.window, cursor=src.cursor)
        self._draw_latest()

    def on_log_view_status(self, message: LogView.Status) -> None:
        self.query_one("#log-status", Static).update(SafeText(message.view.status_text(), end=""))

    def _draw_header(self) -> None:
        """Who (line 1) and how far (line 2); one line when both fit (see the module docstring)."""
        c = palette(self.app)
        width = max(20, self.size.width - 2)
        who, words = self._who(c)
        how = self._how_far(c)
        one = sum(len(x) for x, _s in who + words) + 2 + sum(len(x) + 2 for x, _s in how)
        t = SafeText(end="")
        for text, style in who + words:
            t.append(text, style=style)
        if one <= width:
            for text, style in how:
                t.append("  ")
                t.append(text, style=style)
        else:
            t.truncate(width, overflow="ellipsis")
            t.append("\n")
            for i, (text, style) in enumerate(fit(how, width)):
                t.append(("  " if i else "") + text, style=style)
        t.no_wrap = True
        self.query_one("#detail-header", Static).update(t)

    def _who(self, c: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(id, preset, overrides, seed; title and #tags): the run's identity, then what people say of it."""
        h = self.history
        run = h.config.run if h.config else None
        who = [
            (self.run_id, f"bold {c.get('accent', '')}"),
            (f"  {(run.preset or run.label or '') if run else ''}", ""),
        ]
        if self.kind:
            who.append((f" [{run.label if run and (run.label or '').startswith(self.kind) else self.kind}]", ""))
        origin = (run.origin.text or "") if run and run.origin else ""
        if origin:
            who.append((f" ✎ {origin}", c.get("warning", "")))
        who.append((f"  seed {'?' if run is None or run.seed is None else run.seed}", ""))
        words = []
        meta = h.meta
        if meta.title:
            words.append((f" · {meta.title}", c.get("muted", "")))
        for tag in meta.tags:
            words.append((f" #{tag}", c.get("accent", "")))
        if meta.archived:
            words.append((" (archived)", c.get("warning", "")))
        return who, words

    def _how_far(self, c: dict) -> list[tuple[str, str]]:
        """State, epoch (or points), lr, then rate, ETA, elapsed, launch time and commit: most needed first."""
        h = self.history
        st = h.status
        total = h.config.value("train.epochs") if h.config else None
        b = badge(st.state, c, short=False)
        parts = [(b.plain, str(b.style))]
        if self.kind:
            parts.append((f"point {st.point or len(self.points)}/{st.points or '?'}", ""))
        else:
            batch = f" (batch {st.batch}/{st.batches})" if st.state == "running" and st.batch and st.batches else ""
            parts.append((f"epoch {len(h.epochs)}/{total or '?'}{batch}", ""))
            lr = h.epochs[-1].get("lr") if h.epochs else None
            parts.append((f"lr {'—' if lr is None else f'{lr:.3g}'}", ""))
        pace = history_pace(h.epochs, st, h.config.run.created if h.config else None, total)
        if pace.eta is not None:
            parts.append((f"ETA {duration(pace.eta)}", f"bold {c.get('primary', '')}"))
        if pace.elapsed is not None:
            parts.append((f"{duration(pace.elapsed)} since {clock(pace.launched)}", c.get("muted", "")))
        if pace.per_epoch and not self.kind:
            parts.append((f"{pace.per_epoch:.1f} s/epoch", ""))
        prov = h.config.provenance.to_json() if h.config and h.config.provenance else {}
        if prov.get("commit"):
            parts.append(
                (f"commit {str(prov['commit'])[:7]}{' (dirty)' if prov.get('dirty') else ''}", c.get("muted", ""))
            )
        return parts

    def _draw_points(self) -> None:
        """The points table of an experiment run: one row per record, the kind's keys as columns."""
        table = self.query_one("#points-table", DataTable)
        keys = [k for k in POINT_KEYS.get(self.kind, ()) if k != "hs_method"]
        extra = sorted({k for p in self.points for k in p} - set(keys) - {"kind", "index", "hs_method", "time_s", "n"})
        cols = ["#", *keys, *extra, "time_s"]
        if [str(col.label) for col in table.columns.values()] != cols:
            table.clear(columns=True)
            table.add_columns(*cols)
        else:
            table.clear()
        for i, p in enumerate(sorted(self.points, key=lambda r: (r.get("index") is None, r.get("index") or 0))):
            idx = p.get("index")
            table.add_row(str((idx if isinstance(idx, int) else i) + 1), *(_cell(p.get(k)) for k in cols[1:]))
        src = self.history.config.source if self.history.config else None
        what = f"{self.kind}: {len(self.points)} point{'' if len(self.points) == 1 else 's'}"
        if src is not None:
            what += (
                f" of run {src.run} ({src.preset or src.label or ''}, {src.ckpt or 'end'} checkpoint"
                f"{'' if src.epoch is None else f', epoch {src.epoch}'})"
            )
        table.border_title = what
        self.query_one("#detail-latest", Static).update(SafeText(what, end=""))

    def _draw_alerts(self) -> None:
        st = self.history.status
        extra = []
        if st.state == "failed":
            err = (st.error or "").strip().splitlines()
            extra.append(f"run failed: {printable(err[-1]) if err else 'see the log (l)'}")
        elif st.state == "lost":
            extra.append("the run's process is gone without a final state; resume with r")
        conf = self.history.config
        select_on = conf.value("train.select_on") if conf is not None else None
        notes = [st.early_stop.text()] if st.early_stop is not None else []
        self.query_one("#alerts", AlertBar).show_alerts(detect_alerts(self.history.epochs, select_on), extra, notes)

    def _draw_config(self) -> None:
        h = self.history
        c = palette(self.app)
        t = SafeText(end="")
        cfg = h.config.to_json() if h.config else {}
        sections = [k for k in cfg if k not in ("run", "provenance", "source")]
        self._draw_meta(t, c)
        run = dict(cfg.get("run", {}))
        origin = run.pop("origin", None)
        t.append("run\n", style=f"bold {c.get('accent', '')}")
        for k, v in run.items():
            t.append(f"  {k} = {json.dumps(v)}\n")
        if origin:
            t.append(
                "origin" + (" (derived from the preset)" if origin.get("derived") else "") + "\n",
                style=f"bold {c.get('accent', '')}",
            )
            t.append(f"  overrides = {' '.join(origin.get('overrides') or []) or '—'}\n")
            for k, v in (origin.get("changed") or {}).items():
                t.append(f"  {k} = {json.dumps(v)}  (preset differs)\n")
            if origin.get("command"):
                t.append(f"  command = {origin['command']}\n")
        for s in sections:
            if not isinstance(cfg[s], dict):
                continue
            t.append(f"[{s}]\n", style=f"bold {c.get('accent', '')}")
            for k, v in cfg[s].items():
                t.append(f"  {k} = {json.dumps(v)}\n")
        t.append("provenance\n", style=f"bold {c.get('accent', '')}")
        for k, v in cfg.get("provenance", {}).items():
            t.append(f"  {k} = {json.dumps(v) if not isinstance(v, str) else v}\n")
        t.append("status\n", style=f"bold {c.get('accent', '')}")
        for k, v in h.status.to_json().items():
            if k in ("heartbeat", "started", "ended", "created") and isinstance(v, (int, float)):
                v = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v))
            if k == "error" and v:
                t.append(f"  error:\n{v}\n", style=c.get("error", ""))
                continue
            t.append(f"  {k} = {v}\n")
        if h.evals:
            t.append("evaluations\n", style=f"bold {c.get('accent', '')}")
            for ev in h.evals:
                ca, ra = ev.get("clean_acc"), ev.get("robust_acc")
                t.append(
                    f"  {ev.get('ckpt')} {ev.get('attack')}: clean "
                    f"{'—' if ca is None else f'{100 * ca:.2f}'} robust {'—' if ra is None else f'{100 * ra:.2f}'}"
                    f" {ev.get('implementation', '')}\n"
                )
        self.query_one("#config-text", Static).update(t)

    def _draw_meta(self, t: Text, c: dict) -> None:
        """The `meta` block of the config tab: what people say about the run (meta.json)."""
        meta = self.history.meta
        t.append("meta", style=f"bold {c.get('accent', '')}")
        t.append("  (e edits)\n", style=c.get("muted", ""))
        t.append(f"  title = {meta.title or '—'}\n")
        t.append(f"  tags = {' '.join('#' + x for x in meta.tags) or '—'}\n")
        note = (meta.note or "").rstrip()
        if note:
            t.append("  note:\n")
            for line in note.split("\n"):
                t.append(f"    {line}\n")
        else:
            t.append("  note = —\n")
        t.append(f"  archived = {'yes' if meta.archived else 'no'}\n")

    # -- actions -------------------------------------------------------------------
    def action_back(self) -> None:
        if self.maximized is not None:
            self.minimize()
        else:
            self.app.pop_screen()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        # the tab's own keys work at once: a plot's (or the points table), the log's
        if tab == "tab-log":
            self.set_focus(self.query_one("#log", LogView))
        elif tab == "tab-plots" and not isinstance(self.focused, MetricPlot):
            self.set_focus(self.query_one("#points-table", DataTable) if self.kind else self.plots["acc"])

    def check_action(self, action: str, parameters) -> bool | None:
        # `e` is a priority key: while a log search is typed it is a letter of the search
        if action == "edit":
            logs = self.query("#log").results(LogView)
            return not any(v.prompt is not None for v in logs)
        return True

    def action_zoom(self) -> None:
        if self.maximized is not None:
            self.minimize()
            return
        w = self.focused if isinstance(self.focused, MetricPlot) else self.plots["acc"]
        self.query_one(TabbedContent).active = "tab-plots"
        self.maximize(w, container=False)

    def action_toggle_swa(self) -> None:
        self.show_swa = not self.show_swa
        self.redraw_plots()
        self.notify("SWA curves " + ("shown" if self.show_swa else "hidden"))

    def action_stop(self) -> None:
        if self.history.status.state not in ("running", "queued"):
            self.notify("This run is not running.", severity="warning")
            return

        def done(ok: bool | None) -> None:
            if ok:
                self.app.supervise("stop", [self.run_id], on_screen=self)

        self.app.push_screen(
            ConfirmScreen(f"Stop run {self.run_id}? It keeps its last checkpoint; resume with r.", yes="Stop"), done
        )

    def action_resume(self) -> None:
        if self.history.status.state not in ("stopped", "failed", "lost"):
            self.notify("Only stopped, failed or lost runs can be resumed.", severity="warning")
            return
        self.app.supervise("resume", [self.run_id], on_screen=self)

    def action_compare_group(self) -> None:
        group = self.history.config.run.group if self.history.config else None

        if group:
            self.app.push_screen(CompareScreen(group=group, title=f"group {group}"))
        else:
            self.app.push_screen(CompareScreen(run_ids=[self.run_id], title=f"run {self.run_id}"))

    def action_edit(self) -> None:
        meta = self.history.meta
        preset = self.history.config.run.preset if self.history.config else None
        hold = getattr(self.app, "hold_keys", None)
        if hold is not None:
            hold()  # the keys typed after `e` wait for the editor's first field
        self.app.push_screen(
            AnnotateScreen(
                [self.run_id],
                tags=list(meta.tags),
                title=meta.title or "",
                note=meta.note or "",
                heading=f"Edit run {self.run_id}  {preset or ''}",
            ),
            self._edited,
        )

    def _edited(self, a: Annotation | None) -> None:
        if a is not None and not a.empty():
            self.notify(describe(a), title="edit")
            self.request_poll(force=True)

    def on_action_done(self, message: ActionDone) -> None:
        self.request_poll(force=True)


def _cell(v) -> SafeText:
    """A points-table cell: numbers to 4 significant digits, text shown safely."""
    if v is None:
        return SafeText("—")
    if isinstance(v, float):
        return SafeText(f"{v:.4g}", justify="right")
    if isinstance(v, int) and not isinstance(v, bool):
        return SafeText(str(v), justify="right")
    return SafeText(str(v))
