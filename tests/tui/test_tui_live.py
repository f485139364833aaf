"""The app with real training runs: launch from the Presets screen, stop with confirmation,
resume, and `q` leaving runs running. Each run is a detached `python -m engine.run.process`
process on the digits data (CPU), started by engine.launch.supervisor.
"""

import asyncio
import functools
import time

import helpers
import psutil
import pytest

from engine.config.presets import preset_runs
from engine.launch import supervisor
from engine.store.index import Store
from engine.store.rundir import RunDir
from engine.store.states import ALLOWED
from tui.app import make_app

SIZE = (120, 40)


wait_for = functools.partial(helpers.pilot_wait, timeout=60.0, step=0.2)  # real runs: longer, coarser


def row(app, rid):
    snap = app.runs_screen.snapshot
    return next((r for r in (snap.rows if snap else []) if r["id"] == rid), None)


def state_of(app, rid):
    r = row(app, rid)
    return r.get("state") if r else None


@pytest.fixture
def long_run(tmp_path):
    """A digits run of 500 epochs started detached: far more than any test here waits for, so it is
    `running` whenever a test looks (it cannot finish first); stopped at teardown whatever the test did."""
    store = Store(tmp_path / "home").ensure()
    planned = preset_runs("quick/digits-fgsm_n", ["train.epochs=500", "eval.n=100"], home=store.home)
    rds = supervisor.launch(store, planned)
    yield store, rds[0]
    supervisor.stop(store, [RunDir(rd.path) for rd in rds if rd.exists()], grace_s=5)


def reachable(state):
    """Every state a run in `state` can reach by allowed state changes (one or more)."""
    out, todo = set(), [state]
    while todo:
        for nxt in ALLOWED.get(todo.pop(), ()):
            if nxt not in out:
                out.add(nxt)
                todo.append(nxt)
    return out


def record_shown_states(app) -> dict[str, list[str]]:
    """run id -> the states the Runs screen showed for it, in order (repeats dropped), taken from every
    snapshot the screen applies: nothing depends on when the test looks."""
    shown: dict[str, list[str]] = {}
    scr = app.runs_screen
    apply = scr._apply

    def recording_apply(snap, rebuild=False):
        for r in snap.rows:
            seq = shown.setdefault(r["id"], [])
            s = r.get("state") or "queued"  # what the table shows for a row without one
            if not seq or seq[-1] != s:
                seq.append(s)
        return apply(snap, rebuild)

    scr._apply = recording_apply
    return shown


@pytest.mark.slow  # a real training run watched to its end (~12 s)
async def test_launch_digits_preset_from_presets_screen_and_watch_it_finish(tmp_path):
    from tui.screens.presets import PresetsScreen

    store = Store(tmp_path / "home").ensure()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        shown = record_shown_states(app)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, PresetsScreen) and app.screen.current is not None)
        scr = app.screen
        assert scr.current.name == "quick/robust-overfitting"  # `make run` opens with the showcase ready
        await pilot.press("o", *"train.epochs=2 eval.n=100 eval.hs_every=0")
        plan = scr.query_one("#preset-plan")
        await wait_for(pilot, lambda: "2 epochs" in str(plan.render()), what="the plan for 2 epochs")
        await pilot.press("enter")  # one key launches the pair
        await wait_for(
            pilot,
            lambda: app.screen is app.runs_screen and len(app.runs_screen._ids) == 2,
            timeout=30,
            what="the two new runs in the Runs screen",
        )
        ids = sorted(app.runs_screen._ids)
        assert app.runs_screen.cursor_id() in ids

        def both_finished():
            for rid in ids:  # fail at once, with the log, on a state no healthy run gets to
                assert state_of(app, rid) not in ("failed", "lost", "stopped"), RunDir(store.runs_dir / rid).log_tail(
                    20
                )
            return all(state_of(app, rid) == "finished" for rid in ids)

        await wait_for(pilot, both_finished, timeout=300, what="both runs to finish")
        # Whatever the order the two runs finish in and whenever the screen polled: every change of
        # state the screen showed is one the state machine allows (a skipped state is fine: the
        # screen polls), and a run launched here and left alone only ever moves forward along
        # queued -> running -> finished (never back, never through failed / stopped / lost).
        forward = ["queued", "running", "finished"]
        assert sorted(shown) == ids, shown
        for rid in ids:
            seq = shown[rid]
            assert seq[-1] == "finished", (rid, seq)
            for a, b in zip([None, *seq], seq):
                assert b in reachable(a), f"{rid}: the screen showed {a} -> {b}: {seq}"
            assert set(seq) <= set(forward) and seq == sorted(seq, key=forward.index), (rid, seq)
        rds = [RunDir(store.runs_dir / rid) for rid in ids]
        assert sorted(rd.config_json()["method"]["name"] for rd in rds) == ["advlc", "pgd"]
        assert len({rd.config().run.group for rd in rds}) == 1  # side by side, one group
        rid = app.runs_screen.cursor_id()
        table = app.runs_screen.query_one("#runs-table")
        await wait_for(
            pilot,
            lambda: str(table.get_cell(rid, "epoch")).startswith("2/2"),
            timeout=10,
            what=f"2/2 in the epoch cell of {rid}",
        )
        rd = RunDir(store.runs_dir / rid)
        assert rd.config_json()["train"]["epochs"] == 2 and rd.config_json()["eval"]["n"] == 100
        assert [e["epoch"] for e in rd.epochs()] == [0, 1]
        # the detail screen of the finished run plots its two epochs
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: "acc" in getattr(app.screen, "plots", {}) and "robust" in app.screen.plots["acc"].series,
            timeout=10,
            what="the accuracy plot",
        )
        assert app.screen.plots["acc"].series["robust"].ys == pytest.approx(
            [100 * e["robust_acc"] for e in rd.epochs()]
        )


async def test_stop_asks_for_confirmation_then_stops_and_resume_restarts(long_run):
    from tui.screens.confirm import ConfirmScreen

    store, rd = long_run
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: state_of(app, rd.id) == "running", timeout=120, what="running")
        pid = rd.status().pid
        asked = []  # what the app asks the supervisor to do
        supervise = app.supervise
        app.supervise = lambda what, ids, **kw: (asked.append((what, list(ids))), supervise(what, ids, **kw))[1]
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # no: nothing happens
        await wait_for(pilot, lambda: app.screen is app.runs_screen, timeout=10, what="the question to close")
        await pilot.pause()  # the answer's callback (queued on the Runs screen) has run
        assert asked == [] and rd.status().state == "running" and psutil.pid_exists(pid)
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: asked, timeout=10, what="the app to ask for the stop")
        assert asked == [("stop", [rd.id])]
        await wait_for(pilot, lambda: state_of(app, rd.id) == "stopped", timeout=60, what="stopped")
        assert rd.status().state == "stopped"
        # the run writes `stopped` itself, then exits: the process is gone shortly after
        await wait_for(
            pilot,
            lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
            timeout=15,
            what=f"pid {pid} gone",
        )
        await pilot.press("r")  # resume
        await wait_for(pilot, lambda: state_of(app, rd.id) == "running", timeout=120, what="running again")
        assert rd.status().pid != pid


@pytest.mark.slow  # a real detached run
async def test_q_quits_the_app_and_leaves_runs_running(long_run):
    store, rd = long_run
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: state_of(app, rd.id) == "running", timeout=120, what="running")
        await pilot.press("q")
        assert app.return_code == 0  # the quit action ran
        t = time.monotonic()
        while app.is_running:  # (it has stopped already: the loop is a safety net)
            assert time.monotonic() - t < 30, "the app is still running 30 s after q"
            await asyncio.sleep(0.05)
    st = rd.status()
    assert st.state == "running"
    proc = psutil.Process(st.pid)
    assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    # it goes on: it records another epoch after the app is gone (waited for, not slept for)
    n = len(rd.epochs())
    helpers.wait_for(lambda: len(rd.epochs()) > n, timeout=120, what=f"epoch {n + 1} after the app quit")
    assert rd.status().state == "running" and rd.status().pid == st.pid and proc.is_running()
