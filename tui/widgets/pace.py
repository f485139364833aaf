"""How fast a run goes and when it ends: the one rate, ETA, elapsed and launch time of the app.

**The rate** is the wall-clock seconds one epoch costs: the mean training time of an epoch
(`time_s`) plus the mean evaluation time of an epoch (`eval_time_s`: PGD, IG, HS and eval.extra
on the test data, recorded on every epoch and ~0 on epochs that evaluate nothing), both means
over *every* recorded epoch. That is exactly the index's `epoch_time_s_mean + eval_time_s_mean`
(engine.store.summary), so the Runs table and the run header, which computes the same means from
its epoch records (`epoch_means`), show one number. A mean over every epoch moves by 1/n of a
new epoch's difference: it does not jump when an evaluated epoch comes or goes, as a mean over
the last few epochs does with `eval.every` > 1. Runs recorded before `eval_time_s` existed count
their training time only.

**The ETA** of a running run is the epochs not yet recorded times the rate, less the part of the
current epoch's training already done (`batch / batches` of the mean training time, from
status.json): it falls as batches go by and stays put while the epoch is evaluated.
An experiment run (points, not epochs) counts points: (points left) x (wall clock since its
process started / points done).

**Elapsed** is the wall clock since the run was launched (`created`) until now for a queued or
running run, until its last heartbeat for one that ended (pauses between a stop and a resume
included); the launch time is shown as `HH:MM` today, `MM-DD` before.

`pace` is the one function; `row_pace` (an index row + live status) and `history_pace` (a detail
screen's records) only gather its inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

ACTIVE = ("running", "queued")


@dataclass(frozen=True)
class Pace:
    per_epoch: float | None
    """Wall-clock seconds per epoch (None before the first epoch record)."""
    eta: float | None
    """Seconds left (running runs with a rate only)."""
    elapsed: float | None
    """Seconds since the launch (see the module docstring)."""
    launched: float | None
    """When the run was created (epoch seconds)."""


def _mean(values) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(vals) / len(vals) if vals else None


def epoch_means(epochs) -> tuple[float | None, float | None]:
    """(mean time_s, mean eval_time_s) over epoch records, as the index computes them."""
    return _mean(e.get("time_s") for e in epochs), _mean(e.get("eval_time_s") for e in epochs)


def pace(
    *,
    state: str | None,
    epoch: int | None,
    epochs: int | None,
    time_s_mean: float | None,
    eval_time_s_mean: float | None,
    batch: int | None = None,
    batches: int | None = None,
    created: float | None = None,
    last_seen: float | None = None,
    started: float | None = None,
    point: int | None = None,
    points: int | None = None,
    now: float | None = None,
) -> Pace:
    """The rate, ETA, elapsed time and launch time of a run (see the module docstring)."""
    now = time.time() if now is None else now
    per = None if time_s_mean is None else time_s_mean + (eval_time_s_mean or 0.0)
    eta = None
    if state == "running":
        if points:  # an experiment: points, not epochs
            if point and started and last_seen and last_seen > started:
                eta = max(0.0, (points - point) * (last_seen - started) / point)
        elif per and epochs and time_s_mean is not None:
            done = min(1.0, batch / batches) if batch and batches else 0.0
            eta = max(0.0, (epochs - (epoch or 0)) * per - done * time_s_mean)
    end = now if state in ACTIVE else (last_seen or created)
    elapsed = max(0.0, end - created) if created and end else None
    return Pace(per, eta, elapsed, created)


def row_pace(row, live=None, now: float | None = None) -> Pace:
    """`pace` of an index row (engine.store.summary) and, for a running run, its status.json."""
    return pace(
        state=row.get("state"),
        epoch=row.get("epoch"),
        epochs=row.get("epochs"),
        time_s_mean=row.get("epoch_time_s_mean"),
        eval_time_s_mean=row.get("eval_time_s_mean"),
        batch=live.batch if live else None,
        batches=live.batches if live else None,
        created=row.get("created"),
        last_seen=(live.heartbeat if live else None) or row.get("updated"),
        started=live.started if live else None,
        point=live.point if live else None,
        points=live.points if live else None,
        now=now,
    )


def history_pace(epochs, status, created: float | None, total: int | None, now: float | None = None) -> Pace:
    """`pace` of a run followed by the detail screen (its epoch records and status.json)."""
    time_mean, eval_mean = epoch_means(epochs)
    return pace(
        state=status.state,
        epoch=len(epochs),
        epochs=total,
        time_s_mean=time_mean,
        eval_time_s_mean=eval_mean,
        batch=status.batch,
        batches=status.batches,
        created=created,
        last_seen=status.heartbeat or status.created,
        started=status.started,
        point=status.point,
        points=status.points,
        now=now,
    )


def duration(s: float | None) -> str:
    """`42s`, `17m`, `3h05m`, `2d4h`."""
    if s is None:
        return ""
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    h, m = divmod(s // 60, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    return f"{h // 24}d{h % 24}h"


def clock(ts: float | None, now: float | None = None) -> str:
    """A launch time in 5 characters: `14:02` today, `03-05` (month-day) before."""
    if not ts:
        return ""
    now = time.time() if now is None else now
    t, today = time.localtime(ts), time.localtime(now)
    if (t.tm_year, t.tm_yday) == (today.tm_year, today.tm_yday):
        return time.strftime("%H:%M", t)
    return time.strftime("%m-%d", t)
