"""Every store file is read as a typed record (engine.store.records): a file that parses but has the
wrong shape is damaged like one that does not parse.

For each file of a run directory and each kind of wrong value a hand-edited or hostile file could
hold: `advlc runs --reindex` lists the run as `corrupt` naming the file and the key, `advlc show` says so in
one line (exit 1), nothing writes over the file, and `advlc repair` keeps the damaged copy aside
and leaves a run every command can read again. The index is rebuilt when one of its rows has
the wrong shape.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile

import pytest
from helpers import cli, one_line, train_one

from engine.store.index import Store
from engine.store.records import GpuQueueLaunch, LocalLaunch, Meta, Shape, SlurmLaunch, Status, check

PRESET = "quick/digits-fgsm_n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished 1-epoch digits run with a note and a tag, copied fresh for each test."""
    h = tmp_path_factory.mktemp("records") / "home"
    os.environ["OMP_NUM_THREADS"] = "1"
    store, rd = train_one(h, PRESET, ["train.epochs=1", "eval.n=50"])
    store.annotate(rd, title="kept title", add_tags=["kept"], note="kept note")
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


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(data):
        d = data
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return change


def _first_epoch(key, value):
    def change(data):
        next(iter(data["epochs"].values()))[key] = value

    return change


# (file, how it is damaged, the key the message must name)
CASES = [
    ("status.json", _set("state", 5), "state"),
    ("status.json", _set("state", "exploded"), "state"),
    ("status.json", _set("pid", "123; rm -rf ~"), "pid"),
    ("status.json", _set("pid", -1), "pid"),
    ("status.json", _set("epoch", "3"), "epoch"),
    ("status.json", _set("launch", "local"), "launch"),
    ("status.json", _set("launch", {"executor": "ssh", "command": "rm -rf ~"}), "launch.executor"),
    ("status.json", _set("launch", {"executor": "gpuqueue", "gpus": "0"}), "launch.gpus"),
    ("status.json", _set("launched_by", {"pid": "1"}), "launched_by.pid"),
    ("status.json", _set("x", json.loads("[" * 40 + "]" * 40)), "nested"),
    ("meta.json", _set("tags", "a b"), "tags"),
    ("meta.json", _set("tags", ["two words"]), "tags[0]"),
    ("meta.json", _set("title", 5), "title"),
    ("meta.json", _set("archived", "yes"), "archived"),
    ("config.json", _set("train", 5), "train"),
    ("config.json", _set("run", []), "run"),
    ("config.json", _set("run", "seed", "0"), "seed"),
    ("config.json", _set("run", "origin", {"overrides": "train.epochs=1"}), "overrides"),
    ("config.json", _set("run", "teachers", {"teacher": 5}), "teacher"),
    ("metrics.json", _first_epoch("epoch", "zero"), "epoch"),
    ("metrics.json", _first_epoch("robust_acc", {"a": 1}), "robust_acc"),
    ("metrics.json", _set("epochs", []), "epochs"),
    ("runtime.json", _set("starts", {}), "starts"),
    ("runtime.json", _set("device", 5), "device"),
    ("runtime.json", _set("origin", []), "origin"),
]


def _ids(case):
    return f"{case[0]}:{case[2]}"


@pytest.mark.parametrize("name,change,key", CASES, ids=[_ids(c) for c in CASES])
def test_a_wrong_shaped_file_is_corrupt_in_one_line_and_repaired(copy, name, change, key):
    store, rd = copy
    path = rd.path / name
    _edit(path, change)
    damaged = path.read_bytes()

    rc, out, err = cli("runs", "--reindex", "--json", code=0)  # the index is a cache: rebuilt from the files
    [row] = json.loads(out)
    assert row["state"] == "corrupt" and name in row["error"] and key in row["error"], row
    rc, _, err = cli("show", rd.id, code=1)
    line = one_line(err)
    assert name in line and key in line, line
    assert path.read_bytes() == damaged  # nothing wrote over it

    rc, out, err = cli("repair", rd.id)
    assert name in out + err
    aside = list(rd.path.glob(f"{name}.corrupt-*"))
    assert [p.read_bytes() for p in aside] == [damaged]  # kept, byte for byte
    if name == "config.json" and rc != 0:
        return  # nothing to rebuild it from: named, kept aside, the run stays unusable (checked below)
    assert rc == 0, (out, err)
    cli("show", rd.id, code=0)
    [row] = json.loads(cli("runs", "--json", code=0)[1])
    assert row["state"] != "corrupt", row
    if name == "meta.json":  # the fields that could still be read are kept
        meta = rd.meta()
        assert {k: getattr(meta, k) for k in ("title", "tags", "note")} | {key.split("[")[0]: None} == {
            "title": "kept title",
            "tags": ["kept"],
            "note": "kept note",
        } | {key.split("[")[0]: None}
    if name == "metrics.json" and key != "epochs":
        assert rd.epochs() == []  # the one garbled record dropped, nothing invented


def test_a_wrong_shaped_config_is_rebuilt_from_the_log(copy):
    store, rd = copy
    want = rd.config()
    _edit(rd.config_path, _set("run", "seed", "0"))
    cli("repair", rd.id, code=0)
    got = rd.config()
    assert got.section("train") == want.section("train") and got.section("attack") == want.section("attack")
    assert got.run.preset == PRESET and got.run.seed == 0


@pytest.mark.parametrize(
    "rows",
    [
        {"1": {"id": 5, "state": "finished"}},
        {"1": ["x"]},
        [],
        "x",
        {"1": {"id": "ok", "state": "finished", "best_robust_acc": "high"}},
    ],
)
def test_a_wrong_shaped_index_is_rebuilt_from_the_runs(copy, rows):
    store, rd = copy
    store.index_path.write_text(json.dumps({"runs": rows}))
    rc, out, err = cli("runs", "--json", code=0)
    assert [r["id"] for r in json.loads(out)] == [rd.id]
    assert "index.json" in err
    assert json.loads(store.index_path.read_text())["runs"]["1"]["id"] == rd.id  # rewritten


def test_a_wrong_shaped_archive_member_is_refused_before_anything_is_written(copy, tmp_path):
    store, rd = copy
    archive = tmp_path / "one.tar"
    cli("pack", rd.id, "-o", str(archive), "--ckpt", "none", code=0)
    bad = tmp_path / "bad.tar"
    with tarfile.open(archive) as src:  # someone else's archive, checksums made to match
        members = {m.name: src.extractfile(m).read() for m in src.getmembers() if m.isfile()}
    [name] = [n for n in members if n.endswith("status.json")]
    st = json.loads(members[name])
    st["launch"] = {"executor": "slurm", "cluster": "ssh", "job_id": "1"}
    members[name] = json.dumps(st).encode()
    manifest = json.loads(members["advlc-pack.json"])
    manifest["files"][name] = {"size": len(members[name]), "sha256": hashlib.sha256(members[name]).hexdigest()}
    members["advlc-pack.json"] = json.dumps(manifest).encode()
    with tarfile.open(bad, "w:gz") as dst:
        for n, data in members.items():
            info = tarfile.TarInfo(n)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    other = tmp_path / "other"
    os.environ["ADVLC_HOME"] = str(other)
    rc, _, err = cli("unpack", str(bad))
    assert rc != 0
    line = one_line(err)
    assert "status.json" in line and "cluster" in line, line
    assert not (other / "runs").exists() or not any((other / "runs").iterdir())


# ------------------------------------------------------------------------------ the type checker itself
def test_check_accepts_what_the_field_allows_and_names_what_it_does_not():
    assert check(int | None, None, "x") is None and check(float, 3, "x") == 3
    assert check(list[int], [1, 2], "x") == [1, 2]
    for tp, v, where in (
        (int, True, "x"),
        (int, 1.5, "x"),
        (str, 1, "x"),
        (list[int], [1, "2"], "x[1]"),
        (dict[str, int], {"a": "b"}, "x.a"),
        (bool, 0, "x"),
    ):
        with pytest.raises(Shape, match=rf"^{__import__('re').escape(where)} = "):
            check(tp, v, "x")


def test_launch_records_are_told_apart_by_their_executor_and_the_old_gpu_queue_format_is_read():
    def launch(d):
        return Status.from_json({"state": "queued", "launch": d}).launch

    assert type(launch({"executor": "local", "threads": 2})) is LocalLaunch
    assert type(launch({"executor": "gpuqueue", "gpus": [0, 1]})) is GpuQueueLaunch
    old = launch({"executor": "local", "gpus": [1]})  # how format 1 wrote the GPU queue
    assert type(old) is GpuQueueLaunch and old.gpus == [1]
    assert type(launch({"executor": "slurm", "cluster": "local", "job_id": "7"})) is SlurmLaunch


def test_unknown_keys_are_kept_and_old_names_read():
    st = Status.from_json({"state": "running", "launcher": {"pid": 7, "host": "h"}, "later_field": [1]})
    assert st.launched_by.pid == 7 and st.to_json()["later_field"] == [1]
    assert Meta.from_json({"tags": ["a"], "colour": "red"}).to_json()["colour"] == "red"
