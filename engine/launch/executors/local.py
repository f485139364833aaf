"""The local executor: each run's process started at once on this host, detached, with its share of
the CPU cores; runs that have GPUs go to the GPU queue instead (`--gpus`, or a CUDA run where
GPUs are visible).

The CPU budget: each process gets its share instead of every process taking every core (on 2
cores, 5 runs at torch's default ran at a load of 8-11 and took ten times longer together than
one after another).
"""

from __future__ import annotations

import os
import subprocess
from typing import Callable

from engine.config.presets import PlannedRun, env_limit
from engine.cores import usable_cores
from engine.errors import UserError
from engine.launch.executors.base import Executor
from engine.launch.executors.gpuqueue import GPU_QUEUE
from engine.launch.processes import HOST, here, is_alive, lock, process_matches, start_detached
from engine.store.index import Store
from engine.store.records import LocalLaunch, Status
from engine.store.rundir import RunDir
from engine.store.states import transition


MAX_DETACHED = 32
"""The most CPU runs started detached on this host that may run at once (ADVLC_MAX_DETACHED allows more)."""
MAX_DETACHED_ENV = "ADVLC_MAX_DETACHED"


def running_cpu_runs(store: Store) -> int:
    """Runs of this store running on this host without a GPU (they share its cores)."""
    n = 0
    for doc in store.runs(state="running", archived=None):
        try:
            st = store.run_dir(doc["id"]).status()
        except (OSError, ValueError, UserError):  # a damaged or vanished run runs nothing
            continue
        n += st.host == HOST and st.gpu is None and is_alive(st)
    return n


def cpu_thread_budget(store: Store, starting: int) -> int | None:
    """CPU threads for each of `starting` CPU runs about to start: the cores divided among them and
    the CPU runs already running here (those keep theirs), at least 1; None (torch's default, as
    in the foreground) when a run has the machine to itself."""
    sharing = starting + running_cpu_runs(store)
    return None if sharing <= 1 else max(1, usable_cores() // sharing)


def check_concurrency(store: Store, starting: int) -> None:
    """Refuse, before anything is created, to start `starting` detached CPU runs when that makes more
    than ADVLC_MAX_DETACHED (default MAX_DETACHED) running on this host at once."""
    limit = env_limit(MAX_DETACHED_ENV, MAX_DETACHED)
    running = running_cpu_runs(store) if starting <= limit else 0
    if starting + running > limit:
        now = f" ({running} already running)" if running else ""
        raise UserError(
            f"starting {starting} detached CPU runs{now} would run {starting + running} at once on this "
            f"host, more than the {limit} allowed (fewer --seeds, --gpus or --executor slurm to queue "
            f"them, or {MAX_DETACHED_ENV}=N to allow N)"
        )


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


def resolve_gpus(gpus: list[int] | None, planned: list[PlannedRun]) -> list[int] | None:
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


def check_devices(planned: list[PlannedRun]) -> None:
    """A run that asks for CUDA on a machine without it fails now, in one line, not detached later."""
    for p in planned:
        dev = str(p.cfg.train.device)
        if dev.startswith("cuda") and visible_gpu_count() == 0:
            raise UserError(f"train.device = {dev!r}: this machine has no CUDA device (use --device cpu)")


def stranded(st: Status) -> bool:
    """A queued run that only its launcher was going to start, and whose launcher (on this
    host) is gone: a local detached launch or a foreground `advlc run` killed midway."""
    who = st.launched_by
    if who is None:
        return False
    return here(who.host) and not process_matches(who.pid, who.pid_create_time)


def _mark_stranded(store: Store, rd: RunDir, seen: Status) -> bool:
    with lock(store):
        st = rd.status()
        if st.state != "queued" or st.launched_by != seen.launched_by or not stranded(st):
            return False
        who = st.launched_by
        transition(
            rd,
            "lost",
            pid=None,
            error=f"its launcher (pid {who.pid} on {who.host}) exited before "
            f"starting it; `advlc resume {rd.id}` starts it",
        )
    store.sync(rd)
    return True


class LocalExecutor(Executor):
    """At once on this host, detached; also a run never launched, or trained in the foreground."""

    TAG = LocalLaunch.TAG
    RECORD = LocalLaunch
    NAMED = True
    FOREGROUND = True

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
        """With `gpus` (or, when a run asks for CUDA, all visible GPUs) through the GPU queue,
        `slots_per_gpu` runs per GPU; without, each run starts at once. `params` are ignored."""
        gpus = resolve_gpus(gpus, planned)
        if gpus:
            return GPU_QUEUE.launch(store, planned, create, gpus=gpus, slots_per_gpu=slots_per_gpu, params=params)
        check_devices(planned)
        check_concurrency(store, len(planned))
        rds = create()
        threads = cpu_thread_budget(store, len(rds))
        for rd in rds:
            self._start(store, rd, threads)
        return rds

    def resume(self, store: Store, rd: RunDir, launch, checked: dict) -> None:
        self._start(store, rd, cpu_thread_budget(store, 1))

    @staticmethod
    def _start(store: Store, rd: RunDir, threads: int | None) -> None:
        rd.update_status(launch=LocalLaunch(host=HOST, threads=threads))
        start_detached(store, rd, threads=threads)

    def reconcile(self, store: Store, queued: dict[str, RunDir]) -> list[str]:
        """A queued run whose launcher died before starting it becomes `lost`, resumable."""
        changed = []
        for rid, rd in queued.items():
            st = rd.status()
            if st.state == "queued" and stranded(st) and _mark_stranded(store, rd, st):
                changed.append(rid)
        return changed


LOCAL = LocalExecutor()
