"""The top line of the app: product, store path, run counts per state (and what is selected)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import Static

from tui.widgets.palette import palette
from tui.widgets.status_badge import STATE_LOOK

ORDER = ("running", "queued", "finished", "stopped", "failed", "lost")
SHORT = {"running": "run", "finished": "done", "stopped": "stop", "failed": "fail"}
"""Shorter words when the terminal is narrow."""


def _short_home(path: Path) -> str:
    try:
        return "~/" + str(Path(path).resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)


class StoreHeader(Static):
    """`advlc  ~/exp/runs            2 running · 1 queued · 14 finished`"""

    DEFAULT_CSS = """
    StoreHeader {
        dock: top;
        height: 1;
        background: $panel;
        color: $foreground;
        padding: 0 1;
    }
    """

    def __init__(self, home: Path, **kw):
        super().__init__(**kw)
        self.home = home
        self.counts: dict[str, int] = {}
        self.note = ""

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._draw())
        self._draw()

    def set_counts(self, counts: dict[str, int], note: str = "") -> None:
        self.counts, self.note = dict(counts), note
        self._draw()

    def _draw(self) -> None:
        colors = palette(self.app)
        t = Text(no_wrap=True, overflow="ellipsis", end="")
        t.append("advlc ", style=f"bold {colors.get('accent', '')}")
        t.append(_short_home(self.home), style=colors.get("muted", ""))
        width = max(0, self.size.width - 2)
        right = self._counts(colors, short=False)
        if len(t.plain) + len(right.plain) + 2 > width:
            right = self._counts(colors, short=True)
        pad = width - len(t.plain) - len(right.plain)
        if pad >= 2:
            t.append(" " * pad)
        else:
            t.append("  ")
        t.append_text(right)
        self.update(t)

    def _counts(self, colors: dict[str, str], short: bool) -> Text:
        right = Text(end="")
        parts = [(s, self.counts[s]) for s in ORDER if self.counts.get(s)]
        for i, (s, n) in enumerate(parts):
            if i:
                right.append(" · " if not short else " ", style=colors.get("muted", ""))
            right.append(f"{n} {SHORT.get(s, s) if short else s}", style=colors.get(STATE_LOOK[s][1], ""))
        if not parts:
            right.append("no runs yet", style=colors.get("muted", ""))
        if self.note:
            right.append(f"   {self.note}", style=colors.get("accent", ""))
        return right

    def on_resize(self) -> None:
        self._draw()
