"""The status badge of a run: a symbol and the state, coloured by meaning.

`badge(state, colors)` is a Rich `Text` for table cells; `StatusBadge` is the widget
form for screen headers. Symbols keep the state readable without colour.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from tui.widgets.palette import palette

STATE_LOOK = {
    "queued": ("◌", "muted"),
    "running": ("●", "primary"),
    "finished": ("✔", "success"),
    "failed": ("✖", "error"),
    "stopped": ("■", "warning"),
    "lost": ("✖", "error"),
    "corrupt": ("!", "error"),  # the index's word for a run whose files cannot be read
}
"""state -> (symbol, palette role)."""

SHORT = {"finished": "done"}
"""Shorter words for narrow table cells."""


def badge(state: str | None, colors: dict[str, str], *, short: bool = True) -> Text:
    state = state or "queued"
    sym, role = STATE_LOOK.get(state, ("?", "muted"))
    word = SHORT.get(state, state) if short else state
    bold = state in ("running", "failed", "lost", "corrupt")
    return Text(f"{sym} {word}", style=f"{'bold ' if bold else ''}{colors.get(role, '')}".strip(), end="")


class StatusBadge(Static):
    """A run's state, e.g. `● running`, in the state's colour."""

    DEFAULT_CSS = """
    StatusBadge { width: auto; height: 1; padding: 0 1; }
    """

    state: reactive[str] = reactive("queued")
    """The run state shown (one of engine.store.states.STATES)."""

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _t: self.refresh())

    def render(self) -> Text:
        return badge(self.state, palette(self.app), short=False)
