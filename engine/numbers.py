"""How the engine and its views write a fraction as a percentage: one rule, so a robust accuracy
reads the same in an alert, a table, the CLI and the app ("—" where there is none)."""

from __future__ import annotations


def percent(v: float | None, digits: int = 2, unit: str = "") -> str:
    """0.4567 -> "45.67" (`digits` decimals, then `unit`, e.g. "%"); None -> "—"."""
    return "—" if v is None else f"{100 * v:.{digits}f}{unit}"
