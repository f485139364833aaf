"""Runs on a Slurm cluster through submitit: one job per run, the run directory on the
shared filesystem, monitored like any other run (heartbeat in status.json).

    launch(store, planned, executor="slurm", slurm={"partition": "gpu", "time": "12:00:00",
                                                    "gpus": 1, "account": "proj"})

Parameters come from the preset's `[slurm]` table, overridden by the command line:

    partition   str     --partition     sbatch --partition
    time        str|int --time          wall-clock limit: minutes, "HH:MM:SS", "HH:MM" or "D-HH:MM:SS" (required)
    gpus        int     --slurm-gpus    GPUs per node (default 1)
    account     str     --account       sbatch --account
    cpus        int                     cpus per task
    mem_gb      float                   memory per node, GB
    qos, constraint str                 sbatch --qos / --constraint
    setup       [str]                   shell lines run before the job (e.g. "module load cuda")
    additional  {str: any}              any other sbatch option, e.g. {exclude = "node[1-3]"}
    max_requeue int                     requeues after timeout/preemption (default 3)
    cluster     str                     "slurm" (default) or "local" (submitit's LocalExecutor: tests, debugging)

The job calls `SlurmTrain()(run_dir)`, which is `engine.run.process.main([run_dir])` with its
output appended to the run's log.txt (submitit's own logs stay in `<run>/submitit/`). It has
submitit's `checkpoint` method: on a timeout or preemption signal submitit requeues the job, the
run shows `queued` meanwhile, and the requeued job continues from last.pt.

submitit is imported where it is used: only Slurm runs need it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from engine.config.presets import read_preset
from engine.errors import UserError
from engine.launch.processes import HOST, create_time, process_matches
from engine.store.index import Store
from engine.store.rundir import RunDir
from engine.store.states import transition

KEYS = {"partition", "time", "gpus", "account", "cpus", "mem_gb", "qos", "constraint", "setup",
        "additional", "max_requeue", "cluster", "signal_delay_s"}
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
         "TIMEOUT", "REVOKED"}
LOCAL_DEFAULT_MIN = 7 * 24 * 60      # submitit's LocalExecutor would stop a job after 2 min otherwise


def parse_time(value) -> int:
    """A Slurm time limit -> minutes: 90, "90", "1:30:00", "01:30", "2-00:00:00"."""
    if isinstance(value, bool):
        raise UserError(f"slurm time = {value!r}: give minutes or HH:MM:SS")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise UserError(f"slurm time = {value!r}: must be positive")
        return max(1, int(round(value)))
    s = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if not m:
        raise UserError(f"slurm time = {value!r}: give minutes, HH:MM, HH:MM:SS or D-HH:MM:SS")
    d, a, b, c = m.groups()
    if b is None and c is None and d is None:
        minutes = int(a)                                 # "90": minutes
    elif c is None and d is None:
        minutes = int(a) * 60 + int(b)                   # "HH:MM"
    else:
        h, mi, se = int(a), int(b or 0), int(c or 0)
        minutes = int(d or 0) * 1440 + h * 60 + mi + (1 if se else 0)
    if minutes <= 0:
        raise UserError(f"slurm time = {value!r}: must be positive")
    return minutes


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
    cluster = p.get("cluster", "slurm")
    if cluster not in ("slurm", "local"):
        raise UserError(f"slurm.cluster = {cluster!r}: must be slurm or local")
    if cluster == "slurm" and p.get("time") is None:
        raise UserError("slurm time limit missing: give --time (e.g. --time 12:00:00) or `time` in the preset's [slurm] table")
    if p.get("time") is not None:
        parse_time(p["time"])
    for k in ("gpus", "cpus", "max_requeue"):
        if p.get(k) is not None and (not isinstance(p[k], int) or isinstance(p[k], bool) or p[k] < 0):
            raise UserError(f"slurm.{k} = {p[k]!r}: must be a whole number >= 0")
    if p.get("setup") is not None and not (isinstance(p["setup"], list) and all(isinstance(x, str) for x in p["setup"])):
        raise UserError(f"slurm.setup = {p['setup']!r}: must be a list of shell lines")
    if p.get("additional") is not None and not isinstance(p["additional"], dict):
        raise UserError(f"slurm.additional = {p['additional']!r}: must be a table")


def executor_for(folder: Path, name: str, p: dict):
    """A submitit executor configured from the parameters (see the module docstring):
    SlurmExecutor for cluster "slurm", LocalExecutor for cluster "local"."""
    import submitit  # optional: only Slurm runs need it

    cluster = p.get("cluster", "slurm")
    max_requeue = int(p.get("max_requeue", 3))
    try:
        if cluster == "local":
            ex = submitit.LocalExecutor(folder=folder, max_num_timeout=max_requeue)
            t = p.get("time")
            kw: dict = {"timeout_min": LOCAL_DEFAULT_MIN if t is None else
                        float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else parse_time(t)}
            for key in ("gpus_per_node", "signal_delay_s", "setup"):
                src = "gpus" if key == "gpus_per_node" else key
                if p.get(src) is not None:
                    kw[key] = p[src]
        else:
            ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeue)
            kw = {"job_name": name, "time": parse_time(p["time"]), "nodes": 1, "ntasks_per_node": 1,
                  "gpus_per_node": int(p.get("gpus", 1))}
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
    except RuntimeError as exc:       # no srun: not a Slurm login node
        raise UserError(f"--executor slurm: {exc} (submit from a Slurm login node)") from exc
    except (NameError, ValueError, TypeError) as exc:
        raise UserError(f"slurm parameters: {str(exc).splitlines()[0]}") from exc
    return ex


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
        _redirect_output(rd.log_path)
        try:
            return run_process_main([run_dir])
        except SystemExit:
            if self.requeued:       # submitit requeued the job (and exits this process): wait as `queued`
                transition(rd, "queued", pid=None, error=None, requeued=time.time())
                Store.containing(rd).sync(rd)
            raise

    def checkpoint(self, run_dir: str):
        """Timeout/preemption: resubmit the same call; the run continues from last.pt."""
        from submitit.helpers import (
            DelayedSubmission,  # optional: only Slurm runs need it
        )

        self.requeued = True
        return DelayedSubmission(self, run_dir)


def _redirect_output(log: Path) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def submit(store: Store, rd: RunDir, params: dict) -> str:
    """Submit one run as a submitit job; the run waits `queued` until the job starts."""
    check_params(params)
    cluster = params.get("cluster", "slurm")
    folder = rd.submitit_dir
    folder.mkdir(mode=0o700, exist_ok=True)
    launch = {"executor": "slurm", "cluster": cluster, "host": HOST, "params": params, "job_id": None}
    try:
        ex = executor_for(folder, f"advlc-{rd.id}", params)
    except UserError as exc:
        transition(rd, "failed", error=f"submission failed: {exc}", launch=launch)
        store.sync(rd)
        raise
    transition(rd, "queued", queued_at=time.time(), pid=None, error=None, ended=None, launch=launch)
    try:
        job = ex.submit(SlurmTrain(), str(rd.path))
    except FileNotFoundError as exc:
        transition(rd, "failed", error=f"submission failed: {exc}")
        store.sync(rd)
        raise UserError(f"run {rd.id}: cannot submit to Slurm ({exc.filename or exc} not found: is this a Slurm login node?)") from exc
    except Exception as exc:  # noqa: BLE001 - sbatch errors come in several types
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        transition(rd, "failed", error=f"submission failed: {exc}")
        store.sync(rd)
        raise UserError(f"run {rd.id}: Slurm submission failed: {msg}") from exc
    launch["job_id"] = str(job.job_id)
    if cluster == "local":
        launch["controller_pid"] = int(job.job_id)
        launch["controller_create_time"] = create_time(int(job.job_id))
    rd.update_status(launch=launch)
    store.sync(rd)
    return str(job.job_id)


def ended_jobs(launches: dict[str, dict]) -> dict[str, str]:
    """{run id: why} for jobs that have ended (the run still `queued`): sacct, or for the
    local cluster the controller process being gone."""
    out, slurm_ids = {}, {}
    for rid, la in launches.items():
        if la.get("cluster") == "local":
            if la.get("host") in (None, HOST) and not process_matches(la.get("controller_pid"), la.get("controller_create_time")):
                out[rid] = "local job controller exited"
        elif la.get("job_id"):
            slurm_ids[str(la["job_id"])] = rid
    if slurm_ids:
        for jid, state in sacct_states(list(slurm_ids)).items():
            if state.split()[0].rstrip("+") in ENDED:
                out[slurm_ids[jid]] = f"Slurm job {jid} {state}"
    return out


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: Slurm state} from one `sacct` call; {} where sacct is missing or fails."""
    try:
        p = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)],
                           capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if p.returncode != 0:
        return {}
    out = {}
    for line in p.stdout.splitlines():
        parts = line.split("|")
        if len(parts) >= 2 and parts[0] in job_ids:
            out[parts[0]] = parts[1]
    return out


def cancel(job_ids: list[str]) -> None:
    """scancel the jobs (best effort: a job that has ended is fine)."""
    try:
        subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise UserError("scancel not found: stop Slurm runs from a Slurm login node") from exc
    except subprocess.TimeoutExpired:
        raise UserError(f"scancel {' '.join(job_ids)} timed out") from None
