"""A run store written before runs recorded their origin (tests/data/store-v1, format 1) opens,
lists, compares and resumes with today's code, and its files are read, never rewritten.

What changed since: the index's vocabulary (`ig` -> `end_ig`, a version field), status.json's
`launcher` (now `launched_by`), the GPU queue's launch record, and the origin of each run (the
`--set` overrides it was made with), which old runs get derived once from their preset and kept
in runtime.json, marked as derived.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from helpers import cli

from engine.store.index import Store
from engine.store.summary import INDEX_VERSION

V1 = Path(__file__).resolve().parents[1] / "data" / "store-v1"
EPS = "d2877eab"  # quick/digits-fgsm_n --set attack.eps=0.05 --set train.epochs=2 --set eval.n=100, seed 0
SEED1 = "f8a908f8"  # quick/digits-fgsm_n --set train.epochs=2 --set eval.n=100, seed 1
STOPPED = "5daa2c56"  # quick/digits-pgd10-advlc --set train.epochs=6 ..., stopped at epoch 2


@pytest.fixture
def v1(tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(V1, home)
    monkeypatch.setenv("ADVLC_HOME", str(home))
    return Store(home)


def _digests(store: Store, name: str) -> dict[str, str]:
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in store.runs_dir.glob(f"*/{name}")}


def test_an_old_store_lists_with_todays_vocabulary(v1):
    configs = _digests(v1, "config.json")
    rows = {r["id"]: r for r in json.loads(cli("runs", "--json", code=0)[1])}
    assert {k: r["state"] for k, r in rows.items()} == {EPS: "finished", SEED1: "finished", STOPPED: "stopped"}
    for rid, r in rows.items():  # the index was rebuilt: end_ig is the last epoch's IG in metrics.json
        epochs = json.loads((v1.runs_dir / rid / "metrics.json").read_text())["epochs"]
        last = epochs[max(epochs, key=int)]
        assert r["v"] == INDEX_VERSION and r["end_ig"] == pytest.approx(last["ig"]) and "ig" not in r
    assert json.loads(v1.index_path.read_text())["runs"]["1"]["v"] == INDEX_VERSION
    assert _digests(v1, "config.json") == configs  # read, never rewritten
    st = v1.run_dir(STOPPED).status()
    assert st.launched_by is not None and st.launched_by.pid == 3721  # the old name, `launcher`


def test_old_runs_get_their_overrides_derived_once_and_marked(v1):
    configs = _digests(v1, "config.json")
    cli("runs", code=0)
    origins = {rid: v1.run_dir(rid).config().run.origin for rid in (EPS, SEED1, STOPPED)}
    assert all(o is not None and o.derived and o.command is None for o in origins.values())
    assert set(origins[EPS].overrides) == {"attack.eps=0.05", "train.epochs=2", "eval.n=100"}
    assert set(origins[SEED1].overrides) == {"train.epochs=2", "eval.n=100"}
    assert origins[EPS].resolved == {"attack.eps": 0.05, "train.epochs": 2, "eval.n": 100}
    assert _digests(v1, "config.json") == configs  # kept in runtime.json instead
    kept = json.loads((v1.runs_dir / EPS / "runtime.json").read_text())["origin"]
    assert kept["derived"] is True
    before = _digests(v1, "runtime.json")
    cli("runs", code=0)
    assert _digests(v1, "runtime.json") == before  # derived once
    _, out, _ = cli("show", EPS, code=0)
    assert "--set attack.eps=0.05" in out and "derived" in out


def test_an_old_store_compares_its_two_configurations_as_two_rows(v1):
    _, out, _ = cli("compare", "--preset", "quick/digits-fgsm_n", "--format", "json", code=0)
    rows = json.loads(out)["rows"]
    named = {r["name"]: r for r in rows}
    assert len(rows) == 2, list(named)
    assert any("attack.eps=0.05" in n for n in named), list(named)
    assert all(len(r["runs"]) == 1 for r in rows)  # never one row averaging both


@pytest.mark.slow
def test_an_old_stopped_run_resumes_to_the_end(v1):
    rd = v1.run_dir(STOPPED)
    before = [r.to_json() for r in rd.epochs()]
    _, out, _ = cli("resume", STOPPED, "--foreground", code=0)
    assert "from epoch 2" in out
    assert rd.status().state == "finished"
    after = [r.to_json() for r in rd.epochs()]
    assert [r["epoch"] for r in after] == list(range(6)) and after[:2] == before
