"""Helpers shared by the tests."""

from __future__ import annotations

import contextlib
import io
import time


def force_status(rd, **fields) -> dict:
    """Merge `fields` (state included) into a run's status.json as a crash, a file edited by
    hand or another host could leave it: the transition rules are bypassed on purpose."""
    return rd._merge_status(fields)


def wait_for(pred, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):
    """Poll `pred` until it returns something true (returned), or fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def cli(*args, code=None) -> tuple[int, str, str]:
    """`advlc ARGS` in this process: (exit code, stdout, stderr); with `code`, assert the exit code."""
    from tui.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            rc = 0
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
    if code is not None:
        assert rc == code, (rc, out.getvalue()[-2000:], err.getvalue()[-2000:])
    return rc, out.getvalue(), err.getvalue()


def one_line(err: str) -> str:
    """The error output must be exactly one line starting `advlc:`, with no traceback (besides
    `advlc: warning:` lines, e.g. a config caveat said before the launch)."""
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("advlc: warning: ")]  # caveats
    assert len(lines) == 1, err
    assert lines[0].startswith("advlc: ") and "Traceback" not in err and "^^^" not in err, err
    return lines[0]


TIMING_KEYS = ("time_s", "eval_time_s", "images_per_s")
"""The keys of an epoch record that measure time: they differ between two identical runs."""


def without_timing(recs) -> list[dict]:
    """Epoch records without their timings: what must be equal between two identical runs."""
    return [{k: v for k, v in dict(r).items() if k not in TIMING_KEYS} for r in recs]


def train_one(home, preset: str, overrides: list[str], *, log_file: bool = True):
    """One run of `preset` created in the store at `home` and trained to the end in this process,
    as the run process does it: (store, run dir). `log_file=False` trains as `advlc run` in the
    foreground does (no log.txt)."""
    from engine.launch.plan import plan_runs
    from engine.launch.supervisor import create_runs
    from engine.run.process import run
    from engine.store.index import Store

    store = Store(home).ensure()
    [rd] = create_runs(store, plan_runs(preset, list(overrides)))
    assert run(rd, store, log=rd.append_log if log_file else (lambda line: None)) == "finished"
    return store, rd


async def pilot_wait(pilot, cond, timeout: float = 20.0, step: float = 0.05, what: str = "") -> None:
    """Let a Textual app run (Pilot.pause) until `cond()` holds, or fail after `timeout` seconds:
    the app's tests wait for a condition, never for a fixed time."""
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}")
        await pilot.pause(step)
