"""`D` on two runs: what differs between them (what `advlc diff A B` prints).

Three tables from `Service.diff` (engine.report.diff), read in a thread worker: the config keys
whose values differ (`section.key`), where the numbers came from when it differs (preset, sweep
point, seed, commit, versions, device, host), and the headline results side by side. esc goes back.
"""

from __future__ import annotations

import json

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from tui.messages import ActionDone
from tui.safe_text import SafeText
from tui.widgets.key_bar import KeyBar
from tui.widgets.palette import palette

SECTIONS = (("config", "config: keys that differ"), ("origin", "origin: what differs"), ("metrics", "results"))
"""(key of Service.diff's result, heading), top to bottom."""


def cell(v) -> SafeText:
    """A value of a run's files as a table cell (never read as console markup)."""
    if v is None:
        return SafeText("—")
    if isinstance(v, float):
        return SafeText(f"{v:.6g}")
    return SafeText(v if isinstance(v, str) else json.dumps(v))


class DiffScreen(Screen):
    """Two runs side by side; `diff` holds Service.diff's result once read."""

    BINDINGS = [
        Binding("escape", "back", "Back", show=True),
        Binding("s", "swap", "Swap sides", show=True),
    ]

    DEFAULT_CSS = """
    DiffScreen #diff-title { height: auto; padding: 0 1; background: $panel; }
    DiffScreen #diff-scroll { height: 1fr; padding: 0 1; }
    DiffScreen .diff-section { margin-bottom: 1; height: auto; }
    """

    def __init__(self, run_a: str, run_b: str):
        super().__init__()
        self.run_ids = [run_a, run_b]
        self.diff: dict | None = None

    def compose(self) -> ComposeResult:
        yield Static(SafeText(f"Diff {self.run_ids[0]} ↔ {self.run_ids[1]}   reading…", end=""), id="diff-title")
        with VerticalScroll(id="diff-scroll"):
            for key, _heading in SECTIONS:
                yield Static("", id=f"diff-{key}", classes="diff-section")
        yield KeyBar()  # ? and q first, whole entries only, at any width

    def on_mount(self) -> None:
        self.query_one("#diff-scroll").focus()
        self._read()

    def _read(self) -> None:
        service, (a, b) = self.app.service, self.run_ids

        def work() -> None:
            d = service.diff(a, b)
            self.post_message(ActionDone("diff", True, "", [a, b], data=d))

        self.app.work(self, work, name="diff")

    def on_action_done(self, message: ActionDone) -> None:
        message.stop()
        if message.what == "diff" and message.ok and message.run_ids == self.run_ids:
            self.diff = message.data
            self._draw()

    def _heads(self) -> list[str]:
        d = self.diff or {}
        names = [t or lab for t, lab in zip(d.get("titles") or [None, None], d.get("labels") or [None, None])]
        return [f"{rid} ({n})" if n else rid for rid, n in zip(self.run_ids, names)]

    def _draw(self) -> None:
        d = self.diff or {}
        c = palette(self.app)
        heads = self._heads()
        self.query_one("#diff-title", Static).update(
            SafeText(f"Diff {heads[0]}  ↔  {heads[1]}   (esc back · s swaps)", end="")
        )
        for key, heading in SECTIONS:
            rows = d.get(key) or []
            box = self.query_one(f"#diff-{key}", Static)
            if not rows:
                box.update(SafeText(f"{heading}: none", style=c.get("muted", ""), end=""))
                continue
            t = Table(
                title=SafeText(heading, style=f"bold {c.get('accent', '')}"),
                title_justify="left",
                box=None,
                pad_edge=False,
                expand=True,
            )
            for col in ("key", *heads):
                t.add_column(col, overflow="fold", ratio=1 if col != "key" else None)
            for k, va, vb in rows:
                t.add_row(SafeText(k), cell(va), cell(vb))
            box.update(t)

    def action_swap(self) -> None:
        if self.diff is None:
            return
        self.run_ids.reverse()
        d = dict(self.diff)
        for key, _h in SECTIONS:
            d[key] = [(k, vb, va) for k, va, vb in d.get(key) or []]
        for key in ("runs", "labels", "titles"):
            d[key] = list(reversed(d.get(key) or [None, None]))
        self.diff = d
        self._draw()

    def action_back(self) -> None:
        self.app.pop_screen()
