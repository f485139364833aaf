"""Progress as a table cell: `143/200 ▇▇▇▇▆` (fraction of epochs, batch-accurate), or the points of an
experiment run: `3/9 pts ▇▇░` (rates, ETA and elapsed time: tui/widgets/pace.py)."""

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


ROLE = {"running": "primary", "finished": "success", "failed": "error", "lost": "error", "stopped": "warning"}


def progress_cell(
    epoch: int | None,
    total: int | None,
    colors: dict[str, str],
    *,
    batch: int | None = None,
    batches: int | None = None,
    state: str = "",
    width: int = 8,
    unit: str = "",
) -> Text:
    """`epoch/total` and a bar; `batch/batches` of the current epoch refine a running run's bar.
    `unit` (e.g. "pts") follows the numbers: an experiment's points done / planned."""
    epoch = epoch or 0
    suffix = f" {unit}" if unit else ""
    if not total:
        return Text(f"{epoch}/?{suffix}", end="")
    done: float = epoch
    if state == "running" and batch and batches:
        done = epoch + min(1.0, batch / batches)
    digits = len(str(total))
    t = Text(f"{epoch:>{digits}}/{total}{suffix} ", end="")
    t.append(bar(done / total, max(1, width - len(suffix))), style=colors.get(ROLE.get(state, "muted"), ""))
    return t
