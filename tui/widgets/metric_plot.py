"""A terminal line plot of one or more metrics over epochs (textual-plotext underneath).

The widget keeps its data in `series` (name -> xs, ys, colour role), so tests and other
code can read what is plotted without parsing the drawing. The legend is drawn in the
border title (a coloured bar per series), so it never covers a curve. Colours are semantic
roles resolved against the current theme (see `palette`), so lines stay readable in light
and dark themes. The drawing itself is made in a thread worker (see `replot`). Points whose value is None are skipped (e.g. HS recorded every N epochs).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from rich.text import Text
from textual.markup import escape
from textual_plotext import PlotextPlot

from tui.widgets.palette import palette, rgb


@dataclass
class Series:
    xs: list[float]
    ys: list[float]
    role: str = "primary"
    marker: str = "hd"


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

    def __init__(self, title: str, *, ylabel: str = "", xlabel: str = "epoch", id: str | None = None,
                 classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.title = title
        self.ylabel = ylabel
        self.xlabel = xlabel
        self.border_title = escape(title)
        self.series: dict[str, Series] = {}
        """name (shown in the legend) -> the points plotted."""
        self.marks: list[tuple[float, str]] = []
        """Vertical marks: (x, label), e.g. the best epoch."""
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

    # -- drawing -------------------------------------------------------------------
    # plotext draws the whole figure in Python (~50 ms for 5 curves of 200 points), so the
    # drawing happens in a thread worker: `replot` snapshots the data, the worker builds
    # the text, and `render` shows the newest finished drawing (the UI never waits for it).
    def replot(self) -> None:
        """Redraw from `series` and `marks` (call after changing them)."""
        if not self.is_mounted:
            return
        colors = palette(self.app)
        legend = [f"[{colors.get(s.role, colors['foreground'])}]━━[/] {escape(name)}"
                  for name, s in self.series.items() if s.xs]
        # the legend goes in the border, so it never hides a curve
        self.border_title = escape(self.title) + ("  " + "  ".join(legend) if legend else "")
        self.border_subtitle = escape("  ".join(lbl for _x, lbl in self.marks if lbl) or (
            "" if legend else "waiting for data"))
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
        spec = {
            "series": [(s.xs[:], s.ys[:], rgb(colors.get(s.role, colors["foreground"])), s.marker)
                       for s in self.series.values() if s.xs],
            "marks": [x for x, _ in self.marks],
            "mark_color": rgb(colors.get("muted", colors["foreground"])),
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
            for xs, ys, color, marker in spec["series"]:
                plt.plot(xs, ys, color=color, marker=marker)
                xs_all += [xs[0], xs[-1]]
            for x in spec["marks"]:
                plt.vline(x, spec["mark_color"])
            if xs_all:
                ticks = int_ticks(min(xs_all), max(xs_all))
                plt.xticks(ticks, [str(t) for t in ticks])
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
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 10**9)
                if span / s <= most - 1)
    first = -(-lo // step) * step
    return list(range(first, hi + 1, step)) or [lo]
