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
from engine.errors import UserError
from engine.launch import gpuqueue, slurm
from engine.launch.local import lock, start_detached
from engine.launch.plan import run_record
from engine.launch.processes import HOST, is_alive, process_matches, reap
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
    """
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
        rd = store.create_run(config)
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
            slurm.executor_for(Path(tmp), "advlc-check", params)
        rds = create_runs(store, planned, group=group)
        for rd in rds:
            slurm.submit(store, rd, params)
        return rds
    gpus = _resolve_gpus(gpus, planned)
    rds = create_runs(store, planned, group=group)
    if gpus is None:
        for rd in rds:
            rd.update_status(launch={"executor": "local", "host": HOST})
            start_detached(store, rd)
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


def stop(store: Store, rds: list[RunDir], *, grace_s: float = 10.0) -> None:
    """Stop runs: SIGTERM to each process group, up to `grace_s` to exit cleanly (the run
    writes `stopped` and keeps last.pt), then SIGKILL; queued runs leave the queue.
    Every run ends `stopped` (or the final state it reached on its own), its GPU lease freed."""
    reap()
    procs, groups, slurm_jobs = [], [], []
    with lock(store):
        for rd in rds:
            st = rd.status()
            launch_ = st.get("launch") or {}
            if launch_.get("executor") == "slurm" and st.get("state") in ("queued", "running") \
                    and launch_.get("cluster", "slurm") != "local" and launch_.get("job_id"):
                slurm_jobs.append(str(launch_["job_id"]))
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


def resume(store: Store, rd: RunDir) -> RunDir:
    """Continue a stopped, lost or failed run from its last.pt (or start a never-started one),
    detached, the way it was launched (the same GPU queue, or Slurm), otherwise at once."""
    launch_ = prepare_resume(store, rd)
    if launch_.get("executor") == "slurm":
        slurm.submit(store, rd, launch_.get("params") or {})
    elif launch_.get("gpus"):
        rd.update_status(launch={**launch_, "host": HOST})
        gpuqueue.schedule_once(store)
        if rd.status().get("state") == "queued":
            gpuqueue.ensure_scheduler(store)
    else:
        rd.update_status(launch={"executor": "local", "host": HOST})
        start_detached(store, rd)
    return rd


def prepare_resume(store: Store, rd: RunDir, *, foreground: bool = False) -> dict:
    """Check that `rd` can be resumed and queue it again; returns how it was launched before.
    With `foreground` the caller trains it in its own process (engine.run.process.run)."""
    check_resumable(store, rd)
    launch_ = rd.status().get("launch") or {}
    with lock(store):
        transition(rd, "queued", error=None, ended=None, pid=None, resumed=time.time(), queued_at=time.time())
        if foreground:
            rd.update_status(launch={"executor": "local", "host": HOST})
    store.sync(rd)
    return launch_


# ------------------------------------------------------------------------------ reconcile
def reconcile(store: Store, rds: list[RunDir] | None = None) -> list[str]:
    """Make states truthful; returns the ids whose state changed.

    - a `running` run whose process is gone becomes `lost` (its last lines of log.txt kept
      as the error); its GPU lease is freed;
    - a `queued` Slurm job that ended without the run ever starting becomes `lost`;
    - the index follows status.json (a run that ended between its last status write and its
      index update, a run directory missing from the index, an index row without a directory);
    - stale GPU leases are removed; queued GPU runs get a scheduler if none is running.
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
        st = rd.status()
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
        row = index.get(rd.id)
        if row is None or row.get("state") != rd.status().get("state"):
            store.sync(rd)          # summarised under the index lock: never an older summary
            if row is not None:
                changed.append(rd.id)
    if slurm_queued:
        changed += _reconcile_slurm_queued(store, slurm_queued)
    if full:
        store.prune([rid for rid in index if not store.run_dir(rid).exists()])
    gpuqueue.reclaim_stale(store)
    if need_scheduler:
        gpuqueue.ensure_scheduler(store)
    return changed


def _mark_lost(store: Store, rd: RunDir, seen: dict) -> bool:
    """running -> lost, if the status is still the one judged dead (re-checked under the lock)."""
    with lock(store):
        st = rd.status()
        if st.get("state") != "running" or st.get("pid") != seen.get("pid") or is_alive(st):
            return False
        where = f"pid {st.get('pid')} on {st.get('host')}" if st.get("pid") else f"on {st.get('host')}"
        tail = "\n".join(rd.log_tail(8))
        hb = st.get("heartbeat")
        age = f", last heartbeat {time.time() - hb:.0f}s ago" if hb else ""
        transition(rd, "lost", pid=None, error=f"the run process ({where}) is gone without a final state{age}"
                   + (f"; log.txt ends:\n{tail}" if tail else ""))
        gpuqueue.release_run(store, rd.id)
    store.sync(rd)
    return True


def _reconcile_slurm_queued(store: Store, rds: dict[str, RunDir]) -> list[str]:
    changed = []
    ended = slurm.ended_jobs({rid: rd.status().get("launch", {}) for rid, rd in rds.items()})
    for rid, why in ended.items():
        rd = rds[rid]
        with lock(store):
            st = rd.status()
            if st.get("state") != "queued":
                continue
            transition(rd, "lost", error=f"the Slurm job ended ({why}) before the run started; see {rd.submitit_dir}")
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
    """What `advlc queue` shows: GPU leases, queued runs in order, the scheduler."""
    return gpuqueue.info(store)
