"""Where to export a comparison table, and in which formats (a modal)."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

FORMATS = ("md", "latex", "csv", "json")
DEFAULT_FORMATS = ("md", "latex", "csv")


class ExportScreen(ModalScreen[tuple[Path, list[str]] | None]):
    """Dismisses with (folder, formats), or None when cancelled. Enter exports."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", show=True)]

    DEFAULT_CSS = """
    ExportScreen { align: center middle; }
    ExportScreen > Vertical {
        width: 76; max-width: 98%; height: auto; border: thick $accent; background: $surface; padding: 1 2;
    }
    ExportScreen Horizontal { height: auto; }
    ExportScreen Checkbox { width: auto; }
    ExportScreen #export-error { color: $error; height: auto; }
    ExportScreen #export-buttons { align-horizontal: right; margin-top: 1; }
    ExportScreen Button { margin-left: 2; }
    """

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = Path(folder)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Export the table to folder:")
            yield Input(str(self.folder), id="export-folder")
            with Horizontal():
                for f in FORMATS:
                    yield Checkbox(f, f in DEFAULT_FORMATS, id=f"fmt-{f}")
            yield Static("", id="export-error")
            with Horizontal(id="export-buttons"):
                yield Button("Cancel (esc)", id="cancel")
                yield Button("Export (enter)", id="export", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#export-folder", Input).focus()

    def _submit(self) -> None:
        folder = self.query_one("#export-folder", Input).value.strip()
        formats = [f for f in FORMATS if self.query_one(f"#fmt-{f}", Checkbox).value]
        if not folder:
            self.query_one("#export-error", Static).update("Give a folder.")
            return
        if not formats:
            self.query_one("#export-error", Static).update("Pick at least one format.")
            return
        self.dismiss((Path(folder).expanduser(), formats))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "export":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
