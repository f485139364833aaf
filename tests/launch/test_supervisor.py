"""The supervisor: detached runs, stop and exact resume, truthful states, the store under
stress (kills, concurrent writers), the GPU queue, and Slurm through submitit.

Every training here is a short digits run on CPU in a real child process; waits poll with
a timeout. Stress figures are printed (`pytest -s`) and recorded in docs/SUPERVISOR.md.
"""

import ast
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import helpers
import psutil
import pytest
from helpers import TIMING_KEYS, force_status

from engine.errors import UserError
from engine.launch import supervisor as S
from engine.launch.executors import gpuqueue
from engine.launch.plan import plan_runs
from engine.launch.processes import HOST, create_time, is_alive
from engine.store.files import write_json
from engine.store.index import Store
from engine.store.records import GpuQueueLaunch, SlurmLaunch
from engine.store.rundir import RunDir
from engine.store.states import FINAL_STATES

PRESET = "quick/digits-fgsm_n"
NOISE = TIMING_KEYS
TIMEOUT = 180  # generous: the test machine is shared and slow


@pytest.fixture(autouse=True)
def _child_env(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # children inherit it
    monkeypatch.setenv("ADVLC_SCHEDULER_POLL_S", "0.2")


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "home").ensure()


def plan(epochs=2, seeds=None, extra=()):
    return plan_runs(PRESET, [f"train.epochs={epochs}", "eval.n=100", *extra], seeds=seeds)


def wait_for(pred, timeout=TIMEOUT, interval=0.05, what="condition"):
    return helpers.wait_for(pred, timeout, interval, what)


def wait_state(rd, states=FINAL_STATES, timeout=TIMEOUT):
    wait_for(lambda: rd.status().state in states, timeout, what=f"{rd.id} in {states}")
    return rd.status().state


def strip(recs):
    return [{k: v for k, v in r.items() if k not in NOISE} for r in recs]


def index_doc(store):
    return json.loads(store.index_path.read_text())  # raises if the file does not parse


def gone(pid, timeout=10):
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True


def group_empty(pgid):
    try:
        os.killpg(pgid, 0)
        return False
    except ProcessLookupError:
        return True


# ------------------------------------------------------------------------------ detached
@pytest.mark.slow
def test_detached_runs_survive_their_parent(store):
    """`launch` in a process that exits at once: the runs go on in their own sessions; one
    finishes, one fails and keeps its error."""
    code = (
        "import sys; from engine.store.index import Store; from engine.config.presets import preset_runs; "
        "from engine.launch.supervisor import launch; s = Store(sys.argv[1]); "
        f"[a] = launch(s, preset_runs({PRESET!r}, ['train.epochs=3', 'eval.n=100'])); "
        f"[b] = launch(s, preset_runs({PRESET!r}, ['train.batch_size=5000'])); "
        "print(a.id, b.id)"
    )
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code, str(store.home)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    t_parent = time.monotonic() - t0
    rd, bad = (store.get(rid) for rid in p.stdout.split()[-2:])
    st = rd.status()
    assert st.state == "running" and is_alive(st)  # the parent is gone, the run is not
    pid = st.pid
    assert os.getsid(pid) == pid and os.getsid(pid) != os.getsid(0)
    assert psutil.Process(pid).ppid() != os.getpid()
    lines = list(S.follow(rd, poll_s=0.1, timeout_s=TIMEOUT))
    assert rd.status().state == "finished", lines[-5:]
    assert any(line.startswith("epoch   2") for line in lines)
    assert [r["epoch"] for r in rd.epochs()] == [0, 1, 2]
    assert gone(pid)

    assert wait_state(bad) == "failed"
    st = bad.status()
    assert "train.batch_size = 5000" in st.error and not is_alive(st)
    assert S.reconcile(store) == [] and bad.status().state == "failed"
    assert store.runs(state="failed")[0]["error"] == st.error
    print(
        f"\ndetached runs: the parent exited after {t_parent:.1f}s; the runs ended on their own "
        f"{time.monotonic() - t0:.1f}s after it started"
    )


# ------------------------------------------------------------------------------ stop
@pytest.mark.slow
def test_stop_frees_everything(store, monkeypatch):
    """SIGTERM stops cleanly (the run writes `stopped`, last.pt kept); grace 0 escalates to
    SIGKILL; either way no process is left and the GPU lease is free. (Meanwhile: the
    heartbeat thread keeps status.json fresh.)"""
    monkeypatch.setenv("ADVLC_HEARTBEAT_S", "0.2")
    a, b = S.launch(store, plan(epochs=500, seeds=2), gpus=[0, 1])
    for rd in (a, b):
        wait_for(lambda: rd.ckpt("last").exists(), what=f"{rd.id} epoch 1")
    assert a.status().heartbeat_s == 0.2
    hb = a.status().heartbeat
    wait_for(lambda: a.status().heartbeat > hb, timeout=30, what="a heartbeat")
    assert len(gpuqueue.read_leases(store)) == 2
    pids = [rd.status().pid for rd in (a, b)]
    procs = [psutil.Process(p) for p in pids]
    procs += [c for p in procs for c in p.children(recursive=True)]

    S.stop(store, [a], grace_s=15)
    st = a.status()
    assert st.state == "stopped" and st.error is None and st.pid is None
    assert a.ckpt("last").exists() and gone(pids[0], 1) and group_empty(pids[0])
    assert "Traceback" not in a.log_path.read_text()

    S.stop(store, [b], grace_s=0)  # no grace: SIGKILL right after SIGTERM
    assert b.status().state == "stopped" and gone(pids[1], 1) and group_empty(pids[1])
    assert all(not p.is_running() for p in procs)
    assert gpuqueue.read_leases(store) == []
    assert {r["state"] for r in store.runs()} == {"stopped"}
    S.stop(store, [a, b])  # stopping a stopped run changes nothing
    assert a.status().state == b.status().state == "stopped"


# ------------------------------------------------------------------------------ resume
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted detached run: the records every resumed run must reproduce."""
    store = Store(tmp_path_factory.mktemp("ref")).ensure()
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # as for every other child here
    try:
        [rd] = S.launch(store, plan(epochs=RESUME_EPOCHS))
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    assert wait_state(rd) == "finished"
    return strip(rd.epochs())


RESUME_EPOCHS = 8


def _kill_and_reconcile(store, rd, kills):
    pid = rd.status().pid
    os.kill(pid, signal.SIGKILL)
    assert gone(pid)
    assert rd.status().state == "running"  # nobody wrote a final state
    assert S.reconcile(store) == [rd.id]
    st = rd.status()
    assert st.state == "lost" and "gone without a final state" in st.error
    assert index_doc(store) and store.runs()[0]["state"] == "lost"  # the index parses
    assert S.reconcile(store) == []
    kills.append(len(rd.epochs()))


@pytest.mark.slow
def test_interrupted_four_ways_then_resumed_equals_uninterrupted(store, reference):
    """One run, SIGKILLed during start-up, right after an epoch and during an epoch, then
    stopped (SIGTERM); after each kill it is left `running`, reconcile makes it `lost`, the
    index parses, and resume goes on from last.pt. It ends with the same epoch records as
    the uninterrupted run."""
    kills = []
    [rd] = S.launch(store, plan(epochs=RESUME_EPOCHS))
    _kill_and_reconcile(store, rd, kills)  # during interpreter start / imports
    S.resume(store, rd)
    wait_for(lambda: len(rd.epochs()) >= 2, what="2 epochs")
    _kill_and_reconcile(store, rd, kills)  # right after an epoch
    S.resume(store, rd)
    wait_for(lambda: len(rd.epochs()) >= 4 and rd.status().pid, what="4 epochs")
    time.sleep(rd.epochs()[-1]["time_s"] / 2)
    _kill_and_reconcile(store, rd, kills)  # during an epoch
    S.resume(store, rd)
    wait_for(lambda: len(rd.epochs()) >= 6, what="6 epochs")
    pid = rd.status().pid
    S.stop(store, [rd])  # SIGTERM: a clean stop
    assert gone(pid) and rd.status().state == "stopped" and rd.status().error is None
    kills.append(len(rd.epochs()))
    assert kills[0] == 0 and 2 <= kills[1] < 4 <= kills[2] < 6 <= kills[3] < RESUME_EPOCHS, kills
    S.resume(store, rd)
    assert wait_state(rd) == "finished", rd.log_tail(10)
    assert strip(rd.epochs()) == reference
    log = rd.log_path.read_text()
    assert log.count("advlc: starting") == 5 and log.count("resumed from") == 3
    print(
        f"\nSIGKILL x3 + SIGTERM x1 (epoch records at each: {kills}) -> lost x3, stopped x1 -> "
        f"resumed to {len(reference)} records identical to the uninterrupted run"
    )


def test_resume_refuses_running_and_finished(store):
    [rd] = S.launch(store, plan(epochs=500))
    with pytest.raises(UserError, match="is running"):
        S.resume(store, rd)
    S.stop(store, [rd], grace_s=0)
    force_status(rd, state="finished")
    with pytest.raises(UserError, match="has finished"):
        S.resume(store, rd)


# ------------------------------------------------------------------------------ reconcile
def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_reconcile_liveness_rules(store):
    """pid + create time on this host; heartbeat age elsewhere; final states untouched."""
    now = time.time()
    me = psutil.Process()
    cases = {
        "dead_pid": dict(pid=_dead_pid(), pid_create_time=now - 5, host=HOST, heartbeat=now),
        "recycled_pid": dict(pid=os.getpid(), pid_create_time=me.create_time() - 100, host=HOST, heartbeat=now),
        "alive_pid": dict(pid=os.getpid(), pid_create_time=me.create_time(), host=HOST, heartbeat=now - 3600),
        "remote_fresh": dict(pid=12345, host="node-elsewhere", heartbeat=now - 5, heartbeat_s=5),
        "remote_stale": dict(pid=12345, host="node-elsewhere", heartbeat=now - 31, heartbeat_s=5),
    }
    rds = {}
    for name, st in cases.items():
        [rd] = S.create_runs(store, plan())
        force_status(rd, state="running", **st)
        store.sync(rd)
        rds[name] = rd
    [done] = S.create_runs(store, plan())
    force_status(done, state="finished", pid=_dead_pid(), host=HOST)
    store.sync(done)
    assert is_alive(rds["alive_pid"].status()) and is_alive(rds["remote_fresh"].status())
    changed = S.reconcile(store)
    assert sorted(changed) == sorted(rds[n].id for n in ("dead_pid", "recycled_pid", "remote_stale"))
    states = {n: rd.status().state for n, rd in rds.items()}
    assert states == {
        "dead_pid": "lost",
        "recycled_pid": "lost",
        "alive_pid": "running",
        "remote_fresh": "running",
        "remote_stale": "lost",
    }
    assert re.search(r"last heartbeat 3\ds ago", rds["remote_stale"].status().error)
    assert done.status().state == "finished"
    assert {r["id"]: r["state"] for r in store.runs()} == {
        **{rd.id: states[n] for n, rd in rds.items()},
        done.id: "finished",
    }


def test_reconcile_repairs_the_index(store):
    a, b = S.create_runs(store, plan(seeds=2))
    force_status(a, state="finished")  # ended before its index update
    (store.runs_dir / b.id / "config.json").unlink()  # a run that lost its config: listed, never hidden
    [c] = S.create_runs(store, plan())
    shutil.rmtree(c.path)  # an index row without a directory
    S.reconcile(store)
    rows = {r["id"]: r["state"] for r in store.runs()}
    assert rows == {a.id: "finished", b.id: "corrupt"}


# ------------------------------------------------------------------------------ store under stress
def _index_worker(home, k, n_updates, out):
    store = Store(home)
    rds = [
        store.create_run(
            {"run": {"preset": "stress", "seed": k * 10 + j, "created": time.time()}, "train": {"epochs": n_updates}}
        )
        for j in range(2)
    ]
    me = {"pid": os.getpid(), "pid_create_time": create_time(os.getpid()), "host": HOST}
    writes = 2
    for i in range(n_updates):
        rd = rds[i % 2]
        force_status(rd, state="running", heartbeat=float(i), epoch=i, **me)  # alive: reconcile keeps it
        store.sync(rd)
        writes += 1
    for rd in rds:
        force_status(rd, state="finished", heartbeat=float(n_updates), pid=None)
        store.sync(rd)
        writes += 1
    out.put((k, [rd.id for rd in rds], writes))


def _victim(home, rid):
    """Updates one run's status and index entry as fast as it can, until it is SIGKILLed."""
    store = Store(home)
    rd = RunDir(store.runs_dir / rid)
    i = 0
    while True:
        force_status(
            rd,
            state="running",
            heartbeat=float(i),
            pid=os.getpid(),
            pid_create_time=create_time(os.getpid()),
            host=HOST,
        )
        store.sync(rd)
        i += 1


def _reconciler(home, stop_at):
    store = Store(home)
    n = 0
    while time.time() < stop_at:
        S.reconcile(store)
        n += 1
    return n


@pytest.mark.slow
def test_index_survives_concurrent_writers_kills_and_reconcile(store):
    """8 processes create runs and update the index while another reconciles in a loop,
    other writers are SIGKILLed mid-update again and again, and this one reads: every read
    parses, no update is lost, the lock is never left held."""
    import threading

    n_proc, n_updates, n_kills = 8, 40, 12
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    victims = [rd.id for rd in S.create_runs(store, plan(seeds=2))]
    procs = [ctx.Process(target=_index_worker, args=(str(store.home), k, n_updates, out)) for k in range(n_proc)]
    rec = ctx.Process(target=_reconciler, args=(str(store.home), time.time() + 8))
    kills = []

    def killer():
        import random

        rnd = random.Random(0)
        for k in range(n_kills):
            rd = RunDir(store.runs_dir / victims[k % 2])
            v = ctx.Process(target=_victim, args=(str(store.home), rd.id))
            v.start()
            wait_for(lambda: rd.status().pid == v.pid, timeout=60, interval=0.01, what="the victim")
            time.sleep(rnd.random() * 0.3)  # somewhere in its write loop
            os.kill(v.pid, signal.SIGKILL)
            v.join(10)
            kills.append(v.exitcode)

    kt = threading.Thread(target=killer)
    t0 = time.monotonic()
    for p in procs + [rec]:
        p.start()
    kt.start()
    reads = bad = 0
    while any(p.is_alive() for p in procs) or kt.is_alive():
        try:
            index_doc(store)
            reads += 1
        except FileNotFoundError:
            pass
        except json.JSONDecodeError:
            bad += 1
    kt.join()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs + [rec]:
        p.join(60)
        assert p.exitcode == 0
    elapsed = time.monotonic() - t0
    ids = [rid for _, rids, _ in results for rid in rids]
    writes = sum(w for _, _, w in results)
    rows = {r["id"]: r for r in store.runs()}
    assert bad == 0 and kills == [-signal.SIGKILL] * n_kills
    assert set(rows) == set(ids) | set(victims) and len(ids) == 2 * n_proc
    assert all(rows[i]["state"] == "finished" and rows[i]["updated"] == float(n_updates) for i in ids)
    t1 = time.monotonic()
    store.sync(RunDir(store.runs_dir / victims[0]))  # the lock was not left held
    assert time.monotonic() - t1 < 5
    # the background reconciler may already have marked the victims; either way they end `lost`
    S.reconcile(store)
    assert {rows_["state"] for rows_ in store.runs() if rows_["id"] in victims} == {"lost"}
    assert {RunDir(store.runs_dir / v).status().state for v in victims} == {"lost"}
    leftovers = len([p for p in store.home.rglob("*.tmp")])
    print(
        f"\nindex stress: {n_proc} writer processes ({writes} index writes), a reconciler, "
        f"{n_kills} writers SIGKILLed mid-write, {reads} reads in {elapsed:.1f}s: 0 parse errors, "
        f"0 of {len(ids)} runs lost; {leftovers} orphaned temp files"
    )


# ------------------------------------------------------------------------------ GPU queue
@pytest.mark.slow
def test_gpu_queue_two_fake_gpus_five_runs(store):
    """Never more than 2 running at once; every run finishes; each saw one GPU; the
    scheduler exits when the queue is empty; no lease is left."""
    t0 = time.monotonic()
    rds = S.launch(store, plan(epochs=2, seeds=5), gpus=[0, 1])
    assert time.monotonic() - t0 < 30  # returns at once
    assert [rd.status().state for rd in rds].count("running") == 2
    samples, most, most_leases = 0, 0, 0
    while True:
        states = [rd.status().state for rd in rds]
        most = max(most, states.count("running"))
        most_leases = max(most_leases, sum(le["live"] for le in gpuqueue.read_leases(store)))
        samples += 1
        if all(s in FINAL_STATES for s in states):
            break
        assert time.monotonic() - t0 < 2 * TIMEOUT
        time.sleep(0.05)
    assert states == ["finished"] * 5, [rd.log_tail(5) for rd in rds]
    assert most == 2 and most_leases <= 2
    gpus = [rd.status().gpu for rd in rds]
    assert set(gpus) == {0, 1}
    for rd, g in zip(rds, gpus):
        assert f"CUDA_VISIBLE_DEVICES={g}" in rd.log_path.read_text()
    wait_for(
        lambda: gpuqueue.scheduler_pid(store) is None and not gpuqueue.scheduler_running(store),
        timeout=30,
        what="the scheduler to exit",
    )
    wait_for(lambda: gpuqueue.read_leases(store) == [], timeout=30, what="each run to drop its lease")
    log_path = store.home / "leases" / HOST / "scheduler.log"
    # the scheduler frees its lock before it logs that it exits (it looks at the queue once more
    # in between): the line may land just after the lock is seen free
    wait_for(lambda: "queue empty; exiting" in log_path.read_text(), timeout=30, what="the scheduler's last line")
    assert log_path.read_text().count("scheduler: started ") == 3
    print(
        f"\nGPU queue: 5 runs on 2 fake GPUs, {samples} samples, at most {most} running, {time.monotonic() - t0:.1f}s"
    )


def _scheduler_procs(store):
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if gpuqueue.SCHEDULER_MODULE in cmd and str(store.home) in cmd:
            out.append(p)
    return out


def test_one_scheduler_and_stale_leases(store):
    """A lease of a dead process is reclaimed; a live one blocks its GPU; the scheduler
    never runs twice and exits once nothing is queued."""
    dead = gpuqueue.lease_path(store, 5, 0)
    write_json(dead, {"gpu": 5, "slot": 0, "run": None, "pid": _dead_pid(), "pid_create_time": 1.0})
    held = gpuqueue.lease_path(store, 7, 0)
    me = psutil.Process()
    write_json(held, {"gpu": 7, "slot": 0, "run": None, "pid": me.pid, "pid_create_time": me.create_time()})
    assert gpuqueue._free_slot(store, [5], 1) == (5, 0)
    assert gpuqueue._free_slot(store, [7], 1) is None
    assert gpuqueue.reclaim_stale(store) == [str(dead)] and held.exists()

    [rd] = S.launch(store, plan(epochs=2), gpus=[7])  # GPU 7 is taken: waits
    assert rd.status().state == "queued"
    for _ in range(3):
        gpuqueue.ensure_scheduler(store)
    wait_for(lambda: gpuqueue.scheduler_pid(store), timeout=60, what="a scheduler")
    wait_for(lambda: len(_scheduler_procs(store)) == 1, timeout=60, what="extra schedulers to give up")
    time.sleep(1.0)
    assert len(_scheduler_procs(store)) == 1 and rd.status().state == "queued"
    info = S.queue_info(store)
    assert [q["id"] for q in info["queued"]] == [rd.id] and info["scheduler_pid"]
    S.stop(store, [rd])  # the queue empties: the scheduler exits
    assert rd.status().state == "stopped"
    wait_for(lambda: not _scheduler_procs(store), timeout=30, what="the scheduler to exit")
    assert held.exists()


def test_a_queued_gpu_run_sees_cuda_in_runtime_and_config_json_is_not_rewritten(store):
    """`cuda:1` becomes `cuda` for a run of the GPU queue (it sees only its leased GPU) through
    runtime.json; config.json keeps what was asked for, byte for byte."""
    me = psutil.Process()
    write_json(
        gpuqueue.lease_path(store, 3, 0),  # GPU 3 is taken: the run waits
        {"gpu": 3, "slot": 0, "run": None, "pid": me.pid, "pid_create_time": me.create_time()},
    )
    [rd] = S.launch(store, plan(extra=["train.device=cuda:1"]), gpus=[3])
    written = rd.config_path.read_bytes()
    st = rd.status()
    assert st.state == "queued" and isinstance(st.launch, GpuQueueLaunch) and st.launch.gpus == [3]
    assert st.launch.describe(st) == "waiting for a GPU of [3]"
    assert rd.config().value("train.device") == "cuda" and rd.runtime().device == "cuda"
    assert rd.written_config().value("train.device") == "cuda:1"
    S.stop(store, [rd])
    assert rd.status().state == "stopped" and rd.config_path.read_bytes() == written
    wait_for(lambda: not _scheduler_procs(store), timeout=30, what="the scheduler to exit")


def test_stop_a_queued_run_and_delete(store):
    me = psutil.Process()
    write_json(
        gpuqueue.lease_path(store, 3, 0),
        {"gpu": 3, "slot": 0, "run": None, "pid": me.pid, "pid_create_time": me.create_time()},
    )
    [q] = S.launch(store, plan(), gpus=[3])
    [r] = S.launch(store, plan(epochs=500))
    with pytest.raises(UserError, match="not deleting active runs"):
        S.delete(store, [q, r])
    S.stop(store, [q])
    assert q.status().state == "stopped"
    pid = r.status().pid
    S.delete(store, [q, r], force=True)
    assert not q.path.exists() and not r.path.exists() and store.runs() == []
    assert gone(pid, 1)
    wait_for(lambda: not _scheduler_procs(store), timeout=30, what="the scheduler to exit")


# ------------------------------------------------------------------------------ Slurm
@pytest.mark.slow
def test_submitit_local_executor_runs_a_digits_preset_and_survives_preemption(store, reference, monkeypatch):
    """A digits preset end to end through submitit's LocalExecutor. Midway the job gets
    the preemption signal (SIGUSR2, as Slurm sends it): submitit checkpoints and requeues,
    the run waits `queued`, the requeued job resumes from last.pt, and the records equal
    the uninterrupted run's."""
    # the reference run ran alone, at torch's default threads (no budget): so does the job
    monkeypatch.delenv("ADVLC_THREADS", raising=False)
    [rd] = S.launch(store, plan(epochs=RESUME_EPOCHS), executor="slurm", slurm_params={"cluster": "local"})
    la = rd.status().launch
    assert isinstance(la, SlurmLaunch) and la.local_cluster and la.job_id and rd.status().state in ("queued", "running")
    wait_for(lambda: len(rd.epochs()) >= 2 and rd.status().pid, what="2 epochs")
    pid = rd.status().pid
    seen = ["running"]
    os.kill(pid, signal.SIGUSR2)
    end = time.monotonic() + TIMEOUT
    while seen[-1] != "finished" and time.monotonic() < end and len(seen) < 10:
        state = rd.status().state
        if state != seen[-1]:
            seen.append(state)
        time.sleep(0.02)
    assert seen[-1] == "finished", (seen, rd.log_tail(20))
    assert "queued" in seen and seen[seen.index("queued") + 1] == "running", seen
    assert strip(rd.epochs()) == reference
    log = rd.log_path.read_text()
    assert "advlc: submitit local job" in log and "requeued (preemption or time limit)" in log and "resumed from" in log
    assert log.count("advlc: starting on") == 2 and not re.search(r"^submitit (INFO|WARNING|ERROR)", log, re.M)
    own = "".join(f.read_text() for f in (rd.path / "submitit").glob("*.out"))  # submitit's messages stay apart
    assert "this job is preempted" in own and "Requeued job" in own
    assert rd.status().pid is None and gone(pid)
    wait_for(lambda: store.runs()[0]["state"] == "finished", timeout=30, what="the index")
    assert S.reconcile(store) == [] and rd.status().state == "finished"
    print(f"\nsubmitit local: states after SIGUSR2 {seen}; finished with records identical to the uninterrupted run")


def test_slurm_parameters_and_sbatch_script(store, tmp_path, monkeypatch):
    from engine.launch.executors import slurm as SL

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no srun here, whether Slurm is installed or not
    with pytest.raises(UserError, match="srun"):
        SL.submitit_executor(tmp_path / "sub", "advlc-x", {"time": 5})
    monkeypatch.undo()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")

    assert [SL.parse_time(t) for t in (90, "90", "1:30", "01:30:00", "1-00:00:00", "0:00:30")] == [
        90,
        90,
        2,
        90,
        1440,
        1,
    ]
    with pytest.raises(UserError, match="slurm time"):
        SL.parse_time("soon")
    user = store.home / "presets"
    user.mkdir()
    (user / "cluster.toml").write_text(
        '[preset]\nextends = "quick/digits-fgsm_n"\n\n[slurm]\npartition = "gpu"\ntime = "2:00:00"\n'
        'account = "lab"\nsetup = ["module load cuda"]\n'
    )
    params = SL.params_for(store, "user/cluster", {"time": "30", "account": None, "gpus": 2})
    assert params == {"partition": "gpu", "time": "30", "account": "lab", "setup": ["module load cuda"], "gpus": 2}
    SL.check_params(params)
    with pytest.raises(UserError, match="slurm.colour"):
        SL.check_params({"colour": "red", "time": 5})
    SL.check_params({"partition": "gpu"})  # no time: the partition's limit (below)
    ex = SL.submitit_executor(tmp_path / "sub", "advlc-x", params)
    script = ex._make_submission_file_text("python -m x", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=30",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --account=lab",
        "#SBATCH --job-name=advlc-x",
        "module load cuda",
    ):
        assert line in script, script

    # What a run asks of Slurm follows its device and the partition (a fake sinfo here; the
    # real cluster: tests/launch/test_slurm_cluster.py).
    def fake_cmd(name, text):
        (fake / name).write_text(f"#!/bin/sh\n{text}\n")
        (fake / name).chmod(0o755)
        monkeypatch.setattr(SL, "_PARTITIONS", (0.0, None))

    fake_cmd("sinfo", "printf 'gpu|2-00:00:00|gpu:a100:4\\ngpu|2-00:00:00|gpu:v100:2\\ncpu*|infinite|(null)\\n'")
    assert SL.partitions() == {
        "gpu": {"limit": "2-00:00:00", "gres": {"gpu:a100:4", "gpu:v100:2"}, "default": False},
        "cpu": {"limit": "infinite", "gres": set(), "default": True},
    }

    def asked(params, device):
        p, a = SL.resolve(params, device)
        text = SL.submitit_executor(tmp_path / "sub", "advlc-x", p)._make_submission_file_text("python -m x", "uid")
        return a["partition"], a["time"], a["gpus"], [ln for ln in text.splitlines() if "gpus" in ln or "--time" in ln]

    assert asked({"partition": "gpu"}, "cuda") == ("gpu", 2880, 1, ["#SBATCH --gpus-per-node=1", "#SBATCH --time=2880"])
    assert asked({"partition": "gpu", "gpus": 2, "time": 90}, "cuda:1") == (
        "gpu",
        90,
        2,
        ["#SBATCH --gpus-per-node=2", "#SBATCH --time=90"],
    )
    assert asked({"partition": "gpu", "gpus": 2}, "cpu") == ("gpu", 2880, 0, ["#SBATCH --time=2880"])
    assert asked({"partition": "gpu"}, "auto") == ("gpu", 2880, 1, ["#SBATCH --gpus-per-node=1", "#SBATCH --time=2880"])
    assert asked({"partition": "gpu", "gpus": 0}, "cuda") == ("gpu", 2880, 0, ["#SBATCH --time=2880"])
    assert asked({}, "auto") == (
        "cpu",
        SL.DEFAULT_TIME_MIN,
        0,
        [f"#SBATCH --time={SL.DEFAULT_TIME_MIN}"],
    )  # default partition
    assert SL.resolve({}, "cpu")[1]["time_from"] == "partition cpu has no limit: advlc's default 24 h"
    with pytest.raises(
        UserError, match=r"partition 'nosuch': this cluster has no such partition \(sinfo lists: cpu, gpu\)"
    ):
        SL.resolve({"partition": "nosuch"}, "cpu")
    with pytest.raises(UserError, match=r"exceeds the limit of partition gpu \(2-00:00:00\)"):
        SL.resolve({"partition": "gpu", "time": "3-00:00:00"}, "cuda")
    with pytest.raises(UserError, match="asks for 1 GPU"):
        SL.resolve({"partition": "cpu"}, "cuda")
    assert SL.resolve({"cluster": "local", "gpus": 1}, "cpu") == ({"cluster": "local", "gpus": 1}, {})
    fake_cmd("sinfo", "echo 'sinfo: error: Unable to contact slurm controller' >&2; exit 1")  # unknown: defaults
    assert asked({"partition": "gpu"}, "cuda") == (
        "gpu",
        SL.DEFAULT_TIME_MIN,
        1,
        ["#SBATCH --gpus-per-node=1", f"#SBATCH --time={SL.DEFAULT_TIME_MIN}"],
    )
    assert asked({"partition": "gpu"}, "auto")[2] == 0
    assert [SL.slurm_duration_min(t) for t in ("5:00", "1:00:00", "1-00:00:00", "2-12", "0:30", "infinite", "n/a")] == [
        5,
        60,
        1440,
        3600,
        1,
        None,
        None,
    ]

    # Job states without accounting: squeue -t all; a job it no longer knows has ended.
    fake_cmd("sacct", "echo 'Slurm accounting storage is disabled'; exit 1")
    fake_cmd("squeue", "printf '7|PENDING|BeginTime||advlc-a|1:00:00\\n8|CANCELLED|None||advlc-b|1:00:00\\n'")
    states = SL.job_states(["7", "8", "9"])
    assert {j: s["state"] for j, s in states.items()} == {"7": "PENDING", "8": "CANCELLED", "9": "PURGED"}
    assert states["7"]["reason"] == "BeginTime"
    fake_cmd("squeue", "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1")  # one id, purged
    assert SL.job_states(["9"])["9"]["state"] == "PURGED"
    fake_cmd("squeue", "echo 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2; exit 1")
    assert SL.job_states(["9"]) is None  # no answer: nothing is judged

    # Slurm options on resume are for Slurm runs only, and refused before the run changes
    [rd] = S.create_runs(store, plan())
    with pytest.raises(UserError, match="was not launched on Slurm: --time, --slurm-gpus apply to Slurm runs only"):
        S.resume(store, rd, slurm_params={"time": "30", "partition": None, "gpus": 0})
    assert rd.status().state == "queued" and not rd.status().launch


# ------------------------------------------------------------------------------ CLI
ADVLC = [sys.executable, "-c", "from tui.cli import main; main()"]


def advlc(*args, home, check=True):
    env = {**os.environ, "ADVLC_HOME": str(home), "COLUMNS": "200"}
    p = subprocess.run(
        ADVLC + list(args), capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL
    )
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


@pytest.mark.slow
def test_cli_detach_logs_stop_queue_delete(store):
    h = store.home
    p = advlc("run", PRESET, "--set", "train.epochs=500", "--set", "eval.n=100", "--detach", home=h)
    rid = p.stdout.split()[0]
    rd = store.get(rid)
    assert rd.status().state == "running" and "advlc logs" in p.stdout
    wait_for(lambda: len(rd.epochs()) >= 1, what="epoch 1")
    assert "epoch   0" in advlc("logs", rid, "-n", "50", home=h).stdout
    assert f"{rid}  stopped" in advlc("stop", rid, home=h).stdout
    assert rd.status().state == "stopped"
    # a run left `running` by a process that is gone (e.g. a reboot) is `lost` at the next CLI start
    force_status(rd, state="running", pid=_dead_pid(), host=HOST)
    assert json.loads(advlc("queue", "--json", home=h).stdout)["queued"] == []
    assert rd.status().state == "lost"
    p = advlc("delete", rid, home=h, check=False)  # no terminal to ask: refuse
    assert p.returncode == 2 and "add --yes" in p.stderr and "Traceback" not in p.stderr
    advlc("delete", rid, "--yes", home=h)
    assert store.runs() == [] and not rd.path.exists()


# ------------------------------------------------------------------------------ executors
ROOT = Path(__file__).resolve().parents[2]


def _name_comparisons(source: str, names: set[str], skip_classes=()) -> list[int]:
    """Lines of `source` that compare with one of `names` (`x == "slurm"`, `"local" != x`,
    `x in ("local", ...)`, `case "gpuqueue":`), outside the classes named `skip_classes`."""
    tree = ast.parse(source)
    skip = {
        id(n) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and c.name in skip_classes for n in ast.walk(c)
    }

    def named(node) -> bool:
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(named(e) for e in node.elts)
        return isinstance(node, ast.Constant) and node.value in names

    lines = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare) and any(named(x) for x in (node.left, *node.comparators)):
            lines.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and named(node.value):
            lines.append(node.value.lineno)
    return sorted(lines)


def _executor_name_comparisons() -> list[str]:
    """`path:line` of every comparison with an executor's or a Slurm cluster's name in engine/ and
    tui/, except in engine/launch/executors/ and in the launch record classes of engine/store/records.py."""
    from engine.launch.executors import EXECUTORS

    names = {ex.TAG for ex in EXECUTORS} | set(SlurmLaunch.CLUSTERS)
    records = {ex.RECORD.__name__ for ex in EXECUTORS}
    out = []
    for path in sorted(p for pkg in ("engine", "tui") for p in (ROOT / pkg).rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[:3] == ("engine", "launch", "executors"):
            continue
        skip = records if rel == Path("engine/store/records.py") else ()
        out += [f"{rel}:{line}" for line in _name_comparisons(path.read_text(), names, skip)]
    return out


def test_the_comparison_finder_finds_each_form():
    names = {"local", "slurm", "gpuqueue"}
    src = (
        'if la.executor == "slurm": pass\n'
        'ok = "local" != cluster\n'
        'x = cluster not in ("slurm", "local")\n'
        'y = la.get("executor", "local") == "local"\n'
        'match tag:\n    case "gpuqueue":\n        pass\n'
        'z = la.executor == "slurmish" or name == "gpu"\n'
        'class SlurmLaunch:\n    ok = cluster == "local"\n'
    )
    assert _name_comparisons(src, names, skip_classes=("SlurmLaunch",)) == [1, 2, 3, 4, 6]


def test_no_executor_name_comparisons_outside_the_executors():
    """What differs between executors is asked of the executor of a run's launch record
    (engine.launch.executors.executor_for), never decided by comparing executor or cluster names."""
    assert _executor_name_comparisons() == []
