"""A virtual table for thousands of rows: only the lines on screen are ever rendered.

Textual's DataTable measures every cell of every new row to size its columns; with 1,000
runs x 10 columns that alone costs a visible pause at every rebuild. Here the columns have
fixed widths (some columns stretch, up to a width), `set_rows` takes the row keys and a function that
makes a row's cells (Rich `Text`), called only for rows that come on screen; `invalidate`
redraws one row; each visible line is drawn from a cached `Strip`.
 Keys: up/down (j/k), page up/down, home/end;
enter posts `RowSelected`; a click moves the cursor, a double click selects; a click on a
header posts `HeaderClicked`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip


@dataclass
class Column:
    key: str
    label: str
    width: int
    """The column's width, or for a stretching column its least width."""
    justify: str = "left"
    stretch: int = 0
    """0: a fixed width. Columns with stretch > 0 take the room left over, stretch 1 first, each up
    to its `max_width` (None: all that is left); what is still left goes to the last of them."""
    drop: int = 0
    """When the table is too narrow, columns with drop > 0 are hidden, highest first."""
    overflow: str = "end"
    """Where a too-long cell is cut: "end" (`abc…`), "middle" (`ab…yz`, for paths) or "start"
    (`…xyz`, for names whose distinctive part is their end, such as presets)."""
    max_width: int | None = None
    """A stretching column's widest useful width (e.g. its longest cell); set by `configure`."""
    hidden: bool = False
    """Not shown whatever the width (e.g. a column with nothing in it); set by `configure`."""
    yields: bool = False
    """Hidden (highest `drop` first) while a stretching column that does not yield is narrower than its
    `max_width`: e.g. a title column that must never cut the preset before it."""


class RunTable(ScrollView, can_focus=True):  # type: ignore[call-arg]  # textual is not followed
    """Fixed-width columns, a header line, a row cursor; renders only the visible lines."""

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "select", "Open", show=True),
    ]

    COMPONENT_CLASSES = {"run-table--header", "run-table--cursor", "run-table--cursor-blurred"}

    DEFAULT_CSS = """
    RunTable { background: $surface; height: 1fr; scrollbar-size-vertical: 1; }
    RunTable > .run-table--header { background: $panel; color: $foreground; text-style: bold; }
    RunTable > .run-table--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground; text-style: bold;
    }
    RunTable > .run-table--cursor-blurred {
        background: $block-cursor-blurred-background; color: $block-cursor-blurred-foreground;
    }
    """

    cursor_row: reactive[int] = reactive(0, always_update=False, init=False)
    """Index of the highlighted row in display order."""

    class RowSelected(Message):
        """Enter or a double click on a row."""

        def __init__(self, table: "RunTable", key: str):
            super().__init__()
            self.table, self.key = table, key

        @property
        def control(self) -> "RunTable":
            return self.table

    class RowHighlighted(Message):
        def __init__(self, table: "RunTable", key: str | None):
            super().__init__()
            self.table, self.key = table, key

        @property
        def control(self) -> "RunTable":
            return self.table

    class HeaderClicked(Message):
        def __init__(self, table: "RunTable", column: str):
            super().__init__()
            self.table, self.column = table, column

        @property
        def control(self) -> "RunTable":
            return self.table

    def __init__(self, columns: list[Column], *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.columns = list(columns)
        self._keys: list[str] = []
        self._cells_for: Callable[[str], tuple] = lambda key: ()
        self._index: dict[str, int] = {}
        self._strips: dict[int, Strip] = {}
        self._header: Strip | None = None
        self._widths: list[int] = [c.width for c in self.columns]
        self._shown: list[int] = list(range(len(self.columns)))

    # -- data ------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def row_keys(self) -> list[str]:
        return list(self._keys)

    @property
    def cursor_key(self) -> str | None:
        return self._keys[self.cursor_row] if 0 <= self.cursor_row < len(self._keys) else None

    def get_cell(self, key: str, column: str):
        if key not in self._index:
            raise KeyError(key)
        return self._cells_for(key)[[c.key for c in self.columns].index(column)]

    def set_rows(self, keys: list[str], cells_for: Callable[[str], tuple], *, cursor_key: str | None = None) -> None:
        """Show these rows, in this order; `cells_for(key)` makes a row's cells when it is drawn.

        The cursor stays on its row (or goes to `cursor_key`)."""
        keep = cursor_key if cursor_key is not None else self.cursor_key
        self._keys = list(keys)
        self._cells_for = cells_for
        self._index = {k: i for i, k in enumerate(self._keys)}
        self._strips.clear()
        self._update_virtual_size()
        if keep in self._index:
            self._set_cursor(self._index[keep])
        else:
            self._set_cursor(min(self.cursor_row, max(0, len(self._keys) - 1)))
        self.refresh()

    def invalidate(self, key: str) -> None:
        """The cells of this row changed: redraw only its line (if it is on screen)."""
        i = self._index[key]
        self._strips.pop(i, None)
        if 0 < i - int(self.scroll_offset.y) + 1 < self.size.height:
            self.refresh_line(i + 1)  # a line of the virtual area (ScrollView subtracts the scroll offset)

    # -- geometry --------------------------------------------------------------------
    def _layout_widths(self) -> None:
        width = (self.size.width or 10_000) - 1  # room for the vertical scrollbar
        cols = self.columns
        gone: set[int] = set()
        while True:
            shown, widths = self._fit(width, gone)
            cut = any(
                cols[i].stretch
                and not cols[i].yields
                and bool(cols[i].max_width)
                and widths[i] < (cols[i].max_width or 0)
                for i in shown
            )
            yielding = sorted((cols[i].drop, i) for i in shown if cols[i].yields)
            if not (cut and yielding):
                break
            gone.add(yielding[-1][1])
        self._shown = shown
        self._widths = widths

    def _fit(self, width: int, gone: set[int]) -> tuple[list[int], list[int]]:
        """(the columns shown, every column's width) in `width` cells, without the columns `gone`."""
        cols = self.columns
        shown = [i for i, c in enumerate(cols) if not c.hidden and i not in gone]
        droppable = sorted((c.drop, i) for i, c in enumerate(cols) if c.drop > 0 and i in shown)
        while sum(cols[i].width + 1 for i in shown) > width and droppable:
            shown.remove(droppable.pop()[1])
        spare = max(0, width - sum(cols[i].width + 1 for i in shown))
        widths = [c.width for c in cols]
        stretching = sorted((cols[i].stretch, i) for i in shown if cols[i].stretch > 0)
        for _s, i in stretching:
            c = cols[i]
            give = spare if c.max_width is None else min(spare, max(0, c.max_width - c.width))
            widths[i] += give
            spare -= give
        if stretching and spare:
            widths[stretching[-1][1]] += spare
        return shown, widths

    def configure(self, key: str, *, max_width: int | None = None, hidden: bool | None = None) -> None:
        """Change a column's `max_width` and / or `hidden`; the table is laid out again if that changes it."""
        col = next(c for c in self.columns if c.key == key)
        before = (col.max_width, col.hidden)
        if max_width is not None:
            col.max_width = max_width
        if hidden is not None:
            col.hidden = hidden
        if (col.max_width, col.hidden) != before and self.size.width:
            self.on_resize()
            self.refresh()

    def column_width(self, key: str) -> int:
        """The width a column has now (0 when it is not shown)."""
        i = next(i for i, c in enumerate(self.columns) if c.key == key)
        return self._widths[i] if i in self._shown else 0

    @property
    def shown_columns(self) -> list[str]:
        """Keys of the columns on screen (the narrowest terminals hide the `drop` ones)."""
        return [self.columns[i].key for i in self._shown]

    def _update_virtual_size(self) -> None:
        self.virtual_size = Size(sum(self._widths[i] + 1 for i in self._shown), len(self._keys) + 1)

    def on_resize(self) -> None:
        self._layout_widths()
        self._strips.clear()
        self._header = None
        self._update_virtual_size()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()
        self._header = None

    def on_focus(self) -> None:
        self._strips.pop(self.cursor_row, None)
        self.refresh()

    def on_blur(self) -> None:
        self._strips.pop(self.cursor_row, None)
        self.refresh()

    # -- drawing ---------------------------------------------------------------------
    def _line(self, cells, style: Style | None = None) -> Strip:
        line = Text(no_wrap=True, end="")
        for i in self._shown:
            cell, col, w = cells[i], self.columns[i], self._widths[i]
            t = cell.copy() if isinstance(cell, Text) else Text(str(cell))
            t.no_wrap = True
            if col.overflow == "middle" and t.cell_len > w >= 5:
                head = (w - 1) // 3
                t = t[:head] + Text("…") + t[len(t) - (w - 1 - head) :]
            elif col.overflow == "start" and t.cell_len > w >= 2:
                t = Text("…", end="") + t[len(t) - (w - 1) :]
            t.truncate(w, overflow="ellipsis")
            pad = w - t.cell_len
            if pad > 0:
                if col.justify == "right":
                    t = Text(" " * pad, end="") + t
                else:
                    t.append(" " * pad)
            line.append_text(t)
            line.append(" ")
        segments = list(line.render(self.app.console))
        base = self.rich_style
        segments = list(Segment.apply_style(segments, base, post_style=style))
        return Strip(segments, line.cell_len)

    def _header_strip(self) -> Strip:
        if self._header is None:
            style = self.get_component_rich_style("run-table--header")
            cells = [Text(c.label, style="", justify=c.justify) for c in self.columns]
            strip = self._line(cells)
            self._header = Strip(list(Segment.apply_style(list(strip), post_style=style)), strip.cell_length)
        return self._header

    def _row_strip(self, i: int) -> Strip:
        strip = self._strips.get(i)
        if strip is None:
            post = None
            if i == self.cursor_row:
                comp = "run-table--cursor" if self.has_focus else "run-table--cursor-blurred"
                post = self.get_component_rich_style(comp)
            strip = self._strips[i] = self._line(self._cells_for(self._keys[i]), post)
        return strip

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        sx, sy = self.scroll_offset
        if y == 0:
            strip = self._header_strip()
        else:
            i = int(sy) + y - 1
            if i >= len(self._keys):
                return Strip.blank(width, self.rich_style)
            strip = self._row_strip(i)
        return strip.crop_extend(int(sx), int(sx) + width, self.rich_style)

    # -- cursor ----------------------------------------------------------------------
    def _set_cursor(self, row: int) -> None:
        row = max(0, min(row, len(self._keys) - 1)) if self._keys else 0
        old = self.cursor_row
        self.cursor_row = row
        if old != row:
            self._strips.pop(old, None)
            self._strips.pop(row, None)
            self.refresh()
            self.post_message(self.RowHighlighted(self, self.cursor_key))
        self._scroll_to_cursor()

    def move_cursor(self, row: int) -> None:
        self._set_cursor(row)

    def _scroll_to_cursor(self) -> None:
        h = max(1, self.size.height - 1 - (1 if self.show_horizontal_scrollbar else 0))
        sy = int(self.scroll_offset.y)
        if self.cursor_row < sy:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= sy + h:
            self.scroll_to(y=self.cursor_row - h + 1, animate=False, immediate=True)

    def action_cursor(self, delta: int) -> None:
        self._set_cursor(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self._set_cursor(self.cursor_row + direction * max(1, self.size.height - 2))

    def action_jump(self, where: int) -> None:
        self._set_cursor(where if where >= 0 else len(self._keys) - 1)

    def action_select(self) -> None:
        if self.cursor_key is not None:
            self.post_message(self.RowSelected(self, self.cursor_key))

    def on_click(self, event) -> None:
        if event.y == 0:
            x = event.x + int(self.scroll_offset.x)
            for i in self._shown:
                w = self._widths[i]
                if x < w + 1:
                    self.post_message(self.HeaderClicked(self, self.columns[i].key))
                    return
                x -= w + 1
            return
        i = int(self.scroll_offset.y) + event.y - 1
        if 0 <= i < len(self._keys):
            self._set_cursor(i)
            if getattr(event, "chain", 1) >= 2:
                self.action_select()
