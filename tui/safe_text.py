"""Rich text whose strings may come from the run store: every string put in it has its control
characters shown as `cat -v` shows them (engine.printable), so a title, note, log line or error
from someone else's archive cannot move the cursor, retitle the window or clear the screen.
Newlines are kept (multi-line notes); Text is never read as console markup."""

from __future__ import annotations

from rich.text import Text

from engine.printable import printable


class SafeText(Text):
    """A `rich.text.Text` that shows control characters instead of sending them."""

    def __init__(self, text: str = "", *args, **kwargs):
        super().__init__(printable(text, multiline=True), *args, **kwargs)

    def append(self, text, style=None):
        if isinstance(text, str):
            text = printable(text, multiline=True)
        return super().append(text, style)


def safe_lines(lines) -> list[str]:
    """Log lines to show: each with its control characters made visible."""
    return [printable(line) for line in lines]
