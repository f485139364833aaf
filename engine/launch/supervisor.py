"""Creating, launching, stopping, resuming, reconciling and deleting runs.

The CLI and the app call only this layer to start or stop work; it writes run directories
through `RunDir` and the index through `Store`.

A run is trained by its own process, `python -m engine.run RUN_DIR`, started detached
(own session, stdin from /dev/null, output appended to the run's `log.txt`), so closing
the terminal, the app or the SSH connection never stops it. An executor starts that process
(engine.launch.executors: local, at once; the GPU queue; Slurm through submitit); what differs
between them is asked of the executor of a run's launch record (`executor_for(status.launch)`).

States (engine.store.states): queued -> running -> finished | failed | stopped, and `lost`
when the process is gone without writing a final state (engine.launch.processes.is_alive).
`reconcile` turns dead `running` runs into `lost`; every CLI start and the app call it.
State changes made here (not by the run process) happen under the supervisor lock
(engine.launch.processes.lock).
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path
from typing import Iterator

import psutil

from engine.config import origin
from engine.config.presets import PlannedRun
from engine.config.schema import build, from_json, known_tables, label
from engine.errors import CorruptFile, UserError
from engine.launch.executors import EXECUTORS, Executor, executor_for, executor_named
from engine.launch.plan import run_record
from engine.launch.processes import HOST, create_time, is_alive, lock, own_session, owned, reap
from engine.nn.dataset_files import check_data
from engine.store.checkpoint_files import inspect as inspect_checkpoint
from engine.store.files import move_aside
from engine.store.index import Store
from engine.store.pack import sweep_unpacking
from engine.store.pack import unpack as unpack_archive
from engine.store.records import Launch, LocalLaunch, Process, Status
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
    `launched_by`, so a run this process dies before starting is found by `reconcile`. Each
    run's `run.origin` records how it was made (engine.config.origin: the overrides as given and
    resolved, the preset's hash, `PlannedRun.command`).
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
        config["run"] = {
            "preset": p.preset,
            "label": label(p.cfg),
            "seed": p.seed,
            "group": None if p.role else group,
            "point": p.point,
            "created": time.time(),
            "origin": origin.make(p),
        }
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
                    raise ValueError(
                        f"create_runs: the {role} teacher of a {p.preset} run must be planned "
                        f"before it (pass plan_runs' list unchanged)"
                    )
                recs[role] = run_record(ref, rid, store)
            config["run"]["teachers"] = recs
        rd = store.create_run(config, launched_by=me)
        made[id(p)] = rd
        out.append(rd)
    return out


# ------------------------------------------------------------------------------ launch
def launch(
    store: Store,
    planned: list[PlannedRun],
    *,
    gpus: list[int] | None = None,
    slots_per_gpu: int = 1,
    executor: str = "local",
    slurm_params: dict | None = None,
    group: str | None = None,
) -> list[RunDir]:
    """Create the planned runs and start them detached, or queue them; returns at once.

    executor "local": with `gpus` (or, when a run asks for CUDA, all visible GPUs) the runs go
    through the GPU queue, `slots_per_gpu` runs per GPU; without GPUs each starts at once.
    executor "slurm": each run is one submitit job (`slurm_params`: partition, time, gpus, account,
    ... ; the preset's `[slurm]` table gives the defaults; the other executors ignore them).
    """
    ex = executor_named(executor)
    if slots_per_gpu < 1:
        raise UserError(f"--slots-per-gpu {slots_per_gpu}: must be at least 1")
    return ex.launch(
        store,
        planned,
        lambda: create_runs(store, planned, group=group),
        gpus=gpus,
        slots_per_gpu=slots_per_gpu,
        params=slurm_params or {},
    )


# ------------------------------------------------------------------------------ stop
def _targets(rd: RunDir, st: Status) -> tuple[list, list[int], str | None]:
    """(psutil processes to signal, process groups to signal, why the run's recorded process is
    not signalled, or None) for a run's status. Only processes `owned` says are this run's are
    signalled, with their descendants; a whole process group only when the run's process leads
    its own session (`start_new_session`)."""
    ex = executor_for(st.launch)
    procs, groups, why = [], [], None
    wanted = [(True, st.pid, st.pid_create_time, st.host, ex.run_commands(rd))] if st.pid else []
    wanted += [(False, *w) for w in ex.processes(st, rd)]
    for its_own, pid, ct, host, commands in wanted:
        verdict = owned(pid, ct, host, commands)
        if verdict.kind == "foreign":
            if its_own and st.state == "running" and not (ex.REMOTE and host != HOST):
                why = verdict.why  # a remote cluster's run is stopped by cancelling its job
            continue
        if verdict.kind != "ours":
            continue
        p = verdict.process
        try:
            kids = p.children(recursive=True)
        except psutil.Error:
            kids = []
        procs += [p, *kids]
        if own_session(p):
            groups.append(p.pid)
    return procs, groups, why


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


def _job(st: Status) -> tuple[Executor, str | None]:
    """The run's executor, and the id of a job its cluster holds for it (to cancel)."""
    ex = executor_for(st.launch)
    return ex, ex.job(st)


def _remote_running(rd: RunDir) -> bool:
    """Is the run `running` with a process that may be on another host (a Slurm node)?"""
    st = rd.status()
    return st.state == "running" and executor_for(st.launch).REMOTE


def stop(store: Store, rds: list[RunDir], *, grace_s: float = 10.0) -> dict[str, str]:
    """`_stop`; returns {run id: one line} for each run left alone (its recorded process is not its own)."""
    return {
        rid: f"run {rid}: its recorded process is not this run's ({why}); nothing was signalled and "
        f"the run is left running"
        for rid, why in _stop(store, rds, grace_s=grace_s).items()
    }


def _stop(store: Store, rds: list[RunDir], *, grace_s: float = 10.0) -> dict[str, str]:
    """Stop runs: SIGTERM to each run's own processes (its process group when it leads its own
    session), up to `grace_s` to exit cleanly (the run writes `stopped` and keeps last.pt), then
    SIGKILL; queued runs leave the queue; a cluster's jobs are cancelled. Every run ends
    `stopped` (or the final state it reached on its own), what it held (a GPU lease) given back.

    A process is signalled only when engine.launch.processes.owned says it is the run's (host,
    pid and start time as recorded, and the command advlc starts for that run). A `running` run
    whose recorded process is something else is left as it is and nothing is signalled; returns
    {run id: what that process is} for those."""
    reap()
    for ex in {ex for ex, job in (_job(rd.status()) for rd in rds) if job}:
        ex.check_cancel()  # e.g. no scancel here: refuse before any run is marked stopped
    procs, groups, jobs, refused = [], [], {}, {}
    with lock(store):
        for rd in rds:
            st = rd.status()
            ex, job = _job(st)
            if job:
                jobs.setdefault(ex, []).append(job)
            if st.state == "queued" and rd.status_path.exists():
                transition(rd, "stopped", pid=None)
            p, g, why = _targets(rd, st)
            if why:
                refused[rd.id] = why
            procs += p
            groups += g
    for ex, ids in jobs.items():
        ex.cancel(ids)
    _signal(procs, groups, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    _, alive = psutil.wait_procs(procs, timeout=max(0.0, grace_s))
    while any(_group_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    # a process on another host (a Slurm node) is signalled by its cluster (scancel): it writes `stopped` itself
    remote = [rd for rd in rds if rd.id not in refused and rd.exists() and _remote_running(rd)]
    while remote and time.monotonic() < deadline:
        time.sleep(0.1)
        remote = [rd for rd in remote if rd.status().state == "running"]
    if alive or any(_group_alive(g) for g in groups):
        _signal(alive, [g for g in groups if _group_alive(g)], signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)
        end = time.monotonic() + 5
        while any(_group_alive(g) for g in groups) and time.monotonic() < end:
            time.sleep(0.02)
    reap()
    with lock(store):
        for rd in rds:
            if rd.id in refused:
                continue
            st = rd.status()
            if st.state in ("queued", "running") and rd.status_path.exists():
                transition(rd, "stopped", pid=None)
            executor_for(st.launch).release(store, rd)
    store.sync_many([rd for rd in rds if rd.exists()])
    return refused


# ------------------------------------------------------------------------------ resume
def check_resumable(store: Store, rd: RunDir) -> None:
    """Raise a one-line UserError unless the run can be resumed (after reconciling it)."""
    reconcile(store, [rd])
    st = rd.status()
    if st.state == "running":
        raise UserError(f"run {rd.id} is running (pid {st.pid} on {st.host}); nothing to resume")
    if st.state == "finished":
        raise UserError(f"run {rd.id} has finished; nothing to resume")
    if st.state == "queued" and st.launch is not None:
        raise UserError(f"run {rd.id} is queued already (see `advlc queue`)")


def resume(store: Store, rd: RunDir, *, source: str = "last", slurm_params: dict | None = None) -> RunDir:
    """Continue a stopped, lost or failed run from its last.pt (or best.pt, or from scratch; or
    start a never-started one), detached, the way it was launched (the same GPU queue, or
    Slurm), otherwise at once. `slurm_params` (partition, time, account, gpus; None = keep)
    change a Slurm run's parameters for its new job; they are checked before anything changes."""
    given = {k: v for k, v in (slurm_params or {}).items() if v is not None}
    before = rd.status().launch
    ex = executor_for(before)
    checked = ex.check_resume(rd, before, given)
    ex.resume(store, rd, prepare_resume(store, rd, source=source), checked)
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
            raise UserError(
                f"run {rd.id} has no best.pt to resume from (it has: {', '.join(rd.checkpoints()) or 'none'});"
                f" start over with `advlc resume {rd.id} --from scratch`"
            )
        return 0
    hint = (
        f"resume from best.pt with `advlc resume {rd.id} --from best`, or start over with `--from scratch`"
        if name == "last"
        else f"start over with `advlc resume {rd.id} --from scratch`"
    )
    info = inspect_checkpoint(path, hint)
    return int(info["epoch"]) if name == "last" else int(info["epoch"]) + 1


def prepare_resume(store: Store, rd: RunDir, *, foreground: bool = False, source: str = "last") -> Launch | None:
    """Check that `rd` can be resumed from `source` (last.pt, best.pt or from scratch) and queue
    it again; returns how it was launched before (its launch record, None when it never was).
    The epoch it starts at is in status.json (`resume_epoch`). With `foreground` the caller
    trains it in its own process."""
    if source not in RESUME_FROM:
        raise UserError(f"--from {source}: must be one of {', '.join(RESUME_FROM)}")
    check_resumable(store, rd)
    store.check_writable()
    rd.metrics()  # a damaged metrics.json is named now; nothing will write over it
    check_data(from_json(rd.config_json()).data)
    epoch = resume_epoch(rd, source)
    before = rd.status().launch
    with lock(store):
        if source != "last":  # last.pt (damaged, or not wanted) is kept aside, not used
            for name in ("last",) if source == "best" else ("last", "best", "swa_best", "swa_end"):
                if rd.ckpt(name).exists():
                    move_aside(rd.ckpt(name))
        transition(
            rd,
            "queued",
            error=None,
            ended=None,
            pid=None,
            resumed=time.time(),
            queued_at=time.time(),
            resume_from=source if source == "best" else None,
            resume_epoch=epoch,
            launched_by=Process(pid=os.getpid(), pid_create_time=create_time(os.getpid()), host=HOST),
        )
        if foreground:
            rd.update_status(launch=LocalLaunch(host=HOST))
    store.sync(rd)
    return before


# ------------------------------------------------------------------------------ reconcile
def reconcile(store: Store, rds: list[RunDir] | None = None) -> list[str]:
    """Make states truthful; returns the ids whose state changed.

    - a `running` run whose process is gone becomes `lost` (with the last lines of its log);
      what it held (a GPU lease) is given back;
    - each executor looks at its `queued` runs (`Executor.reconcile`): a run whose launcher died
      before starting it becomes `lost`, resumable; a Slurm job that ended without the run ever
      starting makes it `lost` (`stopped` when cancelled); stale GPU leases are removed and
      queued GPU runs get a scheduler if none is running;
    - the index follows status.json (a run that ended between its last status write and its
      index update, a run directory missing from the index, an index row without a directory)
      and meta.json (an annotation killed between its meta.json and its index write: a meta.json
      newer than index.json, seen with one stat per run, re-syncs the run's row);
      a run whose files cannot be read shows as `corrupt` with what to do;
    - temporary files left by killed writers, and the staging folders of killed unpacks, are
      removed (a full pass only).
    """
    if not store.runs_dir.exists():
        return []
    reap()
    full = rds is None
    rds = store.run_dirs() if full else rds
    indexed_at = _mtime_ns(store.index_path)  # before the index is read: a later write only adds a sync
    index = {r["id"]: r for r in store.index()}
    changed: list[str] = []
    queued: dict[Executor, dict[str, RunDir]] = {}
    for rd in rds:
        try:
            st = rd.status()
            if not rd.config_path.exists():  # a run whose config.json is lost: listed as corrupt
                raise CorruptFile(rd.config_path, "is missing", "")
        except CorruptFile:
            if rd.id not in index or index[rd.id]["state"] != "corrupt":
                store.sync(rd)
            continue
        if st.state == "running" and not is_alive(st):
            if _mark_lost(store, rd, st):
                changed.append(rd.id)
                continue
        elif st.state == "queued":
            queued.setdefault(executor_for(st.launch), {})[rd.id] = rd
        row = index.get(rd.id)
        moved = row is None or row["state"] != rd.status().state
        if moved:
            store.sync(rd)  # summarised under the index lock: never an older summary
            if row is not None:
                changed.append(rd.id)
        elif _mtime_ns(rd.meta_path) > indexed_at:
            try:  # an annotation newer than the index: its row brought up to date
                store.sync(rd)
            except OSError:  # a read-only store: the row waits, its meta.json is whole
                pass
    for ex in EXECUTORS:
        changed += ex.reconcile(store, queued.get(ex, {}))
    if full:
        store.prune([rid for rid in index if not _exists(store, rid)])
        store.sweep_temporary()
        sweep_unpacking(store)
    return list(dict.fromkeys(changed))


def _mtime_ns(path: Path) -> int:
    """A file's modification time in ns; -1 when there is none (a run without meta.json)."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def _exists(store: Store, rid: str) -> bool:
    try:
        return store.run_dir(rid).exists()
    except UserError:  # an index row whose id is not a run id: drop it
        return False


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


def _mark_lost(store: Store, rd: RunDir, seen: Status) -> bool:
    """running -> lost, if the status is still the one judged dead (re-checked under the lock)."""
    with lock(store):
        st = rd.status()
        if st.state != "running" or st.pid != seen.pid or is_alive(st):
            return False
        where = f"pid {st.pid} on {st.host}" if st.pid else f"on {st.host}"
        age = f", last heartbeat {time.time() - st.heartbeat:.0f}s ago" if st.heartbeat else ""
        words = _last_words(rd)
        transition(
            rd,
            "lost",
            pid=None,
            error=f"the run process ({where}) is gone without a final state{age}"
            + (f"; its log ends: {words}" if words else ""),
        )
        executor_for(st.launch).release(store, rd)
    store.sync(rd)
    return True


# ------------------------------------------------------------------------------ delete
def delete(store: Store, rds: list[RunDir], *, force: bool = False) -> dict[str, str]:
    """Delete runs (directory and index row). Running or queued runs are refused unless
    `force`, which stops them first (`stop`: only the runs' own processes are signalled);
    returns {run id: why} for runs whose recorded process was not theirs and was left alone."""
    reconcile(store, rds)
    statuses = {rd.id: rd.status() for rd in rds}
    active = [
        rd
        for rd in rds
        if statuses[rd.id].state == "running"
        or (statuses[rd.id].state == "queued" and statuses[rd.id].launch is not None)
    ]
    if active and not force:
        ids = ", ".join(f"{rd.id} ({statuses[rd.id].state})" for rd in active)
        raise UserError(f"not deleting active runs: {ids}; stop them first or use --force")
    refused = _stop(store, active) if active else {}
    for rd in rds:
        executor_for(statuses[rd.id].launch).release(store, rd)
        store.delete(rd)
    return {
        rid: f"run {rid}: its recorded process is not this run's ({why}); nothing was signalled, the run's "
        f"folder is deleted all the same"
        for rid, why in refused.items()
    }


# ------------------------------------------------------------------------------ unpack
def check_config(config: dict, where: str) -> None:
    """A run's config (config.json's JSON) validated like a preset (engine.config.schema.build:
    each value's type and allowed values, then the cross-field rules and the method's own); a
    one-line UserError naming `where` and the key otherwise. Keys this advlc does not know are
    left out: the run reads them from nowhere (engine.config.schema.from_json skips them too)."""
    build(known_tables(config), where)


def unpack(store: Store, path: Path) -> list[RunDir]:
    """`advlc unpack`: the runs of an archive added to the store as data (engine.store.pack.unpack),
    each run's config checked like a preset first. Imported runs have no launch record: resuming
    one uses the executor the user's own command asks for."""
    return unpack_archive(store, Path(path), check_config=check_config)


# ------------------------------------------------------------------------------ logs
def tail(rd: RunDir, lines: int = 50) -> list[str]:
    """The last `lines` lines of the run's log.txt."""
    return rd.log_tail(lines)


def follow(
    rd: RunDir, *, lines: int = 20, poll_s: float = 0.5, until_done: bool = True, timeout_s: float | None = None
) -> Iterator[str]:
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
        if until_done and st.state in FINAL_STATES:
            if buf:
                yield buf.decode("utf-8", "replace")
            return
        if until_done and st.state == "running" and not is_alive(st):
            return
        if t_end is not None and time.monotonic() > t_end:
            return
        time.sleep(poll_s)


# ------------------------------------------------------------------------------ queue view
def queue_info(store: Store) -> dict:
    """What `advlc queue` shows, each executor's part (`Executor.queue_info`): GPU leases, queued
    runs in order, the scheduler, and under "slurm" the queued and running Slurm runs with their
    job ids and what squeue says of them (state, the reason a job is pending, its node)."""
    info: dict = {}
    for ex in EXECUTORS:
        info.update(ex.queue_info(store))
    return info
