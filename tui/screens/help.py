"""`?`: every key of every screen, built from the screens' own bindings (so it cannot drift)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.screens.annotate import AnnotateScreen
from tui.screens.compare import CompareScreen
from tui.screens.diff import DiffScreen
from tui.screens.presets import PresetsScreen
from tui.screens.run_detail import LogView, RunDetailScreen
from tui.screens.runs import RunsScreen
from tui.widgets.alert_bar import (
    CO_DROP,
    CO_MIN_ROBUST,
    CO_WINDOW,
    RO_POINTS,
    RO_STREAK,
)
from tui.widgets.metric_plot import MetricPlot
from tui.widgets.run_table import RunTable

EXTRA = {
    "Everywhere": [
        ("ctrl+p", "command palette: open a run or a preset, switch theme, …"),
        ("tab / shift+tab", "move between panels and fields"),
        ("mouse", "click rows, tabs, buttons and column headers (optional)"),
    ],
    "Runs": [("click a header", "sort by that column (again: reverse)")],
    "Run detail: log": [
        ("↑ ↓ pgup pgdn home", "scroll (scrolling up pauses following the tail)"),
        ("/ … enter, esc", "type a search, then jump to it / cancel"),
    ],
}

NOTES = (
    "Filter (/): words that must all match id, preset, label, title, tags, method, attack, dataset, group or "
    "state; key:value for one field, e.g. state:running seed:0 preset:quick/ method:advlc; #robust or "
    "tag:robust for a tag. Or an expression (as `advlc runs --where`): method.lam > 0.1 and state == "
    '"finished", "robust" in tags, preset ~ "table1" or seed in [0, 1] — a mistake shows in one line '
    "and the previous filter stays.\n"
    "Tags and titles (e): a title, tags separated by spaces (delete one to remove it, -tag removes), a note; "
    "with several runs selected, e edits their tags only. x archives (hides) runs, x on archived ones "
    "restores them, A shows only the archived runs. D diffs two selected runs.\n"
    "Overrides (presets screen): section.key=value separated by spaces, e.g. train.epochs=5 eval.n=100 "
    "attack.eps=8/255 — checked as you type.\n"
    "ETA = epochs left × (mean training + mean evaluation seconds per epoch, over every epoch so far), less the "
    "part of the current epoch already trained; the same rate in the table and the run header. launched = when "
    "the run was created, then the wall clock since (to its last heartbeat once it ended). An experiment run "
    "counts points instead of epochs.\n"
    "Narrow terminals drop columns in this order: launched, title #tags, HS, clean, IG; the title never cuts "
    "the preset and its label. The key line shows ? and q first; every key is listed here.\n"
    f"Alerts: catastrophic overfitting = robust accuracy falls below {100 * (1 - CO_DROP):.0f}% of its peak "
    f"within {CO_WINDOW} epochs (from at least {100 * CO_MIN_ROBUST:.0f}%) while training accuracy rises; "
    f"robust overfitting = after the first learning-rate decay, robust accuracy ≥ {100 * RO_POINTS:g} points "
    f"below its best for {RO_STREAK} evaluated epochs while training accuracy rises.\n"
    "Find (f): the cursor jumps to the next run whose id, preset, title or tag contains the text (htop's "
    "search); F finds the next; every run stays shown (the filter hides the others). < and > sort by the "
    "column left or right of the sorted one. The sort and the filter are remembered across restarts "
    "($ADVLC_HOME/app-state.json).\n"
    "Plots (the focused one; tab moves between them): ← → move an epoch cursor, shared by every plot — each "
    "plot's bottom border reads its values there, the line under the plots every metric of that epoch; + and "
    "- show fewer / more of the last epochs, 0 every epoch again; y a log y axis (HS spans 1e-6 to 0.07).\n"
    "Log: follows the tail until you scroll up (the line under it says paused and counts new lines); G or end "
    "follows again. / searches (lower case: any case), n and N jump between matches, w wraps long lines.\n"
    "q quits the app only: training runs are separate processes and keep going; reopen with `advlc`."
)


def sections(app) -> list[tuple[str, list[tuple[str, str]]]]:
    """(screen title, [(key, what it does)]) for the app and each screen."""

    def keys(bindings) -> list[tuple[str, str]]:
        out = []
        for b in bindings:
            if isinstance(b, tuple):
                b = Binding(*b)
            for key in b.key.split(","):
                out.append((app.get_key_display(Binding(key.strip(), b.action)), b.description or b.action))
        return out

    out = [("Everywhere", keys(type(app).BINDINGS) + EXTRA["Everywhere"])]
    for title, classes in (
        ("Runs", (RunsScreen, RunTable)),
        ("Run detail", (RunDetailScreen,)),
        ("Run detail: plots", (MetricPlot,)),
        ("Run detail: log", (LogView,)),
        ("Presets (new run)", (PresetsScreen,)),
        ("Compare", (CompareScreen,)),
        ("Diff", (DiffScreen,)),
        ("Edit title/tags/note", (AnnotateScreen,)),
    ):
        items = [k for cls in classes for k in keys(cls.BINDINGS)]
        out.append((title, [k for i, k in enumerate(items) if k not in items[:i]] + EXTRA.get(title, [])))
    return out


class HelpScreen(ModalScreen[None]):
    """Every key, per screen; esc, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", show=True)]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100; max-width: 100%; height: 90%; border: thick $accent; background: $surface; padding: 0 1;
    }
    HelpScreen #help-notes { color: $foreground-muted; margin-top: 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-scroll"):
            for title, items in sections(self.app):
                t = Table(
                    title=Text(title, style="bold"),
                    title_justify="left",
                    box=None,
                    show_header=False,
                    pad_edge=False,
                    expand=True,
                )
                t.add_column("key", style="bold", no_wrap=True, min_width=16)
                t.add_column("does", ratio=1)
                for key, what in items:
                    t.add_row(key, what)
                yield Static(t, classes="help-section")
            yield Static(NOTES, id="help-notes")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
