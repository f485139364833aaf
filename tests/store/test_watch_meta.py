"""The watchers and meta.json (title, tags, note, archived; written by the store, never by the run):
RunFollower hands it over when it changed, RunHistory keeps it, IndexReader lists archived runs too."""

import time

from engine.store.index import Store
from engine.store.records import Meta
from fabricate import fabricate_run
from engine.store.watch import IndexReader, RunFollower, RunHistory


def _store(tmp_path):
    return Store(tmp_path / "home").ensure()


def _run(store, rid):
    return fabricate_run(
        store,
        rid,
        preset="quick/digits-fgsm_n",
        seed=0,
        group=None,
        total=10,
        done=3,
        state="finished",
        created=1_700_000_000,
    )


def test_run_follower_reports_meta_only_when_it_changed(tmp_path):
    store = _store(tmp_path)
    rd = _run(store, "0000000a")
    f = RunFollower(rd)
    h = RunHistory(rd.id)
    assert h.meta == Meta()
    d = f.poll()
    assert d.meta == Meta()  # no meta.json yet: reported once, empty
    h.apply(d)
    assert f.poll().empty()
    store.annotate(rd, title="first try", add_tags=["robust", "table1"], note="line one\nline two")
    d = f.poll()
    assert not d.empty() and not d.reset and d.epochs == []
    assert d.meta.title == "first try" and d.meta.tags == ["robust", "table1"]
    assert d.meta.note == "line one\nline two"  # the whole note, not its first line
    h.apply(d)
    assert h.meta.title == "first try"
    nothing = f.poll()
    assert nothing.meta is None and nothing.empty()
    h.apply(nothing)
    assert h.meta.tags == ["robust", "table1"]  # a delta without meta keeps it
    time.sleep(0.01)
    store.annotate(rd, remove_tags=["table1"], archived=True)
    d = f.poll()
    assert d.meta.tags == ["robust"] and d.meta.archived is True
    h.apply(d)
    assert h.meta.archived is True


def test_index_reader_lists_archived_runs_too(tmp_path):
    """The Runs screen hides archived runs itself (and shows only them on `A`), so the reader must
    hand them over; a store whose runs are all archived must not look like an unreadable index."""
    store = _store(tmp_path)
    a, b = _run(store, "0000000a"), _run(store, "0000000b")
    store.reindex()
    r = IndexReader(store)
    assert [x["id"] for x in r.poll().rows] == ["0000000a", "0000000b"]
    store.annotate(a, archived=True)
    store.annotate(b, archived=True)
    snap = r.poll()
    assert snap is not None
    assert {x["id"]: x["archived"] for x in snap.rows} == {"0000000a": True, "0000000b": True}
