"""Processes on this host: is a pid alive (and still the same process), start one detached, reap it.

A run's liveness (`is_alive`): on this host the pid and its create time (psutil; a recycled
pid does not count), elsewhere (a Slurm node) the heartbeat the run process writes every few
seconds, which goes stale after `stale_after(status)` seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from engine.paths import CODE_ROOT, THREADS_ENV

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


def stale_after(status: dict) -> float:
    """Seconds without a heartbeat after which a run on another host counts as gone."""
    interval = status.get("heartbeat_s") or 5.0
    return max(STALE_FACTOR * float(interval), STALE_MIN_S)


def is_alive(status: dict, *, now: float | None = None) -> bool:
    """Is the process of a `running` run alive? (False for every other state.)"""
    if status.get("state") != "running":
        return False
    pid, host = status.get("pid"), status.get("host")
    if pid and host in (None, HOST):
        return process_matches(pid, status.get("pid_create_time"))
    hb = status.get("heartbeat")
    if hb is None:
        return False
    return (time.time() if now is None else now) - float(hb) < stale_after(status)


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
