"""The app's messages, and how often its screens poll the store (engine.store.watch does the reading).

Background threads touch the UI only through these messages (`post_message`); high-rate
ones implement `can_replace` so they coalesce instead of piling up.
"""

from __future__ import annotations

from textual.message import Message

from engine.facade import IndexSnapshot, RunDelta

REFRESH_S = 1.0
"""Seconds between two polls of the store by a visible screen."""

RECONCILE_S = 15.0
"""Seconds between two `reconcile` calls (marks runs whose process is gone as lost)."""


class IndexChanged(Message):
    """A new snapshot of the index (coalesces: only the newest one matters)."""

    def __init__(self, snapshot: IndexSnapshot):
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, IndexChanged)


class RunChanged(Message):
    """New records, status or log lines of the run a detail screen follows."""

    def __init__(self, delta: RunDelta):
        super().__init__()
        self.delta = delta


class ActionDone(Message):
    """A supervisor action (launch, stop, resume, delete, export) finished in a worker."""

    def __init__(self, what: str, ok: bool, text: str, run_ids: list[str] | None = None, data=None):
        super().__init__()
        self.what = what
        self.ok = ok
        self.text = text
        self.run_ids = run_ids or []
        self.data = data
