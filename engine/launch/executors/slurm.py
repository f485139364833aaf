"""The Slurm executor: runs on a Slurm cluster through submitit, one job per run, the run
directory on the shared filesystem, monitored like any other run (heartbeat in status.json).

    launch(store, planned, executor="slurm", slurm_params={"partition": "gpu", "time": "12:00:00",
                                                           "gpus": 1, "account": "proj"})

Parameters come from the preset's `[slurm]` table, overridden by the command line:

    partition   str     --partition     sbatch --partition (default: the cluster's default partition)
    time        str|int --time          wall-clock limit, read as Slurm reads --time: minutes ("90"), minutes:seconds
                                        ("1:30" is 1 min 30 s, rounded up to 2 min), hours:minutes:seconds,
                                        days-hours ("2-12"), days-hours:minutes, days-hours:minutes:seconds;
                                        default: the partition's limit (sinfo), DEFAULT_TIME_MIN when it has none
    gpus        int     --slurm-gpus    GPUs per node for a CUDA run (default 1); see `gpus_for`
    account     str     --account       sbatch --account
    cpus        int                     cpus per task
    mem_gb      float                   memory per node, GB
    qos, constraint str                 sbatch --qos / --constraint
    setup       [str]                   shell lines run before the job (e.g. "module load cuda")
    additional  {str: any}              any other sbatch option, e.g. {exclude = "node[1-3]"}
    max_requeue int                     requeues after timeout/preemption (default 3)
    cluster     str                     "slurm" (default) or "local" (submitit's LocalExecutor: tests, debugging)

The GPU request follows the run's device (`gpus_for`): `cpu` asks for none, `cuda`/`cuda:N`
for `gpus` (default 1), `auto` for `gpus` when given, else 1 when the partition's nodes have
GPUs (sinfo's GRES) and none when they do not. No `--gpus-per-node` line is written when no
GPU is wanted (CPU-only clusters reject any GPU request).

The job calls `SlurmTrain()(run_dir)`, which is `engine.run.process.main([run_dir])` with its
output appended to the run's log.txt, after a `--- … advlc: starting on NODE (Slurm job N)`
line; submitit's own messages go to its files in `<run>/submitit/`. It has submitit's
`checkpoint` method: on a timeout or preemption signal submitit requeues the job, the run
shows `queued` meanwhile, and the requeued job continues from last.pt.

Job states come from `squeue -t all` (clusters without accounting have no `sacct`), and
`sacct` for jobs squeue no longer knows; a job Slurm no longer knows at all has ended
(`MinJobAge` after its end, 5 min by default, it is purged).

submitit is imported where it is used: only Slurm runs need it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from engine.config.presets import PlannedRun, read_preset
from engine.errors import CorruptFile, UserError
from engine.launch.executors.base import Executor
from engine.launch.processes import HOST, Command, create_time, here, lock, process_matches
from engine.store.index import Store
from engine.store.records import SlurmLaunch, Status
from engine.store.rundir import RunDir
from engine.store.states import transition

KEYS = {
    "partition",
    "time",
    "gpus",
    "account",
    "cpus",
    "mem_gb",
    "qos",
    "constraint",
    "setup",
    "additional",
    "max_requeue",
    "cluster",
    "signal_delay_s",
}
ENDED = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
    "REVOKED",
    "SPECIAL_EXIT",
}
PURGED = "PURGED"
"""The state given to a job Slurm no longer knows (squeue: "Invalid job id"): it has ended."""
LOCAL_DEFAULT_MIN = 7 * 24 * 60  # submitit's LocalExecutor would stop a job after 2 min otherwise
DEFAULT_TIME_MIN = 24 * 60
"""The time limit asked for when none is given and the partition has none (or sinfo cannot say).
A run that reaches it is requeued by submitit and continues from last.pt (up to max_requeue times)."""
JOB_MODULE = "submitit.core._submit"
"""What submitit runs for a job (`python -u -m submitit.core._submit FOLDER`): the run's process on the node."""
CONTROLLER_MODULE = "submitit.local._local"
"""submitit's LocalExecutor's job controller (`python -m submitit.local._local FOLDER`)."""
CLIENT_TIMEOUT_S = 20.0
"""sinfo/squeue/sacct: a controller that does not answer makes them fail after ~10 s."""


SLURM_TIME_FORMATS = (
    "minutes",
    "minutes:seconds",
    "hours:minutes:seconds",
    "days-hours",
    "days-hours:minutes",
    "days-hours:minutes:seconds",
)
"""What Slurm's --time reads (sbatch(1)); seconds are rounded up to the next minute."""
_SLURM_TIME = re.compile(
    r"(?:(\d{1,9})-(\d{1,9})(?::(\d{1,9}))?(?::(\d{1,9}))?|(\d{1,9})(?::(\d{1,9}))?(?::(\d{1,9}))?)"
)
NO_LIMIT = {"0", "-1", "infinite", "unlimited"}
"""What Slurm reads as no time limit at all."""
MAX_TIME_S = 2**31 - 1
"""Slurm keeps a time limit in a C int of seconds."""


def slurm_seconds(text: str) -> int | None:
    """A duration written as Slurm reads and prints one -> seconds, exactly as Slurm's
    time_str2secs: "90" minutes, "1:30" minutes:seconds, "1:30:00" hours:minutes:seconds,
    "2-12" days-hours, "2-12:30" days-hours:minutes, "2-12:30:15" days-hours:minutes:seconds
    (fields are not bounded: "1:90" is 150 s). None for anything else."""
    m = _SLURM_TIME.fullmatch((text or "").strip())
    if not m:
        return None
    d, dh, dm, ds, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if d is not None:  # days-hours[:minutes[:seconds]]
        return d * 86400 + dh * 3600 + (dm or 0) * 60 + (ds or 0)
    if c is not None:  # hours:minutes:seconds
        return a * 3600 + b * 60 + c
    return a * 60 + (b or 0)  # minutes[:seconds]


def parse_time(value) -> int:
    """A Slurm time limit -> whole minutes, read as Slurm reads `--time` (`slurm_seconds`, the
    seconds rounded up to the next minute): 90 and "90" are 90 min, "1:30" 2 min (1 min 30 s),
    "1:30:00" 90 min, "2-12" 3600 min. A number (a preset's `time = 90`) is minutes. No limit
    ("0", "unlimited", ...) is refused: leave the time out to get the partition's limit."""
    formats = ", ".join(SLURM_TIME_FORMATS)
    if isinstance(value, bool):
        raise UserError(f"slurm time = {value!r}: give a time as Slurm reads it ({formats})")
    if isinstance(value, (int, float)):
        if not value > 0 or value * 60 > MAX_TIME_S:
            raise UserError(
                f"slurm time = {value!r}: must be a number of minutes above 0 and at most {MAX_TIME_S // 60}"
            )
        return max(1, int(round(value)))
    s = str(value).strip()
    if s.lower() in NO_LIMIT:
        raise UserError(
            f"slurm time = {value!r}: Slurm reads it as no time limit; leave the time out to get the "
            f"partition's limit, or give one ({formats})"
        )
    secs = slurm_seconds(s)
    if secs is None:
        raise UserError(
            f"slurm time = {str(value)[:40]!r}: not a time as Slurm reads it ({formats}; e.g. 90, 1:30:00, 2-12)"
        )
    if secs <= 0:
        raise UserError(f"slurm time = {value!r}: must be above 0 (Slurm reads a zero time as no limit)")
    if secs > MAX_TIME_S:
        raise UserError(f"slurm time = {value!r}: is longer than Slurm can hold ({MAX_TIME_S // 86400} days)")
    return -(-secs // 60)


def slurm_duration_min(text: str) -> int | None:
    """A duration as Slurm prints it (sinfo %l, squeue %l) -> whole minutes (seconds rounded up);
    None for "infinite", "UNLIMITED", "n/a", zero or anything else."""
    secs = slurm_seconds(text)
    return -(-secs // 60) if secs else None


@contextlib.contextmanager
def user_only():
    """The process's umask made user-only (077) while submitit submits: the files it writes in
    <run>/submitit/ (the pickled job, its result, its stdout and stderr) and those of the
    processes it starts there (the local cluster's controller and job, sbatch, whose umask Slurm
    gives the job) are 0600, folders 0700, as everything else advlc writes. The umask is the
    process's, not the thread's: meanwhile other threads' new files are at most more private."""
    old = os.umask(0o077)
    os.umask(old | 0o077)
    try:
        yield
    finally:
        os.umask(old)


def _client(argv: list[str]) -> subprocess.CompletedProcess | None:
    """Run a Slurm client command; None when it is missing or hangs."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _one_line(text: str, n: int = 3, width: int = 200, skip=()) -> str:
    """The last `n` distinct non-empty lines of `text` (each cut to `width`), joined with ' | '."""
    lines: list[str] = []
    for line in reversed(str(text).splitlines()):
        line = " ".join(line.split())
        if not line or line in lines or any(line.startswith(s) for s in skip):
            continue
        lines.append(line[:width] + ("…" if len(line) > width else ""))
        if len(lines) == n:
            break
    return " | ".join(reversed(lines))


_PARTITIONS: tuple[float, dict | None] = (0.0, None)


def partitions() -> dict | None:
    """{partition: {"limit": sinfo's %l, "gres": set of GRES, "default": bool}} from one
    `sinfo -a` call (cached 30 s); None when sinfo is missing or fails."""
    global _PARTITIONS
    at, cached = _PARTITIONS
    if cached is not None and time.monotonic() - at < 30:
        return cached
    p = _client(["sinfo", "-a", "-h", "-o", "%P|%l|%G"])
    if p is None or p.returncode != 0:
        return None
    out: dict = {}
    for line in p.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3 or not parts[0]:
            continue
        name, limit, gres = parts
        default = name.endswith("*")
        entry = out.setdefault(name.rstrip("*"), {"limit": limit, "gres": set(), "default": False})
        entry["default"] |= default
        entry["gres"] |= {g for g in gres.split(",") if g and g != "(null)"}
    _PARTITIONS = (time.monotonic(), out)
    return out


def gpus_for(params: dict, device: str | None, partition_gres: set | None) -> tuple[int, str]:
    """(GPUs per node to ask for, why) for a run whose train.device is `device`:
    cpu -> 0; cuda / cuda:N -> `gpus` (default 1); auto -> `gpus` when given, else 1 when
    the partition's nodes have GPUs (`partition_gres`, from sinfo) and 0 when they do not
    (or sinfo cannot say)."""
    dev = str(device or "auto")
    given = params.get("gpus")
    if dev == "cpu":
        return 0, "device cpu"
    if dev.startswith("cuda"):
        return (1, f"device {dev}") if given is None else (int(given), "slurm gpus")
    if given is not None:
        return int(given), "slurm gpus"
    if partition_gres and any(g.split(":")[0] == "gpu" for g in partition_gres):
        return 1, "device auto, the partition has GPUs"
    return 0, "device auto, the partition has no GPUs"


def resolve(params: dict, device: str | None = None) -> tuple[dict, dict]:
    """The parameters as submitted for a run on `device`: the partition's time limit when no
    time is given, the GPU count from the device (`gpus_for`). Returns (parameters for
    `submitit_executor`, {"partition", "time", "time_from", "gpus", "gpus_from"}). A partition
    the cluster does not have, or a time over the partition's limit, is a UserError.
    Parameters of the local cluster are returned as they are."""
    p = dict(params)
    if _local_cluster(p):
        return p, {}
    parts = partitions()
    name = p.get("partition")
    part = None
    if parts is not None:
        if name is not None and name not in parts:
            raise UserError(
                f"slurm partition {name!r}: this cluster has no such partition "
                f"(sinfo lists: {', '.join(sorted(parts)) or 'none'})"
            )
        part = parts.get(name) if name else next((v for v in parts.values() if v["default"]), None)
        if name is None and part is not None:
            name = next(k for k, v in parts.items() if v is part)
    limit = slurm_duration_min(part["limit"]) if part else None
    if p.get("time") is None:
        if limit:
            p["time"], time_from = limit, f"the limit of partition {name} ({part['limit']})"
        else:
            p["time"] = DEFAULT_TIME_MIN
            time_from = (
                f"partition {name} has no limit" if part else "sinfo did not answer"
            ) + f": advlc's default {DEFAULT_TIME_MIN // 60} h"
    else:
        time_from = "given"
        if limit and parse_time(p["time"]) > limit:
            raise UserError(
                f"slurm time = {p['time']!r} ({parse_time(p['time'])} min) exceeds the limit of "
                f"partition {name} ({part['limit']}); give --time {part['limit']} or less"
            )
    gpus, gpus_from = gpus_for(params, device, part["gres"] if part else None)
    if gpus and part is not None and not any(g.split(":")[0] == "gpu" for g in part["gres"]):
        raise UserError(
            f"train.device = {device!r} asks for {gpus} GPU(s) but partition {name}'s nodes have none "
            f"(sinfo GRES: {', '.join(sorted(part['gres'])) or 'none'}); use a GPU partition, "
            f"--device cpu, or --slurm-gpus 0 if the nodes' GPUs need no request"
        )
    p["gpus"] = gpus
    return p, {
        "partition": name,
        "time": parse_time(p["time"]),
        "time_from": time_from,
        "gpus": gpus,
        "gpus_from": gpus_from,
    }


def params_for(store: Store, preset: str | None, cli: dict) -> dict:
    """The preset's [slurm] table with the command line's values on top (None = not given)."""
    base = {}
    if preset:
        try:
            base = dict(read_preset(preset, store.home)[2].get("slurm", {}) or {})
        except UserError:
            base = {}
    return {**base, **{k: v for k, v in (cli or {}).items() if v is not None}}


def check_params(p: dict) -> None:
    bad = sorted(set(p) - KEYS)
    if bad:
        raise UserError(f"slurm.{bad[0]}: unknown key (known: {', '.join(sorted(KEYS))})")
    cluster = p.get("cluster", SlurmLaunch.CLUSTERS[0])
    if cluster not in SlurmLaunch.CLUSTERS:
        raise UserError(f"slurm.cluster = {cluster!r}: must be {' or '.join(SlurmLaunch.CLUSTERS)}")
    if p.get("time") is not None:
        parse_time(p["time"])
    for k in ("gpus", "cpus", "max_requeue"):
        if p.get(k) is not None and (not isinstance(p[k], int) or isinstance(p[k], bool) or p[k] < 0):
            raise UserError(f"slurm.{k} = {p[k]!r}: must be a whole number >= 0")
    if p.get("setup") is not None and not (
        isinstance(p["setup"], list) and all(isinstance(x, str) for x in p["setup"])
    ):
        raise UserError(f"slurm.setup = {p['setup']!r}: must be a list of shell lines")
    if p.get("additional") is not None and not isinstance(p["additional"], dict):
        raise UserError(f"slurm.additional = {p['additional']!r}: must be a table")


def _local_cluster(params: dict) -> bool:
    """Do these parameters ask for submitit's LocalExecutor (`cluster = "local"`)?"""
    return params.get("cluster") == SlurmLaunch.LOCAL_CLUSTER


def submitit_executor(folder: Path, name: str, p: dict):
    """A submitit executor configured from the parameters (see the module docstring; `resolve`
    fills in the time and GPU count): SlurmExecutor for cluster "slurm", LocalExecutor for
    cluster "local". `--gpus-per-node` is written only when `gpus` > 0."""
    import submitit  # optional: only Slurm runs need it

    max_requeue = int(p.get("max_requeue", 3))
    try:
        if _local_cluster(p):
            ex = submitit.LocalExecutor(folder=folder, max_num_timeout=max_requeue)
            t = p.get("time")
            kw: dict = {
                "timeout_min": LOCAL_DEFAULT_MIN
                if t is None
                else float(t)
                if isinstance(t, (int, float)) and not isinstance(t, bool)
                else parse_time(t)
            }
            for key in ("gpus_per_node", "signal_delay_s", "setup"):
                src = "gpus" if key == "gpus_per_node" else key
                if p.get(src) is not None:
                    kw[key] = p[src]
        else:
            ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeue)
            kw = {
                "job_name": name,
                "nodes": 1,
                "ntasks_per_node": 1,
                "time": DEFAULT_TIME_MIN if p.get("time") is None else parse_time(p["time"]),
            }
            if int(p.get("gpus") or 0) > 0:
                kw["gpus_per_node"] = int(p["gpus"])
            if p.get("cpus"):
                kw["cpus_per_task"] = int(p["cpus"])
            if p.get("mem_gb"):
                kw["mem"] = f"{float(p['mem_gb']):g}GB"
            for key in ("partition", "account", "qos", "constraint", "setup", "signal_delay_s"):
                if p.get(key) is not None:
                    kw[key] = p[key]
            if p.get("additional"):
                kw["additional_parameters"] = dict(p["additional"])
        ex.update_parameters(**kw)
    except RuntimeError as exc:  # no srun: not a Slurm login node
        raise UserError(f"--executor slurm: {exc} (submit from a Slurm login node)") from exc
    except (NameError, ValueError, TypeError) as exc:
        raise UserError(f"slurm parameters: {str(exc).splitlines()[0]}") from exc
    return ex


# ------------------------------------------------------------------------------ in the job
def _job_label() -> str:
    """ "Slurm job 12" (", restart 1" after a requeue), or the local executor's job."""
    jid = os.environ.get("SLURM_JOB_ID")
    if jid:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        return f"Slurm job {jid}" + (f", restart {restarts}" if restarts else "")
    return f"submitit local job {os.environ.get('SUBMITIT_LOCAL_JOB_ID', '?')}"


class SlurmTrain:
    """What a submitit job runs: the run process, its output appended to the run's log.txt.

    Its `checkpoint` method makes submitit requeue the job on a timeout or preemption."""

    def __init__(self):
        self.requeued = False

    def __call__(self, run_dir: str) -> int:
        # on the node: load the run process (and torch) there, not in every command importing this module
        from engine.run.process import main as run_process_main

        self.requeued = False
        rd = RunDir(Path(run_dir))
        os.umask(os.umask(0o077) | 0o077)  # what the job writes (its result, its files) is user-only
        saved = _redirect_output(rd)
        try:
            if not self._should_run(rd):
                return 0
            rd.append_log(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} advlc: starting on {HOST} ({_job_label()})")
            return run_process_main([run_dir])
        except SystemExit:
            if self.requeued and rd.status().state in ("running", "stopped"):
                # submitit requeued the job (and exits this process): wait as `queued`
                transition(rd, "queued", pid=None, error=None, requeued=time.time())
                rd.append_log(
                    f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} advlc: {_job_label()} requeued "
                    f"(preemption or time limit); the run goes on from last.pt when it restarts"
                )
                Store.containing(rd).sync(rd)
            raise
        finally:
            _restore_output(saved)

    def _should_run(self, rd: RunDir) -> bool:
        """Whether this job is (still) the one to train the run: not when the run was stopped
        while the job waited (or started), finished, or has been given to another job."""
        st = rd.status()
        state, mine = st.state, st.launch.job_id if isinstance(st.launch, SlurmLaunch) else None
        jid = os.environ.get("SLURM_JOB_ID")
        why = None
        if jid and mine and str(mine) != jid:
            why = f"the run is now Slurm job {mine}'s"
        elif (
            state == "stopped"
            and (st.error or "").startswith("interrupted (")
            and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
        ):
            # a requeue that was cut off before it wrote `queued`
            transition(rd, "queued", pid=None, error=None, requeued=time.time())
        elif state not in ("queued", "running", "lost"):
            why = f"the run is {state}"
        if why:
            rd.append_log(
                f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} advlc: {_job_label()} on {HOST} "
                f"exits without training: {why}"
            )
            return False
        return True

    def checkpoint(self, run_dir: str):
        """Timeout/preemption: resubmit the same call; the run continues from last.pt."""
        from submitit.helpers import (
            DelayedSubmission,  # optional: only Slurm runs need it
        )

        self.requeued = True
        # Slurm SIGTERMs the job's processes as it requeues it: let the final state be written
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return DelayedSubmission(self, run_dir)


def _redirect_output(rd: RunDir) -> tuple[int, int, list]:
    """Send this process's stdout/stderr to the run's log.txt (`RunDir.open_log`: never through a
    link), and submitit's log messages to where they went before (its own files in
    <run>/submitit/). Returns what `_restore_output` needs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    moved = []
    for h in logging.getLogger("submitit").handlers:
        if isinstance(h, logging.StreamHandler) and h.stream in (
            sys.stdout,
            sys.stderr,
            sys.__stdout__,
            sys.__stderr__,
        ):
            fd = saved[0] if h.stream in (sys.stdout, sys.__stdout__) else saved[1]
            moved.append((h, h.setStream(os.fdopen(os.dup(fd), "w", buffering=1))))
    try:
        fd = rd.open_log()
    except BaseException:
        for h, old in moved:
            h.setStream(old)
        os.close(saved[0])
        os.close(saved[1])
        raise
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return saved[0], saved[1], moved


def _restore_output(saved: tuple[int, int, list]) -> None:
    out, err, moved = saved
    sys.stdout.flush()
    sys.stderr.flush()
    for h, old in moved:
        ours = h.setStream(old)
        if ours is not None:
            ours.close()
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)


# ------------------------------------------------------------------------------ submit, watch, cancel
def submit(store: Store, rd: RunDir, params: dict) -> str:
    """Submit one run as a submitit job; the run waits `queued` until the job starts.

    `params` are kept in the run's launch record as given (a resume resolves them again);
    what was asked of Slurm (`resolve`) is kept beside them as `sbatch`."""
    check_params(params)
    folder = rd.submitit_dir
    folder.mkdir(mode=0o700, exist_ok=True)
    launch = SlurmLaunch(cluster=params.get("cluster", SlurmLaunch.CLUSTERS[0]), host=HOST, params=params)
    try:
        resolved, launch.sbatch = resolve(params, rd.config().value("train.device"))
        ex = submitit_executor(folder, f"advlc-{rd.id}", resolved)
    except UserError as exc:
        transition(rd, "failed", error=f"submission failed: {exc}", launch=launch)
        store.sync(rd)
        raise
    transition(rd, "queued", queued_at=time.time(), pid=None, error=None, ended=None, launch=launch)
    try:
        with (
            contextlib.redirect_stderr(io.StringIO()),
            user_only(),
        ):  # submitit echoes sbatch's errors; we say them once
            job = ex.submit(SlurmTrain(), str(rd.path))
    except FileNotFoundError as exc:
        transition(rd, "failed", error=f"submission failed: {exc}")
        store.sync(rd)
        raise UserError(
            f"run {rd.id}: cannot submit to Slurm ({exc.filename or exc} not found: is this a Slurm login node?)"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - sbatch errors come in several types
        msg = _one_line(str(exc), n=2, skip=("Command '",)) or type(exc).__name__
        transition(rd, "failed", error=f"Slurm submission failed: {msg}")
        store.sync(rd)
        raise UserError(f"run {rd.id}: Slurm submission failed: {msg}") from exc
    launch.job_id = str(job.job_id)
    if launch.local_cluster:
        launch.controller_pid = int(job.job_id)
        launch.controller_create_time = create_time(int(job.job_id))
    rd.update_status(launch=launch)
    store.sync(rd)
    return str(job.job_id)


def job_states(job_ids: list[str]) -> dict[str, dict] | None:
    """{job id: {"state", "reason", "nodes", "name", "limit"}} from one `squeue -t all` call (it
    works without accounting). A job squeue does not know has ended and been purged: it gets
    its state from `sacct` where there is accounting, else state PURGED. None when squeue is
    missing or cannot reach the controller (nothing is known)."""
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    p = _client(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%r|%N|%j|%l"])
    if p is None:
        return None
    if p.returncode != 0 and "Invalid job id" not in (p.stderr + p.stdout):
        return None  # one id alone that Slurm purged fails like this; anything else is not an answer
    out: dict[str, dict] = {}
    if p.returncode == 0:
        for line in p.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 6 and parts[0] in ids:
                out[parts[0]] = {
                    "state": parts[1],
                    "reason": parts[2],
                    "nodes": parts[3],
                    "name": parts[4],
                    "limit": parts[5],
                }
    missing = [j for j in ids if j not in out]
    if missing:
        accounted = sacct_states(missing)
        for j in missing:
            out[j] = {"state": accounted.get(j, PURGED), "reason": "", "nodes": "", "name": "", "limit": ""}
    return out


def ended(job: dict) -> bool:
    return job["state"].split()[0].rstrip("+") in ENDED | {PURGED}


def describe(jid: str, job: dict) -> str:
    """One line: "Slurm job 12 CANCELLED (reason BeginTime)", "Slurm job 12 has ended (Slurm no longer knows it)"."""
    if job["state"] == PURGED:
        return f"Slurm job {jid} has ended (Slurm no longer lists it, and there is no accounting to say how)"
    reason = job.get("reason")
    return f"Slurm job {jid} {job['state']}" + (f" (reason {reason})" if reason and reason != "None" else "")


def ended_jobs(launches: dict[str, SlurmLaunch]) -> dict[str, tuple[str, str]]:
    """{run id: (Slurm state, why in one line)} for jobs that have ended while their run is
    still `queued`: squeue -t all (or sacct), or for the local cluster the controller process
    being gone. A job with another run's name (job ids reused by a reinstalled cluster) counts
    as ended too."""
    out, slurm_ids = {}, {}
    for rid, la in launches.items():
        if la.local_cluster:
            if here(la.host) and not process_matches(la.controller_pid, la.controller_create_time):
                out[rid] = ("FAILED", "local job controller exited")
        elif la.job_id:
            slurm_ids[str(la.job_id)] = rid
    states = job_states(list(slurm_ids)) if slurm_ids else None
    for jid, job in (states or {}).items():
        rid = slurm_ids[jid]
        if ended(job):
            out[rid] = (job["state"].split()[0].rstrip("+"), describe(jid, job))
        elif job["name"] and job["name"] != f"advlc-{rid}":
            out[rid] = (PURGED, f"Slurm job {jid} is now another job ({job['name']})")
    return out


def job_log_words(rd: RunDir, job_id: str) -> str:
    """The last distinct lines of a job's stderr file in <run>/submitit/ (submitit's own INFO
    lines left out), on one line; '' when there is none."""
    for name in (f"{job_id}_0_log.err", f"{job_id}_log.err"):
        try:
            with open(rd.submitit_dir / name, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 16 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        words = _one_line(text, skip=("submitit INFO",))
        if words:
            return words
    return ""


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: Slurm state} from one `sacct` call; {} where sacct is missing or fails (no accounting)."""
    p = _client(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)])
    if p is None or p.returncode != 0:
        return {}
    out = {}
    for line in p.stdout.splitlines():
        parts = line.split("|")
        if len(parts) >= 2 and parts[0] in job_ids:
            out[parts[0]] = parts[1]
    return out


def queue_rows(store: Store) -> list[dict]:
    """The Slurm runs of the store that are queued or running, oldest first, with what squeue
    says of their jobs: {"id", "state", "job_id", "cluster", "squeue", "slurm_state", "reason",
    "nodes", "partition", "time", "gpus", "queued_at"}; `squeue` is false for the local cluster
    (nothing to ask), slurm_state None when squeue is not asked or does not answer."""
    rows = []
    for row in store.runs(archived=None):
        if row["state"] not in ("queued", "running"):
            continue
        try:
            st = store.run_dir(row["id"]).status()
        except (CorruptFile, UserError, OSError):  # a damaged or vanished run is not the queue's business
            continue
        la = st.launch
        if not isinstance(la, SlurmLaunch) or st.state not in ("queued", "running"):
            continue
        asked = la.sbatch or {}
        rows.append(
            {
                "id": row["id"],
                "state": st.state,
                "job_id": la.job_id,
                "cluster": la.cluster,
                "squeue": not la.local_cluster,
                "partition": asked.get("partition") or la.params.get("partition"),
                "time": asked.get("time"),
                "gpus": asked.get("gpus"),
                "queued_at": st.queued_at,
                "slurm_state": None,
                "reason": None,
                "nodes": None,
            }
        )
    rows.sort(key=lambda r: (r["queued_at"] or 0.0, r["id"]))
    jobs = job_states([r["job_id"] for r in rows if r["job_id"] and r["squeue"]]) or {}
    for r in rows:
        job = jobs.get(str(r["job_id"]))
        if job:
            r.update(slurm_state=job["state"], reason=job["reason"], nodes=job["nodes"])
    return rows


def check_cancel() -> None:
    """A UserError unless scancel is here (stopping a Slurm run needs a login node)."""
    if shutil.which("scancel") is None:
        raise UserError("scancel not found: stop Slurm runs from a Slurm login node")


def cancel(job_ids: list[str]) -> None:
    """scancel the jobs (best effort: a job that has ended is fine)."""
    try:
        subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise UserError("scancel not found: stop Slurm runs from a Slurm login node") from exc
    except subprocess.TimeoutExpired:
        raise UserError(f"scancel {' '.join(job_ids)} timed out") from None


# ------------------------------------------------------------------------------ the executor
def reconcile_queued(store: Store, rds: dict[str, RunDir]) -> list[str]:
    """Queued Slurm runs whose job has ended (squeue -t all, sacct, or Slurm no longer knowing
    it) without the run starting: `stopped` when the job was cancelled (scancel outside advlc),
    `lost` otherwise; the error says so in one line, with the end of the job's stderr."""
    launches = {rid: rd.status().launch for rid, rd in rds.items()}
    launches = {rid: la for rid, la in launches.items() if isinstance(la, SlurmLaunch) and la.job_id}
    changed = []
    for rid, (job_state, why) in ended_jobs(launches).items():
        rd, la = rds[rid], launches[rid]
        with lock(store):
            st = rd.status()
            if st.state != "queued" or not isinstance(st.launch, SlurmLaunch) or st.launch.job_id != la.job_id:
                continue  # started, stopped or resubmitted meanwhile
            words = "" if la.local_cluster else job_log_words(rd, str(la.job_id))
            again = f"`advlc resume {rd.id}` submits it again"
            if job_state == "CANCELLED":
                transition(
                    rd, "stopped", pid=None, error=f"{why}: cancelled outside advlc before the run started; {again}"
                )
            else:
                transition(
                    rd,
                    "lost",
                    pid=None,
                    error=f"{why} while the run was queued"
                    + (f"; the job's stderr ends: {words}" if words else "")
                    + f"; {again}",
                )
        store.sync(rd)
        changed.append(rid)
    return changed


def check_submission(params: dict, devices) -> None:
    """Bad parameters fail before any run exists or changes: checked, resolved for each of the
    runs' `devices`, and given to submitit (in a folder thrown away)."""
    check_params(params)
    with tempfile.TemporaryDirectory() as tmp:
        for device in sorted(set(devices), key=str):
            submitit_executor(Path(tmp), "advlc-check", resolve(params, device)[0])


class SlurmExecutor(Executor):
    """One submitit job per run, on a Slurm cluster (or submitit's LocalExecutor, cluster "local")."""

    TAG = SlurmLaunch.TAG
    RECORD = SlurmLaunch
    NAMED = True
    STARTS_LATER = True
    REMOTE = True

    def launch(
        self,
        store: Store,
        planned: list[PlannedRun],
        create: Callable[[], list[RunDir]],
        *,
        gpus: list[int] | None,
        slots_per_gpu: int,
        params: dict,
    ) -> list[RunDir]:
        """`params`: partition, time, gpus, account, ... (the module docstring); the preset's
        `[slurm]` table gives the defaults."""
        if gpus:
            raise UserError("--gpus is the local GPU queue; with --executor slurm give --slurm-gpus")
        params = params_for(store, planned[0].preset if planned else None, params)
        check_submission(params, [str(p.cfg.train.device) for p in planned])
        rds = create()
        for rd in rds:
            submit(store, rd, params)
        return rds

    def check_resume(self, rd: RunDir, launch, params: dict) -> dict:
        """The parameters of the new job: the previous job's, with `params` over them."""
        merged = {**launch.params, **params}
        check_submission(merged, [rd.config().value("train.device")])
        return merged

    def resume(self, store: Store, rd: RunDir, launch, checked: dict) -> None:
        submit(store, rd, checked)

    def run_commands(self, rd: RunDir) -> list[Command]:
        """The job's process: submitit's `python -u -m submitit.core._submit <run>/submitit`."""
        return [(JOB_MODULE, rd.submitit_dir)]

    def processes(self, status: Status, rd: RunDir) -> list[tuple[int | None, float | None, str | None, list[Command]]]:
        """The local cluster's job controller (a child of the launching process, on its host):
        `python -m submitit.local._local <run>/submitit`, behind a shell when there are setup lines."""
        la = status.launch
        if not la.local_cluster:
            return []
        return [(la.controller_pid, la.controller_create_time, la.host, [(CONTROLLER_MODULE, rd.submitit_dir)])]

    def job(self, status: Status) -> str | None:
        la = status.launch
        if status.state in ("queued", "running") and not la.local_cluster and la.job_id:
            return str(la.job_id)
        return None

    def check_cancel(self) -> None:
        check_cancel()

    def cancel(self, jobs: list[str]) -> None:
        cancel(jobs)

    def reconcile(self, store: Store, queued: dict[str, RunDir]) -> list[str]:
        return reconcile_queued(store, queued) if queued else []

    def queue_info(self, store: Store) -> dict:
        return {"slurm": queue_rows(store)}


SLURM = SlurmExecutor()
