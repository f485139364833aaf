"""Processes on this host: is a pid alive (and still the same process), start one detached, reap it;
a run's process started here (`start_detached`, for the local executors), and the supervisor lock.

A run's liveness (`is_alive`) is the same for every executor, as every run process writes its
pid, host and heartbeat: on this host the pid and its create time (psutil; a recycled pid does
not count), elsewhere (a Slurm node) the heartbeat, which goes stale after `stale_after(status)`
seconds.

Every state change that a launcher, the GPU scheduler, `stop` or `reconcile` makes happens
under one lock, `$ADVLC_HOME/supervisor.lock`, so two of them (the app and a CLI command, or
the scheduler) never start or stop the same run twice.

Signals go only to our own processes (`owned`): a pid is signalled only when the host, the pid
and its start time all match what the store recorded, and the process runs a command advlc
starts for that very run (`python -m engine.run RUN_DIR`, or a submitit process of the run's
`submitit/` folder); never pid 1, this process or its parents. A status.json edited by hand or
brought from elsewhere cannot make `stop` signal anything else.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from filelock import FileLock

from engine.cores import create_time
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


def process_matches(pid: int | None, created: float | None) -> bool:
    """Is `pid` a live (not zombie) process on this host, started at `created`?"""
    if not pid:
        return False
    try:
        p = psutil.Process(int(pid))
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        if created is not None and abs(p.create_time() - float(created)) > 1.0:
            return False  # the pid was recycled by another process
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
    env["PYTHONPATH"] = os.pathsep.join(
        [str(CODE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
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
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd=str(cwd) if cwd else None,
        )
    _CHILDREN.append(p)
    return p


def python_module(module: str, *args: str) -> list[str]:
    """The argv that runs `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]


# ------------------------------------------------------------------------------ runs started here
RUN_MODULE = "engine.run"
"""`python -m engine.run RUN_DIR`: the run process."""

Command = tuple[str, Path]
"""`python -m MODULE PATH`, as (MODULE, PATH): what a process advlc started for a run runs."""


@dataclass
class Verdict:
    """What a recorded (pid, start time, host) is: `ours` (the process, to signal), `gone`
    (nothing runs under it any more), or `foreign` (something else runs there: `why`)."""

    kind: str
    process: psutil.Process | None = None
    why: str = ""


def _runs_command(argv: list[str], commands: list[Command], cwd: str | None) -> bool:
    """Does `argv` run one of `commands`: `PYTHON [-flags] -m MODULE PATH` with PATH this very
    folder, or a shell (`sh -c "SETUP && PYTHON -m MODULE PATH"`, submitit's local controller with
    setup lines) whose last command is that?"""
    if len(argv) == 3 and Path(argv[0]).name in ("sh", "bash", "dash") and argv[1] == "-c":
        try:
            argv = shlex.split(argv[2].rsplit("&&", 1)[-1])
        except ValueError:
            return False
    if not argv or "-m" not in argv or not Path(argv[0]).name.startswith("python"):
        return False
    i = argv.index("-m")
    if any(not a.startswith("-") for a in argv[1:i]) or len(argv) != i + 3:
        return False
    module, path = argv[i + 1], argv[i + 2]
    where = os.path.realpath(os.path.join(cwd, path) if cwd and not os.path.isabs(path) else path)
    return any(module == m and where == os.path.realpath(p) for m, p in commands)


def _mine() -> set[int]:
    """This process and its parents: never signalled, whatever a file says."""
    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents())}


def owned(pid: int | None, created: float | None, host: str | None, commands: list[Command]) -> Verdict:
    """Is the process a store recorded (`pid`, its start time `created`, `host`) one advlc started
    for a run, i.e. one running one of `commands`? Only a `Verdict("ours")` may be signalled."""
    if not pid:
        return Verdict("gone")
    where = f"pid {pid} on {host or 'an unrecorded host'}"
    if host != HOST:
        return Verdict("foreign", why=f"{where} is not on this host ({HOST})")
    if pid <= 1 or pid in _mine():
        return Verdict("foreign", why=f"{where} is {'init' if pid <= 1 else 'this advlc process or its parent'}")
    try:
        p = psutil.Process(int(pid))
        if p.status() == psutil.STATUS_ZOMBIE:
            return Verdict("gone")
        if created is None:
            return Verdict(
                "foreign", why=f"{where}: its start time is not recorded, so it cannot be told from another process"
            )
        if abs(p.create_time() - float(created)) > 1.0:
            return Verdict("gone")  # the pid was recycled: the recorded process is gone
        started = next((c for c in _CHILDREN if c.pid == p.pid), None)
        if started is not None and _runs_command([str(a) for a in started.args], commands, None):
            return Verdict("ours", p)  # started by this process (it may not have exec'd yet)
        if _runs_command(p.cmdline(), commands, p.cwd()):
            return Verdict("ours", p)
        return Verdict("foreign", why=f"{where} runs {p.name()!r}, not this run's command")
    except psutil.NoSuchProcess:
        return Verdict("gone")
    except (psutil.Error, ValueError, TypeError, OSError) as exc:
        return Verdict("foreign", why=f"{where} cannot be inspected ({type(exc).__name__})")


def own_session(p: psutil.Process) -> bool:
    """Is `p` the leader of a session and process group of its own (`start_new_session`), not
    this process's: then the whole group is the run's and may be signalled."""
    try:
        return os.getsid(p.pid) == p.pid == os.getpgid(p.pid) and p.pid != os.getpgrp() and p.pid != os.getsid(0)
    except OSError:
        return False


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
    transition(
        rd,
        "running",
        pid=None,
        pid_create_time=None,
        host=HOST,
        gpu=gpu,
        heartbeat=now,
        started=now,
        ended=None,
        error=None,
    )
    rd.append_log(
        f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} advlc: starting on {HOST}"
        f"{'' if gpu is None else f' (CUDA_VISIBLE_DEVICES={gpu})'}"
        f"{'' if not threads else f' with a budget of {threads} CPU thread(s)'}"
    )
    try:
        p = spawn_detached(
            python_module(RUN_MODULE, str(rd.path)),
            log_path=rd.log_path,
            env=child_env(store.home, gpu=gpu, threads=threads),
            cwd=rd.path,
        )
    except OSError as exc:
        transition(rd, "failed", error=f"could not start the run process: {exc}")
        store.sync(rd)
        raise UserError(f"run {rd.id}: could not start the run process: {exc}") from exc
    if rd.status().pid in (None, p.pid):  # the child writes the same pid itself once it runs
        rd.update_status(pid=p.pid, pid_create_time=create_time(p.pid))
    store.sync(rd)
    return p.pid
