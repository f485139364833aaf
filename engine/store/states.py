"""The states of a run and the one function that changes them.

    queued -> running -> finished | failed | stopped      and lost: the process is gone
                                                          without writing a final state

Every state change of every run goes through `transition`, which refuses a change that is
not in `ALLOWED` (a bug, not a user error). Progress fields (heartbeat, epoch, batch) are
written with `RunDir.update_status`, which refuses to touch `state`.
"""

from __future__ import annotations

import time

STATES = ("queued", "running", "finished", "failed", "stopped", "lost")
FINAL_STATES = ("finished", "failed", "stopped", "lost")
ACTIVE_STATES = ("queued", "running")

ALLOWED: dict[str | None, frozenset[str]] = {
    None: frozenset({"queued"}),  # a new run directory
    # queued -> queued: re-submitted or re-queued with new launch details
    "queued": frozenset({"queued", "running", "stopped", "failed", "lost"}),
    # running -> running: the run process takes over the state its launcher wrote;
    # running -> queued: a Slurm job requeued after a timeout or preemption
    "running": frozenset({"running", "finished", "failed", "stopped", "lost", "queued"}),
    "stopped": frozenset({"queued"}),
    "failed": frozenset({"queued"}),
    # a run marked lost on a stale heartbeat whose process turns out alive keeps its own word
    "lost": frozenset({"queued", "running", "finished", "failed", "stopped"}),
    "finished": frozenset(),
}


class TransitionError(RuntimeError):
    """A state change that `ALLOWED` forbids."""


def transition(rd, new: str, **fields) -> dict:
    """Set run `rd`'s state to `new` (with `fields` merged into status.json); returns the status.

    `ended` is stamped for final states unless given. Raises TransitionError when the
    change from the current state is not allowed.
    """
    if new not in STATES:
        raise TransitionError(f"run {rd.id}: unknown state {new!r}")

    def allowed(status) -> None:
        current = status.state if rd.status_path.exists() else None
        if new not in ALLOWED.get(current, frozenset()):
            raise TransitionError(f"run {rd.id}: {current} -> {new} is not an allowed state change")

    if new in FINAL_STATES:
        fields.setdefault("ended", time.time())
    return rd._merge_status(dict(fields, state=new), check=allowed)
