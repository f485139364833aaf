"""Runs on this host: the lock of state changes made outside run processes, and starting a run's process.

Every state change that a launcher, the GPU scheduler, `stop` or `reconcile` makes happens
under one lock, `$ADVLC_HOME/supervisor.lock`, so two of them (the app and a CLI command, or
the scheduler) never start or stop the same run twice.
"""

from __future__ import annotations

import time

from filelock import FileLock

from engine.cores import usable_cores
from engine.errors import UserError
from engine.launch.processes import (
    HOST,
    child_env,
    create_time,
    is_alive,
    python_module,
    reap,
    spawn_detached,
)
from engine.store.index import Store
from engine.store.rundir import RunDir
from engine.store.states import transition

RUN_MODULE = "engine.run"
"""`python -m engine.run RUN_DIR`: the run process."""


def lock(store: Store) -> FileLock:
    """The supervisor lock: held for every state transition made outside the run process."""
    store.ensure()
    return FileLock(str(store.home / "supervisor.lock"), timeout=120, mode=0o600)


def running_cpu_runs(store: Store) -> int:
    """Runs of this store running on this host without a GPU (they share its cores)."""
    n = 0
    for doc in store.runs(state="running", archived=None):
        try:
            st = store.run_dir(doc["id"]).status()
        except (OSError, ValueError):
            continue
        n += st.get("host") == HOST and st.get("gpu") is None and is_alive(st)
    return n


def cpu_thread_budget(store: Store, starting: int) -> int | None:
    """CPU threads for each of `starting` CPU runs about to start: the cores divided among them and
    the CPU runs already running here (those keep theirs), at least 1; None (torch's default, as
    in the foreground) when a run has the machine to itself. Each process gets its share instead
    of every process taking every core: on 2 cores, 5 runs at torch's default ran at a load of
    8-11 and took ten times longer together than one after another."""
    sharing = starting + running_cpu_runs(store)
    return None if sharing <= 1 else max(1, usable_cores() // sharing)


def start_detached(store: Store, rd: RunDir, *, gpu: int | None = None, threads: int | None = None) -> int:
    """Start the run process of `rd` detached (`python -m engine.run RUN_DIR`); returns its pid at once.

    `gpu` sets CUDA_VISIBLE_DEVICES for the process (the run then sees one GPU, `cuda`). The
    caller decides whether the GPU is free (engine.launch.gpuqueue). `threads` is the run's CPU
    thread budget (its `train.threads`, when set, wins)."""
    reap()
    st = rd.status()
    if is_alive(st):
        raise UserError(f"run {rd.id} is already running (pid {st.get('pid')} on {st.get('host')})")
    now = time.time()
    transition(rd, "running", pid=None, pid_create_time=None, host=HOST, gpu=gpu, heartbeat=now, started=now,
               ended=None, error=None)
    rd.append_log(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} advlc: starting on {HOST}"
                  f"{'' if gpu is None else f' (CUDA_VISIBLE_DEVICES={gpu})'}"
                  f"{'' if not threads else f' with a budget of {threads} CPU thread(s)'}")
    try:
        p = spawn_detached(python_module(RUN_MODULE, str(rd.path)), log_path=rd.log_path,
                           env=child_env(store.home, gpu=gpu, threads=threads), cwd=rd.path)
    except OSError as exc:
        transition(rd, "failed", error=f"could not start the run process: {exc}")
        store.sync(rd)
        raise UserError(f"run {rd.id}: could not start the run process: {exc}") from exc
    if rd.status().get("pid") in (None, p.pid):   # the child writes the same pid itself once it runs
        rd.update_status(pid=p.pid, pid_create_time=create_time(p.pid))
    store.sync(rd)
    return p.pid
