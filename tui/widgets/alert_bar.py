"""Training alerts of a run, and the bar that shows them.

Two failure modes the researcher must see at once:

- **Catastrophic overfitting** (Wong et al. 2020; the monitor of fast_adversarial): the
  PGD robust accuracy collapses within a few epochs while the training accuracy keeps
  rising. Raised when, at some evaluated epoch t, the robust accuracy is below
  `(1 - CO_DROP)` times its highest value in the `CO_WINDOW` epochs before t, that highest
  value was at least `CO_MIN_ROBUST`, and the training accuracy at t is not lower than at
  that earlier epoch.
- **Robust overfitting** (Rice et al. 2020; the subject of the AdvLC paper): after the first
  learning-rate decay, the robust accuracy has stayed `RO_POINTS` or more below its best for
  `RO_STREAK` evaluated epochs while the training accuracy rose (the engine's
  `overfitting_onset`, which also fills the index's `overfit_epoch`). Once set in, the alert
  stays: robust overfitting does not go away by itself.

The same thresholds are listed in docs/APP.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.widgets import Static

from engine.facade import RO_POINTS, RO_STREAK, overfitting_onset

CO_WINDOW = 3
"""Epochs looked back for a catastrophic-overfitting collapse."""
CO_DROP = 0.5
"""Relative drop of robust accuracy that counts as a collapse (0.5 = more than halved)."""
CO_MIN_ROBUST = 0.05
"""A collapse only counts from a robust accuracy of at least this (fraction), not from noise near 0."""
__all__ = ["CO_DROP", "CO_MIN_ROBUST", "CO_WINDOW", "RO_POINTS", "RO_STREAK", "Alert", "AlertBar", "detect_alerts",
           "robust_overfit"]


@dataclass
class Alert:
    kind: str        # "catastrophic" | "robust_overfitting" | "failed" | "lost"
    epoch: int | None
    text: str


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def detect_alerts(epochs: list[dict]) -> list[Alert]:
    """The alerts the epoch records of one run raise (latest catastrophic event first)."""
    ev = [e for e in epochs if e.get("robust_acc") is not None]
    out: list[Alert] = []
    co = None
    for i, e in enumerate(ev):
        prev = [p for p in ev[:i] if e["epoch"] - p["epoch"] <= CO_WINDOW]
        if not prev:
            continue
        peak = max(prev, key=lambda p: p["robust_acc"])
        if peak["robust_acc"] < CO_MIN_ROBUST or e["robust_acc"] >= (1 - CO_DROP) * peak["robust_acc"]:
            continue
        tr_now, tr_then = e.get("train_acc"), peak.get("train_acc")
        if tr_now is None or tr_then is None or tr_now < tr_then:
            continue
        co = (peak, e)
    if co:
        peak, e = co
        out.append(Alert("catastrophic", e["epoch"],
                         f"catastrophic overfitting at epoch {e['epoch']}: robust accuracy "
                         f"{_pct(peak['robust_acc'])} → {_pct(e['robust_acc'])} in {e['epoch'] - peak['epoch']} "
                         f"epoch(s) while training accuracy rose {_pct(peak['train_acc'])} → {_pct(e['train_acc'])}"))
    onset = overfitting_onset(epochs)
    if onset:
        out.append(Alert("robust_overfitting", onset["epoch"],
                         f"robust overfitting since epoch {onset['epoch']}: robust accuracy ≥ {100 * RO_POINTS:g} "
                         f"points below its best ({_pct(onset['best_robust_acc'])} at epoch {onset['best_epoch']}) "
                         f"for {RO_STREAK} evaluated epochs while training accuracy rose "
                         f"{_pct(onset['best_train_acc'])} → {_pct(onset['train_acc'])}; best.pt holds the "
                         "early-stopped model"))
    return out


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

    def show_alerts(self, alerts: list[Alert], extra: list[str] | None = None) -> None:
        lines = [f"⚠ {a.text}" for a in alerts] + [f"✖ {t}" for t in (extra or [])]
        self.alerts = alerts
        self.set_class(bool(lines), "-active")
        self.update("\n".join(lines))
