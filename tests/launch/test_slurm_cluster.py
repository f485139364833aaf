"""advlc on a real Slurm cluster: a one-node Slurm 22.05 on localhost (tests/slurm/up.sh),
CPU only, no accounting, the node in its own UTS namespace (hostname advlc-node1), so a job
is on "another host" and its liveness goes by heartbeat.

When these tests run (`-rs` prints the reason when they do not):

- ADVLC_TEST_SLURM=1: the fixture runs tests/slurm/up.sh (as root it installs slurm-wlm and
  munge with apt-get when missing, then starts the daemons); exit 2 (not root, no
  namespaces, no apt) skips, exit 1 fails. CI sets this after bringing the cluster up.
- ADVLC_TEST_SLURM unset: they run when a cluster started by tests/slurm/up.sh is up already
  (its daemons' pid files in $ADVLC_SLURM_DIR), and skip otherwise: a plain `make test` on a
  laptop neither installs packages nor starts root daemons.
- ADVLC_TEST_SLURM=0: skipped.

The fixture stops the cluster (tests/slurm/down.sh) at the end only when it started it.
Tests that train carry @pytest.mark.slow (`make test-slow`); the pending-job tests are quick.
Every child gets OMP_NUM_THREADS=1 (sbatch passes the environment on to the job).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import helpers
import psutil
import pytest

from engine.launch import processes
from engine.launch import supervisor as S
from engine.launch.executors import slurm as SL
from engine.launch.plan import plan_runs
from engine.store.index import Store
from engine.store.records import SlurmLaunch
from engine.store.states import FINAL_STATES

ROOT = Path(__file__).resolve().parents[2]
SLURM_DIR = os.environ.get("ADVLC_SLURM_DIR", "/tmp/advlc-slurm")
NODE = os.environ.get("ADVLC_SLURM_NODE", "advlc-node1")
PRESET = "quick/digits-fgsm_n"
EPOCHS = 60  # ~0.15 s an epoch on the node: long enough to stop or preempt midway
SET = ["--set", f"train.epochs={EPOCHS}", "--set", "eval.n=100"]
NOISE = ("time_s", "eval_time_s", "images_per_s")  # timings
TIMEOUT = 240


def _daemons_up() -> bool:
    """Are the three daemons of a cluster started by up.sh running (pid file + process name)?"""
    for d in ("munged", "slurmctld", "slurmd"):
        try:
            pid = Path(SLURM_DIR, f"{d}.pid").read_text().strip()
            if Path(f"/proc/{pid}/comm").read_text().strip() != d:
                return False
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def cluster():
    mode = os.environ.get("ADVLC_TEST_SLURM", "")
    if mode == "0":
        pytest.skip("real Slurm tests off (ADVLC_TEST_SLURM=0)")
    was_up = _daemons_up()
    if mode != "1" and not was_up:
        pytest.skip("real Slurm tests: no test cluster is up (as root: tests/slurm/up.sh, or ADVLC_TEST_SLURM=1)")
    env = {**os.environ, "ADVLC_SLURM_DIR": SLURM_DIR}
    p = subprocess.run(["bash", str(ROOT / "tests/slurm/up.sh")], capture_output=True, text=True, timeout=900, env=env)
    last = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["tests/slurm/up.sh: no output"])[-1]
    if p.returncode == 2:
        pytest.skip(f"real Slurm tests: {last}")
    if p.returncode != 0:
        pytest.fail(f"tests/slurm/up.sh exited {p.returncode}: {last}", pytrace=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", f"{SLURM_DIR}/slurm.conf")  # sbatch, squeue, sinfo, scancel, submitit
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setattr(SL, "_PARTITIONS", (0.0, None))
        yield SLURM_DIR
    if not was_up:
        subprocess.run(
            ["bash", str(ROOT / "tests/slurm/down.sh")], capture_output=True, text=True, timeout=300, env=env
        )


@pytest.fixture
def store(cluster, tmp_path):
    """A store of its own; whatever job of it is left at the end is cancelled."""
    s = Store(tmp_path / "home").ensure()
    yield s
    jobs = [
        str(rd.status().launch.job_id)
        for rd in s.run_dirs()
        if isinstance(rd.status().launch, SlurmLaunch) and rd.status().launch.job_id
    ]
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=60)


ADVLC = [sys.executable, "-c", "from tui.cli import main; main()"]


def advlc(*args, home, check=True, timeout=120):
    env = {**os.environ, "ADVLC_HOME": str(home), "COLUMNS": "250"}
    p = subprocess.run(
        ADVLC + list(args), capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL, cwd=ROOT
    )
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def wait_for(pred, timeout=TIMEOUT, interval=0.1, what="condition"):
    return helpers.wait_for(pred, timeout, interval, what)


def wait_final(rd, timeout=TIMEOUT):
    wait_for(lambda: rd.status().state in FINAL_STATES, timeout, what=f"{rd.id} to end")
    return rd.status().state


def job_of(rd) -> str:
    return str(rd.status().launch.job_id)


def squeue(jid) -> str:
    """'STATE REASON' of a job, '' once Slurm no longer knows it."""
    p = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", jid, "-o", "%T %r"], capture_output=True, text=True, timeout=60
    )
    return p.stdout.strip() if p.returncode == 0 else ""


def job_active(jid) -> bool:
    return squeue(jid).split(" ")[0] in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED")


def strip(recs):
    return [{k: v for k, v in r.items() if k not in NOISE} for r in recs]


def ids_of(stdout: str) -> list[str]:
    return [line.split()[0] for line in stdout.splitlines() if re.match(r"^[0-9a-f]{8}  ", line)]


def one_line(text):
    assert text and "\n" not in text, text
    return text


def toml_value(v):
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {json.dumps(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def slurm_preset(home, name, **slurm):
    """A user preset: PRESET with this [slurm] table."""
    d = Path(home) / "presets"
    d.mkdir(exist_ok=True)
    table = "".join(f"{k} = {toml_value(v)}\n" for k, v in slurm.items())
    (d / f"{name}.toml").write_text(f'[preset]\nextends = "{PRESET}"\n\n[slurm]\n{table}')
    return f"user/{name}"


# ------------------------------------------------------------------------------ quick: jobs that never start
def test_pending_jobs_stopped_cancelled_and_purged_never_stay_queued(store):
    """Jobs held back by `--begin` (the preset's [slurm] additional): `advlc queue` shows them
    PENDING with Slurm's reason; `advlc stop` cancels one, `scancel` behind advlc's back
    another (-> stopped, with the reason), and a job Slurm no longer knows (purged) makes its
    run `lost` with a one-line reason. Nothing stays `queued`."""
    h = store.home
    ref = slurm_preset(h, "later", additional={"begin": "now+3600"})
    p = advlc("run", ref, "--executor", "slurm", "--partition", "debug", "--seeds", "3", *SET, home=h)
    a, b, c = (store.get(i) for i in ids_of(p.stdout))
    assert "(partition debug, 60 min: the limit of partition debug (1:00:00), no GPU)" in p.stdout
    script = (a.submitit_dir / f"{job_of(a)}_submission.sh").read_text()
    assert "#SBATCH --begin=now+3600" in script and "--gpus-per-node" not in script and "#SBATCH --time=60" in script
    info = json.loads(advlc("queue", "--json", home=h).stdout)
    rows = {r["id"]: r for r in info["slurm"]}
    assert set(rows) == {a.id, b.id, c.id}
    assert {(r["state"], r["slurm_state"], r["reason"]) for r in rows.values()} == {("queued", "PENDING", "BeginTime")}
    table = advlc("queue", home=h).stdout
    assert "3 Slurm run(s)" in table and re.search(
        rf"{a.id}\s+queued\s+{job_of(a)}\s+PENDING\s+BeginTime\s+debug\s+60 min", table
    ), table

    assert f"{a.id}  stopped" in advlc("stop", a.id, home=h).stdout
    assert a.status().state == "stopped" and squeue(job_of(a)) in ("", "CANCELLED BeginTime")

    subprocess.run(["scancel", job_of(b)], check=True, timeout=60)
    assert squeue(job_of(b)).startswith("CANCELLED")
    advlc("runs", home=h)  # every command reconciles
    st = b.status()
    assert st.state == "stopped", st
    assert one_line(st.error).startswith(f"Slurm job {job_of(b)} CANCELLED (reason BeginTime): cancelled outside advlc")

    subprocess.run(["scancel", job_of(c)], check=True, timeout=60)
    c.update_status(launch=c.status().launch.replace(job_id="999999"))  # as Slurm says once it purged the job
    assert SL.job_states(["999999"]) == {
        "999999": {"state": "PURGED", "reason": "", "nodes": "", "name": "", "limit": ""}
    }
    assert S.reconcile(store) == [c.id]
    st = c.status()
    assert st.state == "lost" and "Slurm job 999999 has ended (Slurm no longer lists it" in one_line(st.error)
    assert {r["state"] for r in store.runs()} == {"stopped", "lost"}
    assert json.loads(advlc("queue", "--json", home=h).stdout)["slurm"] == []


def test_a_bad_partition_or_time_fails_before_any_run_folder(store):
    h = store.home
    p = advlc("run", PRESET, "--executor", "slurm", "--partition", "gpu", home=h, check=False)
    assert p.returncode == 2 and "no such partition (sinfo lists: debug)" in p.stderr and "Traceback" not in p.stderr
    p = advlc("run", PRESET, "--executor", "slurm", "--time", "2:00:00", home=h, check=False)
    assert p.returncode == 2 and "exceeds the limit of partition debug (1:00:00)" in p.stderr
    p = advlc("run", PRESET, "--executor", "slurm", "--device", "cuda", home=h, check=False)  # a CPU-only cluster
    assert p.returncode == 2 and "asks for 1 GPU(s) but partition debug's nodes have none" in p.stderr, p.stderr
    assert not store.runs_dir.exists() or not list(store.runs_dir.iterdir())
    # what sbatch says when asked anyway: one line in the run's error and on the terminal
    p = advlc("run", slurm_preset(h, "gres", additional={"gres": "gpu:1"}), "--executor", "slurm", home=h, check=False)
    assert p.returncode == 2 and p.stderr.splitlines() == [  # said once, not echoed by submitit too
        f"advlc: run {store.runs()[0]['id']}: Slurm submission failed: sbatch: error: Invalid generic resource (gres) specification"
    ]
    assert [r["state"] for r in store.runs()] == ["failed"]
    assert "Invalid generic resource" in one_line(store.runs()[0]["error"])


def test_queue_works_without_slurm_clients(store, monkeypatch, tmp_path):
    """A Slurm run seen from a machine without squeue (or with the controller down): nothing
    is judged, `advlc queue` says it does not know."""
    h = store.home
    ref = slurm_preset(h, "later", additional={"begin": "now+3600"})
    [rid] = ids_of(advlc("run", ref, "--executor", "slurm", *SET, home=h).stdout)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", f"{empty}{os.pathsep}{Path(sys.executable).parent}")
    assert S.reconcile(store) == [] and store.get(rid).status().state == "queued"
    out = advlc("queue", home=h).stdout
    assert "? (squeue did not answer)" in out
    p = advlc("stop", rid, home=h, check=False)
    assert p.returncode == 2 and p.stderr.strip() == "advlc: scancel not found: stop Slurm runs from a Slurm login node"
    assert store.get(rid).status().state == "queued"
    monkeypatch.undo()
    advlc("stop", rid, home=h)


# ------------------------------------------------------------------------------ slow: training on the node
@pytest.fixture(scope="module")
def finished_pair(cluster, tmp_path_factory):
    """`advlc run PRESET --executor slurm --partition debug --seeds 2` and nothing else for
    Slurm; both runs end `finished`. Returns (store, run dirs, seconds)."""
    store = Store(tmp_path_factory.mktemp("pair") / "home").ensure()
    t0 = time.monotonic()
    p = advlc("run", PRESET, "--executor", "slurm", "--partition", "debug", "--seeds", "2", *SET, home=store.home)
    rds = [store.get(i) for i in ids_of(p.stdout)]
    for rd in rds:
        wait_final(rd)
    return store, rds, time.monotonic() - t0, p.stdout


@pytest.fixture(scope="module")
def reference(finished_pair):
    """The epoch records of the uninterrupted seed-0 run (what an interrupted one must reproduce)."""
    _, rds, _, _ = finished_pair
    return strip(rds[0].epochs())


@pytest.mark.slow
def test_seeds_2_on_the_cpu_cluster_with_only_a_partition(finished_pair):
    store, rds, took, stdout = finished_pair
    assert len(rds) == 2 and [rd.status().state for rd in rds] == ["finished", "finished"], [
        rd.log_tail(5) for rd in rds
    ]
    assert [rd.config_json()["train"]["seed"] for rd in rds] == [0, 1]
    for rd in rds:
        st = rd.status()
        assert [r["epoch"] for r in rd.epochs()] == list(range(EPOCHS))
        assert st.host == NODE and st.launch.sbatch == {
            "partition": "debug",
            "time": 60,
            "time_from": "the limit of partition debug (1:00:00)",
            "gpus": 0,
            "gpus_from": "device cpu",
        }
        log = rd.log_path.read_text()
        assert re.search(rf"^--- \S+ \S+ advlc: starting on {NODE} \(Slurm job {job_of(rd)}\)$", log, re.M), log[:300]
        assert not re.search(r"^submitit (INFO|WARNING|ERROR)", log, re.M)  # submitit's messages stay in its own files
        assert "Job completed successfully" in (rd.submitit_dir / f"{job_of(rd)}_0_log.out").read_text()
        script = (rd.submitit_dir / f"{job_of(rd)}_submission.sh").read_text()
        assert "#SBATCH --partition=debug" in script and "#SBATCH --time=60" in script and "gpus" not in script
    assert rds[0].epochs() != rds[1].epochs()
    assert [r["state"] for r in store.runs()] == ["finished", "finished"]
    # ended jobs vanish from squeue 5-15 s later (MinJobAge=5): "Invalid job id" counts as ended, not as trouble
    jid = job_of(rds[0])
    wait_for(lambda: SL.job_states([jid])[jid]["state"] == "PURGED", timeout=60, interval=1, what="the purge")
    assert S.reconcile(store) == [] and rds[0].status().state == "finished"
    print(f"\nslurm: --seeds 2, {EPOCHS} epochs each, both finished {took:.1f}s after `advlc run`")


@pytest.mark.slow
def test_preempted_job_is_requeued_and_equals_the_uninterrupted_run(store, reference):
    """`scancel --signal=USR2` (what Slurm sends before a preemption or the time limit):
    submitit checkpoints and requeues the job, the run waits `queued`, the same job id runs
    again ~6 s later (cred_expire=5) and continues from last.pt; the records equal the
    uninterrupted run's."""
    [rd] = S.launch(
        store,
        plan_runs(PRESET, [f"train.epochs={EPOCHS}", "eval.n=100"]),
        executor="slurm",
        slurm_params={"partition": "debug"},
    )
    jid = job_of(rd)
    wait_for(lambda: len(rd.epochs()) >= 3, what="3 epochs")
    t0 = time.monotonic()
    subprocess.run(["scancel", "--signal=USR2", jid], check=True, timeout=60)
    seen, restarted = ["running"], None
    end = time.monotonic() + TIMEOUT
    while seen[-1] != "finished" and time.monotonic() < end:
        state = rd.status().state
        if state != seen[-1]:
            seen.append(state)
            if state == "running" and restarted is None:
                restarted = time.monotonic() - t0
        time.sleep(0.02)
    assert seen[-1] == "finished", (seen, rd.log_tail(20))
    assert "queued" in seen and seen[seen.index("queued") + 1] == "running", seen
    assert strip(rd.epochs()) == reference
    log = rd.log_path.read_text()
    assert f"advlc: Slurm job {jid} requeued (preemption or time limit)" in log
    assert f"advlc: starting on {NODE} (Slurm job {jid}, restart 1)" in log and "resumed from" in log
    assert not re.search(r"^submitit (INFO|WARNING|ERROR)", log, re.M) and "Traceback" not in log
    assert "this job is preempted" in (rd.submitit_dir / f"{jid}_0_log.err").read_text()
    assert job_of(rd) == jid and rd.status().launch.job_id == jid
    print(f"\nslurm requeue: states after USR2 {seen}; the run was running again {restarted:.1f}s after the signal")


@pytest.mark.slow
def test_stop_a_running_job_then_resume_with_other_slurm_settings(store, reference):
    """`advlc stop` on a running job: scancel, the run writes `stopped` itself (last.pt kept);
    `advlc resume RUN --time 30 --account lab --slurm-gpus 0` submits a new job with those
    settings, which finishes with the uninterrupted run's records. A resume with a bad
    partition changes nothing."""
    h = store.home
    [rid] = ids_of(advlc("run", PRESET, "--executor", "slurm", "--partition", "debug", *SET, home=h).stdout)
    rd = store.get(rid)
    first = job_of(rd)
    wait_for(lambda: len(rd.epochs()) >= 2, what="2 epochs")
    t0 = time.monotonic()
    assert f"{rid}  stopped" in advlc("stop", rid, home=h).stdout
    took = time.monotonic() - t0
    st = rd.status()
    assert st.state == "stopped" and st.error is None and rd.ckpt("last").exists()
    assert len(rd.epochs()) < EPOCHS
    wait_for(lambda: not job_active(first), timeout=60, what="the job to end")
    assert "Traceback" not in rd.log_path.read_text()

    p = advlc("resume", rid, "--partition", "nosuch", home=h, check=False)
    assert p.returncode == 2 and "no such partition" in p.stderr and rd.status().state == "stopped"
    p = advlc("resume", rid, "--time", "30", "--account", "lab", "--slurm-gpus", "0", home=h)
    second = job_of(rd)
    assert second != first and f"Slurm job {second} (partition debug, 30 min, no GPU)" in p.stdout, p.stdout
    script = (rd.submitit_dir / f"{second}_submission.sh").read_text()
    assert "#SBATCH --time=30" in script and "#SBATCH --account=lab" in script and "#SBATCH --partition=debug" in script
    assert rd.status().launch.params == {"partition": "debug", "time": "30", "account": "lab", "gpus": 0}
    assert wait_final(rd) == "finished", rd.log_tail(10)
    assert strip(rd.epochs()) == reference
    p = advlc("resume", rid, "--time", "30", home=h, check=False)
    assert p.returncode == 2 and "has finished" in p.stderr
    print(f"\nslurm stop: `advlc stop` of a running job took {took:.1f}s")


@pytest.mark.slow
def test_scancel_of_a_running_job_behind_advlcs_back(store):
    """scancel outside advlc: Slurm SIGTERMs the run process, which writes `stopped`; had it
    not, the heartbeat would make it `lost`. Never left `running`."""
    [rd] = S.launch(
        store,
        plan_runs(PRESET, ["train.epochs=500", "eval.n=100"]),
        executor="slurm",
        slurm_params={"partition": "debug"},
    )
    wait_for(lambda: len(rd.epochs()) >= 1, what="epoch 1")
    subprocess.run(["scancel", job_of(rd)], check=True, timeout=60)
    wait_for(
        lambda: rd.status().state != "running" or not processes.is_alive(rd.status()),
        timeout=90,
        what="the run to stop or its heartbeat to go stale",
    )
    S.reconcile(store)
    st = rd.status()
    assert st.state in ("stopped", "lost"), st
    if st.state == "lost":
        one_line(st.error)
    wait_for(lambda: not job_active(job_of(rd)), timeout=60, what="the job to end")
    assert "Traceback" not in rd.log_path.read_text()
    print(f"\nslurm scancel of a running job behind advlc's back: {st.state} ({st.error})")


@pytest.mark.slow
def test_kill_9_of_the_run_process_on_the_node_makes_it_lost(store, monkeypatch):
    """The job's run process runs on advlc-node1 (another host: its pid cannot be judged from
    here), so a SIGKILL is found by its heartbeat going stale: ADVLC_HEARTBEAT_S=0.5 in the
    job, STALE_MIN_S lowered here. The reason is one line; the job itself ends too."""
    monkeypatch.setenv("ADVLC_HEARTBEAT_S", "0.5")  # sbatch passes it on to the job
    monkeypatch.setattr(processes, "STALE_MIN_S", 2.0)
    [rd] = S.launch(
        store,
        plan_runs(PRESET, ["train.epochs=500", "eval.n=100"]),
        executor="slurm",
        slurm_params={"partition": "debug"},
    )
    wait_for(lambda: len(rd.epochs()) >= 1, what="epoch 1")
    st = rd.status()
    assert st.host == NODE and st.heartbeat_s == 0.5 and processes.stale_after(st) == 3.0
    pid = st.pid
    assert psutil.Process(pid).is_running()  # one pid namespace, another hostname
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: S.reconcile(store) == [rd.id], timeout=60, interval=0.25, what="reconcile to mark it lost")
    took = time.monotonic() - t0
    st = rd.status()
    assert st.state == "lost" and st.pid is None
    err = one_line(st.error)
    assert f"the run process (pid {pid} on {NODE}) is gone without a final state, last heartbeat" in err
    wait_for(lambda: not job_active(job_of(rd)), timeout=60, what="the job to end")
    assert store.runs()[0]["state"] == "lost"
    print(f"\nslurm kill -9: lost {took:.1f}s after the SIGKILL (heartbeat 0.5 s, stale after 3 s)")


@pytest.mark.slow
def test_slurm_in_five_minutes_commands_of_the_docs(store):
    """The commands of docs/SUPERVISOR.md "Slurm in five minutes", run as written (ADVLC_HOME
    is this test's store; RUN is the id `advlc run` prints)."""
    text = (ROOT / "docs" / "SUPERVISOR.md").read_text()
    section = text.split("## Slurm in five minutes", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    cmds = [line[2:].split("  #")[0].strip() for line in block.splitlines() if line.startswith("$ ")]
    assert cmds[0].startswith("export ADVLC_HOME=") and any(c.startswith("advlc run ") for c in cmds), cmds
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "ADVLC_HOME": str(store.home),
        "COLUMNS": "250",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    rid, outputs = None, {}
    for cmd in cmds[1:]:
        if rid:
            cmd = cmd.replace("RUN", rid)
        p = subprocess.run(
            ["bash", "-c", cmd],
            capture_output=True,
            text=True,
            env=env,
            timeout=TIMEOUT,
            cwd=store.home,
            stdin=subprocess.DEVNULL,
        )
        assert p.returncode == 0, (cmd, p.stdout, p.stderr)
        outputs[cmd] = p.stdout
        if cmd.startswith("advlc run "):
            [rid] = ids_of(p.stdout)
    rd = store.get(rid)
    assert rd.status().state == "finished", rd.log_tail(5)
    assert any(re.search(rf"{rid}\s+\S+\s+{job_of(rd)}\s+(PENDING|RUNNING)", o) for o in outputs.values()), outputs
