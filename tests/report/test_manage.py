"""What an experiment manager gives after a week of runs: titles, tags and notes, config diffs,
queries, the archive, and packing runs for a colleague — on real stores."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time

import pytest
from helpers import cli

from engine.errors import UserError
from engine.launch import supervisor as S
from engine.launch.plan import plan_runs
from engine.report.query import parse
from engine.store.index import Store
from fabricate import build_store

PRESET = "quick/digits-fgsm_n"


def advlc(*args, home, code=0):
    os.environ["ADVLC_HOME"] = str(home)
    _, out, err = cli(*args, code=code)
    return out, err


@pytest.fixture
def synth(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ADVLC_HOME", str(home))
    build_store(home, n_runs=6, n_epochs=10, n_running=0, seeds=2)
    return Store(home)


# ---------------------------------------------------------------------------- label, tag, note
def test_label_tag_note_show_everywhere(synth):
    h = synth.home
    advlc("label", "00000000", "first try", home=h)
    advlc("tag", "00000000", "+robust", "-draft", "+x", home=h)
    advlc("tag", "00000000", "-x", home=h)
    advlc("note", "00000000", "--text", "lambda from the grid\nsecond line", home=h)
    [row] = [r for r in json.loads(advlc("runs", "--json", home=h)[0]) if r["id"] == "00000000"]
    assert (row["title"], row["tags"], row["note"]) == ("first try", ["robust"], "lambda from the grid")
    shown = json.loads(advlc("show", "00000000", "--json", home=h)[0])
    assert shown["meta"]["note"] == "lambda from the grid\nsecond line" and shown["meta"]["tags"] == ["robust"]
    text = advlc("show", "00000000", home=h)[0]
    assert "first try" in text and "robust" in text and "lambda from the grid" in text
    _, err = advlc("tag", "00000000", "+bad tag", home=h, code=2)
    assert "a tag is letters" in err


@pytest.mark.slow
def test_tagging_a_training_run_loses_nothing(tmp_path, monkeypatch):
    """Tags and a title set while the run trains, many times, are all there at the end, and so
    are all its records (meta.json is written by the store, never by the run's process)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store = Store(tmp_path / "home").ensure()
    [rd] = S.launch(store, plan_runs(PRESET, ["train.epochs=6", "eval.n=100"]))
    tags = []
    i = 0
    while rd.status().state in ("queued", "running"):
        tags.append(f"t{i}")
        store.annotate(rd, title=f"title {i}", add_tags=[f"t{i}"])
        i += 1
        time.sleep(0.05)
    assert rd.status().state == "finished" and i > 3
    assert rd.meta().tags == tags and rd.meta().title == f"title {i - 1}"
    assert [r["epoch"] for r in rd.epochs()] == list(range(6))
    assert store.runs()[0]["tags"] == tags


# ---------------------------------------------------------------------------- diff
def test_diff_names_what_differs_and_the_results(synth):
    out, _ = advlc("diff", "00000000", "00000002", "--json", home=synth.home)
    d = json.loads(out)
    keys = {k for k, _, _ in d["config"]}
    assert keys == {"method.name", "method.lam", "method.advlc.top_n", "method.advlc.clean"}
    assert ["method.lam", 0.0, 0.3] in d["config"]
    assert ["method.advlc.top_n", None, 100] in d["config"]  # AdvLC's own parameter: the other run has none
    assert ["run.preset", "paper/table1/fgsm_n", "paper/table1/fgsm_n-advlc"] in d["origin"]
    metrics = {k: (a, b) for k, a, b in d["metrics"]}
    a, b = synth.run_dir("00000000"), synth.run_dir("00000002")
    best_a = max(a.epochs(), key=lambda e: (e["robust_acc"], e["epoch"]))
    assert (
        metrics["best_robust_acc"][0] == best_a["robust_acc"]
        and metrics["end_robust_acc"][1] == b.epochs()[-1]["robust_acc"]
    )
    assert "method.lam" in advlc("diff", "00000000", "00000002", home=synth.home)[0]


# ---------------------------------------------------------------------------- queries
def test_where_selects_on_config_and_summary(synth):
    h = synth.home
    advlc("tag", "00000002", "+robust", home=h)
    rows = json.loads(advlc("runs", "--json", "--where", 'method.lam > 0.2 and state == "finished"', home=h)[0])
    want = [r.id for r in synth.run_dirs() if r.config_json()["method"]["lam"] > 0.2]
    assert [r["id"] for r in rows] == want and want
    rows = json.loads(advlc("runs", "--json", "--where", '"robust" in tags', home=h)[0])
    assert [r["id"] for r in rows] == ["00000002"]
    docs = synth.runs()
    rows = json.loads(advlc("runs", "--json", "--where", "best_robust_acc > 0.45", home=h)[0])
    assert [r["id"] for r in rows] == [d["id"] for d in docs if d["best_robust_acc"] > 0.45]
    _, err = advlc("runs", "--where", "method.lam >", home=h, code=2)
    assert err.strip() == "advlc: --where 'method.lam >': expected a value at the end"
    _, err = advlc("runs", "--where", "metod.lam > 1", home=h, code=2)
    assert "unknown name 'metod.lam' (did you mean method.lam?)" in err


def test_compare_and_report_take_where(synth, tmp_path):
    out, _ = advlc("compare", "--preset", "paper", "--where", "method.lam > 0.2", "--format", "json", home=synth.home)
    rows = json.loads(out)["rows"]
    assert rows and all("advlc" in r["name"] for r in rows)
    advlc("label", "00000003", "the lambda we kept", home=synth.home)
    advlc("tag", "00000003", "+robust", home=synth.home)
    advlc("note", "00000003", "--text", "from the grid\nsecond line", home=synth.home)
    out_dir = tmp_path / "rep"
    advlc(
        "report",
        "--where",
        '"robust" in tags or preset ~ "table1/fgsm_n-advlc"',
        "--out",
        str(out_dir),
        "--format",
        "md",
        home=synth.home,
    )
    md = (out_dir / "report.md").read_text()
    assert "| 00000003 | the lambda we kept #robust |" in md  # the provenance names it
    assert "- **00000003**: from the grid  \n  second line" in md  # and its note is there
    assert "00000002" in md and "00000004" not in md  # the --where selection


@pytest.mark.parametrize(
    "text,doc,want",
    [
        ('state == "finished"', {"state": "finished"}, True),
        ("seed in [0, 1] and not archived", {"seed": 1, "archived": False}, True),
        ("seed not in [0, 1]", {"seed": 1}, False),
        ('preset ~ "TABLE1"', {"preset": "paper/table1/pgd10"}, True),
        ("best_robust_acc > 0.5", {"best_robust_acc": None}, False),  # null never orders
        ("best_robust_acc < 0.5", {"best_robust_acc": None}, False),
        ('seed > "a"', {"seed": 1}, False),  # a number and a string never order
        ("(seed == 1 or seed == 2) and epoch >= 10", {"seed": 2, "epoch": 10}, True),
        ("title == null", {}, True),
        ("method.lam >= 1e-1", {}, None),
    ],
)
def test_query_semantics(text, doc, want):
    q = parse(text)
    if want is None:
        assert (
            q.needs_config and q.matches({}, {"method": {"lam": 0.1}}) and not q.matches({}, {"method": {"lam": 0.05}})
        )
    else:
        assert q.matches(doc) is want


def test_query_strings_keep_unicode_and_take_simple_escapes():
    assert parse('title == "café ✓"').matches({"title": "café ✓"})
    assert parse('title == "say \\"hi\\" \\\\ done"').matches({"title": 'say "hi" \\ done'})
    assert parse("note ~ 'it\\'s'").matches({"note": "It's fine"})


@pytest.mark.parametrize(
    "text,where",
    [
        ("seed ==", "expected a value at the end"),
        ("seed = 1", "unexpected '=' at column 6"),
        ("(seed == 1", "expected ')' at the end"),
        ("seed == 1 2", "unexpected '2' at column 11"),
        ("__import__('os')", "unexpected '(' at column 11"),
        ('title == "a\\x"', "unknown escape '\\x' in a string"),
    ],
)
def test_query_errors_say_where(text, where):
    with pytest.raises(UserError) as ei:
        parse(text)
    assert where in str(ei.value) and "\n" not in str(ei.value)


# ---------------------------------------------------------------------------- archive
def test_archive_hides_and_restore_brings_back(synth):
    h = synth.home
    advlc("archive", "00000000", "00000001", home=h)
    assert [r["id"] for r in json.loads(advlc("runs", "--json", home=h)[0])] == [
        "00000002",
        "00000003",
        "00000004",
        "00000005",
    ]
    assert [r["id"] for r in json.loads(advlc("runs", "--json", "--archived", home=h)[0])] == ["00000000", "00000001"]
    assert synth.run_dir("00000000").exists()
    _, err = advlc("compare", "--preset", "paper/table1/fgsm_n", "--format", "json", home=h, code=2)
    assert "no runs of preset 'paper/table1/fgsm_n'" in err  # both of its runs are archived
    advlc("restore", "00000000", home=h)
    assert "00000000" in [r["id"] for r in json.loads(advlc("runs", "--json", home=h)[0])]
    out, _ = advlc("compare", "--preset", "paper/table1/fgsm_n", "--format", "json", home=h)
    runs = [rid for r in json.loads(out)["rows"] for rid in r["runs"]]
    assert "00000000" in runs and "00000001" not in runs


# ---------------------------------------------------------------------------- pack / unpack
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    h = tmp_path_factory.mktemp("packsrc") / "home"
    os.environ["OMP_NUM_THREADS"] = "1"
    store = Store(h).ensure()
    from engine.run.process import run

    rds = S.create_runs(store, plan_runs(PRESET, ["train.epochs=2", "eval.n=100"], seeds=2))
    for rd in rds:
        assert run(rd, store, log=rd.append_log) == "finished"
    store.annotate(rds[0], title="packed", add_tags=["shared"])
    return h, [rd.id for rd in rds]


def test_pack_unpack_round_trip_shows_the_same_everywhere(trained, tmp_path):
    src, ids = trained
    archive = tmp_path / "runs.tar.gz"
    advlc("pack", *ids, "-o", str(archive), home=src)
    with tarfile.open(archive) as tar:
        blob = b"".join(tar.extractfile(m).read() for m in tar.getmembers())
    assert str(src).encode() not in blob  # no absolute path of the sender's store
    dst = tmp_path / "other"
    advlc("unpack", str(archive), home=dst)
    for ref in (["compare", *ids, "--format", "json"], ["compare", "--preset", PRESET, "--format", "json"]):
        a, _ = advlc(*ref, home=src)
        b, _ = advlc(*ref, home=dst)
        assert a == b
    rows = {r["id"]: r for r in json.loads(advlc("runs", "--json", home=dst)[0])}
    assert rows[ids[0]]["title"] == "packed" and rows[ids[0]]["tags"] == ["shared"]
    out, _ = advlc("eval", ids[0], "--ckpt", "best", "--attack", "pgd20", "--n", "20", home=dst)  # checkpoints load
    _, err = advlc("unpack", str(archive), home=dst, code=2)
    assert f"run {ids[0]} is already in" in err


def test_a_tampered_or_truncated_archive_is_refused(trained, tmp_path):
    src, ids = trained
    archive = tmp_path / "runs.tar.gz"
    advlc("pack", ids[0], "-o", str(archive), "--ckpt", "none", home=src)
    data = archive.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    _, err = advlc("unpack", str(tmp_path / "cut.tar.gz"), home=tmp_path / "h1", code=1)
    assert "not a complete advlc archive" in err and err.count("\n") == 1
    # a member changed after packing: its checksum no longer matches the manifest
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        for m, blob in members:
            if m.name.endswith("metrics.json"):
                blob = blob.replace(b'"robust_acc": 0.', b'"robust_acc": 9.')
                m.size = len(blob)
            tar.addfile(m, io.BytesIO(blob))
    _, err = advlc("unpack", str(evil), home=tmp_path / "h2", code=1)
    assert "does not match the manifest's checksum" in err
    # a member that would land outside the store
    with tarfile.open(tmp_path / "slip.tar.gz", "w:gz") as tar:
        for m, blob in members:
            tar.addfile(m, io.BytesIO(blob))
        m = tarfile.TarInfo("../../escape.txt")
        m.size = 2
        tar.addfile(m, io.BytesIO(b"hi"))
    _, err = advlc("unpack", str(tmp_path / "slip.tar.gz"), home=tmp_path / "h3", code=1)
    assert "unexpected member '../../escape.txt'" in err and not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "h2" / "runs" / ids[0]).exists()
