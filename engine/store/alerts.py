"""Training alerts, computed from a run's epoch records: catastrophic and robust overfitting.

Both are read from the records alone, so the app, `advlc show`, `--where` (the index's
`overfit_epoch` and `catastrophic_epoch`), the reports and the run process itself (early
stopping, `train.stop_on_overfit`) see the same thing.

- **Catastrophic overfitting** (Wong et al. 2020; the monitor of fast_adversarial): the PGD
  robust accuracy collapses within a few epochs while the training accuracy keeps rising. Raised
  when, at some evaluated epoch t, the robust accuracy is below `(1 - CO_DROP)` times its highest
  value in the `CO_WINDOW` epochs before t, that highest value was at least `CO_MIN_ROBUST`, and
  the training accuracy at t is not lower than at that earlier epoch.
- **Robust overfitting** (Rice et al. 2020; the subject of the AdvLC paper): after the first
  learning-rate decay, the robust accuracy has stayed `RO_POINTS` or more below its best for
  `RO_STREAK` evaluated epochs while the training accuracy rose. Once set in, the alert stays.

Each is judged on the split that selects the best checkpoint (`train.select_on`): the test
robust accuracy (`robust_acc`, the paper's habit) or the held-out validation split's
(`val_robust_acc`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from engine.numbers import percent

_pc = partial(percent, digits=1, unit="%")
"""A fraction as the alerts write it: 45.7%."""

RO_POINTS = 0.025
"""How far (fraction of robust accuracy; 0.025 = 2.5 points) below its best a robust accuracy
must be to count towards robust overfitting."""
RO_STREAK = 10
"""How many consecutive evaluated epochs that far below the best make robust overfitting."""
CO_WINDOW = 3
"""Epochs looked back for a catastrophic-overfitting collapse."""
CO_DROP = 0.5
"""Relative drop of robust accuracy that counts as a collapse (0.5 = more than halved)."""
CO_MIN_ROBUST = 0.05
"""A collapse only counts from a robust accuracy of at least this (fraction), not from noise near 0."""
SPLITS = ("test", "val")
"""Where the best checkpoint is selected (train.select_on)."""


def robust_key(select_on: str | None) -> str:
    """The epoch record key that selects the best checkpoint: `robust_acc` (test) or `val_robust_acc`."""
    return "val_robust_acc" if select_on == "val" else "robust_acc"


def overfit_states(
    epochs: list[dict], key: str = "robust_acc", points: float = RO_POINTS, streak: int = RO_STREAK
) -> list[tuple[dict, dict | None]]:
    """For each evaluated record (one with `key`), in order: (record, onset) where onset is the
    record with the best so far when the robust-overfitting condition holds at it, else None.

    Looks only at records up to each epoch (so it can fire live): after the learning rate has been
    decayed once (robust overfitting is a post-decay effect; before it, robust accuracy swings by
    several points while the model still improves), `streak` consecutive evaluated epochs with a
    robust accuracy at least `points` below the running best, while the training accuracy has risen
    since that best epoch (the model fits its adversarial training batches better and held-out data
    worse). Tuned on the robust-overfitting showcase: fires for PGD-10 and FGSM-N AT on every seed,
    never for their AdvLC runs (docs/PRESETS.md).
    """
    lr0 = epochs[0].get("lr") if epochs else None
    best: dict | None = None
    run = 0
    out: list[tuple[dict, dict | None]] = []
    for rec in epochs:
        if rec.get(key) is None:
            continue
        if best is None or rec[key] >= best[key]:
            best, run = rec, 0
            out.append((rec, None))
            continue
        run = run + 1 if rec[key] <= best[key] - points + 1e-12 else 0
        decayed = lr0 is not None and rec.get("lr") is not None and rec["lr"] < lr0
        rose = (
            rec.get("train_acc") is not None
            and best.get("train_acc") is not None
            and rec["train_acc"] > best["train_acc"]
        )
        holds = decayed and run >= streak and rose
        out.append(
            (
                rec,
                {**rec, "best_epoch": best["epoch"], "best_robust_acc": best[key], "best_train_acc": best["train_acc"]}
                if holds
                else None,
            )
        )
    return out


def overfitting_onset(
    epochs: list[dict], points: float = RO_POINTS, streak: int = RO_STREAK, key: str = "robust_acc"
) -> dict | None:
    """The first epoch record at which robust overfitting has set in (with the best before it), or None."""
    return next((onset for _, onset in overfit_states(epochs, key, points, streak) if onset), None)


def early_stop(epochs: list[dict], patience: int, key: str = "robust_acc") -> dict | None:
    """When to stop a run that overfits: None, or {"epoch": E, "onset": O} once the robust-overfitting
    condition has held at `patience` consecutive evaluated epochs (the last of them E; O the first
    epoch at which the condition held at all)."""
    states = overfit_states(epochs, key)
    onset = next((o for _, o in states if o), None)
    if onset is None or len(states) < patience:
        return None
    if all(o is not None for _, o in states[-patience:]):
        return {"epoch": states[-1][0]["epoch"], "onset": onset["epoch"]}
    return None


def catastrophic_event(epochs: list[dict], key: str = "robust_acc") -> tuple[dict, dict] | None:
    """The latest catastrophic-overfitting collapse: (the peak before it, the collapsed record), or None."""
    ev = [e for e in epochs if e.get(key) is not None]
    found = None
    for i, e in enumerate(ev):
        prev = [p for p in ev[:i] if e["epoch"] - p["epoch"] <= CO_WINDOW]
        if not prev:
            continue
        peak = max(prev, key=lambda p: p[key])
        if peak[key] < CO_MIN_ROBUST or e[key] >= (1 - CO_DROP) * peak[key]:
            continue
        tr_now, tr_then = e.get("train_acc"), peak.get("train_acc")
        if tr_now is None or tr_then is None or tr_now < tr_then:
            continue
        found = (peak, e)
    return found


@dataclass
class Alert:
    kind: str  # "catastrophic" | "robust_overfitting" | "failed" | "lost"
    epoch: int | None
    text: str


def detect_alerts(epochs: list[dict], select_on: str | None = "test") -> list[Alert]:
    """The alerts the epoch records of one run raise, judged on the selection split (catastrophic first)."""
    key = robust_key(select_on)
    on = " (validation)" if select_on == "val" else ""
    out: list[Alert] = []
    co = catastrophic_event(epochs, key)
    if co:
        peak, e = co
        out.append(
            Alert(
                "catastrophic",
                e["epoch"],
                f"catastrophic overfitting at epoch {e['epoch']}: robust accuracy{on} "
                f"{_pc(peak[key])} → {_pc(e[key])} in {e['epoch'] - peak['epoch']} "
                f"epoch(s) while training accuracy rose {_pc(peak['train_acc'])} → {_pc(e['train_acc'])}",
            )
        )
    onset = overfitting_onset(epochs, key=key)
    if onset:
        out.append(
            Alert(
                "robust_overfitting",
                onset["epoch"],
                f"robust overfitting since epoch {onset['epoch']}: robust accuracy{on} ≥ {100 * RO_POINTS:g} "
                f"points below its best ({_pc(onset['best_robust_acc'])} at epoch {onset['best_epoch']}) "
                f"for {RO_STREAK} evaluated epochs while training accuracy rose "
                f"{_pc(onset['best_train_acc'])} → {_pc(onset['train_acc'])}; best.pt holds the "
                "early-stopped model",
            )
        )
    return out
