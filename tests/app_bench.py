"""Benchmark of the app at scale: a synthetic store of many runs, and live writers.

    .venv/bin/python tests/app_bench.py [--runs 1000] [--epochs 200] [--writers 8] [--seconds 10] [--json]

A development tool, not shipped in the wheel (like tests/fabricate.py, which it uses).
`build_store(home, …)` (tests/fabricate.py) fabricates run directories exactly in the
on-disk format the training process writes, plus the index, without training anything. `measure_open(home)` starts the app headless
(Textual's `run_test`), and reports the time until the Runs table shows every run, the
cost of one store poll and of applying it, and the time to open a 200-epoch run's detail
screen until every visible plot is drawn. `measure_refresh(home, writers=8)` then starts `writers`
processes that behave like running runs (a new epoch record every `epoch_s`, status.json
batch progress every `status_s`, an index update per epoch through `Store.sync`) and
reports what each refresh costs the app and how late its event loop runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fabricate import build_store, synthetic_epoch

from engine.store.index import Store
from tui.app import make_app
from tui.screens.run_detail import RunDetailScreen
from tui.widgets.run_table import RunTable


# ---------------------------------------------------------------------------- writers
def _writer(home: str, rid: str, epoch_s: float, status_s: float, stop_at: float) -> None:
    """Behave like a running run: status.json every status_s, an epoch record + index sync every epoch_s."""
    store = Store(home)
    rd = store.run_dir(rid)
    table = rd.metrics_table("epochs")
    total = rd.config().value("train.epochs")
    rng = random.Random(rid)
    next_epoch = time.time() + epoch_s
    batch = 0
    while time.time() < stop_at:
        time.sleep(status_s)
        batch += 1
        rd.update_status(heartbeat=time.time(), batch=batch, batches=500)
        if time.time() >= next_epoch:
            n = len(table)
            if n < total:
                table.insert(synthetic_epoch(n, total, rng, advlc="advlc" in (rd.config().run.preset or "")))
            rd.update_status(heartbeat=time.time(), epoch=n + 1, batch=0, batches=500)
            store.sync(rd)
            batch = 0
            next_epoch += epoch_s


# ---------------------------------------------------------------------------- measurements
async def _measure_detail(app, pilot, store) -> dict:
    """Seconds to open a finished run's detail screen until every visible plot is drawn."""
    out = {}
    screen = app.runs_screen
    rid = next(r["id"] for r in screen.snapshot.rows if r.get("state") == "finished")
    epochs = len(store.run_dir(rid).epochs())
    t = time.perf_counter()
    app.open_run(rid)
    await pilot.pause(0)

    def drawn() -> bool:
        scr = app.screen
        if not isinstance(scr, RunDetailScreen) or "robust" not in scr.plots["acc"].series:
            return False
        return len(scr.plots["acc"].series["robust"].xs) == epochs and all(
            p.drawn for p in scr.plots.values() if p.region.height
        )

    while not drawn():
        if time.perf_counter() - t > 30:
            raise TimeoutError("detail plots did not fill")
        await pilot.pause(0.005)
    await pilot.pause(0)
    out["detail_open_s"] = time.perf_counter() - t
    out["detail_epochs"] = epochs
    await pilot.press("escape")
    await pilot.pause(0.05)
    return out


async def _measure_writers(
    app, pilot, home: Path, writers: int, seconds: float, epoch_s: float, status_s: float
) -> dict:
    """What each refresh costs while `writers` processes behave like running runs, and key latency."""
    screen = app.runs_screen
    running = [r["id"] for r in screen.snapshot.rows if r.get("state") == "running"][:writers]
    stop_at = time.time() + seconds
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--writer", str(home), rid, str(epoch_s), str(status_s), str(stop_at)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        for rid in running
    ]
    applies: list[float] = []
    reads: list[float] = []
    apply_cpu: list[float] = []
    read_cpu: list[float] = []
    cpu0 = time.process_time()
    lags: list[float] = []
    keys: list[float] = []
    last_version = screen.snapshot.version
    tick = 0.05
    t_prev = time.perf_counter()
    t_end = time.perf_counter() + seconds
    presses = 0
    while time.perf_counter() < t_end:
        await asyncio.sleep(tick)
        now = time.perf_counter()
        lags.append(max(0.0, now - t_prev - tick))
        t_prev = now
        if screen.snapshot.version != last_version:
            last_version = screen.snapshot.version
            applies.append(screen.last_apply_s)
            reads.append(screen.snapshot.read_s)
            apply_cpu.append(screen.last_apply_cpu_s)
            read_cpu.append(screen.snapshot.read_cpu_s)
        presses += 1
        if presses % 10 == 0:  # a key press every ~0.5 s: time until the cursor moved
            table = screen.query_one("#runs-table", RunTable)
            before = table.cursor_row
            k0 = time.perf_counter()
            await pilot.press("down" if before < table.row_count - 1 else "up")
            while table.cursor_row == before and time.perf_counter() - k0 < 5:
                await asyncio.sleep(0.001)
            keys.append(time.perf_counter() - k0)
            t_prev = time.perf_counter()
    app_cpu = time.process_time() - cpu0
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
    return {
        "writers": len(procs),
        "seconds": seconds,
        "epoch_s": epoch_s,
        "status_s": status_s,
        "refreshes": len(applies),
        "refresh_read_mean_s": statistics.fmean(reads) if reads else None,
        "refresh_read_max_s": max(reads) if reads else None,
        "refresh_read_cpu_mean_s": statistics.fmean(read_cpu) if read_cpu else None,
        "refresh_apply_cpu_mean_s": statistics.fmean(apply_cpu) if apply_cpu else None,
        "app_cpu_share": app_cpu / seconds,
        "refresh_apply_mean_s": statistics.fmean(applies) if applies else None,
        "refresh_apply_max_s": max(applies) if applies else None,
        "loop_lag_p50_s": statistics.median(lags) if lags else None,
        "loop_lag_max_s": max(lags) if lags else None,
        "key_latency_mean_s": statistics.fmean(keys) if keys else None,
        "key_latency_max_s": max(keys) if keys else None,
    }


async def _open(
    home: Path,
    size=(120, 40),
    detail: bool = True,
    writers: int = 0,
    seconds: float = 0.0,
    epoch_s: float = 1.0,
    status_s: float = 0.25,
) -> dict:
    store = Store(home)
    n = len(store.index())
    out: dict = {"runs": n}
    t0, cpu_start = time.perf_counter(), time.process_time()
    app = make_app(home)
    async with app.run_test(size=size) as pilot:
        screen = app.runs_screen
        while True:
            try:
                table = screen.query_one("#runs-table", RunTable)
            except Exception:
                table = None
            if table is not None and table.row_count == n and n:
                break
            if time.perf_counter() - t0 > 60:
                raise TimeoutError("runs table did not fill within 60 s")
            await pilot.pause(0.005)
        await pilot.pause(0)  # let the first frame be drawn
        out["open_s"] = time.perf_counter() - t0
        out["first_apply_s"] = screen.last_apply_s
        out["first_read_s"] = screen.snapshot.read_s
        out["first_apply_cpu_s"] = screen.last_apply_cpu_s
        out["first_read_cpu_s"] = screen.snapshot.read_cpu_s
        out["open_cpu_s"] = time.process_time() - cpu_start

        # a forced poll of an unchanged store: only stats (the index is not re-parsed)
        t = time.perf_counter()
        app.reader.poll()
        out["idle_poll_s"] = time.perf_counter() - t

        if detail:
            out.update(await _measure_detail(app, pilot, store))
        if writers:
            out.update(await _measure_writers(app, pilot, home, writers, seconds, epoch_s, status_s))
        await pilot.press("q")
    return out


def measure_open(home: Path, *, size=(120, 40), detail: bool = True) -> dict:
    """Time to first render of the Runs screen (every run listed), poll/apply costs, detail open time."""
    return asyncio.run(_open(Path(home), size=size, detail=detail))


def measure_refresh(
    home: Path, *, writers: int = 8, seconds: float = 10.0, epoch_s: float = 1.0, status_s: float = 0.25, size=(120, 40)
) -> dict:
    """Open the app, then let `writers` fake runs write for `seconds`; costs of the live refresh."""
    return asyncio.run(
        _open(Path(home), size=size, detail=False, writers=writers, seconds=seconds, epoch_s=epoch_s, status_s=status_s)
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--writer":  # a fake running run (started by measure_refresh)
        home, rid, epoch_s, status_s, stop_at = argv[1:6]
        _writer(home, rid, float(epoch_s), float(status_s), float(stop_at))
        return 0
    ap = argparse.ArgumentParser(prog="python tests/app_bench.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--home", type=Path, default=None, help="Where to build the store (default: a temp folder).")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        home = a.home or Path(tmp) / "home"
        t = time.perf_counter()
        build_store(home, n_runs=a.runs, n_epochs=a.epochs, n_running=a.writers)
        built = time.perf_counter() - t
        size = sum(f.stat().st_size for f in home.rglob("*") if f.is_file())
        res = {
            "build_s": built,
            "store_mb": size / 1e6,
            "index_kb": (home / "index.json").stat().st_size / 1e3,
            "cpus": os.cpu_count(),
        }
        res["open"] = measure_open(home)
        res["refresh"] = measure_refresh(home, writers=a.writers, seconds=a.seconds)
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        for k, v in res.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
