"""Strings from a run store are data, never terminal instructions or markup.

A store copied from someone else can hold a title that retitles the window (OSC 0), a note that
clears the screen (CSI 2J), console markup that writes a hyperlink, an error line with colour
codes, HTML in a note. Every place that shows them (advlc show / runs / logs / compare, the report,
the app) shows the characters instead (engine.printable, as `cat -v` does), and titles, tags and
notes refuse control characters when they are typed.
"""

from __future__ import annotations

import json

import pytest
from helpers import cli, one_line

from engine.printable import printable
from engine.store.files import write_json
from engine.store.index import Store
from fabricate import fabricate_run

OSC_TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J\x1b[H"
LINK = "[link=https://evil.example]click[/link]"
RLO = "\u202e"
EVIL = [OSC_TITLE, CLEAR, "\x1b[31m", "\x9b", "\x07", RLO]


def test_printable_shows_control_characters_as_cat_v_does():
    assert printable(OSC_TITLE) == "^[]0;pwned^G"
    assert printable(CLEAR) == "^[[2J^[[H"
    assert printable("\x9b1m") == "M-^[1m"  # C1 CSI, one byte in latin-1 terminals
    assert printable("\x7f") == "^?"
    assert printable(f"abc{RLO}def") == "abc<U+202E>def"
    assert printable("a\tb") == "a\tb"  # tabs are kept
    assert printable("a\nb") == "a^Jb" and printable("a\nb", multiline=True) == "a\nb"
    assert printable("plain — ünïcode ✓") == "plain — ünïcode ✓"
    assert printable(None) == "None" and printable(0.5) == "0.5"


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    """A store as an archive could bring it: every human string is hostile."""
    home = tmp_path / "home"
    monkeypatch.setenv("ADVLC_HOME", str(home))
    store = Store(home).ensure()
    rd = fabricate_run(
        store,
        "0000beef",
        preset="quick/digits-fgsm_n",
        seed=0,
        group="g",
        total=3,
        done=3,
        state="failed",
        created=1_700_000_000,
    )
    write_json(
        rd.meta_path,
        {
            "title": f"baseline{OSC_TITLE}{LINK}",
            "tags": [f"t{RLO}x"],
            "note": f"first line\n{CLEAR}<script>alert(1)</script>\n{LINK}",
        },
    )
    st = json.loads(rd.status_path.read_text())
    st["error"] = "Traceback\n\x1b[31mRuntimeError: boom\x1b[0m" + OSC_TITLE
    write_json(rd.status_path, st)
    rd.log_path.write_text(f"epoch 0\n{OSC_TITLE}{CLEAR}spoofed line\n\x1b[1A\x1b[2Kepoch 1\n")
    store.reindex()
    return store, rd


def _clean(text: str):
    for bad in EVIL:
        assert bad not in text, (bad, text)


def test_the_cli_shows_hostile_strings_as_text(hostile):
    store, rd = hostile
    _, out, err = cli("show", rd.id, code=0)
    _clean(out + err)
    assert "^[]0;pwned^G" in out and "^[[2J" in out and "<U+202E>" in out
    assert LINK in out  # shown as typed, not turned into a hyperlink
    _, out, err = cli("runs", code=0)
    _clean(out + err)
    _, out, err = cli("logs", rd.id, code=0)
    _clean(out + err)
    assert "^[[1A^[[2Kepoch 1" in out  # the cursor-up + erase that would hide a line
    _, out, err = cli("compare", rd.id, "--include-unfinished", code=0)
    _clean(out + err)


def test_the_report_escapes_html_and_markdown(hostile, tmp_path):
    store, rd = hostile
    cli("report", rd.id, "--out", str(tmp_path / "rep"), "--format", "html", "--include-unfinished")
    html = (tmp_path / "rep" / "report.html").read_text()
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '<a href="https://evil' not in html
    _clean(md + html)


@pytest.mark.parametrize(
    "args", [["label", "X", "title\x1b]0;x\x07"], ["note", "X", "--text", "a\x1b[2Jb"], ["tag", "X", "+a\u202eb"]]
)
def test_titles_tags_and_notes_refuse_control_characters(hostile, args):
    store, rd = hostile
    args = [rd.id if a == "X" else a for a in args]
    before = rd.meta_path.read_bytes()
    rc, _, err = cli(*args)
    assert rc != 0
    line = one_line(err)
    assert "\x1b" not in line and "\u202e" not in line
    assert rd.meta_path.read_bytes() == before
    cli("note", rd.id, "--text", "two\nlines\twith a tab", code=0)  # newlines and tabs are fine
    assert rd.meta().note == "two\nlines\twith a tab"


async def test_the_app_shows_hostile_strings_as_text(hostile):
    from tui.app import make_app

    store, rd = hostile
    app = make_app(store.home)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(200):
            if rd.id in app.runs_screen._ids:
                break
            await pilot.pause(0.05)
        table = app.runs_screen.query_one("#runs-table")
        cells = [table.get_cell(rd.id, col) for col in ("preset", "title")]
        _clean("".join(c.plain for c in cells))
        assert "^[]0;pwned^G" in cells[1].plain
        await pilot.press("enter")
        for _ in range(200):
            if getattr(app.screen, "history", None) is not None and app.screen.history.meta.title:
                break
            await pilot.pause(0.05)
        header = app.screen.query_one("#detail-header").render()
        _clean(str(header))
        assert "^[]0;pwned^G" in str(header)
