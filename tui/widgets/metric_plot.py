"""A terminal line plot of one or more metrics over epochs (textual-plotext underneath).

The widget keeps its data in `series` (name -> xs, ys, colour role), so tests and other
code can read what is plotted without parsing the drawing. The legend is drawn in the
border title (a coloured bar per series), so it never covers a curve. Colours are semantic
roles resolved against the current theme (see `palette`), so lines stay readable in light
and dark themes. The drawing itself is made in a thread worker (see `replot`). Points whose value is None are skipped (e.g. HS recorded every N epochs).

The view, as in TensorBoard (keys of the focused plot):
- `+` / `-`: the last N epochs only (`+` halves N, `-` doubles it, back to all); `0`: every epoch again, no cursor.
- `←` / `→`: an epoch cursor (a vertical line) over the epochs in view; the readout (`readout`, drawn in
  the bottom border) shows its epoch and each series' value there (`—` where a series has none).
- `y`: a logarithmic y axis (HS spans 1e-6 to 0.07): the values are drawn as log10 with ticks at
  1, 2, 5 × 10^k labelled `1e-6`; values ≤ 0 are left out (said in the border).
The window and the cursor are posted as `ViewChanged`, so a screen can keep several plots in step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

from rich.text import Text
from textual.binding import Binding
from textual.markup import escape
from textual.message import Message
from textual_plotext import PlotextPlot

from tui.widgets.palette import palette, rgb


@dataclass
class Series:
    xs: list[float]
    ys: list[float]
    role: str = "primary"
    marker: str = "hd"


MIN_WINDOW = 2
"""The fewest epochs `+` narrows the view to."""


def fmt_value(v: float | None) -> str:
    """A readout value: 4 significant digits (`71.23`, `0.0312`, `1.2e-06`), `—` when missing."""
    return "—" if v is None else f"{v:.4g}"


class MetricPlot(PlotextPlot):
    """Metric curves over epochs with optional vertical marks (e.g. the best epoch)."""

    DEFAULT_CSS = """
    MetricPlot {
        height: 1fr;
        min-height: 8;
        border: round $panel-lighten-2;
        border-title-color: $foreground;
        border-title-style: none;
        border-subtitle-color: $foreground-muted;
        padding: 0;
    }
    MetricPlot:focus { border: round $accent; }
    """

    can_focus = True

    BINDINGS = [
        Binding("left", "move_cursor(-1)", "Cursor ◀", show=False),
        Binding("right", "move_cursor(1)", "Cursor ▶", show=False),
        Binding("+,=", "narrow", "Fewer epochs (zoom in)", show=False),
        Binding("-", "widen", "More epochs (zoom out)", show=False),
        Binding("0", "reset_view", "All epochs, no cursor", show=False),
        Binding("y", "toggle_log", "Log y axis", show=False),
    ]

    class ViewChanged(Message):
        """The window or the cursor of a plot changed by a key (a screen may apply it to its other plots)."""

        def __init__(self, plot: "MetricPlot"):
            super().__init__()
            self.plot = plot

        @property
        def control(self) -> "MetricPlot":
            return self.plot

    def __init__(
        self, title: str, *, ylabel: str = "", xlabel: str = "epoch", id: str | None = None, classes: str | None = None
    ):
        super().__init__(id=id, classes=classes)
        self.title = title
        self.ylabel = ylabel
        self.xlabel = xlabel
        self.border_title = escape(title)
        self.series: dict[str, Series] = {}
        """name (shown in the legend) -> the points plotted."""
        self.marks: list[tuple[float, str]] = []
        """Vertical marks: (x, label), e.g. the best epoch."""
        self.window: int | None = None
        """Show the last `window` epochs only (None: all)."""
        self.cursor: float | None = None
        """The epoch of the cursor (None: no cursor, no readout)."""
        self.log_y = False
        """A logarithmic y axis."""
        self._version = 0
        self._rendered: tuple | None = None
        self._building = False
        self._pending = False

    def on_mount(self) -> None:
        super().on_mount()
        self.app.theme_changed_signal.subscribe(self, lambda _t: self.replot())
        self.replot()

    # -- data ----------------------------------------------------------------------
    def set_series(self, name: str, xs, ys, role: str = "primary", marker: str = "hd") -> None:
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None and x is not None]
        self.series[name] = Series([p[0] for p in pts], [p[1] for p in pts], role, marker)

    def clear_series(self) -> None:
        self.series.clear()
        self.marks.clear()

    def mark(self, x: float, label: str = "") -> None:
        self.marks.append((x, label))

    # -- view: window, cursor, log y ---------------------------------------------------
    def x_range(self) -> tuple[float, float] | None:
        """(first, last) epoch in view: the last `window` epochs of the data, or all of it."""
        xs = [x for s in self.series.values() for x in (s.xs[:1] + s.xs[-1:])]
        if not xs:
            return None
        lo, hi = min(xs), max(xs)
        return (max(lo, hi - self.window + 1), hi) if self.window else (lo, hi)

    def epochs_in_view(self) -> list[float]:
        """Every epoch of any series in view, in order (where the cursor can go)."""
        r = self.x_range()
        if r is None:
            return []
        return sorted({x for s in self.series.values() for x in s.xs if r[0] <= x <= r[1]})

    def readout(self) -> list[tuple[str, float | None]]:
        """(series, its value at the cursor's epoch, None where it has none) for each series with data."""
        if self.cursor is None:
            return []
        out = []
        for name, s in self.series.items():
            if s.xs:
                out.append((name, next((y for x, y in zip(s.xs, s.ys) if x == self.cursor), None)))
        return out

    def readout_text(self) -> str:
        """`epoch 12: clean 71.23  robust 43.1` (empty without a cursor)."""
        if self.cursor is None:
            return ""
        return f"epoch {self.cursor:g}: " + "  ".join(f"{n} {fmt_value(v)}" for n, v in self.readout())

    def set_view(self, *, window: int | None = None, cursor: float | None = None) -> None:
        """Take a window and a cursor (another plot's); redraw when they change."""
        if (window, cursor) != (self.window, self.cursor):
            self.window, self.cursor = window, cursor
            self.replot()

    def _view_changed(self) -> None:
        self.replot()
        self.post_message(self.ViewChanged(self))

    def action_move_cursor(self, step: int) -> None:
        epochs = self.epochs_in_view()
        if not epochs:
            return
        if self.cursor is None or not epochs[0] <= self.cursor <= epochs[-1]:
            self.cursor = epochs[-1] if self.cursor is None or self.cursor > epochs[-1] else epochs[0]
        else:
            later = [x for x in epochs if x > self.cursor]
            earlier = [x for x in epochs if x < self.cursor]
            self.cursor = (later[0] if later else epochs[-1]) if step > 0 else (earlier[-1] if earlier else epochs[0])
        self._view_changed()

    def action_narrow(self) -> None:
        r = self.x_range()
        if r is None:
            return
        span = int(r[1] - r[0]) + 1
        self.window = max(MIN_WINDOW, math.ceil(span / 2))
        epochs = self.epochs_in_view()
        cursor = self.cursor
        if cursor is not None and epochs and not epochs[0] <= cursor <= epochs[-1]:
            self.cursor = min(epochs, key=lambda x: abs(x - cursor))  # the cursor stays in view
        self._view_changed()

    def action_widen(self) -> None:
        if self.window is None:
            return
        self.window *= 2
        full = self._full_span()
        if full is not None and self.window >= full:
            self.window = None
        self._view_changed()

    def _full_span(self) -> int | None:
        xs = [x for s in self.series.values() for x in (s.xs[:1] + s.xs[-1:])]
        return int(max(xs) - min(xs)) + 1 if xs else None

    def action_reset_view(self) -> None:
        self.window = self.cursor = None
        self._view_changed()

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self.replot()

    # -- drawing -------------------------------------------------------------------
    # plotext draws the whole figure in Python (~50 ms for 5 curves of 200 points), so the
    # drawing happens in a thread worker: `replot` snapshots the data, the worker builds
    # the text, and `render` shows the newest finished drawing (the UI never waits for it).
    def replot(self) -> None:
        """Redraw from `series` and `marks` (call after changing them)."""
        if not self.is_mounted:
            return
        colors = palette(self.app)
        legend = [
            f"[{colors.get(s.role, colors['foreground'])}]━━[/] {escape(name)}"
            for name, s in self.series.items()
            if s.xs
        ]
        # the legend goes in the border, so it never hides a curve
        self.border_title = (
            escape(self.title) + (" · log y" if self.log_y else "") + ("  " + "  ".join(legend) if legend else "")
        )
        r = self.x_range()
        notes = []
        if self.log_y and any(y <= 0 for s in self.series.values() for y in s.ys):
            notes.append("values ≤ 0 left out")
        if self.window and r is not None:
            notes.append(f"epochs {r[0]:g}–{r[1]:g}")
        sub = (
            self.readout_text()
            or "  ".join(lbl for _x, lbl in self.marks if lbl)
            or ("" if legend else "waiting for data")
        )
        self.border_subtitle = escape("  ·  ".join([sub, *notes] if sub else notes))
        self._version += 1
        self._request_build()

    def _key(self) -> tuple:
        return (self._version, self.size, self.app.theme)

    def _request_build(self) -> None:
        if not self.is_mounted or self.size.width <= 0 or self.size.height <= 0:
            return
        key = self._key()
        if self._rendered is not None and self._rendered[0] == key:
            return
        if self._building:
            self._pending = True
            return
        self._building = True
        colors = palette(self.app)
        r = self.x_range() or (0.0, 0.0)  # None only without series, when nothing below uses it
        series = []
        for s in self.series.values():
            pts = [(x, y) for x, y in zip(s.xs, s.ys) if r[0] <= x <= r[1] and (y > 0 or not self.log_y)]
            if pts:
                ys = [math.log10(y) for _x, y in pts] if self.log_y else [y for _x, y in pts]
                series.append(([x for x, _y in pts], ys, rgb(colors.get(s.role, colors["foreground"])), s.marker))
        spec = {
            "series": series,
            "marks": [x for x, _ in self.marks if r is not None and r[0] <= x <= r[1]],
            "mark_color": rgb(colors.get("muted", colors["foreground"])),
            "cursor": self.cursor
            if r is not None and self.cursor is not None and r[0] <= self.cursor <= r[1]
            else None,
            "cursor_color": rgb(colors.get("warning", colors["foreground"])),
            "log_y": self.log_y,
            "ylabel": self.ylabel,
            "size": (self.size.width, self.size.height),
            "theme": self._get_plotext_theme_name(self.app.theme),
        }
        self.app.work(self, partial(self._build, key, spec), name="plot", group=f"plot-{id(self)}")

    def _build(self, key: tuple, spec: dict) -> None:
        """In a worker thread: draw with this widget's own plotext figure."""
        try:
            plt = self.plt
            plt.clear_data()
            plt.clear_figure()
            if spec["ylabel"]:
                plt.ylabel(spec["ylabel"])
            xs_all: list[float] = []
            ys_all: list[float] = []
            for xs, ys, color, marker in spec["series"]:
                plt.plot(xs, ys, color=color, marker=marker)
                xs_all += [xs[0], xs[-1]]
                ys_all += [min(ys), max(ys)]
            for x in spec["marks"]:
                plt.vline(x, spec["mark_color"])
            if spec["cursor"] is not None:
                plt.vline(spec["cursor"], spec["cursor_color"])
            if xs_all:
                ticks = int_ticks(min(xs_all), max(xs_all))
                plt.xticks(ticks, [str(t) for t in ticks])
                if spec["log_y"]:
                    plt.yticks(*log_ticks(min(ys_all), max(ys_all)))
            else:
                plt.xticks([])
                plt.yticks([])
            w, h = spec["size"]
            plt.plotsize(w, h)
            plt._set_size(w, h)  # as textual-plotext's render does (its issue #5)
            plt.theme(spec["theme"])
            text = Text.from_ansi(plt.build())
        except BaseException:
            self.app.call_from_thread(self._built, None, None)
            raise
        self.app.call_from_thread(self._built, key, text)

    def _built(self, key, text) -> None:
        self._building = False
        if key is not None:
            self._rendered = (key, text)
            self.refresh()
        if self._pending or (key is not None and key != self._key()):
            self._pending = False
            self.call_later(self._request_build)

    @property
    def drawn(self) -> bool:
        """True once the drawing of the current data, size and theme is on screen."""
        return self._rendered is not None and self._rendered[0] == self._key()

    def on_resize(self) -> None:
        self._request_build()

    def render(self):
        if self._rendered is None:
            return Text("")
        if self._rendered[0] != self._key():
            self.call_later(self._request_build)
        return self._rendered[1]


def int_ticks(lo: float, hi: float, most: int = 6) -> list[int]:
    """At most `most` whole-number ticks (epochs) at a round step between lo and hi."""
    lo, hi = int(lo), int(hi)
    span = max(1, hi - lo)
    step = next(
        s
        for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 10**9)
        if span / s <= most - 1
    )
    first = -(-lo // step) * step
    return list(range(first, hi + 1, step)) or [lo]


def _exp_label(v: float) -> str:
    """10**v as a tick label: `1e-6`, `2e-3`, `5e1`."""
    m, e = f"{10**v:.0e}".split("e")
    return f"{m}e{int(e)}"


def log_ticks(lo: float, hi: float, most: int = 6) -> tuple[list[float], list[str]]:
    """Ticks of a log10 axis between lo and hi (log10 values): 1, 2, 5 × 10^k, or only the powers of ten
    when those are too many; with the two ends when fewer than two fall in between (a narrow span)."""
    eps = 1e-9
    if hi - lo < eps:
        return [lo], [f"{10**lo:.2g}"]
    tick = []
    for k in range(math.floor(lo), math.ceil(hi) + 1):
        for m in (1, 2, 5):
            t = k + math.log10(m)
            if lo - eps <= t <= hi + eps:
                tick.append((t, m))
    if len(tick) > most:
        tick = [(t, m) for t, m in tick if m == 1] or tick
    if len(tick) < 2:
        return (
            [lo, *(t for t, _m in tick), hi],
            [f"{10**lo:.2g}", *(_exp_label(t) for t, _m in tick), f"{10**hi:.2g}"],
        )
    return [t for t, _m in tick], [_exp_label(t) for t, _m in tick]
