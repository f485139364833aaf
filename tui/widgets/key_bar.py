"""The bottom line of a screen: its keys, the most needed first, never cut in the middle of a word.

Textual's Footer lists the focused widget's keys, then the screen's, then the app's, and cuts
the line where the terminal ends: at 80 columns `?` (help) and `q` (quit) were the ones lost.
Here `?` and `q` come first, then the keys of the focused widget and of the screen in the order
their BINDINGS declare them (so a screen lists its everyday keys first and its rare ones last),
then `^p` (the command palette); whole entries are left out from the end until the line fits.
Every key stays listed in the help (`?`). A click on an entry presses its key.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from tui.widgets.palette import palette

FIRST = ("help", "quit")
"""Actions shown before every other (the app's `?` and `q`)."""
GAP = "  "


class KeyBar(Widget):
    """`? Help  q Quit  enter Open  space Select  / Filter …` — as many whole entries as fit."""

    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: 1; background: $panel; color: $foreground; padding: 0 1; }
    """

    def __init__(self, **kw):
        super().__init__(**kw)
        self._spans: list[tuple[int, int, str]] = []

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, lambda _s: self.refresh())
        self.app.theme_changed_signal.subscribe(self, lambda _t: self.refresh())

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def entries(self) -> list[tuple[str, str, str]]:
        """(key as shown, description, key to press) of every key the line would show, in order."""
        app = self.app
        first, rest, seen = [], [], set()
        palette_key = getattr(app, "COMMAND_PALETTE_BINDING", "ctrl+p")
        for key, active in self.screen.active_bindings.items():
            b = active.binding
            if not b.show or key == palette_key or not active.enabled:
                continue
            shown = app.get_key_display(b)
            if shown in seen or (b.action, b.description) in seen:
                continue
            seen |= {shown, (b.action, b.description)}
            action = b.action.removeprefix("app.")
            if action in FIRST:
                first.append((FIRST.index(action), (shown, b.description, key)))
            else:
                rest.append((shown, b.description, key))
        out = [e for _i, e in sorted(first, key=lambda x: x[0])] + rest
        if app.ENABLE_COMMAND_PALETTE and palette_key in self.screen.active_bindings:
            out.append(("^p", "palette", palette_key))
        return out

    def render(self) -> Text:
        c = palette(self.app)
        width = self.size.width - 2
        t = Text(no_wrap=True, end="")
        self._spans = []
        for shown, desc, key in self.entries():
            entry = f"{shown} {desc}"
            need = len(entry) + (len(GAP) if t.cell_len else 0)
            if t.cell_len + need > width:
                break  # the rarer keys after it go too; never half an entry
            if t.cell_len:
                t.append(GAP)
            start = t.cell_len
            t.append(shown, style=f"bold {c.get('accent', '')}")
            t.append(f" {desc}", style=c.get("muted", ""))
            self._spans.append((start, t.cell_len, key))
        return t

    @property
    def shown_text(self) -> str:
        """The line as it is drawn now (for tests)."""
        return self.render().plain

    def on_click(self, event) -> None:
        x = event.x - 1  # the left padding
        for start, end, key in self._spans:
            if start <= x < end:
                self.app.simulate_key(key)
                return
