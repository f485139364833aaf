"""Epoch progress as a table cell: `143/200 ▇▇▇▇▇▆░░` (fraction of epochs, batch-accurate)."""

from __future__ import annotations

from rich.text import Text

EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(frac: float, width: int) -> str:
    """A horizontal bar of `width` cells filled to `frac` (0..1), to 1/8 of a cell."""
    frac = min(1.0, max(0.0, frac))
    eighths = round(frac * width * 8)
    full, part = divmod(eighths, 8)
    s = "█" * full + (EIGHTHS[part] if part else "")
    return s + "░" * (width - len(s))


def progress_cell(epoch: int | None, total: int | None, colors: dict[str, str], *,
                  batch: int | None = None, batches: int | None = None, state: str = "",
                  width: int = 8) -> Text:
    """`epoch/total` and a bar; `batch/batches` of the current epoch refine a running run's bar."""
    epoch = epoch or 0
    if not total:
        return Text(f"{epoch}/?", end="")
    done = epoch
    if state == "running" and batch and batches:
        done = epoch + min(1.0, batch / batches)
    digits = len(str(total))
    t = Text(f"{epoch:>{digits}}/{total} ", end="")
    role = {"running": "primary", "finished": "success", "failed": "error", "lost": "error",
            "stopped": "warning"}.get(state, "muted")
    t.append(bar(done / total, width), style=colors.get(role, ""))
    return t


def eta_text(row: dict, live: dict | None) -> str:
    """Time left for a running run: epochs left x seconds per epoch (minus the current epoch's progress)."""
    if row.get("state") != "running":
        return ""
    per = (row.get("epoch_time_s_mean") or 0) + (row.get("eval_time_s_mean") or 0)
    total, epoch = row.get("epochs"), row.get("epoch") or 0
    if not per or not total:
        return "…"
    left = total - epoch
    if live and live.batch and live.batches:
        left -= min(1.0, live.batch / live.batches)
    return duration(max(0.0, left * per))


def duration(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    h, m = divmod(s // 60, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    return f"{h // 24}d{h % 24}h"
