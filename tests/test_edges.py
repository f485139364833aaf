"""The edges of the trust boundary: nothing from a checkpoint, a file or a string is obeyed,
nothing outside the store is written, no record is lost, and every error is one line.

    1. a checkpoint whose pickle calls for anything but what torch.save writes is not a checkpoint
       (never run, never "intact"), and a pickle that makes the inspector raise is one line;
    2. a log.txt that is a symbolic link (out of the store) is replaced by a regular file of the
       run's own, never written or read through; what it led to stays as it was;
    3. an OS error of an atomic write names the file that was being written, never `?`;
    4. a Slurm run on submitit's local cluster writes user-only files (0600, folders 0700);
    5. a preset name or path that leads out of the preset folders is refused in one line; the
       app's preset list survives a preset whose `preset` is not a table;
    6. an annotation killed between meta.json and index.json: tests/store/test_repair.py;
    7. `--time` is read exactly as Slurm reads it.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import cli, force_status, one_line, wait_for

from engine.errors import CorruptFile, UserError, os_error_line
from engine.store import files
from engine.store.checkpoint_files import inspect as inspect_checkpoint
from engine.store.index import Store
from fabricate import fabricate_run

PRESET = "quick/digits-fgsm_n"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def stopped_run(home: Path, rid: str = "0000abcd", done: int = 2):
    store = Store(home).ensure()
    rd = fabricate_run(
        store, rid, preset=PRESET, seed=0, group=None, total=4, done=done, state="stopped", created=time.time()
    )
    store.sync(rd)
    return store, rd


# ----------------------------------------------------------------------------- 1. crafted checkpoints
class _Call:
    """Pickles as a call of `fn(*args)`: what a crafted checkpoint's data.pkl does."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _checkpoint_with_pickle(path: Path, payload: bytes) -> None:
    """A torch checkpoint (zip, members stored, checksums right) whose data.pkl is `payload`."""
    buf = io.BytesIO()
    torch.save({"epoch": 2, "model": {"w": torch.zeros(2)}}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            z.writestr(info.filename, payload if info.filename.endswith("/data.pkl") else src.read(info))


def _crafted(marker: Path, protocol: int) -> bytes:
    return pickle.dumps(
        {"epoch": 2, "best_robust_acc": 0.5, "model": _Call(os.system, f"touch '{marker}'")}, protocol=protocol
    )


@pytest.mark.parametrize("protocol", [2, 4])  # GLOBAL, STACK_GLOBAL
def test_a_checkpoint_whose_pickle_calls_os_system_is_never_run_and_never_intact(home, tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = _crafted(marker, protocol)
    pickle.loads(payload)  # the payload is live: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    store, rd = stopped_run(home)
    for name in ("last", "best"):
        _checkpoint_with_pickle(rd.ckpt(name), payload)
    with pytest.raises(CorruptFile, match=r"not a torch checkpoint \(its pickle calls for 'posix.system'"):
        inspect_checkpoint(rd.ckpt("last"))

    rc, _, err = cli("resume", rd.id, code=1)
    line = one_line(err)
    assert "last.pt: is not a torch checkpoint" in line and "nothing of it was run" in line
    assert rd.status().state == "stopped"
    rc, out, err = cli("repair", rd.id, code=0)
    assert "checkpoints/last.pt is damaged (is not a torch checkpoint" in out
    assert "checkpoints/best.pt is damaged (is not a torch checkpoint" in out
    rc, _, err = cli("eval", rd.id, "--ckpt", "best", "--attack", "pgd20", "--n", "50", code=1)
    assert "best.pt: is not a torch checkpoint" in one_line(err)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload,why",
    [
        (pickle.dumps({"epoch": 2, "x": _Call(__import__("collections").OrderedDict, 5)}, protocol=2), "TypeError"),
        (b"\x80\x02}q\x00X\x05\x00\x00\x00epochq\x01K\x02s\xfe.", "UnpicklingError"),  # an unknown opcode
        (pickle.dumps({"epoch": "two"}, protocol=2), "epoch = 'two'"),
        (pickle.dumps({"best_robust_acc": 0.5}, protocol=2), "has no epoch"),
        (pickle.dumps([1, 2], protocol=2), "does not hold a checkpoint dict"),
    ],
    ids=["reduce-raises", "unknown-opcode", "epoch-a-string", "no-epoch", "not-a-dict"],
)
def test_a_pickle_that_makes_the_inspector_fail_is_one_line(home, payload, why):
    store, rd = stopped_run(home)
    _checkpoint_with_pickle(rd.ckpt("last"), payload)
    rc, _, err = cli("resume", rd.id, code=1)
    line = one_line(err)
    assert "last.pt: " in line and why in line and "--from best" in line


def test_a_real_checkpoint_of_every_kind_is_read(tmp_path):
    """What the trainer saves (a model with BatchNorm, an SGD optimiser's state, the RNG states, a
    bf16 tensor, SWA's dict) passes the allow-list: the check refuses crafted files only."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 1, 5, 5)).sum().backward()
    opt.step()
    obj = {
        "epoch": 3,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": None,
        "rng_data": torch.Generator().get_state(),
        "best_robust_acc": 0.4,
        "swa": {"model": model.state_dict(), "n": 2, "best_robust_acc": 0.3},
        "half": torch.ones(2, dtype=torch.bfloat16),
        "p": torch.nn.Parameter(torch.ones(1)),
    }
    torch.save(obj, tmp_path / "last.pt")
    assert inspect_checkpoint(tmp_path / "last.pt") == {"epoch": 3, "rng_cuda": None, "best_robust_acc": 0.4}


# ----------------------------------------------------------------------------- 2. a log.txt linked out
def _linked_log(rd, tmp_path) -> tuple[Path, bytes]:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"a file of the user's, outside the store\n")
    rd.log_path.unlink(missing_ok=True)
    rd.log_path.symlink_to(outside)
    return outside, outside.read_bytes()


def _own_log(rd) -> str:
    st = rd.log_path.lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    return rd.log_path.read_text()


def test_a_log_linked_out_of_the_store_is_replaced_never_written_or_read_through(home, tmp_path):
    store, rd = stopped_run(home)
    outside, before = _linked_log(rd, tmp_path)
    assert rd.log_tail() == []  # never read through the link
    rd.append_log("--- advlc: starting")
    assert outside.read_bytes() == before
    log = _own_log(rd)
    assert f"log.txt was a symbolic link to {str(outside)!r}" in log and log.endswith("--- advlc: starting\n")
    assert rd.log_tail(1) == ["--- advlc: starting"]


def test_a_launcher_that_opens_the_log_through_a_link_still_never_writes_through_it(home, tmp_path):
    """The run process itself: its output opened through a log.txt link (a careless launcher
    followed it), `engine.run.process.own_log_output` moves it to a regular log.txt of its own."""
    store, rd = stopped_run(home)
    outside, before = _linked_log(rd, tmp_path)
    code = (
        "import sys\nfrom engine.run.process import own_log_output\nfrom engine.store.rundir import RunDir\n"
        "moved = own_log_output(RunDir(sys.argv[1]))\nprint('from the run process', moved, flush=True)\n"
    )
    with open(rd.log_path, "ab") as through:  # follows the link, as a careless launcher would
        subprocess.run(
            [sys.executable, "-c", code, str(rd.path)],
            stdout=through,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            check=True,
            timeout=120,
        )
    assert outside.read_bytes() == before
    assert _own_log(rd).endswith("from the run process True\n")


@pytest.mark.slow
def test_advlc_resume_of_a_run_whose_log_is_linked_out_trains_without_writing_through(home, tmp_path):
    """End to end (it trains one digits epoch): `advlc resume` of a stopped run whose log.txt leads
    out of the store; the run finishes, its lines in a log.txt of its own, the file outside as it was."""
    from engine.launch import supervisor as S
    from engine.launch.plan import plan_runs

    store = Store(home).ensure()
    [rd] = S.create_runs(store, plan_runs(PRESET, ["train.epochs=1", "eval.n=100"]))
    force_status(rd, state="stopped")
    outside, before = _linked_log(rd, tmp_path)
    cli("resume", rd.id, code=0)
    wait_for(lambda: rd.status().state in ("finished", "failed"), timeout=300, what="the resumed run")
    assert rd.status().state == "finished"
    assert outside.read_bytes() == before
    log = _own_log(rd)
    assert "log.txt was a symbolic link" in log and "epoch   0" in log


def test_a_local_launch_replaces_a_linked_log_before_the_process_opens_it(home, tmp_path):
    """What `advlc resume` does for a local run (launch.processes.start_detached): a line to the log,
    then the process spawned with its output appended to log.txt."""
    from engine.launch.processes import spawn_detached

    store, rd = stopped_run(home)
    outside, before = _linked_log(rd, tmp_path)
    rd.append_log("--- advlc: starting on this host")
    p = spawn_detached([sys.executable, "-c", "print('trained')"], log_path=rd.log_path, env=dict(os.environ))
    p.wait(timeout=60)
    assert outside.read_bytes() == before
    assert _own_log(rd).endswith("--- advlc: starting on this host\ntrained\n")


# ----------------------------------------------------------------------------- 3. a full disk names the file
def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a write/fsync error: no file name


def test_a_full_disk_names_the_file_being_written_never_a_question_mark(home, monkeypatch):
    store, rd = stopped_run(home)
    monkeypatch.setattr(os, "fsync", _enospc)  # the atomic write's fsync fails
    rc, _, err = cli("label", rd.id, "a new title", code=1)
    assert one_line(err) == f"advlc: {rd.meta_path}: the disk is full (ENOSPC)"
    with pytest.raises(OSError) as exc:
        rd.update_status(heartbeat=1.0)
    assert os_error_line(exc.value) == f"{rd.status_path}: the disk is full (ENOSPC)"
    monkeypatch.undo()

    real = tempfile.mkstemp

    def no_temporary(*a, dir=None, prefix="", suffix="", **k):  # what mkstemp raises: the temporary's name
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(dir, f"{prefix}x1y2{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", no_temporary)
    with pytest.raises(OSError) as exc:
        files.write_json(rd.runtime_path, {})
    assert os_error_line(exc.value) == f"{rd.runtime_path}: the disk is full (ENOSPC)"
    monkeypatch.setattr(tempfile, "mkstemp", real)

    def no_rename(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), src, None, dst)

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError) as exc:
        files.write_json(rd.status_path, {})
    assert os_error_line(exc.value) == f"{rd.status_path}: the file system is read-only (EROFS)"


def test_a_full_disk_while_saving_a_checkpoint_names_the_checkpoint(tmp_path, monkeypatch):
    from engine.run import checkpoints

    def full(obj, f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError) as exc:
        checkpoints.save({"epoch": 1}, tmp_path / "last.pt")
    assert os_error_line(exc.value) == f"{tmp_path / 'last.pt'}: the disk is full (ENOSPC)"
    assert os_error_line(OSError(errno.ENOSPC, "x"), tmp_path) == f"{tmp_path}: the disk is full (ENOSPC)"


# ----------------------------------------------------------------------------- 4. a local Slurm run's files
def _local_slurm_job_that_exits(home: Path, tmp_path: Path, before_start=None):
    """A run submitted to submitit's local cluster, held by a setup line until it is stopped, so its
    job starts, finds the run stopped and exits without training (a few seconds, deterministic)."""
    pytest.importorskip("submitit")
    from engine.launch import supervisor as S
    from engine.launch.plan import plan_runs

    store = Store(home).ensure()
    gate = tmp_path / "go"
    params = {"cluster": "local", "setup": [f"while [ ! -e '{gate}' ]; do sleep 0.05; done"]}
    [rd] = S.launch(store, plan_runs(PRESET, ["train.epochs=1", "eval.n=100"]), executor="slurm", slurm_params=params)
    force_status(rd, state="stopped")
    if before_start is not None:
        before_start(rd)
    gate.touch()
    jid = rd.status().launch.job_id
    wait_for(lambda: (rd.submitit_dir / f"{jid}_0_result.pkl").exists(), timeout=120, what="the job's result")
    wait_for(
        lambda: "exits without training" in rd.log_path.read_text(errors="replace"),
        timeout=60,
        what="the job's last line",
    )
    return store, rd


def test_a_local_slurm_job_writes_only_user_only_files(home, tmp_path, monkeypatch):
    old = os.umask(0o022)  # a usual umask: what submitit would write 0644 under
    try:
        store, rd = _local_slurm_job_that_exits(home, tmp_path)
    finally:
        os.umask(old)
    made = sorted(p.name for p in rd.submitit_dir.iterdir())
    assert any(n.endswith("_submitted.pkl") for n in made) and any(n.endswith("_result.pkl") for n in made)
    assert any(n.endswith("_log.out") for n in made) and any(n.endswith("_log.err") for n in made)
    for p in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        assert mode & 0o077 == 0, f"{p} is {oct(mode)}"


def test_a_local_slurm_job_never_writes_through_a_linked_log(home, tmp_path):
    linked = {}

    def link(rd):
        linked["outside"], linked["before"] = _linked_log(rd, tmp_path)

    store, rd = _local_slurm_job_that_exits(home, tmp_path, before_start=link)
    assert linked["outside"].read_bytes() == linked["before"]
    log = _own_log(rd)
    assert "log.txt was a symbolic link" in log and "exits without training: the run is stopped" in log


def test_a_slurm_job_sends_its_output_to_a_log_of_its_own_never_through_a_link(home, tmp_path, monkeypatch):
    """In the job (SlurmTrain, here in this process): stdout and stderr go to log.txt, opened by
    `RunDir.open_log`; what the job writes before its first log line lands there too; the job's
    umask is user-only (on a real cluster its .out/.err come from sbatch's umask, `user_only`)."""
    from engine.launch.executors import slurm as SL

    store, rd = stopped_run(home)
    outside, before = _linked_log(rd, tmp_path)

    umask = {}

    def writes_first(self, rd):
        os.write(1, b"from the job's stdout\n")
        os.write(2, b"from the job's stderr\n")
        umask["job"] = os.umask(0o077)  # what the job writes (submitit's result pickle) is user-only too
        os.umask(umask["job"])
        return False

    monkeypatch.setattr(SL.SlurmTrain, "_should_run", writes_first)
    old = os.umask(0o022)
    try:
        assert SL.SlurmTrain()(str(rd.path)) == 0
    finally:
        os.umask(old)  # the job's umask is its process's: not this test process's
    assert umask["job"] & 0o077 == 0o077
    assert outside.read_bytes() == before
    assert _own_log(rd).endswith("from the job's stdout\nfrom the job's stderr\n")


# ----------------------------------------------------------------------------- 5. presets out of their folders
@pytest.mark.parametrize(
    "spelling",
    [
        "user/../../outside/evil",
        "user/../../outside/evil.toml",
        "{abs_no_suffix}",
        "user/{abs_no_suffix}",
        "user/linked",
        "user/linked.toml",
    ],
)
def test_a_preset_that_leads_out_of_the_preset_folders_is_refused(home, tmp_path, spelling):
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = outside / "evil.toml"
    evil.write_text('[preset]\nextends = "quick/digits-fgsm_n"\n[slurm]\nsetup = ["touch pwned"]\n')
    presets = home / "presets"
    presets.mkdir(parents=True)
    (presets / "linked.toml").symlink_to(evil)
    ref = spelling.format(abs=evil, abs_no_suffix=str(evil)[: -len(".toml")])
    line = one_line(cli("preset", "show", ref, code=2)[2])
    assert "is outside the preset folders" in line and str(presets.resolve()) in line
    (presets / "mine.toml").write_text(f'[preset]\nextends = "{ref}"\n')
    line = one_line(cli("run", "user/mine", "--set", "train.epochs=1", code=2)[2])
    assert "mine.toml: preset.extends" in line and "is outside the preset folders" in line
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
    rc, out, _ = cli("presets", code=0)
    assert "user/linked" in out and "broken" in out  # listed as broken, never read


def test_a_toml_path_typed_on_the_command_line_is_the_users_own_file(home, tmp_path):
    """A path to a .toml file is read where it is (the user typed it); only preset names are
    confined to the preset folders."""
    mine = tmp_path / "anywhere" / "mine.toml"
    mine.parent.mkdir()
    mine.write_text('[preset]\nextends = "quick/digits-fgsm_n"\n[train]\nepochs = 3\n')
    _, out, _ = cli("preset", "show", str(mine), code=0)
    assert "epochs = 3" in out


def test_presets_inside_their_folders_still_resolve_by_every_spelling(home):
    from engine.config.presets import find_preset

    presets = home / "presets"
    presets.mkdir(parents=True)
    (presets / "mine.toml").write_text('[preset]\nextends = "quick/digits-fgsm_n"\n')
    mine = (presets / "mine.toml").resolve()
    for ref in ("user/mine", "user/mine.toml", str(presets / "mine.toml"), "user/../presets/mine"):
        assert find_preset(ref, home)[1].resolve() == mine, ref
    for ref in ("quick/digits-fgsm_n", "quick/digits-fgsm_n.toml", "quick/../quick/digits-fgsm_n"):
        assert find_preset(ref, home)[1].name == "digits-fgsm_n.toml", ref


def test_the_app_lists_a_preset_whose_preset_is_not_a_table(tmp_path):
    from tui.screens.presets import list_items

    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "odd.toml").write_text('preset = "x"\n')
    (folder / "fine.toml").write_text('[preset]\ndescription = "fine"\n')
    items = {i.name: i for i in list_items(None, folder)}
    assert items["fine"].description == "fine" and "broken" in items["odd"].description


# ----------------------------------------------------------------------------- 7. --time as Slurm reads it
SLURM_TIMES = [  # (what is typed, minutes Slurm gives the job: seconds are rounded up)
    ("90", 90),
    (90, 90),
    ("1", 1),  # minutes
    ("1:30", 2),
    ("0:59", 1),
    ("1:00", 1),
    ("90:00", 90),
    ("1:90", 3),
    ("15:01", 16),  # minutes:seconds
    ("1:30:00", 90),
    ("01:30:00", 90),
    ("0:00:30", 1),
    ("12:00:00", 720),
    ("1:00:01", 61),  # h:m:s
    ("2-12", 3600),
    ("1-0", 1440),
    ("0-1", 60),  # days-hours
    ("2-12:30", 3630),
    ("1-00:01", 1441),  # days-hours:minutes
    ("2-12:30:15", 3631),
    ("1-00:00:00", 1440),
    ("0-0:0:1", 1),  # days-hours:minutes:seconds
]


@pytest.mark.parametrize("typed,minutes", SLURM_TIMES)
def test_time_is_read_as_slurm_reads_it(typed, minutes):
    from engine.launch.executors import slurm as SL

    assert SL.parse_time(typed) == minutes
    if isinstance(typed, str):
        assert SL.slurm_duration_min(typed) == minutes  # sinfo's limits the same way


@pytest.mark.parametrize(
    "typed,says",
    [
        ("0", "no time limit"),
        ("unlimited", "no time limit"),
        ("INFINITE", "no time limit"),
        ("-1", "no time limit"),
        ("0:00", "above 0"),
        ("1:2:3:4", "not a time"),
        ("1.5", "not a time"),
        ("2h", "not a time"),
        ("1-", "not a time"),
        (":30", "not a time"),
        ("9" * 12, "not a time"),
        ("99999999", "longer than Slurm"),
        (True, "Slurm"),
    ],
)
def test_a_time_slurm_would_not_read_as_a_limit_is_one_line(typed, says):
    from engine.launch.executors import slurm as SL

    with pytest.raises(UserError, match="slurm time") as exc:
        SL.parse_time(typed)
    assert says in str(exc.value) and "\n" not in str(exc.value)
