"""The trust boundary: nothing that comes from an archive, or from a status.json edited by hand,
is obeyed as if advlc had written it.

- `advlc unpack` imports data, never intent: a launch record (Slurm `setup` lines), a pid, a
  host, a `running` state of the sender are not kept; the config is validated like a preset;
  members are streamed under limits (a header over the limit, a gzip bomb) into user-only
  folders; a half-made import of a killed unpack is swept by the next command.
- `advlc stop` / `delete --force` signal only a run's own process: host, pid and start time as
  recorded and the command advlc starts for that run.

Every process a test starts (`sleep 60`) is killed in `finally`; waits poll with a timeout.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import psutil
import pytest
from helpers import cli, force_status, one_line, wait_for

from engine.launch import supervisor as S
from engine.launch.plan import plan_runs
from engine.launch.processes import HOST, RUN_MODULE, owned
from engine.launch import processes as P
from engine.store import pack as PK
from engine.store.index import Store
from engine.store.records import LocalLaunch

PRESET = "quick/digits-fgsm_n"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv(PK.MAX_MEMBER_ENV, raising=False)
    monkeypatch.delenv(PK.MAX_TOTAL_ENV, raising=False)


def advlc(home: Path, *args, code=None):
    return cli("--home", str(home), *args, code=code)


def made_run(home: Path, state: str = "stopped", epochs: int = 1):
    """A run of the digits preset in store `home`, never trained, in `state` (so it can be packed)."""
    store = Store(home).ensure()
    [rd] = S.create_runs(store, plan_runs(PRESET, [f"train.epochs={epochs}", "eval.n=100"]))
    force_status(rd, state=state, launched_by=None)
    store.sync(rd)
    return store, rd


def members_of(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def write_archive(
    path: Path, members: dict[str, bytes], *, reseal: bool = True, mode: int = 0o600, tail: bytes = b""
) -> Path:
    """An archive of `members` (the manifest's sizes and checksums made to match when `reseal`, as a
    sender who means harm would do), `tail` appended raw to the tar stream before gzip."""
    members = dict(members)
    if reseal:
        manifest = json.loads(members[PK.MANIFEST])
        manifest["files"] = {
            n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in members.items() if n != PK.MANIFEST
        }
        members[PK.MANIFEST] = json.dumps(manifest).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name in [PK.MANIFEST] + sorted(n for n in members if n != PK.MANIFEST):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(members[name]), mode
            tar.addfile(info, io.BytesIO(members[name]))
        end = tar.offset  # where the end-of-archive blocks begin
    data = raw.getvalue()
    if tail:
        data = data[:end] + tail + bytes(2 * tarfile.BLOCKSIZE)
    path.write_bytes(gzip.compress(data, compresslevel=9))
    return path


def packed(
    tmp_path: Path, *, state: str = "stopped", epochs: int = 1, status: dict | None = None, config: dict | None = None
) -> tuple[str, dict[str, bytes]]:
    """(run id, members) of `advlc pack` of a fresh run, its status.json fields and config values
    (`{"attack": {"eps": 5}}`) changed as given."""
    src = tmp_path / "sender"
    _, rd = made_run(src, state=state, epochs=epochs)
    out = tmp_path / "sent.tar.gz"
    advlc(src, "pack", rd.id, "-o", str(out), "--ckpt", "none", code=0)
    members = members_of(out)
    out.unlink()
    if status:
        name = f"runs/{rd.id}/status.json"
        members[name] = json.dumps({**json.loads(members[name]), **status}).encode()
    if config:
        name = f"runs/{rd.id}/config.json"
        doc = json.loads(members[name])
        for section, values in config.items():
            doc[section].update(values)
        members[name] = json.dumps(doc).encode()
    return rd.id, members


def sleeper() -> subprocess.Popen:
    """`sleep 60` in a session of its own (what a run process looks like to a process-group kill)."""
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def end(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
    p.wait(10)


def nothing_landed(home: Path) -> None:
    runs = home / "runs"
    assert not runs.exists() or list(runs.iterdir()) == [], list(runs.iterdir())


# ------------------------------------------------------------------------------ A1, A3: data, not intent
@pytest.mark.slow  # ~6 s: two real resumes (foreground and detached) of unpacked runs (CI runs it)
def test_an_archives_slurm_setup_lines_are_never_run(tmp_path):
    """A stopped run whose status.json carries a Slurm launch record (local cluster) with `setup`
    lines that would create a marker file: after unpack it has no launch record, and neither
    `resume --foreground` nor `resume` (detached: the executor of the launch record, before)
    runs those lines; the detached resume is a local one."""
    marker = tmp_path / "obeyed"
    evil = {
        "executor": "slurm",
        "cluster": "local",
        "host": HOST,
        "job_id": "4242",
        "params": {"cluster": "local", "setup": [f"touch {marker}"]},
    }
    rid, members = packed(tmp_path, status={"launch": evil, "host": HOST, "pid": 4242, "gpu": 0})
    # a second run, the same: one resumed in the foreground, one detached
    rid2, more = packed(tmp_path / "second", status={"launch": evil})
    manifest = json.loads(members[PK.MANIFEST])
    manifest["runs"].append(rid2)
    members = {**members, **more, PK.MANIFEST: json.dumps(manifest).encode()}
    home = tmp_path / "home"
    advlc(home, "unpack", str(write_archive(tmp_path / "evil.tar.gz", members)), code=0)
    store = Store(home)
    for r in (rid, rid2):
        st = store.run_dir(r).status()
        assert (st.state, st.launch, st.pid, st.host, st.gpu) == ("stopped", None, None, None, None)
        assert "slurm" not in store.run_dir(r).status_path.read_text()

    advlc(home, "resume", rid, "--foreground", code=0)
    assert store.run_dir(rid).status().state == "finished" and not marker.exists()

    rd2 = store.run_dir(rid2)
    try:
        advlc(home, "resume", rid2, code=0)
        assert isinstance(rd2.status().launch, LocalLaunch)
        wait_for(lambda: rd2.status().state in ("finished", "failed", "stopped", "lost"), 180, what="the resumed run")
        assert rd2.status().state == "finished", rd2.log_tail(10)
    finally:
        if rd2.status().state == "running":
            S.stop(store, [rd2], grace_s=5)
    assert not marker.exists()
    assert not (rd2.path / "submitit").exists()


@pytest.mark.parametrize("state", ["running", "queued", "lost"])
def test_an_archive_that_says_running_with_a_live_pid_arrives_stopped(tmp_path, state):
    """The sender's status says `running` (or queued, lost) with the pid and start time of a live
    process here: the run arrives `stopped`, resumable, with a line saying it was imported, and no
    pid, host or heartbeat; `stop` and `delete --force` leave that process alive."""
    p = sleeper()
    try:
        ct = psutil.Process(p.pid).create_time()
        rid, members = packed(
            tmp_path,
            status={
                "state": state,
                "pid": p.pid,
                "pid_create_time": ct,
                "host": HOST,
                "heartbeat": time.time(),
                "launch": {"executor": "local", "host": HOST},
                "launched_by": {"pid": p.pid, "pid_create_time": ct, "host": HOST},
            },
        )
        home = tmp_path / "home"
        advlc(home, "unpack", str(write_archive(tmp_path / "a.tar.gz", members)), code=0)
        rd = Store(home).run_dir(rid)
        st = rd.status()
        assert st.state == "stopped" and f"where it was {state}" in st.error and f"advlc resume {rid}" in st.error
        assert (st.pid, st.pid_create_time, st.host, st.heartbeat, st.launch, st.launched_by) == (None,) * 6
        S.check_resumable(Store(home), rd)  # resumable
        advlc(home, "stop", rid, code=0)
        assert p.poll() is None and rd.status().state == "stopped"
        advlc(home, "delete", rid, "--yes", "--force", code=0)
        assert p.poll() is None and not rd.path.exists()
    finally:
        end(p)


def test_a_finished_or_failed_run_keeps_its_state_and_the_senders_device_is_dropped(tmp_path):
    rid, members = packed(
        tmp_path,
        state="failed",
        status={"error": "boom", "epoch": 3, "host": "elsewhere", "heartbeat": 1.0, "mystery": {"run": "this"}},
    )
    members[f"runs/{rid}/runtime.json"] = json.dumps({"device": "cuda:3", "label": "x"}).encode()
    home = tmp_path / "home"
    advlc(home, "unpack", str(write_archive(tmp_path / "a.tar.gz", members)), code=0)
    rd = Store(home).run_dir(rid)
    st = rd.status()
    assert (st.state, st.error, st.epoch, st.host, st.heartbeat, st.extra) == ("failed", "boom", 3, None, None, {})
    assert rd.runtime().device is None and rd.runtime().label == "x"
    assert rd.config().value("train.device") == "cpu"


# ------------------------------------------------------------------------------ A2: the config, like a preset
@pytest.mark.parametrize(
    "change, key",
    [
        ({"attack": {"eps": 5}}, "attack.eps"),
        ({"train": {"device": "rm -rf /"}}, "train.device"),
        ({"method": {"name": "nonsense"}}, "method.name"),
    ],
)
def test_an_invalid_config_is_refused_in_one_line_before_anything_is_written(tmp_path, change, key):
    rid, members = packed(tmp_path, config=change)
    home = tmp_path / "home"
    rc, _, err = advlc(home, "unpack", str(write_archive(tmp_path / "a.tar.gz", members)))
    line = one_line(err)
    assert rc == 1 and f"runs/{rid}/config.json" in line and key in line and "refusing to unpack" in line, line
    nothing_landed(home)


# ------------------------------------------------------------------------------ A4: limits
def test_a_member_whose_header_is_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """The header of a checkpoint says 100 MB, over a limit of 1 MB, and the data behind it is not
    even there: the refusal names the member and the limit (reading it would have failed otherwise)."""
    rid, members = packed(tmp_path)
    name = f"runs/{rid}/checkpoints/last.pt"
    huge = tarfile.TarInfo(name)
    huge.size = 100_000_000
    archive = write_archive(tmp_path / "a.tar.gz", members, tail=huge.tobuf(tarfile.USTAR_FORMAT) + b"x" * 1024)
    monkeypatch.setenv(PK.MAX_MEMBER_ENV, str(1_000_000))
    home = tmp_path / "home"
    rc, _, err = advlc(home, "unpack", str(archive))
    line = one_line(err)
    assert rc == 1 and name in line and "100000000 bytes" in line and "1000000" in line and PK.MAX_MEMBER_ENV in line
    nothing_landed(home)
    monkeypatch.delenv(PK.MAX_MEMBER_ENV)  # without the lowered limit: an incomplete archive
    rc, _, err = advlc(home, "unpack", str(archive))
    assert rc == 1 and "not a complete advlc archive" in one_line(err)
    nothing_landed(home)


def test_a_gzip_bomb_is_stopped_at_the_limit(tmp_path, monkeypatch):
    """A log.txt of 64 MiB of zeros (a 64 KiB archive), manifest and checksums in order: refused at
    a member limit of 1 MiB, and at a total limit of 1 MiB with members under the member limit."""
    rid, members = packed(tmp_path)
    members[f"runs/{rid}/log.txt"] = bytes(64 * 1024 * 1024)
    archive = write_archive(tmp_path / "bomb.tar.gz", members)
    assert archive.stat().st_size < 200_000
    home = tmp_path / "home"
    monkeypatch.setenv(PK.MAX_MEMBER_ENV, str(1024 * 1024))
    rc, _, err = advlc(home, "unpack", str(archive))
    assert rc == 1 and f"runs/{rid}/log.txt is 67108864 bytes, over the limit" in one_line(err)
    nothing_landed(home)

    members[f"runs/{rid}/log.txt"] = bytes(900 * 1024)
    members[f"runs/{rid}/checkpoints/last.pt"] = bytes(900 * 1024)
    archive = write_archive(tmp_path / "bomb2.tar.gz", members)
    monkeypatch.setenv(PK.MAX_TOTAL_ENV, str(1024 * 1024))
    rc, _, err = advlc(home, "unpack", str(archive))
    line = one_line(err)
    assert rc == 1 and "over the limit of 1048576 bytes in all" in line and PK.MAX_TOTAL_ENV in line
    nothing_landed(home)
    monkeypatch.delenv(PK.MAX_MEMBER_ENV)
    monkeypatch.delenv(PK.MAX_TOTAL_ENV)
    advlc(home, "unpack", str(archive), code=0)  # within the default limits it is an archive like any


def test_a_bad_limit_is_one_line(tmp_path, monkeypatch):
    rid, members = packed(tmp_path)
    monkeypatch.setenv(PK.MAX_TOTAL_ENV, "20G")
    rc, _, err = advlc(tmp_path / "home", "unpack", str(write_archive(tmp_path / "a.tar.gz", members)))
    assert rc == 2 and PK.MAX_TOTAL_ENV in one_line(err) and "whole number of bytes" in err


def test_a_huge_extension_header_and_a_link_are_refused(tmp_path):
    rid, members = packed(tmp_path)
    pax = tarfile.TarInfo(f"runs/{rid}/log.txt")
    pax.pax_headers = {"comment": "x" * (PK.MAX_EXTENSION + 10)}
    archive = write_archive(tmp_path / "pax.tar.gz", members, tail=pax.tobuf(tarfile.PAX_FORMAT))
    rc, _, err = advlc(tmp_path / "home", "unpack", str(archive))
    assert rc == 1 and "extension header" in one_line(err)
    link = tarfile.TarInfo(f"runs/{rid}/log.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = write_archive(tmp_path / "link.tar.gz", members, tail=link.tobuf(tarfile.USTAR_FORMAT))
    rc, _, err = advlc(tmp_path / "home", "unpack", str(archive))
    assert rc == 1 and "is not a plain file" in one_line(err)
    nothing_landed(tmp_path / "home")


# ------------------------------------------------------------------------------ A5: modes, leftovers
def test_what_unpack_makes_is_user_only_whatever_the_archive_and_umask_say(tmp_path):
    rid, members = packed(tmp_path)
    members[f"runs/{rid}/checkpoints/last.pt"] = b"not really a checkpoint"
    archive = write_archive(tmp_path / "a.tar.gz", members, mode=0o777)
    old = os.umask(0)
    try:
        advlc(tmp_path / "home", "unpack", str(archive), code=0)
    finally:
        os.umask(old)
    top = tmp_path / "home" / "runs" / rid
    paths = [top, *top.rglob("*")]
    assert {p.relative_to(top).as_posix() for p in paths if p.is_file()} >= {
        "config.json",
        "status.json",
        "checkpoints/last.pt",
    }
    modes = {p.relative_to(top).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert all(m == (0o700 if (top / n).is_dir() else 0o600) for n, m in modes.items()), modes


def test_a_half_made_import_is_swept_by_the_next_command_and_a_live_one_is_not(tmp_path):
    home = tmp_path / "home"
    runs = Store(home).ensure().runs_dir
    dead = runs / f"{PK.STAGING}killed"  # a killed unpack: its lock file, nobody holds it
    (dead / "abcd1234" / "checkpoints").mkdir(parents=True)
    (dead / "abcd1234" / "config.json").write_text("{}")
    (runs / f"{PK.STAGING}killed.lock").write_text("")
    older = runs / f"{PK.STAGING}abcd1234"  # the name an older advlc used, no lock at all
    older.mkdir()
    (older / "status.json").write_text("{}")
    lone = runs / f"{PK.STAGING}early.lock"  # killed before it made its folder
    lone.write_text("")
    live = runs / f"{PK.STAGING}live"  # an unpack at work in another process
    (live / "x").mkdir(parents=True)
    fd = os.open(runs / f"{PK.STAGING}live.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        advlc(home, "runs", code=0)  # any command reconciles
        assert sorted(p.name for p in runs.iterdir()) == [f"{PK.STAGING}live", f"{PK.STAGING}live.lock"]
    finally:
        os.close(fd)
    advlc(home, "runs", code=0)
    assert list(runs.iterdir()) == []


def test_a_refused_archive_leaves_no_staging_behind(tmp_path):
    rid, members = packed(tmp_path)
    members[f"runs/{rid}/metrics.json"] = b"{not json"
    home = tmp_path / "home"
    rc, _, err = advlc(home, "unpack", str(write_archive(tmp_path / "a.tar.gz", members)))
    assert rc == 1 and "metrics.json is not valid JSON" in one_line(err)
    nothing_landed(home)


# ------------------------------------------------------------------------------ B: signals only to our own processes
def test_stop_and_delete_never_signal_a_foreign_process_a_status_json_names(tmp_path):
    """status.json edited in the store to name a live process that is not the run's (`sleep 60`,
    its own session, pid and start time exact, this host): `stop` signals nothing, says so in one
    line and leaves the run `running`; `delete --force` deletes the folder and signals nothing."""
    p = sleeper()
    try:
        ct = psutil.Process(p.pid).create_time()
        store, rd = made_run(tmp_path / "home")
        force_status(
            rd,
            state="running",
            pid=p.pid,
            pid_create_time=ct,
            host=HOST,
            heartbeat=time.time(),
            launch=LocalLaunch(host=HOST).to_json(),
        )
        store.sync(rd)
        rc, out, err = advlc(store.home, "stop", rd.id, "--grace", "0")
        line = one_line(err)
        assert rc == 1 and f"run {rd.id}" in line and f"pid {p.pid}" in line and "'sleep'" in line
        assert "nothing was signalled" in line and f"{rd.id}  running" in out
        assert p.poll() is None and rd.status().state == "running" and rd.status().pid == p.pid
        rc, out, err = advlc(store.home, "delete", rd.id, "--yes", "--force")
        assert rc == 1 and "nothing was signalled" in one_line(err) and f"deleted {rd.id}" in out
        assert p.poll() is None and not rd.path.exists()
    finally:
        end(p)


def test_no_start_time_or_another_host_means_no_signal(tmp_path):
    p = sleeper()
    try:
        store, rd = made_run(tmp_path / "home")
        for fields, words in (
            ({"pid_create_time": None, "host": HOST}, "start time is not recorded"),
            ({"pid_create_time": psutil.Process(p.pid).create_time(), "host": "elsewhere"}, "not on this host"),
        ):
            force_status(rd, state="running", pid=p.pid, heartbeat=time.time(), **fields)
            refused = S.stop(store, [rd], grace_s=0)
            assert words in refused[rd.id] and p.poll() is None and rd.status().state == "running"
    finally:
        end(p)


def test_owned_refuses_init_this_process_and_its_parents_whatever_their_command(monkeypatch):
    """Even a process whose command looks like a run's is never ours when it is pid 1, this process
    or one of its parents (nothing is signalled here: `owned` only judges)."""
    monkeypatch.setattr(P, "_runs_command", lambda argv, commands, cwd: True)
    me = psutil.Process()
    for proc in [me, *me.parents()]:
        assert owned(proc.pid, proc.create_time(), HOST, []).kind == "foreign", proc
    assert owned(1, psutil.Process(1).create_time(), HOST, []).kind == "foreign"
    assert owned(me.pid, me.create_time(), "elsewhere", []).kind == "foreign"


def test_owned_knows_a_runs_commands_and_only_those(tmp_path):
    rd = tmp_path / "home" / "runs" / "abc"
    sub = rd / "submitit"
    py = sys.executable
    ok = [
        [py, "-m", RUN_MODULE, str(rd)],
        ["/usr/bin/python3.11", "-u", "-m", "submitit.core._submit", str(sub)],
        ["/bin/sh", "-c", f"module load cuda && touch x && '{py}' -m submitit.local._local {sub}"],
    ]
    commands = [(RUN_MODULE, rd), ("submitit.core._submit", sub), ("submitit.local._local", sub)]
    for argv in ok:
        assert P._runs_command(argv, commands, None), argv
    bad = [
        [py, "-m", RUN_MODULE, str(rd.parent / "abd")],
        [py, "-m", "engine.other", str(rd)],
        [py, "-m", RUN_MODULE, str(rd), "--more"],
        ["sleep", "60"],
        [py, "-c", "x", "-m", RUN_MODULE, str(rd)],
        ["/bin/sh", "-c", f"'{py}' -m {RUN_MODULE} {rd} && rm -rf /"],
        [],
        ["/bin/sh", "-c", "'"],
    ]
    for argv in bad:
        assert not P._runs_command(argv, commands, None), argv
    # a relative path is read from the process's working folder
    assert P._runs_command([py, "-m", RUN_MODULE, "abc"], commands, str(rd.parent))
