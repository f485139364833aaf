"""The Textual app on fabricated stores (no training): every screen and key, driven by Pilot.

Run directories are written in the training process's format by `tests/fabricate.py`'s `fabricate_run`,
so these tests are fast and deterministic; tests/tui/test_tui_live.py drives real runs.
"""

import csv
import json
import os
import statistics
import subprocess
import sys
import time

import pytest
from helpers import pilot_wait
from textual.widgets import DataTable, Input

from engine.store.index import Store
from engine.store.records import Meta
from engine.store.rundir import RunDir
from fabricate import build_store, fabricate_run, synthetic_epoch
from engine.store.watch import IndexReader, RunFollower
from tui.app import make_app
from app_bench import measure_open
from tui.widgets.alert_bar import CO_DROP, RO_POINTS, RO_STREAK, detect_alerts
from tui.widgets.run_table import RunTable

SIZE = (120, 40)


wait_for = pilot_wait


def table_ids(app) -> list[str]:
    return list(app.runs_screen._ids)


def fab(
    store,
    rid,
    preset="quick/digits-fgsm_n",
    seed=0,
    total=10,
    done=10,
    state="finished",
    group=None,
    created=None,
    **kw,
):
    return fabricate_run(
        store,
        rid,
        preset=preset,
        seed=seed,
        group=group,
        total=total,
        done=done,
        state=state,
        created=created if created is not None else 1_700_000_000 + int(rid, 16) % 10_000,
        **kw,
    )


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "home").ensure()


# ---------------------------------------------------------------------------- engine stays UI-free
def test_engine_imports_without_textual_or_rich():
    code = (
        "import importlib, pkgutil, sys, engine; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(engine.__path__, 'engine.') "
        "if not m.name.endswith('__main__')]; "
        "bad = [m for m in ('textual', 'rich', 'tui') if m in sys.modules]; "
        "assert not bad, bad"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------------------- readers
def test_run_follower_hands_over_only_new_records_and_log_lines(store):
    rd = fab(store, "0000000a", total=10, done=3)
    f = RunFollower(rd)
    d = f.poll()
    assert d.reset and [e["epoch"] for e in d.epochs] == [0, 1, 2] and len(d.log_lines) == 3
    assert f.poll().empty()
    db = rd.metrics_db().table("epochs", cache_size=0)
    db.insert(synthetic_epoch(3, 10, __import__("random").Random(0), advlc=False))
    with open(rd.log_path, "a") as fh:
        fh.write("epoch   3  robust 0.1\npartial")
    d = f.poll()
    assert not d.reset and [e["epoch"] for e in d.epochs] == [3]
    assert d.log_lines == ["epoch   3  robust 0.1"]  # the unfinished line waits for its newline
    db.remove(lambda r: r["epoch"] >= 2)  # a resume dropped records past its checkpoint
    d = f.poll()
    assert d.reset and [e["epoch"] for e in d.epochs] == [0, 1]


def test_index_reader_reparses_only_when_the_index_changes(store):
    for i in range(3):
        fab(store, f"0000000{i}")
    store.reindex()
    r = IndexReader(store)
    snap = r.poll()
    assert [x["id"] for x in snap.rows] == ["00000000", "00000001", "00000002"]
    assert r.poll() is None
    time.sleep(0.01)
    store.sync(RunDir(store.runs_dir / "00000001"))
    assert r.poll() is not None


def test_alert_thresholds():
    def rec(ep, rob, tr, lr=0.1):
        return {"epoch": ep, "robust_acc": rob, "train_acc": tr, "clean_acc": 0.8, "lr": lr}

    steady = [rec(i, 0.40 + 0.001 * i, 0.5 + 0.01 * i) for i in range(10)]
    assert detect_alerts(steady) == []
    best = steady[-1]["robust_acc"]

    def after_decay(gap, n, lr=0.01):
        return [rec(10 + k, best - gap, 0.7 + 0.01 * k, lr=lr) for k in range(n)]

    # robust overfitting: after the lr decay, RO_STREAK evaluated epochs RO_POINTS or more below
    # the best while the training accuracy rose
    assert [a.kind for a in detect_alerts(steady + after_decay(RO_POINTS + 0.001, RO_STREAK))] == ["robust_overfitting"]
    assert detect_alerts(steady + after_decay(RO_POINTS + 0.001, RO_STREAK - 1)) == []  # one epoch short
    assert detect_alerts(steady + after_decay(RO_POINTS - 0.001, RO_STREAK)) == []  # not far enough below
    assert detect_alerts(steady + after_decay(RO_POINTS + 0.001, RO_STREAK, lr=0.1)) == []  # before the decay
    # catastrophic overfitting: robust more than halved within a few epochs while train acc rises
    co = steady + [rec(10, 0.409 * (1 - CO_DROP) - 0.01, 0.9)]
    assert [a.kind for a in detect_alerts(co)] == ["catastrophic"]
    assert "epoch 10" in detect_alerts(co)[0].text
    # the same drop with falling training accuracy is not catastrophic overfitting
    assert detect_alerts(steady + [rec(10, 0.1, 0.3)]) == []


# ---------------------------------------------------------------------------- runs screen
async def test_runs_of_one_preset_with_different_labels_show_their_label(store):
    """The showcase group sweeps method.name: both runs have one preset and one seed, so the
    preset cell adds the label; presets with one label each do not."""
    fab(store, "00000001", preset="quick/robust-overfitting", advlc=False)
    fab(store, "00000002", preset="quick/robust-overfitting", advlc=True)
    fab(store, "00000003", preset="quick/digits-fgsm_n")
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(table_ids(app)) == 3)
        table = app.runs_screen.query_one("#runs-table", RunTable)
        cells = {rid: str(table.get_cell(rid, "preset")) for rid in ("00000001", "00000002", "00000003")}
        assert cells["00000001"].endswith("[fgsm_n]") and cells["00000002"].endswith("[fgsm_n+advlc]"), cells
        assert cells["00000003"] == "quick/digits-fgsm_n", cells


async def test_runs_screen_live_refresh_keeps_cursor_and_shows_new_runs(store):
    for i in range(12):
        fab(
            store,
            f"{i:08x}",
            seed=i % 3,
            done=10 if i < 10 else 4,
            state="finished" if i < 10 else "running",
            created=1_700_000_000 + i,
        )
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(table_ids(app)) == 12)
        table = app.runs_screen.query_one("#runs-table", RunTable)
        assert table_ids(app)[0] == f"{11:08x}"  # newest first
        for _ in range(5):
            await pilot.press("down")
        target = app.runs_screen.cursor_id()
        assert target == table_ids(app)[5]
        # a running run writes an epoch: only its cells change, the cursor stays
        rd = RunDir(store.runs_dir / f"{10:08x}")
        rd.metrics_db().table("epochs", cache_size=0).insert(
            synthetic_epoch(4, 10, __import__("random").Random(1), advlc=False)
        )
        store.sync(rd)
        await wait_for(pilot, lambda: str(table.get_cell(f"{10:08x}", "epoch")).startswith(" 5/10"), timeout=10)
        assert app.runs_screen.cursor_id() == target
        # a new run appears at the top; the cursor stays on its run
        fab(store, "000000ff", created=1_800_000_000)
        store.sync(RunDir(store.runs_dir / "000000ff"))
        await wait_for(pilot, lambda: "000000ff" in table_ids(app), timeout=10)
        assert table_ids(app)[0] == "000000ff"
        assert app.runs_screen.cursor_id() == target
        header = app.runs_screen.query_one("#header").render()
        assert "11 finished" in str(header) and "2 running" in str(header)


async def test_filter_sort_and_multiselect(store):
    for i in range(6):
        fab(store, f"{i:08x}", preset="quick/digits-fgsm_n-advlc" if i % 2 else "quick/digits-fgsm_n", seed=i // 2)
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(table_ids(app)) == 6)
        await pilot.press("slash")
        assert app.focused.id == "runs-filter"
        await pilot.press(*"advlc")
        await wait_for(pilot, lambda: len(table_ids(app)) == 3)
        await pilot.press("enter")
        assert isinstance(app.focused, RunTable)
        await pilot.press("space", "space")
        assert len(app.runs_screen.selected) == 2
        assert "2 selected" in str(app.runs_screen.query_one("#runs-info").render())
        await pilot.press("a")  # select all visible
        assert app.runs_screen.selected == set(table_ids(app))
        await pilot.press("escape")  # clears the selection
        assert not app.runs_screen.selected
        await pilot.press("escape")  # then the filter
        await wait_for(pilot, lambda: len(table_ids(app)) == 6)
        await pilot.press("slash", *"seed:2", "enter")
        await wait_for(pilot, lambda: len(table_ids(app)) == 2)
        await pilot.press("escape")
        await pilot.press("o", "o")  # sort by preset
        ids = table_ids(app)
        presets = [r["preset"] for r in sorted(app.runs_screen.snapshot.rows, key=lambda r: ids.index(r["id"]))]
        assert presets == sorted(presets)


async def test_delete_asks_first(store):
    fab(store, "0000000d")
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: table_ids(app) == ["0000000d"])
        await pilot.press("d")
        from tui.screens.confirm import ConfirmScreen

        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen)
        assert (store.runs_dir / "0000000d").exists()
        await pilot.press("d")
        await pilot.press("y")
        await wait_for(pilot, lambda: table_ids(app) == [], timeout=10)
        assert not (store.runs_dir / "0000000d").exists()


# ---------------------------------------------------------------------------- detail
async def test_detail_plots_hold_the_epoch_data_and_alerts_show(store):
    total = 30
    recs = []
    for e in range(total):  # rises, then collapses: catastrophic + robust overfitting
        rob = 0.1 + 0.01 * e if e < 20 else 0.02
        recs.append(
            {
                "epoch": e,
                "lr": 0.1 if e < 15 else 0.01,
                "train_loss": 1.0 - 0.02 * e,
                "train_acc": 0.3 + 0.02 * e,
                "clean_loss": 0.8,
                "clean_acc": 0.5 + 0.01 * e,
                "robust_loss": 1.5,
                "robust_acc": rob,
                "av": 0.7,
                "ig": 10.0 + e,
                "hs": 0.1 if e % 10 == 9 else None,
                "time_s": 2.0,
                "images_per_s": 700.0,
            }
        )
    rd = fab(store, "000000de", total=40, state="running", epochs_override=recs, swa=True)
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: table_ids(app) == ["000000de"])
        await pilot.press("enter")
        from tui.screens.run_detail import RunDetailScreen

        await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        scr = app.screen
        await wait_for(pilot, lambda: "robust" in scr.plots["acc"].series)
        acc = scr.plots["acc"].series
        assert acc["robust"].xs == list(range(total))
        assert acc["robust"].ys == pytest.approx([100 * r["robust_acc"] for r in recs])
        assert acc["clean"].ys == pytest.approx([100 * r["clean_acc"] for r in recs])
        assert acc["train"].ys == pytest.approx([100 * r["train_acc"] for r in recs])
        assert "swa robust" in acc  # the run records an `swa` table
        assert scr.plots["ig"].series["IG"].ys == pytest.approx([r["ig"] for r in recs])
        assert scr.plots["hs"].series["HS"].xs == [9, 19, 29]  # only where recorded
        assert scr.plots["lr"].series["lr"].ys[-1] == pytest.approx(0.01)
        assert scr.plots["loss"].series["AV"].ys == pytest.approx([0.7] * total)
        assert scr.plots["acc"].marks[0][0] == 19  # best epoch marked
        alerts = scr.query_one("#alerts")
        assert alerts.has_class("-active")
        assert [a.kind for a in alerts.alerts] == ["catastrophic", "robust_overfitting"]
        # a new epoch arrives: only it is read and appended
        rd.metrics_db().table("epochs", cache_size=0).insert(dict(recs[-1], epoch=total))
        with open(rd.log_path, "a") as fh:
            fh.write("epoch  30 new line\n")
        await wait_for(pilot, lambda: len(scr.plots["acc"].series["robust"].xs) == total + 1, timeout=10)
        await pilot.press("l")
        log = scr.query_one("#log")
        await wait_for(pilot, lambda: any("epoch  30 new line" in ln for ln in log.lines))
        await pilot.press("g")
        assert "3e1c9a2f00" in str(scr.query_one("#config-text").render())
        await pilot.press("p", "f")  # zoom a plot, esc un-zooms, esc goes back
        assert scr.maximized is not None
        await pilot.press("escape")
        assert scr.maximized is None
        await pilot.press("escape")
        assert app.screen is app.runs_screen


# ---------------------------------------------------------------------------- compare + export
def _direct(store, ids):
    """Mean / sample std of best and end accuracies (%) computed straight from the run directories."""
    vals = {"clean_best": [], "clean_end": [], "robust_best": [], "robust_end": [], "ig": []}
    for rid in ids:
        eps = RunDir(store.runs_dir / rid).epochs()
        best = max(eps, key=lambda e: (e["robust_acc"], e["epoch"]))
        end = eps[-1]
        vals["clean_best"].append(100 * best["clean_acc"])
        vals["clean_end"].append(100 * end["clean_acc"])
        vals["robust_best"].append(100 * best["robust_acc"])
        vals["robust_end"].append(100 * end["robust_acc"])
        vals["ig"].append(end["ig"])
    return {k: (statistics.mean(v), statistics.stdev(v)) for k, v in vals.items()}


async def test_compare_two_groups_and_export_matches_the_store(store, tmp_path):
    a = [
        fab(store, f"a000000{s}", preset="quick/digits-fgsm_n", seed=s, group="gA", total=12, done=12).id
        for s in range(3)
    ]
    b = [
        fab(store, f"b000000{s}", preset="quick/digits-fgsm_n-advlc", seed=s, group="gB", total=12, done=12).id
        for s in range(3)
    ]
    fab(store, "c0000000", preset="quick/digits-pgd10", group="gC")
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(table_ids(app)) == 7)
        await pilot.press("slash", *"preset:quick/digits-fgsm_n", "enter")  # the two groups
        await wait_for(pilot, lambda: len(table_ids(app)) == 6)
        await pilot.press("c")
        from tui.screens.compare import CompareScreen

        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        scr = app.screen
        await wait_for(pilot, lambda: scr.table is not None)
        rows = {r.name: r for r in scr.table.rows}
        assert set(rows) == {"fgsm_n", "fgsm_n+advlc"}
        for name, ids in (("fgsm_n", a), ("fgsm_n+advlc", b)):
            direct = _direct(store, ids)
            for col, (m, s) in direct.items():
                assert rows[name].cells[col].mean == pytest.approx(m) and rows[name].cells[col].std == pytest.approx(s)
        dt = scr.query_one("#compare-table", DataTable)
        assert dt.row_count == 2
        shown = str(dt.get_cell("fgsm_n", "robust_best"))
        m, s = _direct(store, a)["robust_best"]
        assert shown == f"{m:.2f} ± {s:.2f}"
        # overlaid curves: the mean robust accuracy per epoch of each row
        plot = scr.query_one("#compare-plot")
        ra = [statistics.mean(100 * RunDir(store.runs_dir / i).epochs()[e]["robust_acc"] for i in a) for e in range(12)]
        assert plot.series["fgsm_n"].ys == pytest.approx(ra)
        await pilot.press("m")
        assert "clean" in plot.border_title
        # export md / latex / csv to a folder typed into the modal
        out = tmp_path / "exported"
        await pilot.press("x")
        from tui.screens.export import ExportScreen

        await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen))
        box = app.screen.query_one("#export-folder", Input)
        box.value = str(out)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(scr.exported) == 3, timeout=10)
        assert sorted(p.name for p in scr.exported) == ["table.csv", "table.md", "table.tex"]
        assert str(out) in str(scr.query_one("#compare-paths").render())
    # the exported numbers are the direct computation
    with open(out / "table.csv") as fh:
        got = {r["row"]: r for r in csv.DictReader(fh)}
    md = (out / "table.md").read_text()
    tex = (out / "table.tex").read_text()
    for name, ids in (("fgsm_n", a), ("fgsm_n+advlc", b)):
        direct = _direct(store, ids)
        for col, (m, s) in direct.items():
            assert float(got[name][col]) == pytest.approx(m)
            assert float(got[name][f"{col}_std"]) == pytest.approx(s)
        rb = direct["robust_best"]
        assert f"{rb[0]:.2f} ± {rb[1]:.2f}" in md
        assert f"{rb[0]:.2f} $\\pm$ {rb[1]:.2f}" in tex
        diff = direct["robust_best"][0] - direct["robust_end"][0]
        assert float(got[name]["robust_diff"]) == pytest.approx(diff)


# ---------------------------------------------------------------------------- presets
@pytest.mark.slow  # many inputs through the screen (~10 s)
async def test_presets_invalid_overrides_show_inline_and_never_crash(store):
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        from tui.screens.presets import PresetsScreen

        await wait_for(pilot, lambda: isinstance(app.screen, PresetsScreen))
        scr = app.screen
        await wait_for(pilot, lambda: scr.current is not None)
        from engine.facade import DEFAULT_PRESET

        assert scr.current.name == DEFAULT_PRESET  # `make run` opens with the default ready
        await wait_for(pilot, lambda: "will launch" in str(scr.query_one("#preset-plan").render()), timeout=60)
        err = scr.query_one("#preset-error")
        await pilot.press("o")
        await pilot.press(*"train.epochs=abc")
        await wait_for(pilot, lambda: "train.epochs" in str(err.render()), timeout=30)
        assert "integer" in str(err.render())
        assert scr.query_one("#launch").disabled
        await pilot.press("enter")  # launching invalid input: the error again, no run, no crash
        await pilot.pause(0.5)
        assert isinstance(app.screen, PresetsScreen) and not list(store.runs_dir.iterdir())
        for _ in range(3):
            await pilot.press("backspace")
        await pilot.press(*"5 nosuch.key=1")
        await wait_for(pilot, lambda: "nosuch" in str(err.render()), timeout=30)
        await pilot.press(*(["backspace"] * len(" nosuch.key=1")), *" attack.eps=8/255")
        await wait_for(pilot, lambda: "5 epochs" in str(scr.query_one("#preset-plan").render()), timeout=30)
        assert str(err.render()) == ""
        assert "← override" in str(scr.query_one("#preset-config").render())
        await pilot.click("#seeds")
        await pilot.press(*"0")
        await wait_for(pilot, lambda: "seeds" in str(err.render()), timeout=30)
        await pilot.press("backspace", "3")
        from engine.facade import plan_runs

        n = len(plan_runs(DEFAULT_PRESET, ["train.epochs=5", "attack.eps=8/255"], seeds=3, home=store.home))
        await wait_for(pilot, lambda: f"{n} runs" in str(scr.query_one("#preset-plan").render()), timeout=30)
        await pilot.press("escape", "escape")
        assert app.screen is app.runs_screen


# ---------------------------------------------------------------------------- conventions
async def test_help_lists_every_key_and_small_terminal_works(store):
    for i in range(3):
        fab(store, f"{i:08x}", state="running" if i == 0 else "finished", done=5 if i == 0 else 10)
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(table_ids(app)) == 3)
        await pilot.press("question_mark")
        from tui.screens.compare import CompareScreen
        from tui.screens.help import HelpScreen, sections
        from tui.screens.presets import PresetsScreen
        from tui.screens.run_detail import RunDetailScreen
        from tui.screens.runs import RunsScreen

        assert isinstance(app.screen, HelpScreen)
        listed = {(title, what) for title, items in sections(app) for _k, what in items}
        for title, cls in (
            ("Runs", RunsScreen),
            ("Run detail", RunDetailScreen),
            ("Presets (new run)", PresetsScreen),
            ("Compare", CompareScreen),
            ("Everywhere", type(app)),
        ):
            for b in cls.BINDINGS:
                assert (title, b.description) in listed, (title, b.key)
        await pilot.press("escape")
        assert app.screen is app.runs_screen
        # every screen opens at 80x24
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        await wait_for(pilot, lambda: "robust" in app.screen.plots["acc"].series)
        assert app.screen.has_class("-narrow")
        await pilot.press("escape", "n")
        await wait_for(pilot, lambda: isinstance(app.screen, PresetsScreen))
        await pilot.press("escape")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.table is not None)
        await pilot.press("escape")
        # typing q into a text field types it; q elsewhere quits
        await pilot.press("slash", "q")
        assert app.runs_screen.query_one("#runs-filter", Input).value == "q"
        assert app.is_running
        await pilot.press("escape", "escape", "q")
        assert app.return_code == 0  # the quit action ran (the app stops right after)


async def test_light_theme_from_environment(store, monkeypatch):
    monkeypatch.setenv("ADVLC_THEME", "textual-light")
    fab(store, "00000001")
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(table_ids(app)) == 1)
        assert app.theme == "textual-light"
        from tui.widgets.palette import palette

        light = palette(app)
        app.theme = "textual-dark"
        await pilot.pause(0.1)
        assert palette(app)["foreground"] != light["foreground"]
        assert table_ids(app) == ["00000001"]


async def test_command_palette_opens_a_run(store):
    fab(store, "0000abcd")
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(table_ids(app)) == 1)
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"open run 0000abcd")
        await pilot.pause(0.5)
        await pilot.press("enter")
        from tui.screens.run_detail import RunDetailScreen

        await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        assert app.screen.run_id == "0000abcd"


# ---------------------------------------------------------------------------- scale
def test_benchmark_runs_on_a_small_store(tmp_path):
    home = tmp_path / "bench"
    build_store(home, n_runs=40, n_epochs=20, n_running=2)
    res = measure_open(home)
    assert res["runs"] == 40 and res["detail_epochs"] == 20
    assert res["open_s"] < 10 and res["idle_poll_s"] < 0.05
    json.dumps(res)


# ---------------------------------------------------------------------------- the command line
def test_advlc_without_a_command_opens_the_app(tmp_path, monkeypatch):
    import tui.app
    from tui.cli import main

    opened = []

    class FakeApp:
        def run(self):
            opened.append("run")

    monkeypatch.setattr(tui.app, "make_app", lambda home=None, presets_dir=None: opened.append(home) or FakeApp())
    with pytest.raises(SystemExit) as exc:
        main(["--home", str(tmp_path / "h")])
    assert exc.value.code == 0
    assert opened == [tmp_path / "h", "run"]


async def test_layout_at_80x24_keeps_the_essentials_on_screen(store):
    fab(store, "00000001", preset="paper/table1/fgsm_n-advlc", state="running", done=5)
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(table_ids(app)) == 1)
        table = app.runs_screen.query_one("#runs-table", RunTable)
        assert table.shown_columns == ["id", "preset", "seed", "state", "epoch", "robust", "eta"]
        assert table.virtual_size.width <= 80
        line = "".join(seg.text for seg in table.render_line(1))
        assert "00000001" in line and "running" in line and "5/10" in line
        await pilot.press("n")
        from tui.screens.presets import PresetsScreen

        await wait_for(pilot, lambda: isinstance(app.screen, PresetsScreen) and app.screen.current is not None)
        launch = app.screen.query_one("#launch")
        await pilot.pause(0.2)
        assert launch.region.right <= 80 and launch.region.bottom <= 23  # visible above the footer
    async with make_app(store.home).run_test(size=(120, 40)) as pilot:
        app2 = pilot.app
        await wait_for(pilot, lambda: len(app2.runs_screen._ids) == 1)
        assert app2.runs_screen.query_one("#runs-table", RunTable).shown_columns == [
            "id",
            "preset",
            "seed",
            "state",
            "epoch",
            "robust",
            "clean",
            "ig",
            "hs",
            "eta",
            "launched",
        ]  # no titles


# ---------------------------------------------------------------------------- what the terminal shows
def screen_lines(app) -> list[str]:
    """The text the terminal shows now: the compositor's frame, with every cached line as drawn."""
    import io

    from rich.console import Console

    w, h = app.size
    c = Console(width=w, height=h, file=io.StringIO(), force_terminal=True, color_system="truecolor", record=True)
    c.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return c.export_text().splitlines()


def shown_rows(app) -> list[tuple[str, bool, str]]:
    """(run id, marked ◉, the whole line) of every runs-table row on screen, top to bottom."""
    out = []
    for line in screen_lines(app):
        parts = line[2:].split()
        if parts and len(parts[0]) == 8 and all(ch in "0123456789abcdef" for ch in parts[0]):
            out.append((parts[0], line.startswith("◉"), line))
    return out


def _advance(store, rid: str, upto: int, total: int) -> None:
    """A running run writes epochs up to `upto` (exclusive)."""
    rd = RunDir(store.runs_dir / rid)
    table = rd.metrics_db().table("epochs", cache_size=0)
    have = len(rd.epochs())
    for e in range(have, upto):
        table.insert(synthetic_epoch(e, total, __import__("random").Random(e), advlc=False))
    store.sync(rd)


@pytest.mark.parametrize("size", [(80, 24), SIZE])
async def test_selection_follows_run_ids_while_running_runs_resort(store, size):
    """Space then Down on a scrolled list sorted by progress while running runs move: the runs
    selected are those under the cursor on screen, and the screen marks exactly them (rows were
    once redrawn by screen line, not by row, so a scrolled table showed stale marks and cells)."""
    n, total = 30, 60
    for i in range(n):
        fab(
            store,
            f"{i:08x}",
            seed=i,
            total=total,
            done=30 + i,
            state="running" if i < 3 else "finished",
            created=1_700_000_000 + i,
        )
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        scr = app.runs_screen
        await wait_for(pilot, lambda: len(table_ids(app)) == n)
        table = scr.query_one("#runs-table", RunTable)

        def check():
            rows = shown_rows(app)
            top = int(table.scroll_offset.y)
            assert [r[0] for r in rows] == table_ids(app)[top : top + len(rows)]
            assert {r[0] for r in rows if r[1]} == scr.selected & {r[0] for r in rows}
            return rows

        for _ in range(4):
            await pilot.press("o")  # by progress: the running runs (least done) at the bottom
        assert "progress" in str(scr.query_one("#runs-info").render())
        await pilot.press("end")
        if size == (80, 24):
            assert table.scroll_offset.y > 0
        assert scr.cursor_id() == "00000000"
        await pilot.press("space")  # the last row: the cursor cannot move on
        await pilot.pause(0.05)
        assert scr.selected == {"00000000"}
        check()
        await pilot.press("up", "up", "space")  # select 00000002; the cursor moves on to 00000001
        assert scr.selected == {"00000000", "00000002"} and scr.cursor_id() == "00000001"
        # 00000001 (under the cursor) runs past 00000002 and 00000003: the list re-sorts under the cursor
        _advance(store, "00000001", 34, total)
        await wait_for(pilot, lambda: table_ids(app).index("00000001") < table_ids(app).index("00000003"), timeout=10)
        assert scr.cursor_id() == "00000001"  # the cursor stays on its run
        rows = check()
        below = [r[0] for r in rows][[r[0] for r in rows].index("00000001") + 1]
        await pilot.press("down", "space")
        assert scr.selected == {"00000000", "00000002", below}
        await pilot.pause(0.05)
        check()
        # an in-place update of a run on screen (no re-sort) is drawn on its own line
        _advance(store, "00000000", 31, total)
        await wait_for(pilot, lambda: str(table.get_cell("00000000", "epoch")).startswith("31/60"), timeout=10)
        await pilot.pause(0.1)
        line = next(r[2] for r in check() if r[0] == "00000000")
        assert "31/60" in line and line.startswith("◉")


async def test_preset_column_and_compare_title_at_80x24(store):
    presets = (
        "quick/digits-fgsm_n-advlc",
        "quick/digits-fgsm_n",
        "quick/digits-fgsm_n-advlc-swa",
        "paper/table1/pgd10-advlc",
    )
    for i, p in enumerate(presets):
        fab(store, f"{i:08x}", preset=p, created=1_700_000_000 - i)
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(table_ids(app)) == 4)
        await pilot.pause(0.05)
        w = app.runs_screen.query_one("#runs-table", RunTable).column_width("preset")
        assert w >= 16
        cells = {rid: line[11 : 11 + w].strip() for rid, _m, line in shown_rows(app)}
        assert cells["00000000"] == "…" + presets[0][-(w - 1) :]  # the distinctive end, not `quick…sm_n-advlc`
        assert len(set(cells.values())) == 4, cells
        for i, p in enumerate(presets):
            c = cells[f"{i:08x}"]
            assert c == p or (c.startswith("…") and p.endswith(c[1:])), (p, c)
        from tui.screens.compare import CompareScreen

        await pilot.press("space", "c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.table is not None)
        title = str(app.screen.query_one("#compare-title").render())
        assert "Compare 1 selected run " in title and "runs" not in title.split("   ")[0], title
        await pilot.press("escape", "space", "c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.table is not None)
        assert "Compare 2 selected runs" in str(app.screen.query_one("#compare-title").render())


# ---------------------------------------------------------------------------- label, tag, note, archive, diff, query
def notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def info(app) -> str:
    return str(app.runs_screen.query_one("#runs-info").render())


async def test_edit_title_tags_and_note_from_the_runs_screen(store):
    from tui.screens.annotate import AnnotateScreen

    a, b = fab(store, "0000000a", created=1_700_000_002), fab(store, "0000000b", created=1_700_000_001)
    store.annotate(b, add_tags=["draft"])
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: table_ids(app) == ["0000000a", "0000000b"])
        table = app.runs_screen.query_one("#runs-table", RunTable)
        assert str(table.get_cell("0000000a", "preset")) == "quick/digits-fgsm_n"
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, AnnotateScreen))
        modal = app.screen
        assert modal.query_one("#annotate-title", Input).has_focus
        await pilot.press(*"first try", "tab", *"robust bad/tag")
        await pilot.press("ctrl+s")  # a bad tag: one line in the modal, nothing written
        assert "bad/tag" in str(modal.query_one("#annotate-error").render())
        assert app.screen is modal and a.meta() == Meta()
        await pilot.press(*(["backspace"] * len(" bad/tag")), " ", *"table1", "tab", *"line one", "enter", *"line two")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is app.runs_screen)
        meta = a.meta()
        assert meta.title == "first try" and meta.tags == ["robust", "table1"]
        assert meta.note == "line one\nline two"
        row = next(r for r in store.runs() if r["id"] == "0000000a")
        assert row["title"] == "first try" and row["tags"] == ["robust", "table1"] and row["note"] == "line one"
        # the row is redrawn with its title and tags in their own column; the preset stays whole
        await wait_for(pilot, lambda: "first try" in str(table.get_cell("0000000a", "title")), timeout=10)
        assert str(table.get_cell("0000000a", "title")) == "first try #robust #table1"
        assert str(table.get_cell("0000000a", "preset")) == "quick/digits-fgsm_n"
        await wait_for(
            pilot,
            lambda: any("first try #robust" in ln for rid, _m, ln in shown_rows(app) if rid == "0000000a"),
            timeout=10,
        )  # drawn on screen too
        # several runs: their tags only; the field shows the tags they share, the others stay
        await pilot.press("space", "space")
        assert app.runs_screen.selected == {"0000000a", "0000000b"}
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, AnnotateScreen))
        assert not app.screen.query("#annotate-title") and not app.screen.query("#annotate-note")
        assert app.screen.query_one("#annotate-tags", Input).value == ""
        await pilot.press(*"seeds -table1", "enter")
        await wait_for(pilot, lambda: app.screen is app.runs_screen)
        assert a.meta().tags == ["robust", "seeds"] and b.meta().tags == ["draft", "seeds"]
        assert a.meta().title == "first try" and a.meta().note == "line one\nline two"
        await wait_for(pilot, lambda: str(table.get_cell("0000000b", "title")).endswith("#draft #seeds"), timeout=10)
        # esc cancels: nothing written
        await pilot.press("escape")
        assert app.runs_screen.cursor_id() == "0000000b"
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, AnnotateScreen))
        await pilot.press(*"changed", "escape")
        assert app.screen is app.runs_screen and b.meta().title is None
        # a tag deleted from the field is removed
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, AnnotateScreen))
        assert app.screen.query_one("#annotate-tags", Input).value == "draft seeds"
        await pilot.press("tab", *(["backspace"] * len("seeds")), "enter")
        await wait_for(pilot, lambda: app.screen is app.runs_screen)
        assert b.meta().tags == ["draft"] and b.meta().title is None


async def test_archive_hides_a_run_A_shows_it_and_x_restores(store):
    for i in range(3):
        fab(store, f"0000000{i}", created=1_700_000_000 + i)
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        scr = app.runs_screen
        await wait_for(pilot, lambda: table_ids(app) == ["00000002", "00000001", "00000000"])
        await pilot.press("x")  # the run under the cursor
        await wait_for(pilot, lambda: table_ids(app) == ["00000001", "00000000"], timeout=10)
        assert RunDir(store.runs_dir / "00000002").meta().archived is True
        assert any("archived 00000002" in n for n in notes(app))
        assert "00000002" in {r["id"] for r in scr.snapshot.rows}  # still in the index: hidden, not gone
        await pilot.press("A")
        await wait_for(pilot, lambda: table_ids(app) == ["00000002"])
        assert "archived runs only" in info(app)
        await pilot.press("x")  # all the targets are archived: x restores them
        await wait_for(pilot, lambda: table_ids(app) == [], timeout=10)
        assert RunDir(store.runs_dir / "00000002").meta().archived is False
        assert any("restored 00000002" in n for n in notes(app))
        assert "No archived runs" in str(scr.query_one("#runs-empty").render())
        await pilot.press("A")
        await wait_for(pilot, lambda: table_ids(app) == ["00000002", "00000001", "00000000"])
        assert "archived runs only" not in info(app)
        # the selection is what x archives
        await pilot.press("down", "space", "space")
        assert scr.selected == {"00000001", "00000000"}
        await pilot.press("x")
        await wait_for(pilot, lambda: table_ids(app) == ["00000002"], timeout=10)
        assert not scr.selected
        assert [r["id"] for r in store.runs(archived=True)] == ["00000000", "00000001"]


async def test_filter_expressions_tags_and_errors(store):
    presets = ("quick/digits-fgsm_n", "quick/digits-fgsm_n-advlc", "paper/table1/pgd10-advlc")
    for i in range(6):
        fab(store, f"0000000{i}", preset=presets[i % 3], seed=i // 2)
    store.annotate(RunDir(store.runs_dir / "00000004"), title="Best so far", add_tags=["robust"])
    store.annotate(RunDir(store.runs_dir / "00000001"), add_tags=["robust-ish"])
    store.reindex()
    configs = {f"0000000{i}": RunDir(store.runs_dir / f"0000000{i}").config_json() for i in range(6)}

    def expect(pred):
        return sorted(rid for rid, c in configs.items() if pred(c))

    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        scr = app.runs_screen
        await wait_for(pilot, lambda: len(table_ids(app)) == 6)
        box = scr.query_one("#runs-filter", Input)

        async def filt(text, expected=None):
            box.value = text
            await pilot.pause(0.1)
            if expected is not None:  # configs are read in a worker: wait for them
                await wait_for(pilot, lambda: sorted(table_ids(app)) == expected, timeout=10)
            return sorted(table_ids(app))

        await pilot.press("slash")
        got = await filt('seed >= 1 and preset ~ "advlc"')
        assert (
            got
            == expect(lambda c: c["run"]["seed"] >= 1 and "advlc" in c["run"]["preset"])
            == ["00000002", "00000004", "00000005"]
        )
        # a mistake: one line under the table, the previous filter stays in effect, no crash
        got = await filt("seed >")
        assert got == ["00000002", "00000004", "00000005"]
        assert "expected a value" in info(app) and box.has_class("-error")
        got = await filt('seed == "\\x"')  # a broken escape: not a UserError from the parser, still one line
        assert got == ["00000002", "00000004", "00000005"] and "filter" in info(app)
        got = await filt("nosuch > 1")
        assert "unknown name 'nosuch'" in info(app) and got == ["00000002", "00000004", "00000005"]
        # a config key: each run's config.json is read (once, in a worker)
        want = expect(lambda c: c["method"]["lam"] > 0.1)
        assert want == ["00000001", "00000002", "00000004", "00000005"]
        assert await filt("method.lam > 0.1", want) == want
        assert not box.has_class("-error") and "expected" not in info(app)
        want = expect(lambda c: c["method"]["lam"] > 0.1 and c["train"]["seed"] < 2)
        assert await filt("method.lam > 0.1 and train.seed < 2", want) == want == ["00000001", "00000002"]
        assert set(scr._configs) == set(configs)
        # a run created while the filter is on: its config is read by the poll worker
        fab(store, "00000009", preset=presets[1], seed=0)
        store.sync(RunDir(store.runs_dir / "00000009"))
        await wait_for(pilot, lambda: "00000009" in table_ids(app), timeout=10)
        configs["00000009"] = RunDir(store.runs_dir / "00000009").config_json()
        assert sorted(table_ids(app)) == expect(lambda c: c["method"]["lam"] > 0.1 and c["train"]["seed"] < 2)
        got = await filt('"robust" in tags')
        assert got == ["00000004"]
        # words: #tag and tag:x match a tag exactly, a bare word the title and the tags too
        assert await filt("#robust") == ["00000004"]
        assert await filt("tag:robust-ish") == ["00000001"]
        assert await filt("tag:robust") == ["00000004"]  # exactly: not robust-ish
        assert await filt("robust") == ["00000001", "00000004"]
        assert await filt("best so") == ["00000004"]
        assert await filt("not archived and seed == 0") == expect(lambda c: c["run"]["seed"] == 0)
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(table_ids(app)) == 7)


async def test_diff_two_selected_runs(store):
    from tui.screens.diff import DiffScreen

    fab(store, "0000000a", preset="quick/digits-fgsm_n", seed=0, created=1_700_000_002)
    fab(store, "0000000b", preset="quick/digits-fgsm_n-advlc", seed=3, created=1_700_000_001)
    fab(store, "0000000c", preset="quick/digits-fgsm_n", seed=0, created=1_700_000_000)
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: table_ids(app) == ["0000000a", "0000000b", "0000000c"])
        await pilot.press("space", "up")  # one selected, the cursor on it: no pair
        await pilot.press("D")
        await pilot.pause(0.1)
        assert app.screen is app.runs_screen
        assert "select two runs (space) to diff" in notes(app)
        await pilot.press("down", "space")  # two selected
        await pilot.press("D")
        await wait_for(pilot, lambda: isinstance(app.screen, DiffScreen) and app.screen.diff is not None)
        scr = app.screen
        assert scr.run_ids == ["0000000a", "0000000b"]
        config = {k: (va, vb) for k, va, vb in scr.diff["config"]}
        assert config["train.seed"] == (0, 3) and config["method.lam"] == (0.0, 0.3)
        assert "data.dataset" not in config  # only what differs
        assert ("run.seed", 0, 3) in scr.diff["origin"]
        await wait_for(
            pilot,
            lambda: all(w in "\n".join(screen_lines(app)) for w in ("train.seed", "method.lam", "results", "0000000b")),
            timeout=10,
        )
        seed_line = next(ln for ln in screen_lines(app) if "train.seed" in ln)
        assert seed_line.split()[1:] == ["0", "3"]
        await pilot.press("s")  # swap sides
        assert next(ln for ln in screen_lines(app) if "train.seed" in ln).split()[1:] == ["3", "0"]
        await pilot.press("escape")
        assert app.screen is app.runs_screen
        # one selected and the cursor on another run: those two
        await pilot.press("escape")
        assert not app.runs_screen.selected
        await pilot.press("home", "space")  # selects 0000000a; the cursor moves on to 0000000b
        await pilot.press("down", "D")
        await wait_for(pilot, lambda: isinstance(app.screen, DiffScreen) and app.screen.diff is not None)
        assert app.screen.run_ids == ["0000000a", "0000000c"] and app.screen.diff["config"] == []
        assert "config: keys that differ: none" in "\n".join(screen_lines(app))


async def test_run_detail_shows_title_and_tags_live_and_edits_them(store):
    from tui.screens.annotate import AnnotateScreen
    from tui.screens.run_detail import RunDetailScreen

    rd = fab(store, "000000de", state="running", done=4)
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: table_ids(app) == ["000000de"])
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        scr = app.screen

        def header():
            return str(scr.query_one("#detail-header").render())

        await wait_for(pilot, lambda: "seed 0" in header())
        assert "#" not in header() and "·" not in header()
        # written from elsewhere (advlc label/tag/note) while the screen is open
        store.annotate(rd, title="first try", add_tags=["robust"], note="line one\nline two")
        await wait_for(pilot, lambda: "first try" in header(), timeout=10)
        assert "quick/digits-fgsm_n  seed 0 · first try #robust" in header()
        await pilot.press("g")
        config = str(scr.query_one("#config-text").render())
        assert "meta" in config and "title = first try" in config and "tags = #robust" in config
        assert "line one" in config and "line two" in config and "archived = no" in config
        # e edits this run
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, AnnotateScreen))
        modal = app.screen
        assert modal.query_one("#annotate-title", Input).value == "first try"
        assert modal.query_one("#annotate-tags", Input).value == "robust"
        await pilot.press("tab", *" table1", "enter")
        await wait_for(pilot, lambda: app.screen is scr)
        assert rd.meta().tags == ["robust", "table1"] and rd.meta().note == "line one\nline two"
        await wait_for(pilot, lambda: "#robust #table1" in header(), timeout=10)


async def test_help_lists_the_new_keys_and_the_filter_expressions(store):
    from tui.screens.help import NOTES, HelpScreen, sections

    app = make_app(store.home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        if app.screen is not app.runs_screen:  # an empty store opens the presets
            await pilot.press("escape")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        listed = dict(sections(app))
        runs = dict(listed["Runs"])
        assert (runs["e"], runs["x"], runs["A"], runs["D"]) == ("Edit", "Archive/restore", "Archived", "Diff")
        assert dict(listed["Run detail"])["e"] == "Edit"
        assert "Swap sides" in dict(listed["Diff"]).values() and "Save" in dict(listed["Edit title/tags/note"]).values()
    assert "method.lam > 0.1" in NOTES and "#robust" in NOTES and "A shows only the archived runs" in NOTES
