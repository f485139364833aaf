"""The bar that shows a run's training alerts.

The alerts themselves (catastrophic and robust overfitting, with their thresholds) are computed
by the engine from the epoch records (engine.store.alerts, through the facade), so the CLI,
`--where`, the reports and early stopping see the same ones; docs/APP.md lists the thresholds.
"""

from __future__ import annotations

from textual.widgets import Static

from engine.facade import (
    CO_DROP,
    CO_MIN_ROBUST,
    CO_WINDOW,
    RO_POINTS,
    RO_STREAK,
    Alert,
    detect_alerts,
)

__all__ = [
    "CO_DROP",
    "CO_MIN_ROBUST",
    "CO_WINDOW",
    "RO_POINTS",
    "RO_STREAK",
    "Alert",
    "AlertBar",
    "detect_alerts",
    "robust_overfit",
]


def robust_overfit(doc: dict) -> bool:
    """The index-level check the Runs table uses: the run's summary found an onset."""
    return doc.get("overfit_epoch") is not None


class AlertBar(Static):
    """Prominent lines, one per alert; hidden when there is none."""

    DEFAULT_CSS = """
    AlertBar {
        height: auto;
        max-height: 4;
        padding: 0 1;
        background: $error 25%;
        color: $text;
        text-style: bold;
        display: none;
    }
    AlertBar.-active { display: block; }
    """

    def show_alerts(self, alerts: list[Alert], extra: list[str] | None = None, notes: list[str] | None = None) -> None:
        """⚠ per alert, ✖ per problem of the run (`extra`), ⏹ per note (an early stop)."""
        lines = [f"⚠ {a.text}" for a in alerts] + [f"✖ {t}" for t in (extra or [])] + [f"⏹ {t}" for t in (notes or [])]
        self.alerts = alerts
        self.set_class(bool(lines), "-active")
        self.update("\n".join(lines))
