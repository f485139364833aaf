"""The app with real training runs: launch from the Presets screen, stop with confirmation,
resume, and `q` leaving runs running. Each run is a detached `python -m engine.run.process`
process on the digits data (CPU), started by engine.launch.supervisor.
"""

import time

import psutil
import pytest

from engine.config.presets import plan_runs
from engine.launch import supervisor
from engine.store.index import Store
from engine.store.rundir import RunDir
from tui.app import make_app

SIZE = (120, 40)


async def wait_for(pilot, cond, timeout=60.0, step=0.2, what=""):
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}")
        await pilot.pause(step)


def row(app, rid):
    snap = app.runs_screen.snapshot
    return next((r for r in (snap.rows if snap else []) if r["id"] == rid), None)


def state_of(app, rid):
    r = row(app, rid)
    return r.get("state") if r else None


@pytest.fixture
def long_run(tmp_path):
    """A digits run of 50 epochs started detached; stopped at teardown whatever the test did."""
    store = Store(tmp_path / "home").ensure()
    planned = plan_runs("quick/digits-fgsm_n", ["train.epochs=50", "eval.n=100"], home=store.home)
    rds = supervisor.launch(store, planned)
    yield store, rds[0]
    supervisor.stop(store, [RunDir(rd.path) for rd in rds if rd.exists()], grace_s=5)


async def test_launch_digits_preset_from_presets_screen_and_watch_it_finish(tmp_path):
    from tui.screens.presets import PresetsScreen

    store = Store(tmp_path / "home").ensure()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, PresetsScreen) and app.screen.current is not None)
        scr = app.screen
        assert scr.current.name == "quick/robust-overfitting"   # `make run` opens with the showcase ready
        await pilot.press("o", *"train.epochs=2 eval.n=100 eval.hs_every=0")
        plan = scr.query_one("#preset-plan")
        await wait_for(pilot, lambda: "2 epochs" in str(plan.render()), what="the plan for 2 epochs")
        await pilot.press("enter")                                 # one key launches the pair
        await wait_for(pilot, lambda: app.screen is app.runs_screen and len(app.runs_screen._ids) == 2,
                       timeout=30, what="the two new runs in the Runs screen")
        ids = sorted(app.runs_screen._ids)
        assert app.runs_screen.cursor_id() in ids
        seen = []
        t0 = time.monotonic()
        while any(state_of(app, rid) != "finished" for rid in ids):
            s = state_of(app, ids[0])
            if not seen or seen[-1] != s:
                seen.append(s)
            for rid in ids:
                assert state_of(app, rid) not in ("failed", "lost", "stopped"), \
                    RunDir(store.runs_dir / rid).log_tail(20)
            assert time.monotonic() - t0 < 300, f"still {s} after 300 s"
            await pilot.pause(0.2)
        assert "finished" not in seen and seen[-1] in ("queued", "running")
        rds = [RunDir(store.runs_dir / rid) for rid in ids]
        assert sorted(rd.config()["method"]["name"] for rd in rds) == ["advlc", "pgd"]
        assert len({rd.config()["run"]["group"] for rd in rds}) == 1           # side by side, one group
        rid = app.runs_screen.cursor_id()
        cells = app.runs_screen.query_one("#runs-table").get_cell(rid, "epoch")
        await wait_for(pilot, lambda: str(app.runs_screen.query_one("#runs-table").get_cell(rid, "epoch"))
                       .startswith("2/2"), timeout=10, what=f"2/2 in {cells}")
        rd = RunDir(store.runs_dir / rid)
        assert rd.config()["train"]["epochs"] == 2 and rd.config()["eval"]["n"] == 100
        assert [e["epoch"] for e in rd.epochs()] == [0, 1]
        # the detail screen of the finished run plots its two epochs
        await pilot.press("enter")
        await wait_for(pilot, lambda: "robust" in getattr(app.screen, "plots", {}).get("acc", None).series
                       if hasattr(app.screen, "plots") else False, timeout=10)
        assert app.screen.plots["acc"].series["robust"].ys == pytest.approx(
            [100 * e["robust_acc"] for e in rd.epochs()])


async def test_stop_asks_for_confirmation_then_stops_and_resume_restarts(long_run):
    from tui.screens.confirm import ConfirmScreen

    store, rd = long_run
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: state_of(app, rd.id) == "running", timeout=120, what="running")
        pid = rd.status()["pid"]
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # no: nothing happens
        await pilot.pause(0.5)
        assert rd.status()["state"] == "running" and psutil.pid_exists(pid)
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: state_of(app, rd.id) == "stopped", timeout=60, what="stopped")
        assert rd.status()["state"] == "stopped"
        # the run writes `stopped` itself, then exits: the process is gone shortly after
        await wait_for(pilot, lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                       timeout=15, what=f"pid {pid} gone")
        await pilot.press("r")  # resume
        await wait_for(pilot, lambda: state_of(app, rd.id) == "running", timeout=120, what="running again")
        assert rd.status()["pid"] != pid


async def test_q_quits_the_app_and_leaves_runs_running(long_run):
    store, rd = long_run
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: state_of(app, rd.id) == "running", timeout=120, what="running")
        await pilot.press("q")
        await pilot.pause(0.2)
        assert not app.is_running
    st = rd.status()
    assert st["state"] == "running"
    proc = psutil.Process(st["pid"])
    assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    time.sleep(1.0)
    assert rd.status()["state"] == "running" and proc.is_running()
