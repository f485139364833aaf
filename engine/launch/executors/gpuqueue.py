"""The GPU queue executor: lease files, one per GPU slot, and a scheduler that starts queued runs.

    $ADVLC_HOME/leases/<host>/gpu<G>-slot<S>.json   {"gpu", "slot", "run", "pid", "pid_create_time", ...}
    $ADVLC_HOME/leases/<host>/scheduler.lock        held by the one scheduler of this host
    $ADVLC_HOME/leases/<host>/scheduler.log         its output

A run launched with `gpus=[0, 1]` and `slots_per_gpu=1` waits as `queued` (status.json
`launch` says which GPUs it may use) until a slot on one of those GPUs is free; it is then
started with CUDA_VISIBLE_DEVICES set to that GPU and the lease names its process. A lease is
free when its file is missing, or its holder (pid + create time) is dead, or its run has
reached a final state: leases of crashed processes are reclaimed without anyone's help.

Queued runs are started in order (`queued_at`) by `schedule_once`, called by `launch` and by
the scheduler, `python -m engine.launch.executors.gpuqueue HOME`: a detached process started on demand
(`ensure_scheduler`) that polls once a second, removes the lease of each run that has ended,
and exits when no run of this host is queued and none holds a lease. It holds
`scheduler.lock` (an OS file lock, released if it dies), so two never run at once; it
re-checks the queue after releasing the lock, so a run queued while it was exiting is not
stranded (the launcher queues first, then starts a scheduler unless the lock is held). The
run process knows nothing of leases.

Leases are per host: one $ADVLC_HOME on a shared filesystem can serve several GPU machines.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from engine.config.presets import PlannedRun
from engine.cores import usable_cores
from engine.errors import CorruptFile
from engine.launch.executors.base import Executor
from engine.launch.processes import (
    HOST,
    child_env,
    create_time,
    here,
    lock,
    process_matches,
    python_module,
    reap,
    spawn_detached,
    start_detached,
)
from engine.store.files import read_json, write_json
from engine.store.index import Store
from engine.store.records import GpuQueueLaunch
from engine.store.rundir import RunDir
from engine.store.states import FINAL_STATES, transition

POLL_S = float(os.environ.get("ADVLC_SCHEDULER_POLL_S", "1.0"))
SCHEDULER_MODULE = "engine.launch.executors.gpuqueue"
"""`python -m SCHEDULER_MODULE ADVLC_HOME`: the scheduler (this module)."""


def host_dir(store: Store) -> Path:
    """$ADVLC_HOME/leases/<host>/, user-only."""
    d = store.home / "leases" / HOST
    if not d.is_dir():
        store.ensure()
        d.parent.mkdir(mode=0o700, exist_ok=True)
        d.mkdir(mode=0o700, exist_ok=True)
    return d


def lease_path(store: Store, gpu: int, slot: int) -> Path:
    return host_dir(store) / f"gpu{gpu}-slot{slot}.json"


def read_leases(store: Store) -> list[dict]:
    """This host's lease files, each with `path` and `live`."""
    d = store.home / "leases" / HOST
    if not d.exists():
        return []
    out = []
    for p in sorted(d.glob("gpu*-slot*.json")):
        doc = read_json(p, None)
        if not isinstance(doc, dict):
            doc = {}
        doc["path"] = str(p)
        doc["live"] = _lease_live(store, doc)
        out.append(doc)
    return out


def _lease_live(store: Store, doc: dict) -> bool:
    """A lease is held while its holder lives and its run has not reached a final state."""
    if not process_matches(doc.get("pid"), doc.get("pid_create_time")):
        return False
    run = doc.get("run")
    if run:
        st = store.run_dir(run).status()
        if st.state in FINAL_STATES or st.pid not in (None, doc.get("pid")):
            return False
    return True


def reclaim_stale(store: Store) -> list[str]:
    """Remove leases whose holder is gone; returns their paths."""
    gone = []
    for doc in read_leases(store):
        if not doc["live"]:
            try:
                os.unlink(doc["path"])
                gone.append(doc["path"])
            except FileNotFoundError:
                pass
    return gone


def release_run(store: Store, run_id: str) -> None:
    """Remove the leases held by a run (after it was stopped or found lost)."""
    d = store.home / "leases" / HOST
    if not d.exists():
        return
    for p in d.glob("gpu*-slot*.json"):
        doc = read_json(p, None)
        if isinstance(doc, dict) and doc.get("run") == run_id:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _free_slot(store: Store, gpus: list[int], slots: int) -> tuple[int, int] | None:
    """A free (gpu, slot): fill slot 0 of every GPU before slot 1, so runs spread out."""
    for s in range(slots):
        for g in gpus:
            p = lease_path(store, g, s)
            doc = read_json(p, None)
            if doc is None or not _lease_live(store, doc if isinstance(doc, dict) else {}):
                return g, s
    return None


def queued_runs(store: Store) -> list[RunDir]:
    """Runs of this host waiting for a GPU, in queue order."""
    out = []
    for rd in store.run_dirs():
        try:
            st = rd.status()
        except CorruptFile:  # not the queue's business: reconcile shows it `corrupt`
            continue
        if st.state == "queued" and isinstance(st.launch, GpuQueueLaunch) and here(st.launch.host):
            out.append((st.queued_at or 0.0, rd.id, rd))
    return [rd for _, _, rd in sorted(out, key=lambda t: (t[0], t[1]))]


def schedule_once(store: Store) -> list[str]:
    """Start every queued run that has a free slot; returns the ids started."""
    started = []
    with lock(store):
        for rd in queued_runs(store):
            st = rd.status()
            la = st.launch
            if st.state != "queued" or not isinstance(la, GpuQueueLaunch):
                continue
            slot = _free_slot(store, la.gpus, la.slots_per_gpu)
            if slot is None:
                continue
            gpu, s = slot
            lp = lease_path(store, gpu, s)
            try:
                slots = len(la.gpus) * la.slots_per_gpu
                pid = start_detached(store, rd, gpu=gpu, threads=max(1, usable_cores() // slots))
            except Exception as exc:  # noqa: BLE001 - one bad run must not stop the queue
                if rd.status().state in ("queued", "running"):
                    transition(rd, "failed", error=f"could not start: {exc}")
                store.sync(rd)
                continue
            write_json(
                lp,
                {
                    "gpu": gpu,
                    "slot": s,
                    "run": rd.id,
                    "pid": pid,
                    "pid_create_time": create_time(pid),
                    "host": HOST,
                    "since": time.time(),
                },
            )
            started.append(rd.id)
    return started


def _sched_lock(store: Store) -> FileLock:
    return FileLock(str(host_dir(store) / "scheduler.lock"), timeout=0, mode=0o600)


def scheduler_running(store: Store) -> bool:
    lk = _sched_lock(store)
    try:
        lk.acquire()
    except Timeout:
        return True
    lk.release()
    return False


def ensure_scheduler(store: Store) -> int | None:
    """Start the detached scheduler unless one runs; returns the new pid (None if one runs).

    A second one started by a race finds the lock held and exits at once."""
    if scheduler_running(store):
        return None
    d = host_dir(store)
    p = spawn_detached(
        python_module(SCHEDULER_MODULE, str(store.home)), log_path=d / "scheduler.log", env=child_env(store.home), cwd=d
    )
    return p.pid


def scheduler_pid(store: Store) -> int | None:
    doc = read_json(store.home / "leases" / HOST / "scheduler.json", None)
    if isinstance(doc, dict) and process_matches(doc.get("pid"), doc.get("pid_create_time")):
        return doc["pid"]
    return None


def scheduler_main(home: str) -> int:
    """The scheduler loop: start what fits, free the leases of ended runs, poll; exit when nothing
    of this host is queued and no run holds a lease."""
    store = Store(home)
    lk = _sched_lock(store)
    try:
        lk.acquire()
    except Timeout:
        print(f"{time.strftime('%H:%M:%S')} scheduler: another scheduler holds the lock; exiting", flush=True)
        return 0
    info = store.home / "leases" / HOST / "scheduler.json"
    write_json(
        info, {"pid": os.getpid(), "pid_create_time": create_time(os.getpid()), "host": HOST, "since": time.time()}
    )
    print(f"{time.strftime('%H:%M:%S')} scheduler {os.getpid()}: started", flush=True)
    try:
        while True:
            reap()
            reclaim_stale(store)
            for rid in schedule_once(store):
                print(f"{time.strftime('%H:%M:%S')} scheduler: started {rid}", flush=True)
            if queued_runs(store) or any(le.get("run") for le in read_leases(store)):
                time.sleep(POLL_S)  # runs wait, or runs hold leases this loop frees when they end
                continue
            # Queue empty: release, then look once more (a launcher that saw the lock held
            # queued its run before looking, so it is visible now).
            info.unlink(missing_ok=True)
            lk.release()
            if not queued_runs(store):
                print(f"{time.strftime('%H:%M:%S')} scheduler: queue empty; exiting", flush=True)
                return 0
            try:
                lk.acquire()
            except Timeout:
                return 0  # another scheduler took over
            write_json(
                info,
                {"pid": os.getpid(), "pid_create_time": create_time(os.getpid()), "host": HOST, "since": time.time()},
            )
    finally:
        if lk.is_locked:
            info.unlink(missing_ok=True)
            lk.release(force=True)


def info(store: Store) -> dict:
    """GPU leases, queued runs (in order) and the scheduler pid, for `advlc queue` and the app."""
    leases = read_leases(store)
    queued = []
    for rd in queued_runs(store):
        st = rd.status()
        if isinstance(st.launch, GpuQueueLaunch):
            queued.append(
                {
                    "id": rd.id,
                    "gpus": st.launch.gpus,
                    "slots_per_gpu": st.launch.slots_per_gpu,
                    "queued_at": st.queued_at,
                }
            )
    return {"host": HOST, "leases": leases, "queued": queued, "scheduler_pid": scheduler_pid(store)}


def retarget_device(rd: RunDir) -> None:
    """A queued run sees only its leased GPU (as `cuda`): a `cuda:N` device becomes `cuda` in
    runtime.json (config.json keeps the device asked for)."""
    dev = str(rd.config().value("train.device", ""))
    if dev.startswith("cuda:"):
        rd.update_runtime(device="cuda")


class GpuQueueExecutor(Executor):
    """Runs of this host that wait `queued` for a GPU lease; chosen by the local executor for `--gpus`."""

    TAG = GpuQueueLaunch.TAG
    RECORD = GpuQueueLaunch
    STARTS_LATER = True

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
        if not gpus:
            raise ValueError("the GPU queue needs the GPUs its runs may use")
        rds = create()
        now = time.time()
        for i, rd in enumerate(rds):
            retarget_device(rd)
            rd.update_status(
                queued_at=now + i * 1e-6, launch=GpuQueueLaunch(host=HOST, gpus=list(gpus), slots_per_gpu=slots_per_gpu)
            )
        store.sync_many(rds)
        self._start_what_fits(store, rds)
        return rds

    def resume(self, store: Store, rd: RunDir, launch, checked: dict) -> None:
        rd.update_status(launch=launch.replace(host=HOST))
        self._start_what_fits(store, [rd])

    @staticmethod
    def _start_what_fits(store: Store, rds: list[RunDir]) -> None:
        """Start what has a free slot now; a scheduler starts the rest as slots free up."""
        schedule_once(store)
        if any(rd.status().state == "queued" for rd in rds):
            ensure_scheduler(store)

    def release(self, store: Store, rd: RunDir) -> None:
        release_run(store, rd.id)

    def reconcile(self, store: Store, queued: dict[str, RunDir]) -> list[str]:
        """Stale leases are removed; queued runs of this host get a scheduler if none runs."""
        reclaim_stale(store)
        if any(here(rd.status().launch.host) for rd in queued.values()):
            ensure_scheduler(store)
        return []

    def queue_info(self, store: Store) -> dict:
        return info(store)


GPU_QUEUE = GpuQueueExecutor()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(f"usage: python -m {SCHEDULER_MODULE} ADVLC_HOME", file=sys.stderr)
        sys.exit(2)
    sys.exit(scheduler_main(sys.argv[1]))
