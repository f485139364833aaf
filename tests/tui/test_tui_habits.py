"""Habits of htop, k9s, less and TensorBoard in the app, at 80x24 and 120x40 on fabricated stores.

Plots: an epoch window (`+` `-` `0`), an epoch cursor whose readout is checked against the epoch
records by hand, a log y axis. The log tab: follow / pause, wrap, search. The Runs screen: find
(`f`, `F`), sort by any column from the keyboard (`<` `>`), the sort and filter remembered across
restarts (and a damaged state file ignored with a notification). Every wait is for a condition.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from engine.store.index import Store
from tui.app import STATE_FILE, AppState, make_app
from tui.screens.run_detail import LogView, RunDetailScreen
from tui.screens.runs import SORT_OF_COLUMN, SORTS
from tui.widgets.metric_plot import MetricPlot, fmt_value

from test_tui_day import SIZES, burst, fab, ids, screen_lines, table, wait_for


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "home").ensure()


HS = {2: 1e-6, 5: 3e-4, 8: 0.01, 11: 0.07}
"""HS is recorded every third epoch and spans 1e-6 to 0.07 (the reason for a log axis)."""


def records(n: int = 12) -> list[dict]:
    """Epoch records whose every value tells its epoch and metric apart."""
    return [
        {
            "epoch": e,
            "lr": 0.1 if e < 8 else 0.01,
            "train_loss": 2.0 - 0.1 * e,
            "train_acc": 0.30 + 0.02 * e,
            "clean_loss": 1.5 - 0.05 * e,
            "clean_acc": 0.40 + 0.015 * e,
            "robust_loss": 2.2 - 0.03 * e,
            "robust_acc": 0.20 + 0.011 * e,
            "av": 0.7 - 0.02 * e,
            "ig": 40.0 + e,
            "hs": HS.get(e),
            "time_s": 2.0,
            "eval_time_s": 1.0,
            "images_per_s": 100.0,
        }
        for e in range(n)
    ]


async def open_detail(app, pilot, rid: str) -> RunDetailScreen:
    await wait_for(pilot, lambda: rid in ids(app))
    while app.runs_screen.cursor_id() != rid:
        await pilot.press("down")
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
    return app.screen


def drawing(plot: MetricPlot) -> str:
    """The plot's drawing (the text plotext made), once it is the one of the current data and view."""
    return plot.render().plain


# ---------------------------------------------------------------------------- 1. plots
@pytest.mark.parametrize("size", SIZES)
async def test_plot_cursor_readout_matches_the_epoch_records(store, size):
    recs = records()
    fab(store, "0000c0c0", total=12, done=12, epochs_override=recs)
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        scr = await open_detail(app, pilot, "0000c0c0")
        acc, hs = scr.plots["acc"], scr.plots["hs"]
        await wait_for(pilot, lambda: "robust" in acc.series and acc.drawn, what="the accuracy plot drawn")
        assert app.focused is acc  # the plot's keys work from the start
        await pilot.press("left")  # the cursor starts at the last epoch in view
        await wait_for(pilot, lambda: acc.cursor == 11)
        assert acc.readout() == [
            ("clean", pytest.approx(100 * (0.40 + 0.015 * 11))),
            ("robust", pytest.approx(100 * (0.20 + 0.011 * 11))),
            ("train", pytest.approx(100 * (0.30 + 0.02 * 11))),
        ]
        await pilot.press("left", "left", "left", "right", "left")
        await wait_for(pilot, lambda: acc.cursor == 8)
        r = recs[8]
        # by hand, from the records: every plot's cursor is on epoch 8 and reads that epoch's values
        for pid in scr.plots:
            await wait_for(pilot, lambda: scr.plots[pid].cursor == 8, what=f"{pid} follows the cursor")
        assert dict(acc.readout()) == pytest.approx(
            {"clean": 100 * r["clean_acc"], "robust": 100 * r["robust_acc"], "train": 100 * r["train_acc"]}
        )
        assert dict(scr.plots["loss"].readout()) == pytest.approx(
            {"train": r["train_loss"], "clean": r["clean_loss"], "robust": r["robust_loss"], "AV": r["av"]}
        )
        assert scr.plots["ig"].readout() == [("IG", pytest.approx(48.0))]
        assert hs.readout() == [("HS", pytest.approx(0.01))]
        assert scr.plots["lr"].readout() == [("lr", pytest.approx(0.01))]
        text = acc.readout_text()
        assert (
            text
            == (
                f"epoch 8: clean {fmt_value(100 * r['clean_acc'])}  robust {fmt_value(100 * r['robust_acc'])}"
                f"  train {fmt_value(100 * r['train_acc'])}"
            )
            == "epoch 8: clean 52  robust 28.8  train 46"
        )
        await wait_for(
            pilot,
            lambda: any("epoch 8: clean 52  robust 28.8" in ln for ln in screen_lines(app)),
            what="the readout in the plot's border",
        )
        latest = scr.query_one("#detail-latest", Static)
        await wait_for(pilot, lambda: "▸ cursor epoch 8:" in str(latest.render()))
        assert "robust 28.8%" in str(latest.render()) and "HS 0.01" in str(latest.render())
        # on the HS plot the cursor steps over the epochs HS was recorded at; an epoch without one reads —
        await pilot.press("tab", "tab", "tab")
        await wait_for(pilot, lambda: app.focused is hs)
        await pilot.press("left")
        await wait_for(pilot, lambda: acc.cursor == 5 and hs.cursor == 5)
        assert hs.readout() == [("HS", pytest.approx(3e-4))] and "epoch 5: HS 0.0003" == hs.readout_text()
        scr.plots["ig"].set_view(cursor=6)
        assert scr.plots["ig"].readout() == [("IG", pytest.approx(46.0))] and hs.readout() != []
        hs.set_view(cursor=6)
        assert hs.readout() == [("HS", None)] and hs.readout_text() == "epoch 6: HS —"


@pytest.mark.parametrize("size", SIZES)
async def test_plot_epoch_window_narrows_widens_and_resets_every_plot(store, size):
    fab(store, "0000c0c1", total=12, done=12, epochs_override=records())
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        scr = await open_detail(app, pilot, "0000c0c1")
        acc = scr.plots["acc"]
        await wait_for(pilot, lambda: "robust" in acc.series and acc.drawn)
        assert acc.x_range() == (0, 11)
        await pilot.press(*["left"] * 10)  # the last epoch, then 9 back
        await wait_for(pilot, lambda: acc.cursor == 2)
        await pilot.press("plus")  # the last 6 epochs; the cursor comes into view
        await wait_for(pilot, lambda: all(p.x_range() == (6, 11) for p in scr.plots.values()))
        assert acc.window == 6 and acc.cursor == 6 and scr.plots["hs"].cursor == 6
        await wait_for(pilot, lambda: acc.drawn)
        assert "epochs 6–11" in acc.border_subtitle
        ticks = drawing(acc).splitlines()[-1].split()
        assert ticks[0] == "6" and ticks[-1] == "11", ticks  # the x axis is the window's
        await pilot.press("equals_sign")  # `=` is `+` unshifted: 3 epochs
        await wait_for(pilot, lambda: scr.plots["lr"].x_range() == (9, 11))
        await pilot.press("left", "left", "left")
        await wait_for(pilot, lambda: acc.cursor == 9)  # the cursor stays in the window
        await pilot.press("minus")
        await wait_for(pilot, lambda: scr.plots["ig"].x_range() == (6, 11))
        await pilot.press("minus")  # 12 epochs: all of them (HS is recorded from epoch 2 on)
        await wait_for(
            pilot,
            lambda: all(p.window is None and p.x_range() == (2 if k == "hs" else 0, 11) for k, p in scr.plots.items()),
        )
        await pilot.press("plus", "0")
        await wait_for(pilot, lambda: all(p.window is None and p.cursor is None for p in scr.plots.values()))
        latest = scr.query_one("#detail-latest", Static)
        await wait_for(pilot, lambda: str(latest.render()).startswith("epoch 11:"))
        # a new epoch: a window of the last N epochs follows the tail
        await pilot.press("plus")
        await wait_for(pilot, lambda: acc.x_range() == (6, 11))
        rd = store.run_dir("0000c0c1")
        rd.metrics_db().table("epochs", cache_size=0).insert(dict(records(13)[12]))
        await wait_for(pilot, lambda: acc.x_range() == (7, 12), what="the window moved with the new epoch")


@pytest.mark.parametrize("size", SIZES)
async def test_log_y_changes_the_axis_of_the_focused_plot(store, size):
    fab(store, "0000c0c2", total=12, done=12, epochs_override=records())
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        scr = await open_detail(app, pilot, "0000c0c2")
        hs = scr.plots["hs"]
        await wait_for(pilot, lambda: "HS" in hs.series and hs.drawn)
        linear = drawing(hs)
        assert "1e-" not in linear
        hs.focus()
        await wait_for(pilot, lambda: app.focused is hs)
        await pilot.press("y")
        await wait_for(pilot, lambda: hs.log_y and hs.drawn)
        log = drawing(hs)
        labels = [ln.split("┤")[0].strip() for ln in log.splitlines() if "┤" in ln]
        assert labels == ["1e-2", "1e-3", "1e-4", "1e-5", "1e-6"], labels  # a tick per decade, 1e-6 … 0.07
        assert "log y" in hs.border_title and not scr.plots["acc"].log_y  # the focused plot only
        # the curve is drawn in log10: 1e-6 sits on the lowest tick's row, 0.07 above 1e-2's
        rows = log.splitlines()
        row_of = {lab: i for i, ln in enumerate(rows) for lab in [ln.split("┤")[0].strip()] if "┤" in ln}
        assert row_of["1e-2"] < row_of["1e-6"]
        assert hs.series["HS"].ys == pytest.approx([HS[e] for e in sorted(HS)])  # the data are unchanged
        await wait_for(
            pilot,
            lambda: any("1e-6┤" in ln.replace(" ", "") for ln in screen_lines(app)),
            what="the log axis on screen",
        )
        await pilot.press("y")
        await wait_for(pilot, lambda: not hs.log_y and hs.drawn)
        assert "1e-" not in drawing(hs) and "log y" not in hs.border_title


def test_log_ticks_and_values_not_above_zero():
    from tui.widgets.metric_plot import log_ticks

    assert log_ticks(math.log10(0.01), math.log10(0.1))[1] == ["1e-2", "2e-2", "5e-2", "1e-1"]
    pos, lab = log_ticks(math.log10(0.032), math.log10(0.063))  # under one decade: the ends and 5e-2
    assert lab == ["0.032", "5e-2", "0.063"] and pos[1] == pytest.approx(math.log10(0.05))


# ---------------------------------------------------------------------------- 2. the log tab
def write_log(rd, lines: list[str]) -> None:
    rd.log_path.write_text("".join(line + "\n" for line in lines))


LONG = "epoch 299 " + "x" * 380 + " TAIL-END"


def log_lines() -> list[str]:
    out = []
    for i in range(300):
        out.append(
            f"step {i:3d} loss {1.0 / (i + 1):.4f}"
            + ("  loss NaN, skipped" if i in (40, 150, 260) else "")
            + ("  queue wait" if i == 77 else "")
        )
    out[-1] = LONG
    return out


def on_screen(app, text: str) -> bool:
    return any(text in ln for ln in screen_lines(app))


@pytest.mark.parametrize("size", SIZES)
async def test_log_follows_the_tail_until_scrolled_up_and_G_resumes(store, size):
    rd = fab(store, "0000106a", total=12, done=12, epochs_override=records())
    write_log(rd, log_lines())
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        scr = await open_detail(app, pilot, "0000106a")
        await pilot.press("l")
        view = scr.query_one("#log", LogView)
        status = scr.query_one("#log-status", Static)
        await wait_for(pilot, lambda: len(view.lines) == 300 and app.focused is view)
        await wait_for(pilot, lambda: view.scroll_y == view.max_scroll_y > 0 and on_screen(app, "step 298"))
        assert view.following and "● following the tail" in str(status.render())
        with open(rd.log_path, "a") as fh:
            fh.write("fresh line one\n")
        await wait_for(pilot, lambda: on_screen(app, "fresh line one"), what="a new line scrolled into view")
        await pilot.press("pageup")  # scrolling up pauses
        await wait_for(pilot, lambda: not view.following and "⏸ paused" in str(status.render()))
        y = view.scroll_y
        with open(rd.log_path, "a") as fh:
            fh.write("".join(f"while paused {i}\n" for i in range(7)))
        await wait_for(pilot, lambda: len(view.lines) == 308 and "(7 new lines)" in str(status.render()))
        assert view.scroll_y == y and not on_screen(app, "while paused 6")  # the view stayed put
        await wait_for(pilot, lambda: any("paused" in ln and "G or end follows" in ln for ln in screen_lines(app)))
        await pilot.press("G")
        await wait_for(pilot, lambda: view.following and on_screen(app, "while paused 6"))
        assert view.scroll_y == view.max_scroll_y and "● following" in str(status.render())
        await pilot.press("up", "end")  # up pauses, end follows again
        await wait_for(pilot, lambda: view.following and view.scroll_y == view.max_scroll_y)
        await pilot.press("home")
        await wait_for(pilot, lambda: not view.following and on_screen(app, "step   0 loss"))


@pytest.mark.parametrize("size", SIZES)
async def test_log_wraps_long_lines(store, size):
    rd = fab(store, "0000106b", total=12, done=12, epochs_override=records())
    write_log(rd, log_lines())
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        scr = await open_detail(app, pilot, "0000106b")
        await pilot.press("l")
        view = scr.query_one("#log", LogView)
        await wait_for(pilot, lambda: len(view.lines) == 300 and on_screen(app, "epoch 299 xxx"))
        assert not view.wrap and not on_screen(app, "TAIL")  # one row per line: the end is off to the right
        rows = len(view._rows)
        await pilot.press("w")
        width = view.scrollable_content_region.width
        # (the wrap may fall inside TAIL-END itself)
        await wait_for(
            pilot, lambda: view.wrap and on_screen(app, "TAIL") and on_screen(app, "END"), what="the wrapped tail"
        )
        assert len(view._rows) == rows - 1 + math.ceil(len(LONG) / width)
        assert "wrap on" in str(scr.query_one("#log-status", Static).render()) and view.following
        await pilot.press("w")
        await wait_for(pilot, lambda: not view.wrap and not on_screen(app, "TAIL"))
        assert len(view._rows) == rows


@pytest.mark.parametrize("size", SIZES)
async def test_log_search_jumps_highlights_and_n_goes_on(store, size):
    rd = fab(store, "0000106c", total=12, done=12, epochs_override=records())
    write_log(rd, log_lines())
    store.reindex()
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        scr = await open_detail(app, pilot, "0000106c")
        await pilot.press("l")
        view = scr.query_one("#log", LogView)
        status = scr.query_one("#log-status", Static)
        await wait_for(pilot, lambda: len(view.lines) == 300 and view.scroll_y == view.max_scroll_y > 0)
        await pilot.press("home")
        # one burst: `/`, the text (lower case: any case), enter, then `n` — every key lands where it was typed
        burst(app, "slash", *"nan", "enter", "n")
        await wait_for(pilot, lambda: view.search == "nan" and view.current == 1, what="the second match")
        assert [m[0] for m in view.matches] == [40, 150, 260]
        await wait_for(pilot, lambda: on_screen(app, "step 150 loss") and "match 2/3" in str(status.render()))
        assert not view.following and app.screen is scr
        # the current match is drawn in the current-match style, the others in the match style
        row = view._first_row[150]
        line = view.lines[150]
        a = line.index("NaN")
        strip = view._row_strip(row)
        cur_style = view.get_component_rich_style("log-view--match-current")
        hit_style = view.get_component_rich_style("log-view--match")
        assert [seg.text for seg in strip if seg.style and seg.style.bgcolor == cur_style.bgcolor] == ["NaN"]
        assert [
            seg.text
            for seg in view._row_strip(view._first_row[40])
            if seg.style and seg.style.bgcolor == hit_style.bgcolor
        ] == ["NaN"]
        assert line[a : a + 3] == "NaN"
        await pilot.press("n")
        await wait_for(pilot, lambda: view.current == 2 and on_screen(app, "step 260 loss"))
        await pilot.press("n")  # past the last: back to the first
        await wait_for(pilot, lambda: view.current == 0 and "(wrapped)" in str(status.render()))
        assert on_screen(app, "step  40 loss")
        await pilot.press("N")
        await wait_for(pilot, lambda: view.current == 2)
        # letters that are keys elsewhere (q quits, e edits, w wraps) are search text after `/`
        burst(app, "slash", *"queue w", "enter")
        await wait_for(pilot, lambda: view.search == "queue w" and view.current == 0)
        assert app.is_running and app.screen is scr and not view.wrap
        await wait_for(pilot, lambda: on_screen(app, "step  77 loss"))
        # capitals match their case only; esc cancels a search being typed
        burst(app, "slash", *"NAN", "enter")
        await wait_for(pilot, lambda: view.search == "NAN" and "/NAN: no match" in str(status.render()))
        assert view.matches == []
        burst(app, "slash", *"step")
        await wait_for(pilot, lambda: view.prompt == "step" and "/step▏" in str(status.render()))
        burst(app, "escape")
        await wait_for(pilot, lambda: view.prompt is None)
        assert view.search == "NAN" and app.screen is scr


async def test_log_keeps_its_last_lines_and_a_paused_view_stays_on_its_lines():
    from textual.app import App

    class One(App):
        def compose(self):
            yield LogView(max_lines=50, id="log")

    app = One()
    async with app.run_test(size=(60, 12)) as pilot:
        view = app.query_one(LogView)
        view.write_lines([f"line {i} {'hit' if i % 10 == 0 else ''}" for i in range(40)])
        view.set_search("hit")
        assert [m[0] for m in view.matches] == [0, 10, 20, 30]
        await wait_for(
            pilot, lambda: view.following and view.scroll_y == view.max_scroll_y > 0 and view.allow_vertical_scroll
        )  # laid out
        view.scroll_to(y=0, animate=False, immediate=True)  # scrolled up: paused
        assert not view.following
        view.jump(first=True)
        view.jump(step=1)
        view.jump(step=1)  # the match on line 20, paused there
        await wait_for(pilot, lambda: not view.following and view.current == 2)
        top = view.lines[view._rows[int(view.scroll_y)][0]]
        view.write_lines([f"line {i} {'hit' if i % 10 == 0 else ''}" for i in range(40, 60)])  # 60 > 50 + 5
        assert len(view.lines) == 50 and view.lines[0] == "line 10 hit" and view.lines[-1] == "line 59 "
        assert [m[0] for m in view.matches] == [0, 10, 20, 30, 40] and view.current == 1  # still line 20's
        assert int(top.split()[1]) >= 10  # a line that stays
        await wait_for(pilot, lambda: view.lines[view._rows[int(view.scroll_y)][0]] == top)  # the same lines shown
        assert view.new_while_paused == 20
        view.clear()
        assert view.lines == [] and view.matches == [] and view._rows == []


# ---------------------------------------------------------------------------- 3. the Runs screen
def six_runs(store):
    specs = [
        ("0000a001", "quick/digits-fgsm_n", 0, "first"),
        ("0000a002", "quick/digits-fgsm_n-advlc", 0, "second"),
        ("0000a003", "quick/digits-pgd10", 1, "third"),
        ("0000a004", "quick/digits-fgsm_n-advlc", 1, "fourth"),
        ("0000a005", "quick/digits-fgsm_n", 2, "fifth"),
        ("0000a006", "quick/digits-fgsm_n-advlc", 2, "sixth"),
    ]
    for k, (rid, preset, seed, title) in enumerate(specs):
        rd = fab(store, rid, preset=preset, seed=seed, created=time.time() - 1000 + 10 * k)
        store.annotate(rd, title=f"{title} run")
    store.reindex()
    return [s[0] for s in specs]


@pytest.mark.parametrize("size", SIZES)
async def test_find_jumps_the_cursor_without_filtering(store, size):
    six_runs(store)
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        scr = app.runs_screen
        await wait_for(
            pilot, lambda: ids(app) == ["0000a006", "0000a005", "0000a004", "0000a003", "0000a002", "0000a001"]
        )
        await pilot.press("down")
        await wait_for(pilot, lambda: scr.cursor_id() == "0000a005")
        burst(app, "f", *"advlc", "enter", "F")  # in one burst: from the cursor on, a004; then F: a002
        await wait_for(pilot, lambda: scr.cursor_id() == "0000a002", what="the second advlc run from the cursor")
        assert len(ids(app)) == 6 and not scr.query_text  # every run still shown
        assert table(app).has_focus and not scr.query_one("#runs-find").has_class("-active")
        await pilot.press("F")  # wraps around to the top
        await wait_for(pilot, lambda: scr.cursor_id() == "0000a006")
        await pilot.press("f", *"fifth", "enter")  # by title
        await wait_for(pilot, lambda: scr.cursor_id() == "0000a005")
        await pilot.press("f", *"a003")  # by id, as typed (the cursor moves with each key)
        await wait_for(pilot, lambda: scr.cursor_id() == "0000a003")
        await pilot.press(*"zz")
        box = scr.query_one("#runs-find", Input)
        await wait_for(pilot, lambda: box.has_class("-error"))
        assert scr.cursor_id() == "0000a003"  # nothing matches: the cursor stays
        await pilot.press("escape")
        await wait_for(pilot, lambda: table(app).has_focus and not box.has_class("-active"))
        await pilot.press("g")
        await wait_for(pilot, lambda: scr.cursor_id() == "0000a006")
        await pilot.press("G")
        await wait_for(pilot, lambda: scr.cursor_id() == "0000a001")
        await pilot.press("k")
        await wait_for(pilot, lambda: scr.cursor_id() == "0000a002")


def sorted_ids(store, key: str, desc: bool) -> list[str]:
    fn = next(s[2] for s in SORTS if s[0] == key)
    rows = [r for r in store.runs()]
    return [r["id"] for r in sorted(rows, key=fn, reverse=desc)]


@pytest.mark.parametrize("size", SIZES)
async def test_sort_by_any_column_from_the_keyboard(store, size):
    six_runs(store)
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        scr = app.runs_screen
        await wait_for(pilot, lambda: len(ids(app)) == 6)
        shown = [c for c in table(app).shown_columns if c in SORT_OF_COLUMN]
        assert shown[:4] == ["id", "preset", "seed", "state"]
        if size == (120, 40):
            assert {"clean", "ig", "hs", "launched"} <= set(shown)
        await pilot.press("greater_than_sign")  # from the launch time (hidden when narrow: the first column)
        visited = [scr.sort_column()]
        for _ in range(len(shown)):
            await pilot.press("greater_than_sign")
            visited.append(scr.sort_column())
        k = shown.index(visited[0])
        assert visited == (shown[k:] + shown[:k]) + [visited[0]]  # every column shown, left to right, around
        # one metric by hand: IG ascending (lowest first) where shown, else the robust accuracy (highest first)
        col, key, desc = ("ig", "ig", False) if "ig" in shown else ("robust", "robust", True)
        while scr.sort_column() != col:
            await pilot.press("less_than_sign")
        want = sorted_ids(store, key, desc)
        await wait_for(pilot, lambda: ids(app) == want)
        field = "end_ig" if key == "ig" else "best_robust_acc"
        vals = {r["id"]: r[field] for r in store.runs()}
        assert [vals[i] for i in want] == sorted(vals.values(), reverse=desc)
        info = scr.query_one("#runs-info", Static)
        assert f"sort: {next(s[1] for s in SORTS if s[0] == key)}" in str(info.render())
        await pilot.press("O")
        await wait_for(pilot, lambda: ids(app) == want[::-1] and "(reversed)" in str(info.render()))
        for col in [c for c in ("seed", "clean", "hs", "preset", "id") if c in shown]:
            while scr.sort_column() != col:
                await pilot.press("greater_than_sign")
            key = SORT_OF_COLUMN[col]
            want = sorted_ids(store, key, next(s[3] for s in SORTS if s[0] == key))
            await wait_for(pilot, lambda: ids(app) == want, what=f"sorted by {col}")
        assert ids(app) == sorted(ids(app))  # by id


async def test_sort_and_filter_are_remembered_across_restarts(store):
    six_runs(store)
    state = store.home / STATE_FILE
    app = make_app(store.home)
    async with app.run_test(size=(80, 24)) as pilot:
        scr = app.runs_screen
        await wait_for(pilot, lambda: len(ids(app)) == 6)
        assert not state.exists()
        while scr.sort_column() != "seed":
            await pilot.press("greater_than_sign")
        await pilot.press("O", "slash", *"advlc", "enter")
        await wait_for(pilot, lambda: ids(app) == ["0000a006", "0000a004", "0000a002"])
        await wait_for(
            pilot,
            lambda: state.exists() and json.loads(state.read_text()).get("runs", {}).get("filter") == "advlc",
            what="the state file written",
        )
        await pilot.press("q")
    assert json.loads(state.read_text()) == {"version": 1, "runs": {"sort": "seed", "desc": True, "filter": "advlc"}}
    assert [p.name for p in store.home.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left
    app = make_app(store.home)
    async with app.run_test(size=(120, 40)) as pilot:
        scr = app.runs_screen
        await wait_for(pilot, lambda: ids(app) == ["0000a006", "0000a004", "0000a002"], what="the sort and filter back")
        assert scr.query_text == "advlc" and scr.query_one("#runs-filter", Input).value == "advlc"
        info = str(scr.query_one("#runs-info", Static).render())
        assert "sort: seed (reversed)" in info and "filter: 'advlc' (3 shown)" in info
        assert not app._notifications
        await pilot.press("escape")  # esc clears the filter: remembered too
        await wait_for(pilot, lambda: len(ids(app)) == 6)
        await wait_for(pilot, lambda: json.loads(state.read_text())["runs"]["filter"] == "")


async def test_a_remembered_expression_filter_reads_the_configs_it_needs(store):
    six_runs(store)
    (store.home / STATE_FILE).write_text(json.dumps({"version": 1, "runs": {"filter": "method.lam > 0.1"}}))
    app = make_app(store.home)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: ids(app) == ["0000a006", "0000a004", "0000a002"], what="the advlc runs")
        assert app.runs_screen.filter_query is not None


@pytest.mark.parametrize(
    "content",
    [
        b"{ not json",
        b"\xff\xfe",
        b"[1, 2]",
        json.dumps({"version": 1, "runs": {"sort": "nope", "desc": "yes", "filter": "\x1b[2J"}}).encode(),
    ],
)
async def test_a_damaged_state_file_is_ignored_with_a_notification(store, content):
    six_runs(store)
    state = store.home / STATE_FILE
    state.write_bytes(content)
    app = make_app(store.home)
    async with app.run_test(size=(80, 24)) as pilot:
        scr = app.runs_screen
        await wait_for(pilot, lambda: len(ids(app)) == 6)
        await wait_for(pilot, lambda: any(n.title == "app state" for n in app._notifications), what="a notification")
        note = next(n for n in app._notifications if n.title == "app state")
        assert STATE_FILE in note.message or "runs." in note.message
        assert "\x1b" not in note.message
        assert scr.sort_index == 0 and scr.query_text == ""  # defaults
        await pilot.press("o")  # the next change writes a good file
        await wait_for(pilot, lambda: json.loads(state.read_text() or "{}").get("runs", {}).get("sort") == "state")
        assert app.is_running


def test_state_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / STATE_FILE
    st = AppState(path)
    assert st.load() == ({}, None)
    assert st.want("runs", {"sort": "ig", "desc": False, "filter": ""})
    st.save()
    before = path.read_text()
    assert json.loads(before) == {"version": 1, "runs": {"sort": "ig", "desc": False, "filter": ""}}
    assert not st.want("runs", {"sort": "ig", "desc": False, "filter": ""})  # unchanged: nothing to write

    def fail(*_a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    assert st.want("runs", {"sort": "hs", "desc": True, "filter": "seed:1"})
    from engine.errors import UserError

    with pytest.raises(UserError, match="No space left"):
        st.save()
    assert path.read_text() == before  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]  # the temporary file removed
    assert st.failed and not st.want("runs", {"sort": "id"})  # one error, then no more tries


# ---------------------------------------------------------------------------- 4. keys are documented
def test_every_new_key_is_in_the_doc_and_the_help():
    from textual.binding import Binding

    from tui.screens.help import sections
    from tui.widgets.run_table import RunTable

    doc = (Path(__file__).resolve().parents[2] / "docs" / "APP.md").read_text()
    shown = {
        "slash": "/",
        "escape": "esc",
        "left": "←",
        "right": "→",
        "plus": "+",
        "minus": "-",
        "equals_sign": "=",
        "less_than_sign": "<",
        "greater_than_sign": ">",
        "end": "end",
        "up": "↑",
        "down": "↓",
    }
    # each widget's keys in its own rows of the keys table
    plots = doc[doc.index("| plots tab") : doc.index("| log tab")]
    log = doc[doc.index("| log tab") : doc.index("| | `w` | show / hide the SWA curves")]
    runs = doc[doc.index("| **Runs** (home)") : doc.index("| **Run detail**")]
    missing = []
    for cls, where in ((MetricPlot, plots), (LogView, log), (RunDetailScreen, doc), (RunTable, runs)):
        for b in cls.BINDINGS:
            b = b if isinstance(b, Binding) else Binding(*b)
            for key in b.key.split(","):
                if f"`{shown.get(key, key)}`" not in where:
                    missing.append(f"{cls.__name__}: {key} ({b.description})")
    assert not missing, missing
    for key in ("`f`", "`F`", "`<`", "`>`", "`g`", "`G`", "`j`", "`k`"):
        assert key in runs, key
    assert "app-state.json" in doc

    class FakeApp:
        BINDINGS = []

        def get_key_display(self, b):
            return b.key

    listed = dict(sections(FakeApp()))
    assert {"left", "right", "+", "=", "-", "0", "y"} <= {k for k, _d in listed["Run detail: plots"]}
    assert {"slash", "n", "N", "w", "G", "end"} <= {k for k, _d in listed["Run detail: log"]}
    assert {"f", "F", "<", ">", "g", "G", "j", "k"} <= {k for k, _d in listed["Runs"]}
