"""Processes on this host: is a pid alive (and still the same process), start one detached, reap it;
a run's process started here (`start_detached`, for the local executors), and the supervisor lock.

A run's liveness (`is_alive`) is the same for every executor, as every run process writes its
pid, host and heartbeat: on this host the pid and its create time (psutil; a recycled pid does
not count), elsewhere (a Slurm node) the heartbeat, which goes stale after `stale_after(status)`
seconds.

Every state change that a launcher, the GPU scheduler, `stop` or `reconcile` makes happens
under one lock, `$ADVLC_HOME/supervisor.lock`, so two of them (the app and a CLI command, or
the scheduler) never start or stop the same run twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
from filelock import FileLock

from engine.errors import UserError
from engine.paths import CODE_ROOT, THREADS_ENV
from engine.store.index import Store
from engine.store.records import Status
from engine.store.rundir import RunDir
from engine.store.states import transition

HOST = os.uname().nodename
STALE_FACTOR = 6
"""A heartbeat is stale after this many heartbeat intervals ..."""
STALE_MIN_S = 30.0
"""... and never sooner than this (only where the pid cannot be checked)."""

_CHILDREN: list[subprocess.Popen] = []
"""Detached children of this process, reaped so none stays a zombie."""


def create_time(pid: int) -> float | None:
    """The create time of process `pid`, or None when there is none."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError, TypeError):
        return None


def process_matches(pid: int | None, created: float | None) -> bool:
    """Is `pid` a live (not zombie) process on this host, started at `created`?"""
    if not pid:
        return False
    try:
        p = psutil.Process(int(pid))
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        if created is not None and abs(p.create_time() - float(created)) > 1.0:
            return False            # the pid was recycled by another process
        return True
    except (psutil.Error, ValueError, TypeError):
        return False


def here(host: str | None) -> bool:
    """Is `host` (a status's or a launch record's; None: not recorded) this host?"""
    return host in (None, HOST)


def stale_after(status: Status) -> float:
    """Seconds without a heartbeat after which a run on another host counts as gone."""
    return max(STALE_FACTOR * float(status.heartbeat_s or 5.0), STALE_MIN_S)


def is_alive(status: Status, *, now: float | None = None) -> bool:
    """Is the process of a `running` run alive? (False for every other state.)"""
    if status.state != "running":
        return False
    if status.pid and here(status.host):
        return process_matches(status.pid, status.pid_create_time)
    if status.heartbeat is None:
        return False
    return (time.time() if now is None else now) - status.heartbeat < stale_after(status)


def reap() -> None:
    """Collect the exit codes of finished detached children, so none stays a zombie."""
    for p in list(_CHILDREN):
        if p.poll() is not None:
            _CHILDREN.remove(p)


def child_env(home: Path, *, gpu: int | None = None, threads: int | None = None) -> dict:
    """The environment of an advlc child process: this code first on PYTHONPATH, the store, the GPU,
    its CPU thread budget (ADVLC_THREADS, and OMP/MKL so their pools start at that size)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["ADVLC_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(CODE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if threads:
        for var in (THREADS_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    return env


def spawn_detached(argv: list[str], *, log_path: Path, env: dict, cwd: Path | None = None) -> subprocess.Popen:
    """Start `argv` in its own session (it survives the terminal), output appended to `log_path` (0600)."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "ab") as log:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, close_fds=True, env=env,
                             cwd=str(cwd) if cwd else None)
    _CHILDREN.append(p)
    return p


def python_module(module: str, *args: str) -> list[str]:
    """The argv that runs `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]


# ------------------------------------------------------------------------------ runs started here
RUN_MODULE = "engine.run"
"""`python -m engine.run RUN_DIR`: the run process."""


def lock(store: Store) -> FileLock:
    """The supervisor lock: held for every state transition made outside the run process."""
    store.ensure()
    return FileLock(str(store.home / "supervisor.lock"), timeout=120, mode=0o600)


def start_detached(store: Store, rd: RunDir, *, gpu: int | None = None, threads: int | None = None) -> int:
    """Start the run process of `rd` detached (`python -m engine.run RUN_DIR`); returns its pid at once.

    `gpu` sets CUDA_VISIBLE_DEVICES for the process (the run then sees one GPU, `cuda`). The
    caller decides whether the GPU is free (engine.launch.executors.gpuqueue). `threads` is the
    run's CPU thread budget (its `train.threads`, when set, wins)."""
    reap()
    st = rd.status()
    if is_alive(st):
        raise UserError(f"run {rd.id} is already running (pid {st.pid} on {st.host})")
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
    if rd.status().pid in (None, p.pid):   # the child writes the same pid itself once it runs
        rd.update_status(pid=p.pid, pid_create_time=create_time(p.pid))
    store.sync(rd)
    return p.pid
