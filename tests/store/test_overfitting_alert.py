"""The robust-overfitting alert (engine.store.summary.overfitting_onset) and the CPU thread budget
of concurrent runs: the showcase's two operational pieces."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.store.alerts import RO_POINTS, RO_STREAK, overfitting_onset

DATA = Path(__file__).resolve().parents[1] / "data" / "robust_overfitting_runs.json"


def rec(epoch, robust, train, lr=0.01):
    return {"epoch": epoch, "lr": lr, "robust_acc": robust, "train_acc": train}


def decline(peak_epoch=5, drop=RO_POINTS + 0.005, n=RO_STREAK, lr0=0.1, lr=0.01, train_rise=0.01):
    """A run that peaks at `peak_epoch` (after a decay at epoch 2) and then sits `drop` below it."""
    eps = [rec(0, 0.30, 0.30, lr0), rec(1, 0.35, 0.35, lr0)]
    eps += [rec(e, 0.40 + 0.01 * (e - 2), 0.40 + 0.01 * (e - 2), lr) for e in range(2, peak_epoch + 1)]
    peak = eps[-1]
    eps += [
        rec(peak_epoch + 1 + i, peak["robust_acc"] - drop, peak["train_acc"] + train_rise * (i + 1), lr)
        for i in range(n)
    ]
    return eps


def test_fires_at_the_streak_th_epoch_below_the_best():
    eps = decline()
    onset = overfitting_onset(eps)
    assert onset is not None and onset["epoch"] == 5 + RO_STREAK  # the 10th epoch of the decline
    assert (onset["best_epoch"], onset["best_robust_acc"]) == (5, pytest.approx(0.43))
    assert overfitting_onset(eps[:-1]) is None  # one epoch short: silent (live use)


def test_each_condition_is_needed():
    assert overfitting_onset(decline(drop=RO_POINTS - 0.005)) is None  # not far enough below the best
    assert overfitting_onset(decline(lr=0.1)) is None  # no learning-rate decay yet
    assert overfitting_onset(decline(train_rise=-0.001)) is None  # training accuracy fell too
    # one epoch back within the band (the 10th of the decline) restarts the streak after it
    eps = decline(n=2 * RO_STREAK)
    back = 5 + RO_STREAK
    assert eps[back]["epoch"] == back
    eps[back]["robust_acc"] += 0.01
    onset = overfitting_onset(eps)
    assert onset is not None and onset["epoch"] == back + RO_STREAK
    # a new best (a tie counts, as for best.pt) restarts the count from that epoch
    eps = decline(n=2 * RO_STREAK)
    eps[8]["robust_acc"] = eps[5]["robust_acc"]
    assert overfitting_onset(eps[: 5 + RO_STREAK + 1]) is None
    onset = overfitting_onset(eps)
    assert (onset["epoch"], onset["best_epoch"]) == (8 + RO_STREAK, 8)


def test_unevaluated_epochs_are_skipped():
    eps = decline()
    sparse = [dict(e, robust_acc=None) if e["epoch"] % 2 and e["epoch"] > 6 else e for e in eps]
    assert overfitting_onset(sparse) is None  # only 5 evaluated epochs in the decline
    eps = decline(n=2 * RO_STREAK)
    sparse = [dict(e, robust_acc=None) if e["epoch"] % 2 and e["epoch"] > 6 else e for e in eps]
    assert overfitting_onset(sparse)["epoch"] == 6 + 2 * (RO_STREAK - 1)


def _reference_fire_epoch(records, k=RO_STREAK, x_points=100 * RO_POINTS):
    """The rule written out independently, in percentage points, as it was tuned."""
    lr0 = records[0][1]
    best, best_train, streak = -1.0, None, 0
    for epoch, lr, train, robust in records:
        if robust is None:
            continue
        ra = 100 * robust
        if ra >= best:
            best, best_train, streak = ra, train, 0
            continue
        streak = streak + 1 if ra <= best - x_points else 0
        if lr < lr0 and streak >= k and train > best_train:
            return epoch
    return None


@pytest.mark.parametrize("name, fires", [("pgd10", 62), ("pgd10-advlc", None), ("fgsm_n", 87), ("fgsm_n-advlc", None)])
def test_showcase_runs_fire_for_the_baselines_only(name, fires):
    """Recorded showcase runs (seed 0): the alert fires for PGD-10 and FGSM-N AT after their best
    epoch, never for their AdvLC twins; the engine agrees with the independent reference rule."""
    records = json.loads(DATA.read_text())["runs"][name]
    epochs = [{"epoch": e, "lr": lr, "train_acc": tr, "robust_acc": ra} for e, lr, tr, ra in records]
    onset = overfitting_onset(epochs)
    assert (onset and onset["epoch"]) == fires == _reference_fire_epoch(records)
    if fires is not None:
        best = max((r for r in epochs if r["robust_acc"] is not None), key=lambda r: (r["robust_acc"], r["epoch"]))
        assert onset["epoch"] > best["epoch"]


def test_index_document_carries_the_onset(tmp_path):
    from engine.store.index import Store

    store = Store(tmp_path).ensure()
    eps = [{**e, "clean_acc": 0.9, "train_loss": 1.0, "time_s": 1.0} for e in decline()]
    rd = _fab(store, "0000000a", "finished", epochs_override=eps)
    assert store.sync(rd)["overfit_epoch"] == 5 + RO_STREAK
    rd = _fab(store, "0000000b", "finished", epochs_override=eps[:-1])
    assert store.sync(rd)["overfit_epoch"] is None


def _fab(store, rid, state, **kw):
    from fabricate import fabricate_run

    return fabricate_run(
        store,
        rid,
        preset="quick/robust-overfitting-pgd10",
        seed=0,
        group=None,
        total=20,
        done=20,
        state=state,
        created=1.7e9,
        **kw,
    )


# ------------------------------------------------------------------------ thread budget
def test_apply_threads_prefers_config_then_launcher_budget(monkeypatch):
    torch = pytest.importorskip("torch")
    from engine.run.device import apply_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("ADVLC_THREADS", raising=False)
        assert apply_threads(0) is None and torch.get_num_threads() == before
        monkeypatch.setenv("ADVLC_THREADS", "1")
        assert apply_threads(0) == "CPU threads: 1 (launcher budget)" and torch.get_num_threads() == 1
        assert apply_threads(2) == "CPU threads: 2 (train.threads)" and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_child_env_carries_the_budget(tmp_path):
    from engine.launch.processes import child_env

    env = child_env(tmp_path, threads=3)
    assert (env["ADVLC_THREADS"], env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"]) == ("3", "3", "3")
    env = child_env(tmp_path)
    assert env.get("ADVLC_THREADS") == os.environ.get("ADVLC_THREADS")


def test_budget_divides_the_cores_among_runs_running_here(tmp_path, monkeypatch):
    from engine.launch.executors import local
    from engine.store.index import Store

    store = Store(tmp_path).ensure()
    monkeypatch.setattr(local, "usable_cores", lambda: 8)
    assert [local.cpu_thread_budget(store, n) for n in (1, 2, 3, 8, 20)] == [None, 4, 2, 1, 1]  # alone: torch's default
    monkeypatch.setattr(local, "running_cpu_runs", lambda s: 2)  # two CPU runs already going
    assert [local.cpu_thread_budget(store, n) for n in (1, 2)] == [2, 2]


def test_usable_cores_are_physical_cores_in_the_affinity_mask(monkeypatch):
    import psutil

    from engine import cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 16 if logical else 4)
    assert cores.usable_cores() == 4  # hyper-threads do not count
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 64 if logical else 32)
    assert cores.usable_cores() == 8  # the affinity mask does


def test_running_cpu_runs_counts_live_local_cpu_runs_only(tmp_path):
    from engine.launch.executors import local
    from engine.launch.processes import HOST, create_time
    from engine.store.index import Store

    store = Store(tmp_path).ensure()
    me = {"pid": os.getpid(), "pid_create_time": create_time(os.getpid()), "host": HOST}
    _fab(store, "0000000a", "running").update_status(**me, gpu=None)  # counts
    _fab(store, "0000000b", "running").update_status(**me, gpu=0)  # on a GPU
    _fab(store, "0000000c", "running").update_status(**{**me, "host": "elsewhere"}, gpu=None)
    _fab(store, "0000000d", "finished").update_status(**me, gpu=None)  # not running
    store.reindex()
    assert local.running_cpu_runs(store) == 1


@pytest.mark.slow  # real concurrent runs (~7 s)
def test_runs_launched_together_share_the_cores(tmp_path, monkeypatch):
    """The real launcher: two CPU runs started together each get cores // 2 threads (at least 1),
    and the run process applies it (its log says so and its provenance records it)."""
    import time

    from engine.config.presets import preset_runs
    from engine.launch import supervisor
    from engine.launch.executors import local
    from engine.store.index import Store
    from engine.store.states import FINAL_STATES

    monkeypatch.setenv("ADVLC_HOME", str(tmp_path))
    monkeypatch.setattr(local, "usable_cores", lambda: 4)  # as on a 4-core machine: 2 threads each
    monkeypatch.setattr(local, "visible_gpu_count", lambda: 0)
    store = Store(tmp_path).ensure()
    planned = preset_runs(
        "quick/digits-standard",
        ["train.epochs=1", "eval.n=20", "eval.hs_every=0", "data.n_train=50", "train.device=cpu"],
        seeds=2,
    )
    rds = supervisor.launch(store, planned)
    deadline = time.time() + 120
    while time.time() < deadline and any(rd.status().state not in FINAL_STATES for rd in rds):
        time.sleep(0.2)
    for rd in rds:
        assert rd.status().state == "finished", rd.log_tail(20)
        assert rd.status().launch.threads == 2
        assert "CPU threads: 2 (launcher budget)" in rd.log_path.read_text()
        assert "2 threads" in rd.config_json()["provenance"]["device_name"]
