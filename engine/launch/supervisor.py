"""Creating, launching, stopping, resuming, reconciling and deleting runs.

The CLI and the app call only this layer to start or stop work; it writes run directories
through `RunDir` and the index through `Store`.

A run is trained by its own process, `python -m engine.run RUN_DIR`, started detached
(own session, stdin from /dev/null, output appended to the run's `log.txt`), so closing
the terminal, the app or the SSH connection never stops it. Three executors start that
process:

- local, no GPU queue: `start_detached` at once;
- local with a GPU queue (`gpus=[0, 1]`): the run waits as `queued` until a lease slot on
  one of its GPUs is free (`engine.launch.gpuqueue`; a detached scheduler starts it later);
- slurm: submitted through submitit (`engine.launch.slurm`); it runs on a node and writes the same
  run directory on the shared filesystem.

States (engine.store.states): queued -> running -> finished | failed | stopped, and `lost`
when the process is gone without writing a final state (engine.launch.processes.is_alive).
`reconcile` turns dead `running` runs into `lost`; every CLI start and the app call it.
State changes made here (not by the run process) happen under the supervisor lock
(engine.launch.local.lock).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import psutil

from engine.config.presets import PlannedRun
from engine.config.schema import from_json
from engine.errors import CorruptFile, UserError
from engine.launch import gpuqueue, slurm
from engine.launch.local import cpu_thread_budget, lock, start_detached
from engine.launch.plan import run_record
from engine.launch.processes import HOST, create_time, is_alive, process_matches, reap
from engine.nn.dataset_files import check_data
from engine.store.checkpoint_files import inspect as inspect_checkpoint
from engine.store.files import move_aside
from engine.store.index import Store
from engine.store.rundir import RunDir
from engine.store.states import FINAL_STATES, transition


def create_runs(store: Store, planned: list[PlannedRun], *, group: str | None = None) -> list[RunDir]:
    """Create one queued run directory per planned run, in order.

    The student runs (all but teacher runs planned first) share a group id when there are
    several (a sweep or several seeds). config.json's "run" table gets the preset, label,
    seed, group, the sweep `point`, and for a run with teachers (KDSA) `teachers.<role>` =
    {"preset", "run", "which", "checkpoint"}; a teacher planned in the same batch is created
    before its student, so its id is known (a teacher run is marked `role: teacher:<role>`).

    Before any directory is made, the store must be writable and each run's data must be
    where its config says (one line, exit 2); each run records this process as its
    `launcher`, so a run this process dies before starting is found by `reconcile`.
    """
    store.check_writable()
    for cfg in {id(p.cfg): p.cfg for p in planned}.values():
        check_data(cfg.data)
    me = {"pid": os.getpid(), "pid_create_time": create_time(os.getpid()), "host": HOST}
    if group is None and sum(1 for p in planned if not p.role) > 1:
        group = f"g{secrets.token_hex(3)}"
    out = []
    made: dict[int, RunDir] = {}
    for p in planned:
        config = p.cfg.to_dict()
        config["run"] = {"preset": p.preset, "label": p.cfg.label, "seed": p.seed,
                         "group": None if p.role else group, "point": p.point, "created": time.time()}
        if p.role:
            config["run"]["role"] = p.role
        if p.teachers:
            recs = {}
            for role, ref in p.teachers.items():
                if ref.run_id:
                    rid = ref.run_id
                elif id(ref.planned) in made:
                    rid = made[id(ref.planned)].id
                else:
                    raise ValueError(f"create_runs: the {role} teacher of a {p.preset} run must be planned "
                                     f"before it (pass plan_runs' list unchanged)")
                recs[role] = run_record(ref, rid, store)
            config["run"]["teachers"] = recs
        rd = store.create_run(config, launcher=me)
        made[id(p)] = rd
        out.append(rd)
    return out


# ------------------------------------------------------------------------------ launch
def launch(store: Store, planned: list[PlannedRun], *, gpus: list[int] | None = None, slots_per_gpu: int = 1,
           executor: str = "local", slurm_params: dict | None = None, group: str | None = None) -> list[RunDir]:
    """Create the planned runs and start them detached, or queue them; returns at once.

    executor "local": with `gpus` (or, when a run asks for CUDA, all visible GPUs) the runs go
    through the GPU queue, `slots_per_gpu` runs per GPU; without GPUs each starts at once.
    executor "slurm": each run is one submitit job (`slurm_params`: partition, time, gpus, account,
    ... ; the preset's `[slurm]` table gives the defaults).
    """
    if executor not in ("local", "slurm"):
        raise UserError(f"--executor {executor}: must be local or slurm")
    if slots_per_gpu < 1:
        raise UserError(f"--slots-per-gpu {slots_per_gpu}: must be at least 1")
    if executor == "slurm":
        if gpus:
            raise UserError("--gpus is the local GPU queue; with --executor slurm give --slurm-gpus")
        params = slurm.params_for(store, planned[0].preset if planned else None, slurm_params or {})
        slurm.check_params(params)
        with tempfile.TemporaryDirectory() as tmp:      # bad parameters fail before any run exists
            for device in sorted({str(p.cfg.train.device) for p in planned}):
                slurm.executor_for(Path(tmp), "advlc-check", slurm.resolve(params, device)[0])
        rds = create_runs(store, planned, group=group)
        for rd in rds:
            slurm.submit(store, rd, params)
        return rds
    gpus = _resolve_gpus(gpus, planned)
    if gpus is None:
        _check_devices(planned)
    rds = create_runs(store, planned, group=group)
    if gpus is None:
        threads = cpu_thread_budget(store, len(rds))
        for rd in rds:
            rd.update_status(launch={"executor": "local", "host": HOST, "threads": threads})
            start_detached(store, rd, threads=threads)
        return rds
    now = time.time()
    for i, rd in enumerate(rds):
        _retarget_device(rd)
        rd.update_status(queued_at=now + i * 1e-6,
                         launch={"executor": "local", "host": HOST, "gpus": gpus, "slots_per_gpu": slots_per_gpu})
    store.sync_many(rds)
    gpuqueue.schedule_once(store)
    if any(rd.status().get("state") == "queued" for rd in rds):
        gpuqueue.ensure_scheduler(store)
    return rds


def _resolve_gpus(gpus: list[int] | None, planned: list[PlannedRun]) -> list[int] | None:
    """Explicit GPUs, or all visible ones when a run asks for CUDA; None = no queue."""
    if gpus:
        if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
            raise UserError(f"--gpus {','.join(map(str, gpus))}: GPU ids must be distinct, >= 0")
        return list(gpus)
    wants_cuda = any(str(p.cfg.train.device).startswith("cuda") or p.cfg.train.device == "auto" for p in planned)
    if not wants_cuda:
        return None
    n = visible_gpu_count()
    if n == 0:
        return None
    devs = {str(p.cfg.train.device) for p in planned}
    if len(devs) == 1 and devs.pop().startswith("cuda:"):
        return [int(str(planned[0].cfg.train.device).split(":")[1])]
    return list(range(n))


def _check_devices(planned: list[PlannedRun]) -> None:
    """A run that asks for CUDA on a machine without it fails now, in one line, not detached later."""
    for p in planned:
        dev = str(p.cfg.train.device)
        if dev.startswith("cuda") and visible_gpu_count() == 0:
            raise UserError(f"train.device = {dev!r}: this machine has no CUDA device (use --device cpu)")


def visible_gpu_count() -> int:
    """CUDA devices this process may use, without importing torch (nvidia-smi, CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU ")) if out.returncode == 0 else 0


def _retarget_device(rd: RunDir) -> None:
    """A queued run sees only its leased GPU (as `cuda`); `cuda:N` in its config becomes `cuda`."""
    conf = rd.config()
    dev = str(conf.get("train", {}).get("device", ""))
    if dev.startswith("cuda:"):
        conf["train"]["device"] = "cuda"
        conf.setdefault("run", {})["requested_device"] = dev
        rd.write_config(conf)


# ------------------------------------------------------------------------------ stop
def _targets(st: dict) -> tuple[list, list[int]]:
    """(psutil processes to signal, process groups to signal) for a run's status."""
    procs, groups = [], []
    pids = []
    if st.get("pid") and st.get("host") in (None, HOST):
        pids.append((st["pid"], st.get("pid_create_time")))
    launch_ = st.get("launch") or {}
    if launch_.get("executor") == "slurm" and launch_.get("cluster") == "local" and launch_.get("host") in (None, HOST):
        pids.append((launch_.get("controller_pid"), launch_.get("controller_create_time")))
    own_group = os.getpgrp()
    for pid, ct in pids:
        if not process_matches(pid, ct):
            continue
        try:
            p = psutil.Process(int(pid))
            procs.append(p)
            procs.extend(p.children(recursive=True))
            pg = os.getpgid(p.pid)
            if pg == p.pid and pg != own_group:     # a session we started: signal the whole group
                groups.append(pg)
        except (psutil.Error, ProcessLookupError):
            pass
    return procs, groups


def _signal(procs: list, groups: list[int], sig: int) -> None:
    for g in groups:
        try:
            os.killpg(g, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def _group_alive(pg: int) -> bool:
    try:
        os.killpg(pg, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _slurm_job(st: dict) -> str | None:
    """The Slurm job id of a queued or running run on a real Slurm cluster, else None."""
    launch_ = st.get("launch") or {}
    if launch_.get("executor") == "slurm" and st.get("state") in ("queued", "running") \
            and launch_.get("cluster", "slurm") != "local" and launch_.get("job_id"):
        return str(launch_["job_id"])
    return None


def stop(store: Store, rds: list[RunDir], *, grace_s: float = 10.0) -> None:
    """Stop runs: SIGTERM to each process group, up to `grace_s` to exit cleanly (the run
    writes `stopped` and keeps last.pt), then SIGKILL; queued runs leave the queue.
    Every run ends `stopped` (or the final state it reached on its own), its GPU lease freed."""
    reap()
    procs, groups, slurm_jobs = [], [], []
    if any(_slurm_job(rd.status()) for rd in rds):
        slurm.check_cancel()            # no scancel here: refuse before any run is marked stopped
    with lock(store):
        for rd in rds:
            st = rd.status()
            if _slurm_job(st):
                slurm_jobs.append(_slurm_job(st))
            if st.get("state") == "queued":
                transition(rd, "stopped", pid=None)
            p, g = _targets(st)
            procs += p
            groups += g
    if slurm_jobs:
        slurm.cancel(slurm_jobs)
    _signal(procs, groups, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    _, alive = psutil.wait_procs(procs, timeout=max(0.0, grace_s))
    while any(_group_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    # a Slurm job's run process is on a node: scancel SIGTERMs it, and it writes `stopped` itself
    remote = [rd for rd in rds if rd.exists() and rd.status().get("state") == "running"
              and (rd.status().get("launch") or {}).get("executor") == "slurm"]
    while remote and time.monotonic() < deadline:
        time.sleep(0.1)
        remote = [rd for rd in remote if rd.status().get("state") == "running"]
    if alive or any(_group_alive(g) for g in groups):
        _signal(alive, [g for g in groups if _group_alive(g)], signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)
        end = time.monotonic() + 5
        while any(_group_alive(g) for g in groups) and time.monotonic() < end:
            time.sleep(0.02)
    reap()
    with lock(store):
        for rd in rds:
            st = rd.status()
            if st.get("state") in ("queued", "running"):
                transition(rd, "stopped", pid=None)
            gpuqueue.release_run(store, rd.id)
    store.sync_many([rd for rd in rds if rd.exists()])


# ------------------------------------------------------------------------------ resume
def check_resumable(store: Store, rd: RunDir) -> None:
    """Raise a one-line UserError unless the run can be resumed (after reconciling it)."""
    reconcile(store, [rd])
    st = rd.status()
    state = st.get("state", "queued")
    if state == "running":
        raise UserError(f"run {rd.id} is running (pid {st.get('pid')} on {st.get('host')}); nothing to resume")
    if state == "finished":
        raise UserError(f"run {rd.id} has finished; nothing to resume")
    if state == "queued" and st.get("launch"):
        raise UserError(f"run {rd.id} is queued already (see `advlc queue`)")


def resume(store: Store, rd: RunDir, *, source: str = "last", slurm_params: dict | None = None) -> RunDir:
    """Continue a stopped, lost or failed run from its last.pt (or best.pt, or from scratch; or
    start a never-started one), detached, the way it was launched (the same GPU queue, or
    Slurm), otherwise at once. `slurm_params` (partition, time, account, gpus; None = keep)
    change a Slurm run's parameters for its new job; they are checked before anything changes."""
    given = {k: v for k, v in (slurm_params or {}).items() if v is not None}
    before = rd.status().get("launch") or {}
    params = None
    if before.get("executor") == "slurm":
        params = {**(before.get("params") or {}), **given}
        slurm.check_params(params)
        with tempfile.TemporaryDirectory() as tmp:      # bad parameters fail before the run changes
            device = (rd.config().get("train") or {}).get("device")
            slurm.executor_for(Path(tmp), "advlc-check", slurm.resolve(params, device)[0])
    elif given:
        raise UserError(f"run {rd.id} was not launched on Slurm: "
                        f"{', '.join('--slurm-gpus' if k == 'gpus' else f'--{k}' for k in given)} apply to Slurm runs only")
    launch_ = prepare_resume(store, rd, source=source)
    if launch_.get("executor") == "slurm":
        slurm.submit(store, rd, params if params is not None else launch_.get("params") or {})
    elif launch_.get("gpus"):
        rd.update_status(launch={**launch_, "host": HOST})
        gpuqueue.schedule_once(store)
        if rd.status().get("state") == "queued":
            gpuqueue.ensure_scheduler(store)
    else:
        threads = cpu_thread_budget(store, 1)
        rd.update_status(launch={"executor": "local", "host": HOST, "threads": threads})
        start_detached(store, rd, threads=threads)
    return rd


RESUME_FROM = ("last", "best", "scratch")


def resume_epoch(rd: RunDir, source: str = "last") -> int:
    """The epoch a resume from `source` starts at, read from the checkpoint itself (its file is
    checked, without torch); a one-line CorruptFile naming it and the fallbacks when it is bad."""
    if source == "scratch":
        return 0
    name = "last" if source == "last" else "best"
    path = rd.ckpt(name)
    if not path.exists():
        if source == "best":
            raise UserError(f"run {rd.id} has no best.pt to resume from (it has: {', '.join(rd.checkpoints()) or 'none'});"
                            f" start over with `advlc resume {rd.id} --from scratch`")
        return 0
    hint = (f"resume from best.pt with `advlc resume {rd.id} --from best`, or start over with `--from scratch`"
            if name == "last" else f"start over with `advlc resume {rd.id} --from scratch`")
    info = inspect_checkpoint(path, hint)
    return int(info["epoch"]) if name == "last" else int(info["epoch"]) + 1


def prepare_resume(store: Store, rd: RunDir, *, foreground: bool = False, source: str = "last") -> dict:
    """Check that `rd` can be resumed from `source` (last.pt, best.pt or from scratch) and queue
    it again; returns how it was launched before. The epoch it starts at is in status.json
    (`resume_epoch`). With `foreground` the caller trains it in its own process."""
    if source not in RESUME_FROM:
        raise UserError(f"--from {source}: must be one of {', '.join(RESUME_FROM)}")
    check_resumable(store, rd)
    store.check_writable()
    rd.metrics()                      # a damaged metrics.json is named now; nothing will write over it
    check_data(from_json(rd.config()).data)
    epoch = resume_epoch(rd, source)
    launch_ = rd.status().get("launch") or {}
    with lock(store):
        if source != "last":          # last.pt (damaged, or not wanted) is kept aside, not used
            for name in ("last",) if source == "best" else ("last", "best", "swa_best", "swa_end"):
                if rd.ckpt(name).exists():
                    move_aside(rd.ckpt(name))
        transition(rd, "queued", error=None, ended=None, pid=None, resumed=time.time(), queued_at=time.time(),
                   resume_from=source if source == "best" else None, resume_epoch=epoch,
                   launcher={"pid": os.getpid(), "pid_create_time": create_time(os.getpid()), "host": HOST})
        if foreground:
            rd.update_status(launch={"executor": "local", "host": HOST})
    store.sync(rd)
    return launch_


# ------------------------------------------------------------------------------ reconcile
def reconcile(store: Store, rds: list[RunDir] | None = None) -> list[str]:
    """Make states truthful; returns the ids whose state changed.

    - a `running` run whose process is gone becomes `lost` (with the last lines of its log);
      its GPU lease is freed;
    - a `queued` run whose launcher died before starting it (and that no GPU queue or Slurm
      job will start) becomes `lost`, resumable; a `queued` Slurm job that ended without the
      run ever starting becomes `lost`;
    - the index follows status.json (a run that ended between its last status write and its
      index update, a run directory missing from the index, an index row without a directory);
      a run whose files cannot be read shows as `corrupt` with what to do;
    - stale GPU leases are removed; queued GPU runs get a scheduler if none is running;
    - temporary files left by killed writers are removed (a full pass only).
    """
    if not store.runs_dir.exists():
        return []
    reap()
    full = rds is None
    rds = store.run_dirs() if full else rds
    index = {r["id"]: r for r in store.index()}
    changed: list[str] = []
    slurm_queued: dict[str, RunDir] = {}
    need_scheduler = False
    for rd in rds:
        try:
            st = rd.status()
        except CorruptFile:
            if index.get(rd.id, {}).get("state") != "corrupt":
                store.sync(rd)
            continue
        state = st.get("state", "queued")
        launch_ = st.get("launch") or {}
        if state == "running" and not is_alive(st):
            if _mark_lost(store, rd, st):
                changed.append(rd.id)
                continue
        elif state == "queued" and launch_.get("executor") == "slurm" and launch_.get("job_id"):
            slurm_queued[rd.id] = rd
        elif state == "queued" and launch_.get("gpus") and launch_.get("host") in (None, HOST):
            need_scheduler = True
        elif state == "queued" and _stranded(st):
            if _mark_stranded(store, rd, st):
                changed.append(rd.id)
                continue
        row = index.get(rd.id)
        if row is None or row.get("state") != rd.status().get("state"):
            store.sync(rd)          # summarised under the index lock: never an older summary
            if row is not None:
                changed.append(rd.id)
    if slurm_queued:
        changed += _reconcile_slurm_queued(store, slurm_queued)
    if full:
        store.prune([rid for rid in index if not _exists(store, rid)])
        store.sweep_temporary()
    gpuqueue.reclaim_stale(store)
    if need_scheduler:
        gpuqueue.ensure_scheduler(store)
    return changed


def _exists(store: Store, rid: str) -> bool:
    try:
        return store.run_dir(rid).exists()
    except UserError:           # an index row whose id is not a run id: drop it
        return False


def _stranded(st: dict) -> bool:
    """A queued run that only its launcher was going to start, and whose launcher (on this
    host) is gone: a local detached launch or a foreground `advlc run` killed midway."""
    la, who = st.get("launch") or {}, st.get("launcher") or {}
    if la.get("gpus") or la.get("executor") == "slurm" or not who.get("pid"):
        return False
    return who.get("host") in (None, HOST) and not process_matches(who["pid"], who.get("pid_create_time"))


def _mark_stranded(store: Store, rd: RunDir, seen: dict) -> bool:
    with lock(store):
        st = rd.status()
        if st.get("state") != "queued" or st.get("launcher") != seen.get("launcher") or not _stranded(st):
            return False
        who = st["launcher"]
        transition(rd, "lost", pid=None, error=f"its launcher (pid {who['pid']} on {who.get('host')}) exited before "
                                               f"starting it; `advlc resume {rd.id}` starts it")
    store.sync(rd)
    return True


def _last_words(rd: RunDir, n: int = 3, width: int = 200) -> str:
    """The last distinct lines of a run's log, each cut to `width`, joined with ' | ' (one line)."""
    lines = []
    for line in reversed(rd.log_tail(40)):
        line = " ".join(line.split())
        if not line or line.startswith("config: ") or line in lines:
            continue
        lines.append(line[:width] + ("…" if len(line) > width else ""))
        if len(lines) == n:
            break
    return " | ".join(reversed(lines))


def _mark_lost(store: Store, rd: RunDir, seen: dict) -> bool:
    """running -> lost, if the status is still the one judged dead (re-checked under the lock)."""
    with lock(store):
        st = rd.status()
        if st.get("state") != "running" or st.get("pid") != seen.get("pid") or is_alive(st):
            return False
        where = f"pid {st.get('pid')} on {st.get('host')}" if st.get("pid") else f"on {st.get('host')}"
        hb = st.get("heartbeat")
        age = f", last heartbeat {time.time() - hb:.0f}s ago" if hb else ""
        words = _last_words(rd)
        transition(rd, "lost", pid=None, error=f"the run process ({where}) is gone without a final state{age}"
                   + (f"; its log ends: {words}" if words else ""))
        gpuqueue.release_run(store, rd.id)
    store.sync(rd)
    return True


def _reconcile_slurm_queued(store: Store, rds: dict[str, RunDir]) -> list[str]:
    """Queued Slurm runs whose job has ended (squeue -t all, sacct, or Slurm no longer knowing
    it) without the run starting: `stopped` when the job was cancelled (scancel outside advlc),
    `lost` otherwise; the error says so in one line, with the end of the job's stderr."""
    changed = []
    launches = {rid: rd.status().get("launch") or {} for rid, rd in rds.items()}
    ended = slurm.ended_jobs(launches)
    for rid, (job_state, why) in ended.items():
        rd = rds[rid]
        job_id = launches[rid].get("job_id")
        with lock(store):
            st = rd.status()
            if st.get("state") != "queued" or (st.get("launch") or {}).get("job_id") != job_id:
                continue            # started, stopped or resubmitted meanwhile
            words = slurm.job_log_words(rd, str(job_id)) if launches[rid].get("cluster") != "local" else ""
            again = f"`advlc resume {rd.id}` submits it again"
            if job_state == "CANCELLED":
                transition(rd, "stopped", pid=None, error=f"{why}: cancelled outside advlc before the run started; {again}")
            else:
                transition(rd, "lost", pid=None, error=f"{why} while the run was queued"
                           + (f"; the job's stderr ends: {words}" if words else "") + f"; {again}")
        store.sync(rd)
        changed.append(rid)
    return changed


# ------------------------------------------------------------------------------ delete
def delete(store: Store, rds: list[RunDir], *, force: bool = False) -> None:
    """Delete runs (directory and index row). Running or queued runs are refused unless
    `force`, which stops them first."""
    reconcile(store, rds)
    active = [rd for rd in rds if rd.status().get("state") in ("running", "queued")
              and (rd.status().get("state") == "running" or (rd.status().get("launch") or {}))]
    if active and not force:
        ids = ", ".join(f"{rd.id} ({rd.status().get('state')})" for rd in active)
        raise UserError(f"not deleting active runs: {ids}; stop them first or use --force")
    if active:
        stop(store, active)
    for rd in rds:
        gpuqueue.release_run(store, rd.id)
        store.delete(rd)


# ------------------------------------------------------------------------------ logs
def tail(rd: RunDir, lines: int = 50) -> list[str]:
    """The last `lines` lines of the run's log.txt."""
    return rd.log_tail(lines)


def follow(rd: RunDir, *, lines: int = 20, poll_s: float = 0.5, until_done: bool = True,
           timeout_s: float | None = None) -> Iterator[str]:
    """Yield the last `lines` lines of log.txt, then each new line as it is written; ends
    when the run is no longer queued/running (`until_done`) or after `timeout_s`."""
    yield from rd.log_tail(lines)
    try:
        pos = rd.log_path.stat().st_size
    except FileNotFoundError:
        pos = 0
    buf = b""
    t_end = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            with open(rd.log_path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            pos += len(chunk)
            buf += chunk
            *done, buf = buf.split(b"\n")
            for line in done:
                yield line.decode("utf-8", "replace")
            continue
        st = rd.status()
        if until_done and st.get("state") in FINAL_STATES:
            if buf:
                yield buf.decode("utf-8", "replace")
            return
        if until_done and st.get("state") == "running" and not is_alive(st):
            return
        if t_end is not None and time.monotonic() > t_end:
            return
        time.sleep(poll_s)


# ------------------------------------------------------------------------------ queue view
def queue_info(store: Store) -> dict:
    """What `advlc queue` shows: GPU leases, queued runs in order, the scheduler, and under
    "slurm" the queued and running Slurm runs with their job ids and what squeue says of
    them (state, the reason a job is pending, its node)."""
    return {**gpuqueue.info(store), "slurm": slurm.queue_rows(store)}
