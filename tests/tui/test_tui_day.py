"""A day over SSH: the app at 80x24 and 120x40 on fabricated stores (no training).

An honest ETA (one wall-clock rate), what stays on screen at 80 columns (keys, preset and label,
the run header's state / epoch / lr), keys typed ahead in one burst, experiment runs shown as
experiments, sweep presets in the presets screen, and filters that apply only when they parse.
Every wait is for a condition (with a timeout), never a sleep before an assert.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata

import pytest
from helpers import pilot_wait
from textual import events
from textual.keys import REPLACED_KEYS, _character_to_key, _get_unicode_name_from_key
from textual.widgets import DataTable, Input, Static

from fabricate import fabricate_run

from engine.facade import create_runs, plan_runs
from engine.store.index import Store
from engine.store.rundir import RunDir
from tui.app import AdvlcCommands, make_app, run_words
from tui.screens.annotate import AnnotateScreen
from tui.screens.presets import PresetsScreen
from tui.screens.run_detail import RunDetailScreen
from tui.widgets.key_bar import KeyBar
from tui.widgets.pace import clock, duration, row_pace
from tui.widgets.run_table import RunTable

SIZES = [(80, 24), (120, 40)]


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "home").ensure()


wait_for = pilot_wait


def burst(app, *keys: str) -> None:
    """Every key at once, as a paste or a slow SSH link delivers them: the events are queued for the
    app together (what Pilot.press does, without waiting for the app between two keys)."""
    for key in keys:
        if len(key) == 1 and not key.isalnum():
            key = _character_to_key(key)
        try:
            char = unicodedata.lookup(_get_unicode_name_from_key(REPLACED_KEYS.get(key, key)))
        except KeyError:
            char = key if len(key) == 1 else None
        event = events.Key(key, char)
        event.set_sender(app)
        app._driver.send_message(event)


def screen_lines(app) -> list[str]:
    """The text the terminal shows now."""
    import io

    from rich.console import Console

    w, h = app.size
    c = Console(width=w, height=h, file=io.StringIO(), force_terminal=True, color_system="truecolor", record=True)
    c.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return c.export_text().splitlines()


def row_line(app, rid: str) -> str:
    return next((ln for ln in screen_lines(app) if ln[2:10] == rid), "")


def table(app) -> RunTable:
    return app.runs_screen.query_one("#runs-table", RunTable)


def ids(app) -> list[str]:
    return list(app.runs_screen._ids)


def fab(store, rid, **kw):
    kw.setdefault("preset", "quick/digits-fgsm_n")
    kw.setdefault("seed", 0)
    kw.setdefault("group", None)
    kw.setdefault("total", 10)
    kw.setdefault("done", 10)
    kw.setdefault("state", "finished")
    kw.setdefault("created", time.time() - 86_400)
    return fabricate_run(store, rid, **kw)


def epoch_rec(e: int, time_s: float, eval_s: float, lr: float = 0.1) -> dict:
    return {
        "epoch": e,
        "lr": lr,
        "train_loss": 1.0,
        "train_acc": 0.5,
        "clean_loss": 1.0,
        "clean_acc": 0.6,
        "robust_loss": 1.5,
        "robust_acc": 0.3,
        "av": 0.5,
        "ig": 30.0,
        "hs": None,
        "time_s": time_s,
        "eval_time_s": eval_s,
        "images_per_s": 100.0,
    }


# ---------------------------------------------------------------------------- 1. an honest ETA
@pytest.mark.parametrize("size", SIZES)
async def test_eta_is_one_wall_clock_rate_in_the_table_and_the_header(store, size):
    """Training 2 s + evaluation 6 s every other epoch: 5 s per epoch by the wall clock. Six epochs of
    ten done and the seventh 100/500 batches in: 4 x 5 - 0.2 x 2 = 19.6 s left (training time alone
    said 4 x 2 = 8 s, a mean over the last five epochs 4 x 4.4 = 17.6 s). The Runs table and the run
    header show the same number."""
    created = time.time() - 3630
    recs = [epoch_rec(e, 2.0, 6.0 if e % 2 == 0 else 0.0) for e in range(6)]
    fab(store, "0000e7a1", state="running", total=10, done=6, epochs_override=recs, created=created)
    store.reindex()
    row = next(r for r in store.runs() if r["id"] == "0000e7a1")
    live = RunDir(store.runs_dir / "0000e7a1").status()
    assert (live.batch, live.batches) == (100, 500)
    hand = (10 - 6) * (sum([2.0] * 6) / 6 + (6 + 0 + 6 + 0 + 6 + 0) / 6) - 100 / 500 * 2.0
    p = row_pace(row, live)
    assert p.per_epoch == pytest.approx(5.0) and p.eta == pytest.approx(hand) == pytest.approx(19.6)
    assert p.launched == pytest.approx(created) and 3630 <= p.elapsed < 3630 + 600
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: ids(app) == ["0000e7a1"])
        assert str(table(app).get_cell("0000e7a1", "eta")) == duration(hand) == "20s"
        await wait_for(pilot, lambda: "20s" in row_line(app, "0000e7a1"), what="the ETA on screen")
        launched = str(table(app).get_cell("0000e7a1", "launched"))
        assert re.fullmatch(re.escape(clock(created)) + r" 1h0\dm", launched), launched
        if size == (80, 24):
            assert "launched" not in table(app).shown_columns  # the first column to go when narrow
        else:
            assert "launched" in table(app).shown_columns and launched in row_line(app, "0000e7a1")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        header = app.screen.query_one("#detail-header", Static)
        await wait_for(pilot, lambda: "ETA" in str(header.render()))
        text = str(header.render())
        assert "ETA 20s" in text and "epoch 6/10" in text and "lr 0.1" in text
        assert re.search(r"1h0\dm since " + re.escape(clock(created)), text), text
        if size == (120, 40):
            assert "5.0 s/epoch" in text
        shown = "\n".join(screen_lines(app)[:3])
        assert "ETA 20s" in shown and "since" in shown


def test_eta_of_an_experiment_counts_points():
    from engine.facade import Status

    st = Status(state="running", started=1000.0, heartbeat=1300.0, point=3, points=9)
    p = row_pace({"state": "running", "epoch": 0, "epochs": 20, "created": 900.0}, st, now=1310.0)
    assert p.eta == pytest.approx((9 - 3) * 300 / 3) and p.elapsed == pytest.approx(410.0)
    done = row_pace(
        {"state": "finished", "epoch": 5, "epochs": 5, "created": 900.0, "updated": 1900.0, "epoch_time_s_mean": 1.0},
        None,
        now=5000.0,
    )
    assert done.eta is None and done.elapsed == pytest.approx(1000.0)  # to the last heartbeat, not now


# ---------------------------------------------------------------------------- 2. 80-column priorities
@pytest.mark.parametrize("size", SIZES)
async def test_key_bar_shows_help_and_quit_first_and_whole_entries(store, size):
    fab(store, "0000000a")
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: ids(app) == ["0000000a"])
        bar = app.runs_screen.query_one("#runs-keys", KeyBar)
        await wait_for(pilot, lambda: bar.shown_text.startswith("? Help  q Quit  ⏎ Open"), what=bar.shown_text)
        text = bar.shown_text
        entries = [f"{k} {d}" for k, d, _key in bar.entries()]
        shown = text.split("  ")
        assert shown == entries[: len(shown)]  # whole entries, in order: the rarer ones are the ones left out
        assert len(text) <= size[0] - 2
        await wait_for(pilot, lambda: screen_lines(app)[-1].strip() == text, what="the key line on screen")
        if size == (80, 24):
            assert "Copy id" not in text and "Filter" in text
        else:
            assert "Copy id" in text
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        await wait_for(pilot, lambda: screen_lines(app)[-1].strip().startswith("? Help  q Quit  esc Back"))
        await pilot.press("escape", "n")
        await wait_for(pilot, lambda: isinstance(app.screen, PresetsScreen))
        await wait_for(pilot, lambda: screen_lines(app)[-1].strip().startswith("? Help  q Quit"))


@pytest.mark.parametrize("size", SIZES)
async def test_preset_and_label_are_never_hidden_by_title_or_tags(store, size):
    long_title = "a very long title that says everything about this run and more"
    for i, (advlc, rid) in enumerate(((False, "0000000a"), (True, "0000000b"))):
        rd = fab(store, rid, preset="quick/robust-overfitting", advlc=advlc, created=time.time() - 100 - i)
        store.annotate(rd, title=long_title, add_tags=["robust", "showcase", "table1", "seeds"])
    solo = fab(store, "0000000c", created=time.time() - 200)
    store.annotate(solo, title=long_title, add_tags=["solo"])
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: len(ids(app)) == 3)
        await wait_for(pilot, lambda: row_line(app, "0000000c") != "")
        # a sweep of the label: each row names its scheme whatever the title; a preset too long for the
        # column keeps its end, the label whole; the title column gives way first
        w = table(app).column_width("preset")
        for rid, want in (
            ("0000000a", "quick/robust-overfitting [fgsm_n]"),
            ("0000000b", "quick/robust-overfitting [fgsm_n+advlc]"),
        ):
            assert str(table(app).get_cell(rid, "preset")) == want
            shown = want if len(want) <= w else "…" + want[-(w - 1) :]
            assert shown in row_line(app, rid) and want.split(" ")[1] in row_line(app, rid), row_line(app, rid)
        assert w >= (26 if size == (120, 40) else 19)
        assert "title" not in table(app).shown_columns and "a very long" not in "\n".join(screen_lines(app))
        # the preset shown fits: the title gets the room left, cut at its end
        burst(app, "slash", *"#solo", "enter")
        await wait_for(pilot, lambda: ids(app) == ["0000000c"])
        await wait_for(pilot, lambda: "quick/digits-fgsm_n" in row_line(app, "0000000c"))
        if size == (80, 24):
            assert "title" not in table(app).shown_columns
        else:
            await wait_for(pilot, lambda: "a very long" in row_line(app, "0000000c"))
            assert "title" in table(app).shown_columns and "quick/digits-fgsm_n " in row_line(app, "0000000c")
            assert row_line(app, "0000000c").rstrip().endswith("…")
        # the run header: state, epoch and lr stay on screen whatever the title and tags
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        header = app.screen.query_one("#detail-header", Static)
        await wait_for(pilot, lambda: "· a very long" in str(header.render()))
        top = screen_lines(app)[:2]
        assert top[0].lstrip().startswith("0000000c  quick/digits-fgsm_n  seed 0 · a very long")
        assert top[1].lstrip().startswith("✔ finished  epoch 10/10  lr "), top


# ---------------------------------------------------------------------------- 3. keys typed ahead
@pytest.mark.parametrize("size", SIZES)
async def test_keys_typed_ahead_land_in_the_field_that_had_focus(store, size):
    a = fab(store, "0000000a")
    store.annotate(a, note="first line\nsecond line")
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: ids(app) == ["0000000a"])
        # one burst: the key that opens the editor (it reads meta.json first), a title, tab, tags, tab, a note
        burst(app, "e", *"my title", "tab", *"robust seeds", "tab", "down", "end", "enter", *"more", "ctrl+s")
        await wait_for(pilot, lambda: a.meta().title == "my title", what="the edit saved")
        meta = a.meta()
        assert meta.tags == ["robust", "seeds"]
        assert meta.note == "first line\nsecond line\nmore"
        await wait_for(pilot, lambda: app.screen is app.runs_screen)
        assert len(app.screen_stack) == 2  # one editor was opened, not one per `e` typed in the title
        # the same from the detail screen (its meta is in memory: no read, the burst still lands right)
        burst(app, "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.history.config)
        await wait_for(pilot, lambda: app.screen.history.meta.title == "my title")
        # an edit cancelled (esc), then the same typed again and saved, in one burst: the title is selected
        # when focused (typing replaces it); the tags field keeps its words
        edit = ["e", *"second", "tab", *" table1", "tab", "down", "down", "end", "!"]
        burst(app, *edit, "escape", *edit, "backspace", *"?", "ctrl+s")
        await wait_for(pilot, lambda: a.meta().title == "second", what="the second edit saved")
        assert a.meta().tags == ["robust", "seeds", "table1"] and a.meta().note == "first line\nsecond line\nmore?"
        await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        assert len(app.screen_stack) == 3


async def test_pilot_press_with_tab_in_one_call(store):
    a = fab(store, "0000000a")
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: ids(app) == ["0000000a"])
        await pilot.press("e", *"title", "tab", *"tag1", "tab", *"a note", "ctrl+s")
        await wait_for(pilot, lambda: a.meta().title == "title")
        assert a.meta().tags == ["tag1"] and a.meta().note == "a note"


async def test_keys_held_for_an_editor_that_cannot_open_are_given_back(store, monkeypatch):
    import tui.app

    monkeypatch.setattr(tui.app, "HOLD_MAX_S", 600.0)  # given back by the failed read, not by the safety timer
    a = fab(store, "0000000a", created=time.time() - 10)
    fab(store, "0000000b", created=time.time() - 20)
    store.reindex()
    a.meta_path.write_text("{ not json")  # a damaged meta.json: the editor cannot open
    app = make_app(store.home)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: ids(app) == ["0000000a", "0000000b"])
        burst(app, "e", "down")
        await wait_for(pilot, lambda: app.runs_screen.cursor_id() == "0000000b", what="the held key given back")
        assert app.screen is app.runs_screen and app._held is None
        assert any("edit failed" in str(n.title) for n in app._notifications)


# ---------------------------------------------------------------------------- 4. experiment runs
def make_experiment(store, rid: str, *, points: list[dict], planned: int, state: str = "finished") -> RunDir:
    """A fabricated fig4a run: config `experiment.kind`, a `points` table and status point/points."""
    rd = fab(store, rid, preset="quick/digits-fig4a", total=20, done=0, state=state, created=time.time() - 500)
    cfg = json.loads(rd.config_path.read_text())
    cfg["experiment"] = {"kind": "fig4a", "source": "quick/digits-pgd10", "ckpt": "end"}
    cfg["source"] = {"run": "00005ource", "preset": "quick/digits-pgd10", "label": "pgd", "ckpt": "end", "epoch": 19}
    cfg["run"]["label"] = "fig4a:pgd"
    rd.config_path.write_text(json.dumps(cfg))
    rd.metrics_path.write_text(json.dumps({"epochs": {}, "points": {str(i + 1): p for i, p in enumerate(points)}}))
    st = json.loads(rd.status_path.read_text())
    st.update(point=len(points), points=planned, started=time.time() - 400)
    rd.status_path.write_text(json.dumps(st))
    return rd


@pytest.mark.parametrize("size", SIZES)
async def test_experiment_runs_show_kind_points_and_their_points_table(store, size):
    pts = [
        {
            "kind": "fig4a",
            "index": i,
            "s": s,
            "hs": 0.1 + i,
            "hs_method": "mean",
            "eff_fgsm": 0.5,
            "eff_pgd10": 0.7,
            "clean_loss": 0.3,
            "clean_acc": 0.9,
            "n": 300,
            "time_s": 1.5,
        }
        for i, s in enumerate((0.0, 0.05, 0.1))
    ]
    make_experiment(store, "0000e001", points=pts, planned=9)
    fab(store, "0000000a", created=time.time() - 50)
    queued = create_runs(store, plan_runs("quick/digits-fig4a", home=store.home))[0]  # a real one, not started
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: len(ids(app)) == 3)
        await wait_for(
            pilot,
            lambda: str(table(app).get_cell("0000e001", "epoch")).startswith("3/9 pts"),
            what="points done / planned",
        )
        assert str(table(app).get_cell("0000e001", "preset")) == "quick/digits-fig4a [fig4a:pgd]"
        assert "3/9 pts" in row_line(app, "0000e001") and "[fig4a:pgd]" in row_line(app, "0000e001")
        assert "0/20" not in row_line(app, "0000e001")
        await wait_for(pilot, lambda: str(table(app).get_cell(queued.id, "epoch")).startswith("0/? pts"))
        assert str(table(app).get_cell(queued.id, "preset")) == "quick/digits-fig4a [fig4a]"
        assert str(table(app).get_cell("0000000a", "epoch")).startswith("10/10")  # a training run as before
        while app.runs_screen.cursor_id() != "0000e001":
            await pilot.press("down")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        scr = app.screen
        points = scr.query_one("#points-table", DataTable)
        await wait_for(pilot, lambda: points.row_count == 3, what="the points table")
        assert scr.has_class("-experiment")
        await wait_for(pilot, lambda: not scr.query_one("#plot-grid").display and points.display)
        cols = [str(c.label) for c in points.columns.values()]
        assert cols[:3] == ["#", "s", "hs"] and "hs_method" not in cols
        assert [str(points.get_row_at(i)[1]) for i in range(3)] == ["0", "0.05", "0.1"]
        shown = "\n".join(screen_lines(app))
        assert "waiting for data" not in shown and "0.05" in shown and "eff_fgsm" in shown
        header = str(scr.query_one("#detail-header", Static).render())
        assert "point 3/9" in header and "[fig4a:pgd]" in header and "epoch" not in header
        assert "of run 00005ource" in str(scr.query_one("#detail-latest", Static).render())


# ---------------------------------------------------------------------------- 5. sweep presets
@pytest.mark.parametrize("size", SIZES)
async def test_sweep_preset_shows_its_seeds_and_names_each_run(store, size):
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:  # an empty store opens at the showcase
        await wait_for(pilot, lambda: isinstance(app.screen, PresetsScreen) and app.screen.current is not None)
        scr = app.screen
        assert scr.current.name == "quick/robust-overfitting"
        plan = scr.query_one("#preset-plan", Static)
        await wait_for(pilot, lambda: "runs:" in str(plan.render()), what="the plan")
        assert "2 runs: pgd, pgd+advlc × seed 0 ·" in str(plan.render())
        assert scr.query_one("#seeds", Input).placeholder == "1"  # the preset's seeds, not its 2 runs
        scr.query_one("#seeds", Input).value = "3"
        await wait_for(pilot, lambda: "6 runs" in str(plan.render()))
        assert "6 runs: pgd, pgd+advlc × seeds 0, 1, 2" in str(plan.render())
        assert "⚠" not in str(plan.render())
        scr.query_one("#overrides", Input).value = "train.epochs=20"
        await wait_for(pilot, lambda: "⚠" in str(plan.render()), what="the caveat")
        assert "⚠ train.epochs = 20 with train.lr_milestones = [40, 80]: the lr never decays" in str(plan.render())


def test_plan_names_swept_values_when_the_label_does_not_change():
    from types import SimpleNamespace as NS

    from engine.facade import plan_text

    def cfg(method, attack):
        return NS(method=NS(name=method), attack=NS(name=attack))

    def run(lam, seed):
        return NS(cfg=cfg("advlc", "fgsm_n"), point={"method.lam": lam}, seed=seed, role="")

    assert plan_text([run(0.1, 0), run(0.1, 1), run(0.3, 0), run(0.3, 1)]) == "4 runs: lam=0.1, lam=0.3 × seeds 0, 1"
    assert plan_text([NS(cfg=cfg("pgd", "pgd"), point={}, seed=5, role="")]) == "1 run: pgd × seed 5"


# ---------------------------------------------------------------------------- 6. filters
@pytest.mark.parametrize("size", SIZES)
async def test_filter_applies_only_when_it_parses_and_says_why_nothing_shows(store, size):
    for i in range(4):
        fab(store, f"0000000{i}", seed=i, created=time.time() - 100 + i)
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        scr = app.runs_screen
        await wait_for(pilot, lambda: len(ids(app)) == 4)
        info = scr.query_one("#runs-info", Static)
        box = scr.query_one("#runs-filter", Input)
        burst(app, "slash", *"seed >= 2")
        await wait_for(pilot, lambda: box.value == "seed >= 2" and sorted(ids(app)) == ["00000002", "00000003"])
        burst(app, *(["backspace"] * 5))  # "seed" then "seed >": typed on, "seed >" does not parse
        await wait_for(pilot, lambda: box.value == "seed")
        burst(app, *" >")
        await wait_for(pilot, lambda: box.value == "seed >" and "⚠" in str(info.render()))
        lines = str(info.render()).split("\n")
        assert len(lines) == 2 and lines[1].startswith("⚠")  # one line, under the table
        assert "the filter above stays" in lines[1]
        assert "No runs match the filter 'seed'" in str(scr.query_one("#runs-empty", Static).render())
        rendered = [ln for ln in screen_lines(app) if "⚠" in ln]
        assert len(rendered) == 1 and len(rendered[0].rstrip()) <= size[0]
        burst(app, *" 1")
        await wait_for(pilot, lambda: sorted(ids(app)) == ["00000002", "00000003"] and "⚠" not in str(info.render()))
        # a long error (an unknown name lists what is allowed) is still one line, cut at the terminal's edge
        burst(app, *" and nosuchcolumn_with_a_long_name > 3")
        await wait_for(pilot, lambda: "unknown name" in str(info.render()) and box.value.endswith("> 3"))
        await wait_for(pilot, lambda: info.size.height == 2, what="the info line and one error line")
        assert sorted(ids(app)) == ["00000002", "00000003"]
        error = next(ln for ln in screen_lines(app) if "⚠" in ln)
        assert error.rstrip().endswith("…") and "nosuchcolumn" in error
        burst(app, *(["backspace"] * len(" and nosuchcolumn_with_a_long_name > 3")))
        await wait_for(pilot, lambda: box.value == "seed > 1" and "⚠" not in str(info.render()))
        burst(app, *" and seed > 5")
        await wait_for(pilot, lambda: ids(app) == [] and box.value.endswith("> 5"))
        empty = str(scr.query_one("#runs-empty", Static).render())
        assert "No runs match the filter 'seed > 1 and seed > 5' (4 runs in the store)" in empty
        assert "No runs match" in "\n".join(screen_lines(app))
        burst(app, "escape", "escape")
        await wait_for(pilot, lambda: len(ids(app)) == 4)
        assert not scr.query_one("#runs-empty", Static).has_class("-active")


@pytest.mark.parametrize("size", SIZES)
async def test_filter_box_keys_typed_ahead(store, size):
    """`/`, a filter, `enter`, then table keys, in one burst: the filter gets the letters, the table the
    keys after enter; `esc` the same way: the box is emptied after the letters typed before it."""
    for i in range(4):
        fab(store, f"0000000{i}", seed=i, created=time.time() - 100 + i)
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        scr = app.runs_screen
        await wait_for(pilot, lambda: ids(app) == ["00000003", "00000002", "00000001", "00000000"])
        box = scr.query_one("#runs-filter", Input)
        burst(app, "slash", *"seed <= 2", "enter", "down", "space")
        await wait_for(pilot, lambda: ids(app) == ["00000002", "00000001", "00000000"] and scr.selected == {"00000001"})
        assert box.value == "seed <= 2" and table(app).has_focus
        # esc clears the selection, esc the filter; a filter typed and dropped with esc; then table keys
        burst(app, "escape", "escape", "slash", *"seed == 0", "escape", "up", "space")
        await wait_for(pilot, lambda: len(ids(app)) == 4 and scr.selected == {"00000001"} and not scr.query_text)
        assert box.value == "" and table(app).has_focus and scr.cursor_id() == "00000000"


async def test_an_empty_store_says_so(store):
    app = make_app(store.home)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, PresetsScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.runs_screen)
        assert "No runs in the store yet" in "\n".join(screen_lines(app))


# ---------------------------------------------------------------------------- 7. copy, palette, ctrl+c
async def test_y_copies_the_run_id_palette_finds_titles_and_ctrl_c_quits(store):
    rd = fab(store, "0000c0de")
    store.annotate(rd, title="lambda sweep", add_tags=["keeper"])
    fab(store, "0000000b", created=time.time() - 1e6)
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: ids(app) == ["0000c0de", "0000000b"])
        await pilot.press("y")
        assert app._clipboard == "0000c0de"
        words = {r["id"]: run_words(r) for r in app.runs_screen.snapshot.rows}
        assert "lambda sweep" in words["0000c0de"] and "#keeper" in words["0000c0de"]
        provider = AdvlcCommands(app.screen)
        names = [name for name, _h, _cb in provider._commands()]
        assert any("#keeper" in n and "0000c0de" in n for n in names)
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: app.return_code == 0)


# ---------------------------------------------------------------------------- docs/APP.md lists every key
def test_app_doc_lists_every_key():
    from pathlib import Path

    from textual.binding import Binding

    from tui.app import AdvlcApp
    from tui.screens.compare import CompareScreen
    from tui.screens.confirm import ConfirmScreen
    from tui.screens.diff import DiffScreen
    from tui.screens.export import ExportScreen
    from tui.screens.help import HelpScreen
    from tui.screens.runs import RunsScreen

    doc = (Path(__file__).resolve().parents[2] / "docs" / "APP.md").read_text()
    shown = {"question_mark": "?", "slash": "/", "escape": "esc", "up": "↑", "down": "↓"}
    missing = []
    for cls in (
        AdvlcApp,
        RunsScreen,
        RunTable,
        RunDetailScreen,
        PresetsScreen,
        CompareScreen,
        DiffScreen,
        AnnotateScreen,
        ConfirmScreen,
        ExportScreen,
        HelpScreen,
    ):
        for b in cls.BINDINGS:
            b = b if isinstance(b, Binding) else Binding(*b)
            for key in b.key.split(","):
                if f"`{shown.get(key, key)}`" not in doc:
                    missing.append(f"{cls.__name__}: {key} ({b.description})")
    assert not missing, missing
