"""`e`: edit what people say about runs, in a modal — the title, tags and note of one run, or
the tags of several (what `advlc label`, `advlc tag` and `advlc note` do).

Tags are words separated by spaces. The field starts with the run's tags (with several runs:
the tags they all share). A tag deleted from the field is removed, a tag typed into it is
added, and `-tag` removes a tag even when it is not shown; the runs' other tags stay as they
are. Enter (in a one-line field) or ctrl+s saves, through `Service.annotate` in a thread worker
(meta.json: the run's own process never writes it, so a training run can be edited); esc
cancels. A bad tag or title is one line in the modal, and nothing is written.

Typed ahead: `tab` / `shift+tab` (and `esc`) are priority bindings, so they act in the order the
keys were typed: in a burst of keys (a paste, a slow SSH link) what follows a tab lands in the
next field, not in the one the tab left. The keys typed after the `e` that opened the modal wait
until the first field has focus (AdvlcApp.hold_keys / release_keys). And the fields run their own
keys (cursor moves, backspace, enter in the title) when they come to them, in the order typed:
Textual runs a widget's key bindings only once the key has travelled up to the app, after the
letters typed behind it were inserted.
"""

from __future__ import annotations

from typing import Any

import re
from dataclasses import dataclass, field

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea

from engine.errors import UserError
from engine.facade import Meta
from engine.service import Service
from tui.messages import ActionDone


class InOrder:
    """A text field that runs its own key bindings (backspace, arrows, enter…) when it handles the key,
    in the order the keys were typed, instead of after the key bubbled up to the app."""

    _bindings: Any  # the widget's, mixed in before Input / TextArea
    app: Any

    async def _on_key(self, event) -> None:
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if not binding.priority and await self.app.run_action(binding.action, self):
                event.stop()
                event.prevent_default()  # the field's own handler (inserting text) is not run
                return


class FieldInput(InOrder, Input):
    """An Input that keeps typed-ahead keys in order (see InOrder)."""


class FieldTextArea(InOrder, TextArea):
    """A TextArea that keeps typed-ahead keys in order (see InOrder)."""


TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}$")
"""The rule of `advlc tag` (tui/cli/annotate.py TAG), repeated: importing the CLI module would register its commands."""

TAG_RULE = "a tag is letters, digits and _ . : - (at most 40, starting with a letter or digit)"
TITLE_MAX = 200


@dataclass
class Annotation:
    """What the modal writes: None leaves the title / note as they are."""

    run_ids: list[str]
    title: str | None = None
    note: str | None = None
    add_tags: list[str] = field(default_factory=list)
    remove_tags: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return self.title is None and self.note is None and not self.add_tags and not self.remove_tags


def parse_tags(text: str, shown: list[str]) -> tuple[list[str], list[str]]:
    """(tags to add, tags to remove) from the tags field that started as `shown` (see the module
    docstring); `#tag` and `+tag` add like `tag`. ValueError naming the first bad tag."""
    keep: list[str] = []
    remove: list[str] = []
    for word in text.replace(",", " ").split():
        sign, name = (word[0], word[1:]) if word[0] in "+-#" else ("+", word)
        if not TAG.match(name):
            raise ValueError(f"tag {word!r}: {TAG_RULE}")
        (remove if sign == "-" else keep).append(name)
    remove = list(dict.fromkeys(remove + [t for t in shown if t not in keep]))
    add = [t for t in dict.fromkeys(keep) if t not in shown and t not in remove]
    return add, remove


def save(service: Service, a: Annotation) -> list[Meta]:
    """Write `a` to every run (Service.annotate, under the store's lock); the new meta of each."""
    return service.annotate(a.run_ids, title=a.title, add_tags=a.add_tags, remove_tags=a.remove_tags, note=a.note)


class AnnotateScreen(ModalScreen[Annotation | None]):
    """Dismisses with the Annotation written (after the worker wrote it), or None when cancelled."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", show=True),
        Binding("escape", "cancel", "Cancel", show=True, priority=True),
        Binding("tab", "app.focus_next", "Next field", show=False, priority=True),
        Binding("shift+tab", "app.focus_previous", "Previous field", show=False, priority=True),
    ]

    DEFAULT_CSS = """
    AnnotateScreen { align: center middle; }
    AnnotateScreen > VerticalScroll {
        width: 84; max-width: 98%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    AnnotateScreen #annotate-heading { text-style: bold; }
    AnnotateScreen Label, AnnotateScreen .annotate-label { color: $foreground-muted; margin-top: 1; }
    AnnotateScreen Input { margin: 0 1; }
    AnnotateScreen #annotate-note { height: 6; margin: 0 1; }
    AnnotateScreen #annotate-error { color: $error; height: auto; }
    AnnotateScreen #annotate-bottom { height: auto; margin-top: 1; }
    AnnotateScreen #annotate-help { color: $foreground-muted; width: 1fr; height: auto; }
    AnnotateScreen Button { margin-left: 2; }
    """

    def __init__(self, run_ids: list[str], *, tags: list[str], title: str = "", note: str = "", heading: str = ""):
        super().__init__()
        self.run_ids = list(run_ids)
        self.single = len(self.run_ids) == 1
        self.tags = list(tags)
        """The run's tags (several runs: the tags they all share): what the tags field starts with."""
        self.title_text, self.note_text = title or "", note or ""
        self.heading = heading
        self.saving = False

    def compose(self) -> ComposeResult:
        n = len(self.run_ids)
        with VerticalScroll():
            yield Static(
                Text(self.heading or (f"Edit run {self.run_ids[0]}" if self.single else f"Tags of {n} runs"), end=""),
                id="annotate-heading",
            )
            if self.single:
                yield Label("Title (one line; empty: none)")
                yield FieldInput(
                    self.title_text, id="annotate-title", placeholder="e.g. lambda sweep, best so far", compact=True
                )
            yield Static(
                "Tags, separated by spaces: delete one to remove it, type one to add it, -tag removes it"
                + ("" if self.single else f" (shown: the tags all {n} runs share; their other tags stay)"),
                classes="annotate-label",
            )
            # no select-all on focus: a tag typed after tab adds to the tags shown, it does not replace them
            yield FieldInput(
                " ".join(self.tags),
                id="annotate-tags",
                placeholder="no tags: type some, e.g. robust table1",
                select_on_focus=False,
                compact=True,
            )
            if self.single:
                yield Label("Note (several lines; its first line shows in the runs list)")
                yield FieldTextArea(self.note_text, id="annotate-note", soft_wrap=True, compact=True)
            yield Static("", id="annotate-error")
            with Horizontal(id="annotate-bottom"):
                yield Static(
                    "enter (one-line field) or ctrl+s saves · esc cancels · tab: next field", id="annotate-help"
                )
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Save", id="save", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#annotate-title" if self.single else "#annotate-tags", Input).focus()
        release = getattr(self.app, "release_keys", None)
        if release is not None:
            release()  # the keys typed since `e` go to the field just focused

    def changes(self) -> Annotation:
        """What the fields say, as changes to write; ValueError with one line when a field is bad."""
        a = Annotation(self.run_ids)
        a.add_tags, a.remove_tags = parse_tags(self.query_one("#annotate-tags", Input).value, self.tags)
        if self.single:
            title = self.query_one("#annotate-title", Input).value.strip()
            if len(title) > TITLE_MAX:
                raise ValueError(f"title: at most {TITLE_MAX} characters (this one has {len(title)})")
            note = self.query_one("#annotate-note", TextArea).text
            a.title = title if title != self.title_text.strip() else None
            a.note = note if note.rstrip() != self.note_text.rstrip() else None
        return a

    def action_save(self) -> None:
        if self.saving:
            return
        err = self.query_one("#annotate-error", Static)
        try:
            a = self.changes()
        except ValueError as exc:
            err.update(Text(str(exc), end=""))
            return
        if a.empty():
            self.dismiss(a)
            return
        err.update("")
        self.saving = True
        service = self.app.service

        def work() -> None:
            try:
                save(service, a)
            except Exception as exc:  # noqa: BLE001 - shown in the modal, which stays open
                text = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
                self.post_message(ActionDone("annotate", False, f"not saved: {text}", a.run_ids))
                return
            self.post_message(ActionDone("annotate", True, "saved", a.run_ids, data=a))

        self.app.work(self, work, name="annotate")

    def on_action_done(self, message: ActionDone) -> None:
        message.stop()
        self.saving = False
        if message.ok:
            self.dismiss(message.data)
        else:
            self.query_one("#annotate-error", Static).update(Text(message.text, end=""))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        if not self.saving:
            self.dismiss(None)


def describe(a: Annotation) -> str:
    """One line for a notification: what was changed."""
    what = []
    if a.title is not None:
        what.append(f"title {a.title!r}" if a.title else "title cleared")
    if a.add_tags:
        what.append("+" + " +".join(a.add_tags))
    if a.remove_tags:
        what.append("-" + " -".join(a.remove_tags))
    if a.note is not None:
        what.append("note" if a.note.strip() else "note cleared")
    runs = a.run_ids[0] if len(a.run_ids) == 1 else f"{len(a.run_ids)} runs"
    return f"{runs}: {', '.join(what) or 'nothing changed'}"
