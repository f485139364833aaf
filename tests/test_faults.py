"""Fault injection: hostile run ids, damaged files, full and read-only disks, killed launchers.

Each case asserts what a user sees (one line on stderr, no traceback, the exit code: 2 for a
mistake in the input, 1 for a damaged store or a disk) and that every record that existed
before is still there afterwards. docs/RELIABILITY.md lists the cases and the test of each.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from helpers import cli, force_status, one_line

from engine.errors import CorruptFile
from engine.launch.executors import gpuqueue, local
from engine.launch import supervisor as S
from engine.launch.plan import plan_runs
from engine.store import files
from engine.store.index import Store
from engine.store.repair import salvage_tables

PRESET = "quick/digits-fgsm_n"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def advlc(*args, code=None):
    """`advlc ARGS` in this process: (exit code, stdout, stderr)."""
    return cli(*args, code=code)


def finished_run(store: Store, epochs: int = 2, extra=()) -> "RunDir":  # noqa: F821
    [rd] = S.create_runs(store, plan_runs(PRESET, [f"train.epochs={epochs}", "eval.n=100", *extra]))
    from engine.run.process import run

    assert run(rd, store, log=rd.append_log) == "finished"  # log.txt as a detached run writes it
    return rd


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with one finished 2-epoch digits run, copied fresh for each test that damages it."""
    h = tmp_path_factory.mktemp("trained") / "home"
    store = Store(h).ensure()
    os.environ["OMP_NUM_THREADS"] = "1"
    rd = finished_run(store)
    return h, rd.id


@pytest.fixture
def copy(trained, tmp_path, monkeypatch):
    src, rid = trained
    h = tmp_path / "home"
    shutil.copytree(src, h)
    monkeypatch.setenv("ADVLC_HOME", str(h))
    store = Store(h)
    store.reindex()
    return store, store.run_dir(rid)


# ---------------------------------------------------------------------------- hostile ids
@pytest.mark.parametrize("ref", ["/some/dir", "../../x", "..", "a/b", ".hidden"])
def test_a_run_id_that_is_a_path_is_refused(ref, home, tmp_path):
    victim = tmp_path / "some" / "dir"
    victim.mkdir(parents=True)
    (victim / "config.json").write_text("{}")
    Store(home).ensure()
    for cmd in (["delete", ref, "--yes"], ["resume", ref], ["show", ref], ["logs", ref], ["stop", ref]):
        rc, _, err = advlc(*cmd)
        assert rc == 2, (cmd, err)
        assert "is a path" in one_line(err) or "not a run id" in one_line(err)
    assert (victim / "config.json").exists()


def test_a_symlink_leading_out_of_the_store_is_refused(home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text(json.dumps({"run": {"preset": "x"}}))
    store = Store(home).ensure()
    (store.runs_dir / "abcd1234").symlink_to(outside, target_is_directory=True)
    for cmd in (["show", "abcd1234"], ["delete", "abcd1234", "--yes"], ["show", "abcd"]):
        rc, _, err = advlc(*cmd)
        assert rc == 2 and ("leads outside" in one_line(err) or "no run" in one_line(err)), (cmd, err)
    assert (outside / "config.json").exists()
    assert store.run_dirs() == []


# ---------------------------------------------------------------------------- damaged files
def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_metrics_is_named_never_overwritten_and_repaired(copy):
    store, rd = copy
    before = rd.epochs()
    _truncate(rd.metrics_path, 0.8)
    damaged = rd.metrics_path.read_bytes()
    rc, _, err = advlc("show", rd.id, code=1)
    assert "metrics.json" in one_line(err) and "advlc repair" in err
    force_status(rd, state="stopped")
    rc, _, err = advlc("resume", rd.id, "--foreground", code=1)
    assert "metrics.json" in one_line(err)
    assert rd.metrics_path.read_bytes() == damaged  # nothing wrote over it
    rc, out, _ = advlc("repair", rd.id, code=0)
    assert "metrics.json was damaged" in out
    kept = rd.epochs()
    assert 1 <= len(kept) <= len(before) and kept == before[: len(kept)]
    assert list(rd.path.glob("metrics.json.corrupt-*"))[0].read_bytes() == damaged


def test_truncated_status_shows_corrupt_refuses_resume_and_repairs_from_the_checkpoint(copy):
    store, rd = copy
    _truncate(rd.status_path, 0.5)
    rc, out, err = advlc("runs", "--json", code=0)
    [row] = json.loads(out)
    assert row["state"] == "corrupt" and "status.json" in row["error"]
    rc, _, err = advlc("resume", rd.id, code=1)
    assert "status.json" in one_line(err) and "advlc repair" in err
    advlc("repair", rd.id, code=0)
    st = rd.status()
    assert st.state == "stopped" and st.epoch == 2 and "rebuilt" in st.error
    rc, out, _ = advlc("resume", rd.id, "--foreground", code=0)  # runs the (no) remaining epochs
    assert "from epoch 2" in out and rd.status().state == "finished"


def test_truncated_config_is_one_line_and_rebuilt_from_the_log(copy):
    store, rd = copy
    want = rd.config()
    _truncate(rd.config_path, 0.3)
    rc, _, err = advlc("show", rd.id, code=1)
    assert "config.json" in one_line(err)
    advlc("repair", rd.id, code=0)
    got = rd.config()
    assert got.section("train") == want.section("train") and got.section("method") == want.section("method")
    assert got.run.preset == PRESET


def test_a_corrupt_index_is_rebuilt_with_a_warning(copy):
    store, rd = copy
    store.index_path.write_text('{"runs": {"1": {"id": ')
    rc, out, err = advlc("runs", "--json", code=0)
    assert [r["id"] for r in json.loads(out)] == [rd.id]
    assert "index.json was damaged" in err and len(list(store.home.glob("index.json.corrupt-*"))) == 1


def test_damaged_checkpoints(copy):
    store, rd = copy
    _truncate(rd.ckpt("last"), 0.5)
    force_status(rd, state="stopped")
    rc, _, err = advlc("resume", rd.id, code=1)
    line = one_line(err)
    assert "last.pt" in line and "--from best" in line and "--from scratch" in line
    rc, out, _ = advlc("resume", rd.id, "--foreground", "--from", "best", code=0)
    assert "from epoch" in out and rd.status().state == "finished"
    assert list(rd.ckpt_dir.glob("last.pt.corrupt-*"))
    rd.ckpt("best").write_text("not a checkpoint")
    rc, _, err = advlc("eval", rd.id, "--ckpt", "best", "--attack", "pgd20", "--n", "10", code=1)
    assert "best.pt" in one_line(err)


def test_an_experiment_with_a_damaged_source_checkpoint_fails_in_one_line(copy):
    store, rd = copy
    _truncate(rd.ckpt("last"), 0.5)
    rc, _, err = advlc("experiment", "quick/digits-figA1", "--source", rd.id, "--set", "experiment.samples=20")
    assert rc == 1 and "last.pt" in err and "Traceback" not in err and "^^^" not in err


def test_a_preset_that_is_not_utf8(home):
    (home / "presets").mkdir(parents=True)
    (home / "presets" / "latin.toml").write_bytes(b'[preset]\ndescription = "caf\xe9"\n')
    rc, _, err = advlc("preset", "show", "user/latin", code=2)
    assert "not UTF-8" in one_line(err)


# ---------------------------------------------------------------------------- disks
def _fail_writes(monkeypatch, err_no: int):
    """Every atomic write and every new file of the store fails with `err_no`."""

    def boom(*a, **k):
        raise OSError(err_no, os.strerror(err_no), str(a[0]) if a else None)

    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, dir=None, **k: boom(dir))


@pytest.mark.parametrize("err_no,words", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only")])
def test_a_full_or_read_only_store_stops_launches_before_any_run_folder(home, monkeypatch, err_no, words):
    store = Store(home).ensure()
    _fail_writes(monkeypatch, err_no)
    for args in (["run", PRESET, "--set", "train.epochs=1"], ["run", PRESET, "--detach"]):
        rc, _, err = advlc(*args, code=1)
        assert words in one_line(err) and errno.errorcode[err_no] in err
    assert list(store.runs_dir.iterdir()) == []


def test_delete_and_eval_on_a_read_only_store_lose_nothing(copy, monkeypatch):
    store, rd = copy
    files_before = sorted(p.name for p in rd.path.rglob("*"))
    evals_before = rd.evals()

    def ro_replace(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(src))

    monkeypatch.setattr(os, "replace", ro_replace)
    _fail_writes(monkeypatch, errno.EROFS)
    rc, _, err = advlc("delete", rd.id, "--yes", code=1)
    assert "read-only" in one_line(err)
    t0 = time.perf_counter()
    rc, _, err = advlc("eval", rd.id, "--attack", "pgd20", "--n", "50", code=1)
    assert "cannot store results" in one_line(err) and time.perf_counter() - t0 < 30  # refused before the work
    assert sorted(p.name for p in rd.path.rglob("*")) == files_before and rd.evals() == evals_before


def test_a_full_disk_during_training_ends_the_run_failed_with_the_reason(home, monkeypatch):
    """The disk fills after the first epoch: the record write fails, and the final state is
    still written (in place, without a temporary file); the first epoch's record survives."""
    from engine.run.process import run

    store = Store(home).ensure()
    [rd] = S.create_runs(store, plan_runs(PRESET, ["train.epochs=3", "eval.n=100"]))
    real = files.atomic_write_text
    full = {"on": False}

    def write(path, text):
        if full["on"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        if Path(path).name == "metrics.json" and '"epoch": 0' in text:
            full["on"] = True  # the first record is written; the disk is full afterwards
        return real(path, text)

    monkeypatch.setattr(files, "atomic_write_text", write)
    assert run(rd, store, log=lambda s: None) == "failed"
    monkeypatch.setattr(files, "atomic_write_text", real)
    st = rd.status()
    assert st.state == "failed" and "the disk is full" in st.error and "ENOSPC" in st.error
    assert [r["epoch"] for r in rd.epochs()] == [0]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root to mount a tiny tmpfs")
def test_a_really_full_tiny_filesystem(tmp_path, monkeypatch):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        home = mnt / "home"
        monkeypatch.setenv("ADVLC_HOME", str(home))
        Store(home).ensure()
        with open(mnt / "filler", "wb") as f:  # fill the rest of the file system
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        rc, _, err = advlc("run", PRESET, "--set", "train.epochs=1", code=1)
        assert "the disk is full" in one_line(err)
        assert list(Store(home).runs_dir.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# ---------------------------------------------------------------------------- killed launchers
def test_runs_of_a_killed_launcher_become_lost_and_resumable(home, monkeypatch):
    """A launcher dies (SIGKILL) after making 3 run folders and before starting them: the next
    command marks them lost with the reason, and each resumes."""
    code = (
        "import sys, time\nfrom engine.store.index import Store\nfrom engine.launch.plan import plan_runs\n"
        "from engine.launch.supervisor import create_runs\n"
        f"rds = create_runs(Store(sys.argv[1]), plan_runs({PRESET!r}, ['train.epochs=1'], seeds=3))\n"
        "print(' '.join(rd.id for rd in rds), flush=True)\ntime.sleep(600)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    ids = p.stdout.readline().split()
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    store = Store(home)
    assert [store.run_dir(i).status().state for i in ids] == ["queued"] * 3
    rc, out, _ = advlc("runs", "--json", code=0)
    rows = {r["id"]: r for r in json.loads(out)}
    assert all(rows[i]["state"] == "lost" and f"pid {p.pid}" in rows[i]["error"] for i in ids)
    rc, out, _ = advlc("resume", ids[0], "--foreground", code=0)
    assert store.run_dir(ids[0]).status().state == "finished"


def test_a_killed_gpu_scheduler_is_restarted_by_the_next_command(home, monkeypatch):
    monkeypatch.setenv("ADVLC_SCHEDULER_POLL_S", "0.2")
    store = Store(home).ensure()
    me = psutil.Process()
    files.write_json(
        gpuqueue.lease_path(store, 9, 0),
        {"gpu": 9, "slot": 0, "run": None, "pid": me.pid, "pid_create_time": me.create_time()},
    )
    [rd] = S.launch(store, plan_runs(PRESET, ["train.epochs=1"]), gpus=[9])
    deadline = time.time() + 60
    while not gpuqueue.scheduler_pid(store) and time.time() < deadline:
        time.sleep(0.1)
    pid = gpuqueue.scheduler_pid(store)
    assert pid and rd.status().state == "queued"
    os.kill(pid, signal.SIGKILL)
    psutil.Process(pid).wait(10) if psutil.pid_exists(pid) else None
    while gpuqueue.scheduler_running(store) and time.time() < deadline:
        time.sleep(0.1)
    advlc("runs", code=0)  # any command reconciles
    while not gpuqueue.scheduler_pid(store) and time.time() < deadline:
        time.sleep(0.1)
    new = gpuqueue.scheduler_pid(store)
    assert new and new != pid
    S.stop(store, [rd])


# ---------------------------------------------------------------------------- prerequisites, permissions, leftovers
def test_a_missing_data_folder_is_found_at_launch_before_any_run_folder(home, tmp_path):
    store = Store(home).ensure()
    for extra in ([], ["--detach"]):
        rc, _, err = advlc("run", "paper/table1/fgsm_n", "--set", f"data.root={tmp_path / 'nothing'}", *extra, code=2)
        line = one_line(err)
        assert "cifar10: expected" in line and "data_batch_1" in line and len(line) < 400
    assert list(store.runs_dir.iterdir()) == []


def test_cuda_asked_on_a_machine_without_it_is_refused_at_launch(home):
    if local.visible_gpu_count():
        pytest.skip("this machine has a GPU")
    rc, _, err = advlc("run", PRESET, "--device", "cuda", "--detach", code=2)
    assert "no CUDA device" in one_line(err)
    assert list(Store(home).runs_dir.iterdir()) == []


def test_everything_advlc_writes_is_user_only(home):
    """A detached run (log.txt, checkpoints, status, metrics, index, locks) leaves nothing
    readable by others; the store is created 0700."""
    store = Store(home).ensure()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    [rd] = S.launch(store, plan_runs(PRESET, ["train.epochs=1", "eval.n=100"]))
    deadline = time.time() + 180
    while rd.status().state not in ("finished", "failed") and time.time() < deadline:
        time.sleep(0.2)
    assert rd.status().state == "finished" and rd.log_path.exists() and rd.ckpt("last").exists()
    for p in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        assert mode & 0o077 == 0, f"{p} is {oct(mode)}"


def test_stale_temporary_files_are_swept(copy):
    store, rd = copy
    old = time.time() - 3600
    leftovers = [rd.path / ".status.json.abc.tmp", rd.ckpt_dir / "last.pt.tmp", store.home / ".index.json.x.tmp"]
    fresh = rd.path / ".metrics.json.new.tmp"
    for p in leftovers + [fresh]:
        p.write_text("half")
    for p in leftovers:
        os.utime(p, (old, old))
    advlc("runs", code=0)
    assert not any(p.exists() for p in leftovers) and fresh.exists()  # a writer may still own a fresh one


# ---------------------------------------------------------------------------- the building blocks
def test_load_json_tells_missing_from_corrupt(tmp_path):
    assert files.load_json(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(CorruptFile, match="bad.json: is not valid JSON"):
        files.load_json(tmp_path / "bad.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CorruptFile, match="not UTF-8"):
        files.load_json(tmp_path / "bin.json")


def test_tinydb_refuses_to_write_over_a_corrupt_file(tmp_path):
    p = tmp_path / "metrics.json"
    p.write_text('{"epochs": {"1": {"epoch": 0}, "2": {"ep')
    with pytest.raises(CorruptFile):
        files.table(files.open_db(p), "epochs").insert({"epoch": 9})
    assert p.read_text() == '{"epochs": {"1": {"epoch": 0}, "2": {"ep'


def test_salvage_keeps_every_complete_record_of_a_truncated_file():
    data = {"epochs": {str(i): {"epoch": i - 1, "acc": [0.1 * i]} for i in range(1, 8)}, "swa": {"1": {"epoch": 5}}}
    text = files.dumps(data)
    assert salvage_tables(text) == data
    for cut in range(0, len(text), 7):
        got = salvage_tables(text[:cut])
        for name, rows in got.items():
            assert rows == {k: data[name][k] for k in rows}  # nothing invented, nothing altered
            assert list(rows) == list(data[name])[: len(rows)]  # a prefix: only the tail is lost


def test_random_kills_of_a_record_writer_leave_every_record(tmp_path):
    """A process that appends records is SIGKILLed at random moments, 5 times: every time the
    file parses and holds a prefix of the records written (none lost once written)."""
    path = tmp_path / "metrics.json"
    code = (
        "import sys, itertools\nfrom engine.store.files import open_db, table\n"
        "t = table(open_db(sys.argv[1]), 'epochs')\nn = len(t)\n"
        "for i in itertools.count(n):\n    t.insert({'epoch': i, 'pad': 'x' * 2000})\n"
    )
    import random

    rng = random.Random(0)
    seen = 0
    for _ in range(5):
        p = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=ROOT)
        time.sleep(0.3 + rng.random() * 0.7)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        recs = files.table_rows(files.load_json(path), "epochs")
        assert [r["epoch"] for r in recs] == list(range(len(recs))) and len(recs) >= seen
        seen = len(recs)
    assert seen > 0
