"""`advlc repair` loses nothing: every intact record is kept around a damaged one, a damaged file is
never missing under its name (its replacement is written first, the damaged file kept beside it),
config.json can be rebuilt for every run (foreground runs too), a run whose config.json is lost is
listed as corrupt, and a repair killed at any step leaves every run listed and is finished by the
next one. Each test compares with what was written before the damage."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import time
from pathlib import Path

import pytest
from helpers import cli, train_one

from engine.errors import CorruptFile
from engine.store import files
from engine.store.files import open_db, replace_keeping_aside, table
from engine.store.index import Store
from engine.store.repair import repair, salvage_tables
from engine.store.rundir import CONFIG_COPY, RunDir, run_folders
from fabricate import fabricate_run

PRESET = "quick/digits-fgsm_n"


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


# ------------------------------------------------------------------------------ a real metrics.json
def epoch_records(n: int = 10) -> list[dict]:
    """Epoch records of the shape the run process writes (numbers, some None)."""
    return [
        {
            "epoch": e,
            "lr": 0.1 if e < 7 else 0.01,
            "train_loss": 2.3 - 0.11 * e,
            "train_acc": 0.1 + 0.05 * e,
            "clean_loss": 1.9 - 0.1 * e,
            "clean_acc": 0.4 + 0.031 * e,
            "robust_loss": 2.1 - 0.07 * e,
            "robust_acc": 0.2 + 0.0173 * e,
            "av": 0.2 + 0.01 * e,
            "ig": 1.5 + e / 7,
            "hs": None if e % 3 else 0.25,
            "time_s": 1.25 + e / 3,
            "images_per_s": 2400.0 + e,
        }
        for e in range(n)
    ]


SWA = [
    {
        "epoch": e,
        "lr": 0.01,
        "train_loss": 1.0,
        "train_acc": 0.5,
        "clean_acc": 0.6,
        "robust_acc": 0.33 + e / 100,
        "time_s": 1.0,
    }
    for e in (7, 8, 9)
]
EVALS = [
    {"ckpt": "best", "attack": "pgd20", "n": 100, "eps": 8 / 255, "clean_acc": 0.61, "robust_acc": 0.31},
    {"ckpt": "last", "attack": "pgd20", "n": 100, "eps": 8 / 255, "clean_acc": 0.6, "robust_acc": 0.29},
]


def write_metrics(path: Path, epochs: list[dict]) -> None:
    """metrics.json as the run process writes it: TinyDB inserts, one write each."""
    db = open_db(path)
    for name, rows in (("epochs", epochs), ("swa", SWA), ("evals", EVALS)):
        t = table(db, name)
        for r in rows:
            t.insert(r)


def record_span(data: bytes, table_name: str, key: str) -> tuple[int, int]:
    """(start, end) of the JSON object of record `key` of table `table_name` in the file's bytes."""
    t0 = data.index(f'\n "{table_name}": {{'.encode())
    start = data.index(f'\n  "{key}": '.encode(), t0) + len(f'\n  "{key}": ')
    assert data[start : start + 1] == b"{"
    end = data.index(b"\n  }", start) + len(b"\n  }")
    return start, end


def _bad_number(data, s, e):
    i = data.index(b'"robust_acc": ', s, e) + len(b'"robust_acc": ') + 2
    return data[:i] + b"x" + data[i + 1 :]


def _no_quote(data, s, e):
    i = data.index(b'"train_acc"', s, e)
    return data[:i] + data[i + 1 :]


def _no_brace(data, s, e):
    assert data[e - 1 : e] == b"}"
    return data[: e - 1] + data[e:]


def _not_utf8_key(data, s, e):
    i = data.index(b'"robust_acc"', s, e) + 4
    return data[:i] + b"\xff\xfe" + data[i + 2 :]  # still JSON if read as replaced text: a made-up key


def _random(seed):
    def damage(data, s, e):
        rng = random.Random(seed)
        i = rng.randrange(s, e)
        n = min(rng.randint(1, 6), e - i)
        junk = bytes([rng.randrange(0x80, 0xC0)] + [rng.randrange(256) for _ in range(n - 1)])
        return data[:i] + junk + data[i + n :]

    return damage


DAMAGES = {
    "bad-byte-in-a-number": _bad_number,
    "removed-quote": _no_quote,
    "removed-closing-brace": _no_brace,
    "not-utf8-in-a-key": _not_utf8_key,
    **{f"random-bytes-{s}": _random(s) for s in range(12)},
}


def check_kept(tables: dict, epochs: list[dict], damaged: str | None) -> None:
    """Every record but the damaged one is kept exactly, in order; the damaged one is gone or intact."""
    got = {k: dict(v) for k, v in tables.get("epochs", {}).items()}
    for i, rec in enumerate(epochs, 1):
        if str(i) == damaged:
            assert got.get(str(i)) in (None, rec), got.get(str(i))
        else:
            assert got.get(str(i)) == rec, (i, got.get(str(i)))
    assert set(got) <= {str(i) for i in range(1, len(epochs) + 1)}
    assert [dict(v) for v in tables["swa"].values()] == SWA and [dict(v) for v in tables["evals"].values()] == EVALS


@pytest.mark.parametrize("key", ["3", "1", "10"])
@pytest.mark.parametrize("how", list(DAMAGES))
def test_salvage_keeps_every_intact_record_before_and_after_a_garbled_one(tmp_path, how, key):
    path = tmp_path / "metrics.json"
    epochs = epoch_records()
    write_metrics(path, epochs)
    data = path.read_bytes()
    assert files.load_json(path) == {
        "epochs": {str(i): r for i, r in enumerate(epochs, 1)},
        "swa": {str(i): r for i, r in enumerate(SWA, 1)},
        "evals": {str(i): r for i, r in enumerate(EVALS, 1)},
    }
    damaged = DAMAGES[how](data, *record_span(data, "epochs", key))
    assert damaged != data
    path.write_bytes(damaged)
    with pytest.raises(CorruptFile):
        files.load_json(path)
    tables = salvage_tables(damaged.decode("utf-8", "surrogateescape"))
    check_kept(tables, epochs, key)
    if how in ("bad-byte-in-a-number", "removed-quote", "not-utf8-in-a-key"):
        assert key not in tables["epochs"]  # its content damaged: dropped, never kept altered
    if how == "removed-closing-brace" and key != "10":
        assert key not in tables["epochs"]  # it swallowed the records after it: they are kept instead


def test_salvage_of_every_truncation_keeps_every_record_that_ended_before_the_cut(tmp_path):
    path = tmp_path / "metrics.json"
    epochs = epoch_records()
    write_metrics(path, epochs)
    data = path.read_bytes()
    ends = {str(i): record_span(data, "epochs", str(i))[1] for i in range(1, 11)}
    for cut in range(len(data) + 1):
        got = salvage_tables(data[:cut].decode("utf-8", "surrogateescape")).get("epochs", {})
        want = [k for k, end in ends.items() if end <= cut]
        assert list(got) == want, cut
        assert all(dict(got[k]) == epochs[int(k) - 1] for k in got)


@pytest.mark.parametrize("how", ["removed-closing-brace", "random-bytes-3", "bad-byte-in-a-number"])
def test_repair_of_a_run_keeps_the_nine_other_records_and_the_damaged_file(tmp_path, monkeypatch, how):
    home = tmp_path / "home"
    monkeypatch.setenv("ADVLC_HOME", str(home))
    store = Store(home).ensure()
    rd = fabricate_run(
        store, "0000aaaa", preset=PRESET, seed=0, group=None, total=10, done=0, state="stopped", created=time.time()
    )
    rd.metrics_path.unlink()
    epochs = epoch_records()
    write_metrics(rd.metrics_path, epochs)
    data = rd.metrics_path.read_bytes()
    damaged = DAMAGES[how](data, *record_span(data, "epochs", "3"))
    rd.metrics_path.write_bytes(damaged)

    rc, out, err = cli("repair", rd.id, code=0)
    assert "metrics.json was damaged" in out
    check_kept(json.loads(rd.metrics_path.read_text()), epochs, "3")
    assert [dict(r) for r in rd.epochs()] == [r for i, r in enumerate(epochs, 1) if i != 3]
    [aside] = rd.path.glob("metrics.json.corrupt-*")
    assert aside.read_bytes() == damaged  # kept byte for byte
    table(rd.metrics_db(), "epochs").insert({"epoch": 10})  # a resumed run can write it again
    assert [r["epoch"] for r in rd.epochs()][-1] == 10


# ------------------------------------------------------------------------------ replace, keeping aside
def test_a_damaged_file_is_replaced_and_kept_under_a_new_name_each_time(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20250101-000000")  # every repair in one second
    p = tmp_path / "status.json"
    versions = [b'{"state": "runn', b"\x00\x01", b"[1, 2"]
    for i, bad in enumerate(versions):
        p.write_bytes(bad)
        aside = replace_keeping_aside(p, b'{"fixed": %d}' % i)
        assert aside.read_bytes() == bad and p.read_bytes() == b'{"fixed": %d}' % i
    kept = sorted(tmp_path.glob("status.json.corrupt-*"), key=lambda q: q.stat().st_ino)
    assert sorted(q.read_bytes() for q in kept) == sorted(versions)  # none written over
    assert replace_keeping_aside(tmp_path / "new.json", b"{}") is None  # nothing to keep


@pytest.mark.parametrize("fail_at", ["write", "link", "replace"])
def test_a_refused_write_leaves_the_damaged_file_under_its_name(tmp_path, monkeypatch, fail_at):
    p = tmp_path / "metrics.json"
    p.write_bytes(b'{"epochs": {"1": {"ep')

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = {"write": (files.os, "fsync"), "link": (files.os, "link"), "replace": (files.os, "replace")}[fail_at]
    monkeypatch.setattr(*target, full)
    with pytest.raises(OSError):
        replace_keeping_aside(p, b"{}")
    monkeypatch.undo()
    assert p.read_bytes() == b'{"epochs": {"1": {"ep'
    assert not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------------------------------------ config.json, every run
@pytest.fixture(scope="module")
def foreground(tmp_path_factory):
    """A store with one run trained in the foreground, as `advlc run` without --detach does it."""
    home = tmp_path_factory.mktemp("foreground") / "home"
    os.environ["OMP_NUM_THREADS"] = "1"
    _, rd = train_one(home, PRESET, ["train.epochs=1", "eval.n=50"], log_file=False)
    return home, rd.id


@pytest.mark.parametrize("damage", ["truncated", "missing", "wrong-shape"])
def test_config_of_a_foreground_run_is_rebuilt_byte_for_byte(foreground, tmp_path, monkeypatch, damage):
    src, rid = foreground
    home = tmp_path / "home"
    shutil.copytree(src, home)
    monkeypatch.setenv("ADVLC_HOME", str(home))
    rd = Store(home).run_dir(rid)
    assert not rd.log_path.exists()  # a foreground run writes no log.txt
    want = rd.config_path.read_bytes()
    before = rd.config()
    if damage == "truncated":
        rd.config_path.write_bytes(want[: len(want) // 3])
    elif damage == "missing":
        rd.config_path.unlink()
    else:
        cfg = json.loads(want)
        rd.config_path.write_text(json.dumps({**cfg, "run": {**cfg["run"], "seed": "zero"}}))
    bad = rd.config_path.read_bytes() if rd.config_path.exists() else None
    rc, out, err = cli("runs", "--reindex", "--json", code=0)
    [row] = json.loads(out)
    assert row["state"] == "corrupt" and "config.json" in row["error"]

    rc, out, err = cli("repair", rd.id, code=0)
    assert "config.json was" in out and CONFIG_COPY in out
    assert rd.config_path.read_bytes() == want
    assert rd.config() == before  # provenance and origin too
    assert [p.read_bytes() for p in rd.path.glob("config.json.corrupt-*")] == ([bad] if bad else [])
    [row] = json.loads(cli("runs", "--json", code=0)[1])
    assert row["state"] == "finished"


def test_the_run_process_keeps_the_copy_for_a_run_made_without_it(tmp_path, monkeypatch):
    """A run made before the copy was kept (or unpacked): its run process writes it before it works."""
    from engine.launch import supervisor as S
    from engine.launch.plan import plan_runs
    from engine.run import process

    home = tmp_path / "home"
    monkeypatch.setenv("ADVLC_HOME", str(home))
    store = Store(home).ensure()
    [rd] = S.create_runs(store, plan_runs(PRESET, ["train.epochs=1"]))
    assert rd.config_copy_path.read_bytes() == rd.config_path.read_bytes()  # written at creation
    rd.config_copy_path.unlink()
    seen = {}
    monkeypatch.setattr(process, "train_run", lambda rd_, *a: seen.setdefault("copy", rd_.config_copy()))
    assert process.run(rd, store, log=lambda line: None) == "finished"
    assert seen["copy"] == rd.config_path.read_bytes()


def test_repair_keeps_the_copy_for_an_old_run_and_leaves_config_json_alone(tmp_path, monkeypatch):
    """An old run gets its copy from an intact config.json; a damaged runtime.json is not config.json's."""
    home = tmp_path / "home"
    monkeypatch.setenv("ADVLC_HOME", str(home))
    store = Store(home).ensure()
    rd = fabricate_run(
        store, "0000bbbb", preset=PRESET, seed=0, group=None, total=4, done=4, state="finished", created=time.time()
    )
    want = rd.config_path.read_bytes()
    rd.runtime_path.write_text(json.dumps({"starts": {}}))
    assert not rd.config_copy_path.exists()
    rc, out, err = cli("repair", code=0)
    assert "runtime.json was damaged" in out and "config.json was" not in out
    assert rd.config_path.read_bytes() == want and rd.config_copy_path.read_bytes() == want
    assert not list(rd.path.glob("config.json.corrupt-*"))
    assert f"kept a copy of config.json ({CONFIG_COPY}) for 1 run(s)" in out
    assert f"({CONFIG_COPY})" not in cli("repair", code=0)[1]  # once


def test_a_damaged_checkpoint_is_named_and_left_in_place(tmp_path, monkeypatch):
    """Moved aside, a damaged last.pt would make `resume` start over silently (and drop every record)."""
    from engine.launch.supervisor import resume_epoch

    home = tmp_path / "home"
    monkeypatch.setenv("ADVLC_HOME", str(home))
    store = Store(home).ensure()
    rd = fabricate_run(
        store, "0000cccc", preset=PRESET, seed=0, group=None, total=4, done=2, state="stopped", created=time.time()
    )
    rd.ckpt("last").write_bytes(b"PK\x03\x04 not a checkpoint")
    rc, out, err = cli("repair", rd.id, code=0)
    assert "found: checkpoints/last.pt is damaged" in out and "--from best" in out
    assert rd.ckpt("last").read_bytes() == b"PK\x03\x04 not a checkpoint"
    with pytest.raises(CorruptFile, match="last.pt"):
        resume_epoch(rd)


# ------------------------------------------------------------------------------ config.json lost
def _lost_config(home: Path, copy: str) -> RunDir:
    store = Store(home).ensure()
    rd = fabricate_run(
        store, "0000dddd", preset=PRESET, seed=0, group=None, total=4, done=4, state="finished", created=time.time()
    )
    rd.config_path.unlink()
    if copy == "damaged":
        rd.config_copy_path.write_text('{"run": {"id": 5}}')
    return rd


@pytest.mark.parametrize("copy", ["none", "damaged"])
def test_repair_names_a_run_whose_config_cannot_be_rebuilt(tmp_path, monkeypatch, copy):
    home = tmp_path / "home"
    monkeypatch.setenv("ADVLC_HOME", str(home))
    rd = _lost_config(home, copy)
    assert [r.id for r in run_folders(Store(home).runs_dir)] == [rd.id]
    for args in (("repair",), ("repair", rd.id)):
        rc, out, err = cli(*args, code=1)
        assert f"{rd.id}  NOT repaired: config.json is missing and cannot be rebuilt" in out, out
    row = Store(home).index()[0]
    assert row["id"] == rd.id and row["state"] == "corrupt" and "config.json: is missing" in row["error"]


def test_runs_lists_a_run_whose_config_is_lost_as_corrupt(tmp_path, monkeypatch):
    """Needs engine.store.index.Store.run_dirs to list `rundir.run_folders` (config.json lost: still a run)."""
    home = tmp_path / "home"
    monkeypatch.setenv("ADVLC_HOME", str(home))
    rd = _lost_config(home, "none")
    for args in (("runs", "--reindex", "--json"), ("runs", "--json")):
        rc, out, err = cli(*args, code=0)
        [row] = json.loads(out)
        assert row["id"] == rd.id and row["state"] == "corrupt" and "config.json: is missing" in row["error"], args


# ------------------------------------------------------------------------------ killed at every step
class Killed(BaseException):
    """The process dies here: nothing after it happens."""


@contextlib.contextmanager
def dies_at(k: int, make_error):
    """From the k-th call of a renaming call on (os.replace, os.link, os.rename, os.unlink), every one
    raises `make_error()`: a kill (nothing after it happens) or a full disk (nothing more is written)."""
    calls = {"n": 0}
    real = {name: getattr(os, name) for name in ("replace", "link", "rename", "unlink")}

    def wrap(name):
        f = real[name]

        def call(*a, **kw):
            if name == "unlink" and str(a[0]).endswith(".lock"):
                return f(*a, **kw)
            calls["n"] += 1
            if calls["n"] >= k:
                raise make_error()
            return f(*a, **kw)

        return call

    for name in real:
        setattr(os, name, wrap(name))
    try:
        yield calls
    finally:
        for name, f in real.items():
            setattr(os, name, f)


def _build_damaged_store(home: Path) -> dict:
    """A store with a healthy run and one run per damaged file, and a damaged index.json;
    returns what was written before the damage."""
    store = Store(home).ensure()
    t0 = time.time() - 1000
    made = {}
    for i, name in enumerate(["healthy", "metrics", "status", "config", "meta", "runtime", "old"]):
        rd = fabricate_run(
            store, f"0000000{i}", preset=PRESET, seed=i, group=None, total=10, done=0, state="finished", created=t0 + i
        )
        if name != "old":
            rd.keep_config_copy()
        made[name] = rd
    store.reindex()
    epochs = epoch_records()
    for rd in made.values():
        rd.metrics_path.unlink()
        write_metrics(rd.metrics_path, epochs)
    before = {rd.id: {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()} for rd in made.values()}
    damaged = {}

    def damage(rd, name, data):
        (rd.path / name).write_bytes(data)
        damaged[(rd.id, name)] = data

    m = made["metrics"].metrics_path.read_bytes()
    damage(made["metrics"], "metrics.json", _no_brace(m, *record_span(m, "epochs", "3")))
    damage(made["status"], "status.json", made["status"].status_path.read_bytes()[:25])
    damage(made["config"], "config.json", made["config"].config_path.read_bytes()[:100])
    damage(
        made["meta"],
        "meta.json",
        json.dumps({"title": "kept title", "tags": ["kept", 5], "note": "kept note"}).encode(),
    )
    damage(made["runtime"], "runtime.json", b'{"starts": {}}')
    index = b'{"runs": {"1": {"id": '
    store.index_path.write_bytes(index)
    return {"runs": made, "before": before, "damaged": damaged, "index": index, "epochs": epochs}


@pytest.fixture(scope="module")
def damaged_store(tmp_path_factory):
    home = tmp_path_factory.mktemp("damaged") / "home"
    return home, _build_damaged_store(home)


ERRORS = {"killed": lambda: Killed(), "disk-full": lambda: OSError(errno.ENOSPC, "No space left on device")}


def _check_nothing_lost(home: Path, w: dict) -> None:
    """Every file of every run is under its name (damaged, or its replacement that reads well),
    every damaged file is kept (under its name or beside it), the healthy run is untouched."""
    for (rid, name), bad in w["damaged"].items():
        p = home / "runs" / rid / name
        assert p.exists(), (rid, name)
        kept = [p.read_bytes()] + [q.read_bytes() for q in p.parent.glob(f"{name}.corrupt-*")]
        assert bad in kept, (rid, name)
    for rid, was in w["before"].items():
        rd = RunDir(home / "runs" / rid)
        for name, data in was.items():
            assert (rd.path / name).exists(), (rid, name)
            if (rid, name) not in w["damaged"]:
                assert (rd.path / name).read_bytes() == data, (rid, name)
        bad = w["damaged"].get((rid, "metrics.json"))
        if bad is not None and rd.metrics_path.read_bytes() != bad:
            check_kept(files.load_json(rd.metrics_path), w["epochs"], "3")  # replaced: by every record


def _check_repaired(home: Path, w: dict) -> None:
    runs = w["runs"]
    h = {rid: RunDir(home / "runs" / rid) for rid in (rd.id for rd in runs.values())}
    m, s, c, t, r, o = (h[runs[k].id] for k in ("metrics", "status", "config", "meta", "runtime", "old"))
    assert [dict(x) for x in m.epochs()] == [e for i, e in enumerate(w["epochs"], 1) if i != 3]
    assert s.status().state == "stopped" and "rebuilt" in s.status().error
    assert c.config_path.read_bytes() == w["before"][c.id]["config.json"]
    meta = t.meta()
    assert (meta.title, list(meta.tags), meta.note) == ("kept title", ["kept"], "kept note")
    assert r.runtime().starts == []
    assert o.config_copy_path.read_bytes() == o.config_path.read_bytes()
    for rid, was in w["before"].items():
        for name in was:
            if (rid, name) in w["damaged"]:
                assert w["damaged"][(rid, name)] in [q.read_bytes() for q in h[rid].path.glob(f"{name}.corrupt-*")]
    assert w["index"] in [q.read_bytes() for q in home.glob("index.json.corrupt-*")]


@pytest.mark.slow  # ~11 s for both: every step of a repair, each killed once (CI runs it)
@pytest.mark.parametrize("error", list(ERRORS))
def test_repair_killed_at_every_step_loses_nothing_and_the_next_repair_finishes(
    damaged_store, tmp_path, monkeypatch, error
):
    pristine, w = damaged_store
    ids = sorted(rd.id for rd in w["runs"].values())
    home = tmp_path / "whole"
    shutil.copytree(pristine, home)
    with dies_at(10**9, ERRORS[error]) as calls:
        repair(Store(home))
    steps = calls["n"]
    assert steps >= 10
    _check_nothing_lost(home, w)
    _check_repaired(home, w)
    for k in range(1, steps + 1):
        home = tmp_path / f"{error}-{k}"
        shutil.copytree(pristine, home)
        monkeypatch.setenv("ADVLC_HOME", str(home))
        with dies_at(k, ERRORS[error]):
            with pytest.raises((Killed, OSError)):
                repair(Store(home))
        _check_nothing_lost(home, w)
        rc, out, err = cli("runs", "--json", code=0)  # the next command lists every run
        assert sorted(r["id"] for r in json.loads(out)) == ids, k
        _check_nothing_lost(home, w)
        rc, out, err = cli("repair", code=0)  # and the next repair finishes
        _check_repaired(home, w)
        rows = json.loads(cli("runs", "--json", code=0)[1])
        assert sorted(r["id"] for r in rows) == ids and all(r["state"] != "corrupt" for r in rows), (k, rows)


@pytest.fixture
def annotated(tmp_path, monkeypatch):
    """A store with one titled run whose origin is known (so no command rewrites its index row)."""
    pristine = tmp_path / "pristine"
    monkeypatch.setenv("ADVLC_HOME", str(pristine))
    store = Store(pristine).ensure()
    rd = fabricate_run(
        store, "0000eeee", preset=PRESET, seed=0, group=None, total=4, done=4, state="finished", created=time.time()
    )
    cli("runs", code=0)  # its origin derived once
    store.annotate(rd, title="old", add_tags=["a"])
    return pristine, rd.id


def _annotate_killed_at(pristine: Path, home: Path, rid: str, k: int, monkeypatch) -> tuple[Store, bool]:
    shutil.copytree(pristine, home)
    monkeypatch.setenv("ADVLC_HOME", str(home))
    s = Store(home)
    with dies_at(k, ERRORS["killed"]) as calls:
        try:
            s.annotate(s.run_dir(rid), title="new", add_tags=["b"])
        except Killed:
            pass
    return s, calls["n"] >= k


def test_annotate_killed_at_every_step_leaves_the_run_listed_with_its_old_or_new_meta(annotated, tmp_path, monkeypatch):
    pristine, rid = annotated
    old = (pristine / "runs" / rid / "meta.json").read_bytes()
    for k in range(1, 10):
        s, killed = _annotate_killed_at(pristine, tmp_path / f"k{k}", rid, k, monkeypatch)
        rd = s.run_dir(rid)
        meta = rd.meta()
        assert (meta.title, list(meta.tags)) in (("old", ["a"]), ("new", ["a", "b"])), k
        assert (meta.title == "old") == (rd.meta_path.read_bytes() == old) and (meta.title == "old" or k > 1)
        [row] = json.loads(cli("runs", "--json", code=0)[1])
        assert row["id"] == rid
        [row] = json.loads(cli("runs", "--reindex", "--json", code=0)[1])
        assert row["title"] == meta.title
        if not killed:
            break
    assert k == 3  # meta.json, then index.json: two writes


def test_annotate_killed_between_its_two_writes_is_finished_by_the_next_command(annotated, tmp_path, monkeypatch):
    """Killed between meta.json and index.json: the next command's reconcile sees a meta.json newer
    than index.json (one stat per run) and brings the run's row up to date, no --reindex needed."""
    pristine, rid = annotated
    s, killed = _annotate_killed_at(pristine, tmp_path / "k2", rid, 2, monkeypatch)
    assert killed and s.run_dir(rid).meta().title == "new"
    [row] = json.loads(cli("runs", "--json", code=0)[1])
    assert row["title"] == "new"
