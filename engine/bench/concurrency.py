"""`advlc bench concurrency`: CPU runs started together, with and without a thread budget.

Each detached CPU run used to take torch's default thread count (every core), so N runs on a
small machine ran N x cores threads and thrashed. The launcher now gives each run a budget
(cores divided among the CPU runs running together, engine.launch.executors.local.cpu_thread_budget).
This benchmark measures what that buys, from one orchestrating process, on the same planned
runs (a preset, e.g. the robust-overfitting pair), in a temporary store:

- `sequential`: one run after another, each with every core;
- `budget`: all started together, each with cores // N threads;
- `default`: all started together at torch's default thread count (the old behaviour).

Each schedule's wall time runs from the first start to the last run's end; ratios compare
schedules of this one measurement. The runs are real `python -m engine.run` processes with the
environment a launcher gives them (ADVLC_HOME, ADVLC_THREADS, OMP/MKL threads). Schedules run
once each, in the order above; a machine that is busy with other work skews them.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from engine.bench.common import Progress, say
from engine.config.presets import preset_runs
from engine.config.schema import label
from engine.cores import usable_cores
from engine.errors import UserError
from engine.paths import CODE_ROOT, THREADS_ENV
from engine.run import provenance
from engine.store.index import Store
from engine.store.rundir import RunDir

__all__ = ["bench_concurrency", "SCHEDULES"]

SCHEDULES = ("sequential", "budget", "default")


def _env(home: Path, threads: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (THREADS_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(
        ADVLC_HOME=str(home),
        PYTHONUNBUFFERED="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join([str(CODE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]),
    )
    if threads:
        env.update({THREADS_ENV: str(threads), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return env


def _start(store: Store, rd: RunDir, threads: int | None) -> subprocess.Popen:
    log = open(rd.log_path, "ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.run", str(rd.path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(store.home, threads),
            cwd=rd.path,
        )
    finally:
        log.close()


def _wait(procs: list[subprocess.Popen], rds: list[RunDir]) -> None:
    for p in procs:
        p.wait()
    ended = [(rd.id, rd.status()) for rd in rds]
    bad = [(rid, st.state, st.error) for rid, st in ended if st.state != "finished"]
    if bad:
        rid, state, err = bad[0]
        raise UserError(f"bench --concurrency: run {rid} ended {state}: {(str(err or '').splitlines() or [''])[-1]}")


def _create(store: Store, planned) -> list[RunDir]:
    out = []
    for p in planned:
        config = p.cfg.to_dict()
        config["run"] = {
            "preset": p.preset,
            "label": label(p.cfg),
            "seed": p.seed,
            "point": p.point,
            "created": time.time(),
        }
        out.append(store.create_run(config))
    return out


def _epoch_s(rds: list[RunDir]) -> float:
    """Mean seconds per epoch the runs recorded themselves (training + evaluation)."""
    times = [e.get("time_s") or 0.0 for rd in rds for e in rd.metrics().get("epochs", [])]
    return sum(times) / len(times) if times else float("nan")


def bench_concurrency(
    preset: str = "quick/robust-overfitting",
    overrides: list[str] | None = None,
    *,
    schedules: tuple[str, ...] = SCHEDULES,
    progress: Progress = None,
) -> dict:
    """Wall time of the preset's runs under each schedule (see the module docstring)."""
    unknown = [s for s in schedules if s not in SCHEDULES]
    if unknown:
        raise UserError(f"bench --concurrency: schedule {unknown[0]!r}: must be one of {', '.join(SCHEDULES)}")
    overrides = list(overrides or []) + ["train.device=cpu"]
    planned = preset_runs(preset, overrides)
    if len(planned) < 2:
        raise UserError(
            f"bench --concurrency: preset {preset} plans {len(planned)} run; give one that plans "
            "several (a sweep, or --seeds)"
        )
    n, cores = len(planned), usable_cores()
    code = provenance.code_version()
    res: dict = {
        "preset": preset,
        "overrides": overrides,
        "runs": n,
        "cores": cores,
        "budget_threads": max(1, cores // n),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "device_name": f"cpu ({platform.processor() or platform.machine()}, {cores} usable cores)",
        "torch": torch.__version__,
        "commit": code["commit"],
        "dirty": code["dirty"],
        "schedules": {},
    }
    with tempfile.TemporaryDirectory(prefix="advlc-bench-") as tmp:
        store = Store(Path(tmp)).ensure()
        for sched in schedules:
            rds = _create(store, planned)
            say(progress, f"{sched}: {n} run(s) of {preset}")
            t0 = time.perf_counter()
            if sched == "sequential":
                for rd in rds:
                    _wait([_start(store, rd, cores)], [rd])
            else:
                threads = res["budget_threads"] if sched == "budget" else None
                _wait([_start(store, rd, threads) for rd in rds], rds)
            wall = time.perf_counter() - t0
            res["schedules"][sched] = {
                "wall_s": wall,
                "epoch_s": _epoch_s(rds),
                "threads": cores
                if sched == "sequential"
                else (res["budget_threads"] if sched == "budget" else "torch default"),
            }
            say(progress, f"{sched}: {wall:.1f} s")
    s = res["schedules"]
    res["budget_vs_sequential"] = (
        s["budget"]["wall_s"] / s["sequential"]["wall_s"] if "budget" in s and "sequential" in s else None
    )
    res["default_vs_budget"] = (
        s["default"]["wall_s"] / s["budget"]["wall_s"] if "default" in s and "budget" in s else None
    )
    return res
