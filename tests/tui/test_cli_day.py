"""A day over SSH at 80 columns: the command line fits the terminal (and gives whole lines when
piped), `show` and `logs` find the run you mean, every command of the README's tour parses, `eval`
says what it is doing, filters in percent are explained, `diff` and `repair` say what matters.

Everything runs in this process on fabricated stores (engine.store.synthetic), no training; the
one evaluation uses an untrained digits CNN on 20 images."""

from __future__ import annotations

import json
import re
import sys
import tarfile
import time
from pathlib import Path

import pytest
from helpers import cli, force_status, one_line

from fabricate import build_store, fabricate_run

from engine.facade import run_summary
from engine.store.index import Store

ROOT = Path(__file__).resolve().parents[2]
WIDTH = 80


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty store at 80 columns."""
    h = tmp_path / "home"
    monkeypatch.setenv("ADVLC_HOME", str(h))
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    return h


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """12 runs of 100 epochs: 6 presets x 2 seeds, the last one running."""
    return build_store(tmp_path_factory.mktemp("synth"), n_runs=12, n_epochs=100, n_running=1, seeds=2)


def _at(monkeypatch, store, columns: int | None = WIDTH):
    monkeypatch.setenv("ADVLC_HOME", str(store.home))
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)  # piped: stdout here is not a terminal
    else:
        monkeypatch.setenv("COLUMNS", str(columns))


def _fits(text: str, width: int = WIDTH) -> None:
    long = [line for line in text.splitlines() if len(line.rstrip()) > width]
    assert not long, "\n".join(long)


# ---------------------------------------------------------------------------- 1. widths
def test_presets_fit_80_columns_and_are_whole_when_piped(monkeypatch, tmp_path):
    from engine.facade import list_presets

    monkeypatch.setenv("ADVLC_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "80")
    _, out, _ = cli("presets", code=0)
    _fits(out)
    assert "…" in out  # long descriptions end in … at 80
    monkeypatch.delenv("COLUMNS")
    _, piped, _ = cli("presets", code=0)
    assert "…" not in piped
    longest = max(list_presets(), key=lambda e: len(e.description))
    line = next(ln for ln in piped.splitlines() if ln.startswith(longest.name + " "))
    assert line.endswith(longest.description), line  # whole, and no padding after it


def test_preset_show_lists_the_sweep_points_and_warns_of_a_decay_that_never_happens(home):
    _, out, err = cli("preset", "show", "quick/robust-overfitting", code=0)
    assert "plan: 2 runs: pgd, pgd+advlc × seed 0" in out
    points = [ln.split() for ln in out.splitlines() if "→" in ln]
    assert points == [["method.name", "=", '"pgd"', "→", "pgd"], ["method.name", "=", '"advlc"', "→", "pgd+advlc"]]
    assert err == ""  # milestones [40, 80] < 100 epochs
    _, out, err = cli("preset", "show", "quick/robust-overfitting", "--set", "train.epochs=20", code=0)
    assert err.strip() == (
        "advlc: warning: train.epochs = 20 with train.lr_milestones = [40, 80]: the lr never "
        "decays (robust overfitting shows after the first decay)"
    )
    _, out, _ = cli("preset", "show", "quick/robust-overfitting", "--set", "train.epochs=60", "--json", code=0)
    doc = json.loads(out)
    assert doc["caveats"] == [
        "train.epochs = 60 with train.lr_milestones = [40, 80]: the decay at epoch 80 never happens"
    ]
    assert [p["label"] for p in doc["points"]] == ["pgd", "pgd+advlc"]
    _, out, err = cli("preset", "show", "quick/digits-pgd10", code=0)  # no sweep: no points listed
    assert "[sweep]" not in out and "plan: 1 run: pgd × seed 0" in out


def test_caveats_of_swa_and_of_milestones_at_the_last_epoch():
    from engine.facade import caveats, load_preset

    _, cfg, _ = load_preset("quick/digits-fgsm_n-advlc-swa")
    assert caveats(cfg) == []
    cfg.train.epochs = cfg.swa.start  # the first update would come after the last epoch
    assert any("SWA starts at epoch" in c for c in caveats(cfg))
    cfg.train.lr_milestones, cfg.train.epochs = [4], 5
    assert not any("decay" in c for c in caveats(cfg))  # epoch 4 is the last one: it decays
    cfg.train.epochs = 4
    assert any("never decays" in c for c in caveats(cfg))


def test_queue_tables_piped_have_no_padding(monkeypatch, home):
    """Piped (no COLUMNS), a table's last column is not padded with spaces."""
    from engine import facade

    info = {
        "host": "h",
        "scheduler_pid": 12,
        "queued": [],
        "leases": [
            {"gpu": 0, "slot": 0, "run": "0000aaaa", "pid": 5, "since": 0, "live": True},
            {"gpu": 1, "slot": 0, "run": "0000bbbb", "pid": 6, "since": 0, "live": False},
        ],
        "slurm": [
            {
                "id": "0000cccc",
                "state": "queued",
                "job_id": 7,
                "slurm_state": "PENDING",
                "nodes": "",
                "reason": "Priority",
                "partition": "gpu",
                "time": 90,
                "squeue": True,
                "cluster": "c",
            }
        ],
    }
    monkeypatch.setattr(facade, "queue_info", lambda store: info)
    monkeypatch.setattr("tui.cli.supervise.queue_info", lambda store: info)
    monkeypatch.delenv("COLUMNS")
    _, out, _ = cli("queue", code=0)
    assert "gone (stale)" in out and "Priority" in out
    assert [ln for ln in out.splitlines() if ln != ln.rstrip()] == []


def test_compare_fits_80_columns_and_is_whole_when_piped(monkeypatch, synth):
    _at(monkeypatch, synth)
    _, out, _ = cli("compare", "--preset", "paper", code=0)
    _fits(out)
    assert "Robust end" in out and "Time (s/batch)" in out  # blocks, not cut columns
    _at(monkeypatch, synth, None)
    _, piped, _ = cli("compare", "--preset", "paper", code=0)
    head = next(ln for ln in piped.splitlines() if ln.startswith("Training"))
    assert len(head) > 100 and "Clean best" in head and "Time (s/batch)" in head  # one line per row


def test_run_summary_fits_80_columns_and_no_progress_line_is_left(monkeypatch, home, capsys):
    """The end of `advlc run`: the epoch lines, the progress bar (gone) and the summary."""
    from tui.cli import common

    store = Store(home).ensure()
    rds = [
        fabricate_run(
            store,
            "0000aaaa",
            preset="quick/digits-fgsm_n-advlc",
            seed=0,
            group=None,
            total=4,
            done=4,
            state="finished",
            created=time.time(),
        ),
        fabricate_run(
            store,
            "0000bbbb",
            preset="quick/digits-fgsm_n-advlc",
            seed=1,
            group=None,
            total=4,
            done=2,
            state="stopped",
            created=time.time(),
        ),
    ]
    common.fit_consoles()
    with common.Progress("0000aaaa") as progress:
        progress.event("start", {"epochs": 4, "start_epoch": 0, "batches": 29})
        for r in rds[0].epochs():
            progress.event("batch", {"batch": 29})
            progress.event("epoch", dict(r))
    common.print_summary(rds)
    out = capsys.readouterr().out
    _fits(out)
    assert "…" not in out, out  # no header or number cut
    assert "━" not in out and not re.search(r"^\s*(epoch|batch)\s", out, re.M), out  # no stale bar
    epochs = [ln for ln in out.splitlines() if ln.startswith("0000aaaa ep")]
    assert len(epochs) == 4 and all(re.search(r"robust .* \d+\.\ds$", ln) for ln in epochs), out  # one line each
    assert "best/end" in out and "fgsm_n+advlc" in out and "(stopped)" in out
    s = run_summary(rds[0])
    assert f"{100 * s['robust_best']:.2f}/{100 * s['robust_end']:.2f}" in out
    assert out.splitlines()[4].startswith("accuracy % at best")  # right after the epochs: no blank line


def _screen(stream: str) -> list[str]:
    """What a terminal shows after `stream`: text, \\r, \\n, cursor up (ESC[nA) and erase line (ESC[2K);
    other escape sequences (colours, the cursor's visibility) change nothing visible here."""
    lines, row, col = [""], 0, 0
    for tok in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", stream):
        if tok == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif tok == "\r":
            col = 0
        elif tok.startswith("\x1b["):
            if tok[-1] == "A":
                row = max(0, row - int(tok[2:-1] or 1))
            elif tok[-1] == "K":
                lines[row] = ""
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + tok + line[col + len(tok) :]
            col += len(tok)
    return [ln.rstrip() for ln in lines]


def test_in_a_terminal_the_progress_bar_goes_when_the_run_ends(monkeypatch, home):
    """The bar is drawn while the run trains and erased when it ends: the screen keeps the epoch
    lines and the summary, no stale `epoch ━━━ 4/4` line."""
    import io

    from rich.console import Console

    from tui.cli import common

    store = Store(home).ensure()
    rd = fabricate_run(
        store,
        "0000aaaa",
        preset="quick/digits-fgsm_n-advlc",
        seed=0,
        group=None,
        total=4,
        done=4,
        state="finished",
        created=time.time(),
    )
    monkeypatch.setenv("TERM", "xterm-256color")
    buf = io.StringIO()
    monkeypatch.setattr(
        common, "out", Console(file=buf, force_terminal=True, width=WIDTH, highlight=False, soft_wrap=False)
    )
    with common.Progress(rd.id) as progress:
        progress.event("start", {"epochs": 4, "start_epoch": 0, "batches": 29})
        for r in rd.epochs():
            progress.event("batch", {"batch": 29})
            progress.p.refresh()  # drawn, as the refresh thread would
            progress.event("epoch", dict(r))
            live = Console(file=io.StringIO(), width=WIDTH, color_system=None)
            live.print(progress.p.get_renderable())  # the live bar as an 80-column screen shows it
            bar = live.file.getvalue().splitlines()[0]
            info = progress.p.tasks[0].fields["info"]  # "clean 82.55 robust 47.38 IG 20.1"
            assert "IG" in info and bar.rstrip().endswith(info) and len(bar) <= WIDTH, bar  # the numbers, uncut
    common.print_summary([rd])
    assert "━" in buf.getvalue()  # the bar was there
    shown = [ln for ln in _screen(buf.getvalue()) if ln]
    assert not any("━" in ln for ln in shown), "\n".join(shown)
    assert [ln[:11] for ln in shown[:4]] == ["0000aaaa ep"] * 4 and shown[4].startswith("accuracy % at best")
    assert all(len(ln) <= WIDTH for ln in shown)


# ---------------------------------------------------------------------------- 2. show at 80
def test_show_fits_80_columns_and_lists_the_last_epochs(monkeypatch, home):
    store = Store(home).ensure()
    recs = [
        {
            "epoch": e,
            "lr": 0.1,
            "train_loss": 1.23456,
            "train_acc": 0.5,
            "clean_loss": 1.0,
            "clean_acc": 0.6543,
            "robust_loss": 1.5,
            "robust_acc": 0.4321,
            "av": 0.5,
            "ig": 12.345,
            "hs": 1.23456e-6 * (e + 1),
            "time_s": 20.0,
            "images_per_s": 100.0,
        }
        for e in range(100)
    ]
    fabricate_run(
        store,
        "0000cccc",
        preset="paper/table1/pgd10",
        seed=0,
        group=None,
        total=100,
        done=100,
        state="finished",
        created=time.time(),
        epochs_override=recs,
    )
    _, out, _ = cli("show", "0000cccc", code=0)
    _fits(out)
    assert "…" not in out, out
    rows = [ln.split() for ln in out.splitlines() if re.match(r"^\s+\d+\s+0\.1\s", ln)]
    assert [int(r[0]) for r in rows] == list(range(90, 100))
    assert rows[-1][8] == "1.23e-04" and rows[0][8] == "1.12e-04"  # HS whole, in 8 characters
    assert "90 earlier epochs left out" in out and "--last 0" in out
    _, out, _ = cli("show", "0000cccc", "--last", "3", code=0)
    assert len([ln for ln in out.splitlines() if re.match(r"^\s+\d+\s+0\.1\s", ln)]) == 3
    _, out, _ = cli("show", "0000cccc", "--last", "0", code=0)
    assert len([ln for ln in out.splitlines() if re.match(r"^\s+\d+\s+0\.1\s", ln)]) == 100
    assert "left out" not in out
    _, out, _ = cli("show", "0000cccc", "--json", code=0)
    assert len(json.loads(out)["epochs"]) == 100  # --json has them all


def test_show_gives_tiny_numbers_a_compact_form():
    from tui.cli.common import compact

    assert compact(0.000123456) == "1.23e-04" and compact(12.345) == "12.35" and compact(123456.0) == "1.23e+05"
    assert all(len(compact(v)) <= 8 for v in (0.000123456, 0.0123456, 1234.5678, 9999.9, 99999.0, -0.00042, -99999.0))


# ---------------------------------------------------------------------------- 3. the most recent run
def test_show_and_logs_default_to_the_most_recent_run(monkeypatch, home):
    rc, _, err = cli("show")
    assert rc == 2 and "no runs" in one_line(err)
    store = Store(home).ensure()
    t0 = time.time()
    for i, rid in enumerate(("0000dddd", "0000eeee", "0000ffff")):
        fabricate_run(
            store,
            rid,
            preset="quick/digits-pgd10",
            seed=i,
            group=None,
            total=3,
            done=3,
            state="finished",
            created=t0 + i if rid != "0000eeee" else t0 + 10,
        )
    store.reindex()
    _, out, err = cli("show", code=0)
    assert out.startswith("0000eeee ") and one_line(err).startswith("advlc: show 0000eeee, the most recent run")
    _, out, err = cli("logs", code=0)
    assert "logs 0000eeee" in one_line(err)
    assert out == Store(home).get("0000eeee").log_path.read_text()
    _, out, err = cli("show", "0000dddd", code=0)
    assert out.startswith("0000dddd ") and err == ""


# ---------------------------------------------------------------------------- 4. docs and parser agree
def _tour() -> list[str]:
    """The command lines of the README's tour block (continuation lines of options joined)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## A tour of the command line", 1)[1].split("```", 2)[1]
    lines: list[str] = []
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        synopsis = re.split(r"\s{3,}", line.strip(), maxsplit=1)[0] if line.strip() else ""
        if line.startswith("advlc"):
            lines.append(synopsis)
        elif synopsis and indent < 40 and lines:  # a synopsis continued
            lines[-1] += " " + synopsis
    return lines


def _parse(tokens: list[str], i: int = 0, close: str | None = None):
    """tokens -> (alternatives: [[item, …], …], next index); an item is a word or ("group", alternatives)."""
    alts, seq = [], []
    while i < len(tokens):
        t = tokens[i]
        if t == close:
            return alts + [seq], i + 1
        if t == "[":
            group, i = _parse(tokens, i + 1, "]")
            seq.append(("group", group))
            continue
        if t == "¦":
            alts.append(seq)
            seq = []
        else:
            seq.append(t)
        i += 1
    return alts + [seq], i


def _expand(alts) -> list[list[str]]:
    """Each alternative with every optional group present (one variant per alternative inside it)."""
    variants = []
    for seq in alts:
        partial = [[]]
        for item in seq:
            ways = _expand(item[1]) if isinstance(item, tuple) else [[item]]
            partial = [p + w for p in partial for w in ways]
        variants += partial
    return variants


def _value(token: str, after_option: bool) -> str:
    """A placeholder (RUN, N, FILE.tar.gz, "TITLE", …) as a value that parses; choices: the first."""
    word = token.strip('"').rstrip("…")
    if word in ("N", "S"):
        return "1"
    if token == "…" or re.match(r"^[A-Z][A-Z0-9_]*(\b|$)", word):
        return "x"
    return word.split("|")[0] if after_option else word


def tour_invocations() -> list[tuple[str, list[str], list[str]]]:
    """(README line, command path, arguments) for each form a tour line names."""
    import typer.main

    from tui.cli import app

    commands = typer.main.get_command(app).commands
    found = []
    for line in _tour():
        text = re.sub(r"\s\|\s", " ¦ ", line[len("advlc") :])
        raw = re.findall(r'\[|\]|¦|"[^"]*"|[^\s\[\]¦]+', text)
        tokens = [t for k, t in enumerate(raw) if not (t == "…" and k and raw[k - 1] == "]")]  # ]… repeats
        alts, _ = _parse(tokens)
        path: list[str] = []
        for alt in alts:
            if alt and isinstance(alt[0], str) and alt[0] in commands:
                path, alt = [alt[0]], alt[1:]
                if hasattr(commands[path[0]], "commands"):  # a group: `preset show`, `bench steps`
                    path, alt = [path[0], alt[0]], alt[1:]
            for words in _expand([alt]):
                args = [_value(w, k > 0 and words[k - 1].startswith("-")) for k, w in enumerate(words)]
                found.append((line, list(path), args))
    return found


def test_every_command_line_of_the_readme_tour_parses():
    """Every command, option and value shape the tour names is what the parser takes: a renamed
    or missing option (`note --edit`, `pack --preset` were once only in the README) fails here."""
    import typer.main

    from tui.cli import app

    try:
        from typer._click.exceptions import MissingParameter, UsageError
    except ImportError:  # pragma: no cover
        from click.exceptions import MissingParameter, UsageError
    root = typer.main.get_command(app)
    invocations = tour_invocations()
    assert len(invocations) >= 35, invocations
    named = {tuple(p) for _, p, _ in invocations}
    assert {("note",), ("pack",), ("show",), ("logs",), ("preset", "show"), ("compare",), ("eval",)} <= named
    bad = []
    for line, path, args in invocations:
        ctx = root.make_context("advlc", [])
        cmd = root
        for name in path:
            cmd = cmd.get_command(ctx, name)
            assert cmd is not None, (line, path)
            ctx = cmd.make_context(name, [], parent=ctx, resilient_parsing=True) if hasattr(cmd, "commands") else ctx
        if not path:  # `advlc` and `advlc --version`
            opts = {o for p in root.params for o in p.opts}
            bad += [(line, a) for a in args if a not in opts]
            continue
        opts = {o for p in cmd.params for o in p.opts}
        bad += [(line, a) for a in args if a.startswith("--") and a not in opts]
        try:
            cmd.make_context(path[-1], list(args), parent=ctx)
        except MissingParameter:
            pass  # `pack RUN…` without -o: the option is on the line's other form
        except UsageError as exc:
            bad.append((line, " ".join(path + args), exc.format_message()))
    assert not bad, "\n".join(map(str, bad))


def test_version(home):
    from importlib.metadata import version

    _, out, _ = cli("--version", code=0)
    assert out == f"advlc {version('advlc')}\n"


def test_note_edit_opens_the_editor(monkeypatch, home, tmp_path):
    store = Store(home).ensure()
    fabricate_run(
        store,
        "0000abab",
        preset="quick/digits-pgd10",
        seed=0,
        group=None,
        total=2,
        done=2,
        state="finished",
        created=time.time(),
    )
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys\np = sys.argv[1]\ntext = open(p).read()\n"
        "open(p, 'w').write(text + 'written in the editor\\nsecond line\\n')\n"
    )
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    _, out, _ = cli("note", "0000abab", "--text", "first", code=0)
    _, out, _ = cli("note", "0000abab", "--edit", code=0)
    assert store.get("0000abab").meta().note.strip() == "firstwritten in the editor\nsecond line"
    assert "note: firstwritten in the editor" in out
    rc, _, err = cli("note", "0000abab", "--edit", "--text", "x")
    assert rc == 2 and "not both" in one_line(err)
    monkeypatch.delenv("EDITOR")
    rc, _, err = cli("note", "0000abab", "--edit")
    assert rc == 2 and "$EDITOR" in one_line(err)


def test_pack_preset_packs_that_presets_ended_runs(monkeypatch, home, tmp_path):
    store = Store(home).ensure()
    t0 = time.time()
    for i, (preset, state) in enumerate(
        [
            ("quick/digits-pgd10", "finished"),
            ("quick/digits-pgd10", "stopped"),
            ("quick/digits-pgd10", "running"),
            ("quick/digits-fgsm_n", "finished"),
        ]
    ):
        fabricate_run(
            store, f"0000{i:04x}", preset=preset, seed=i, group=None, total=2, done=2, state=state, created=t0 + i
        )
    store.reindex()
    archive = tmp_path / "runs.tar.gz"
    _, out, err = cli("pack", "--preset", "quick/digits-pgd10", "-o", str(archive), code=0)
    assert "packed 2 run(s)" in out and "left out 1 run(s) still going: 00000002" in one_line(err)
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("advlc-pack.json"))
    assert manifest["runs"] == ["00000000", "00000001"]
    rc, _, err = cli("pack", "--preset", "no/such", "-o", str(tmp_path / "b.tar.gz"))
    assert rc == 2 and "no runs of that preset" in one_line(err)
    rc, _, err = cli("pack", "-o", str(tmp_path / "c.tar.gz"))
    assert rc == 2 and "--preset" in one_line(err)


def test_a_title_shows_in_runs_at_80_columns(monkeypatch, synth, tmp_path):
    """`advlc label --help` says titles show in `advlc runs`: they do, in a column of their own."""
    _at(monkeypatch, synth)
    _, help_text, _ = cli("label", "--help", code=0)
    assert "advlc runs" in help_text
    try:
        cli("label", "00000003", "lambda sweep, best so far", code=0)
        _, out, _ = cli("runs", code=0)
        _fits(out)
        line = next(ln for ln in out.splitlines() if ln.startswith("00000003"))
        assert "lambda sweep" in line and "title" in out.splitlines()[0] + out.splitlines()[1]
        assert len([ln for ln in out.splitlines() if ln.startswith("0000")]) == 12
    finally:
        cli("label", "00000003", "", code=0)


# ---------------------------------------------------------------------------- 5. eval's progress
@pytest.fixture
def untrained(home):
    """A digits run whose best.pt is an untrained CNN made confident in class 6 (3 of the first 20
    test images): AutoAttack's APGD-CE breaks all three, so the whole evaluation takes a second."""
    import torch

    from engine.config.presets import preset_runs
    from engine.config.schema import from_json
    from engine.launch.supervisor import create_runs
    from engine.nn.models import build_model
    from engine.run.checkpoints import save

    store = Store(home).ensure()
    [rd] = create_runs(store, preset_runs("quick/digits-pgd10", ["train.epochs=1"]))
    torch.manual_seed(0)
    model = build_model(from_json(rd.config_json()).model, num_classes=10, in_channels=1, image_size=8)
    weight, bias = list(model.parameters())[-2:]
    with torch.no_grad():
        weight.mul_(10)
        bias.zero_()
        bias[6] = 0.1
    save({"model": model.state_dict(), "epoch": 0, "robust_acc": 0.0, "clean_acc": 0.15}, rd.ckpt("best"))
    force_status(rd, state="finished")
    store.sync(rd)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield rd
    torch.set_num_threads(n)


def test_eval_shows_each_sub_attack_the_estimate_and_the_image_count(untrained):
    rd = untrained
    _, out, err = cli("eval", rd.id, "--n", "20", code=0)
    lines = err.splitlines()
    _fits(out)
    assert (
        out.splitlines()[0] == f"best (epoch 0) aa: robust 0.00 % on 20 images, clean 15.00 %  "
        f"({rd.evals()[0]['time_s']:.1f} s)"
    )
    assert lines[0].startswith(f"eval {rd.id} best (epoch 0): aa on 20 test images")
    warn = next(k for k, ln in enumerate(lines) if ln.startswith("advlc: warning: aa on a CPU may take"))
    assert "estimate" in lines[warn] and "3 correctly classified images" in lines[warn]
    done = next(k for k, ln in enumerate(lines) if ln.strip().startswith("apgd-ce: robust 0.00 %"))
    assert warn < done  # the warning comes before the attack
    assert "remaining sub-attacks are skipped" in err
    # PGD: one line per batch when stderr is not a terminal
    _, out, err = cli("eval", rd.id, "--n", "20", "--attack", "pgd20", "--batch-size", "8", code=0)
    assert [ln.strip() for ln in err.splitlines() if "batch" in ln] == [
        "pgd20 batch 1/3",
        "pgd20 batch 2/3",
        "pgd20 batch 3/3",
    ]
    assert "warning" not in err and "robust 0.00 % on 20 images" in out
    _, out, _ = cli("eval", rd.id, "--n", "20", "--attack", "pgd20", "--json", code=0)
    assert json.loads(out)[0]["n"] == 20  # stdout: the JSON document alone


def test_the_estimate_is_an_estimate_from_n_and_steps():
    from tui.cli.evaluate import PASSES_PER_IMAGE, duration, estimate_line

    line = estimate_line("aa", 100, 0.001)
    upper = 100 * PASSES_PER_IMAGE["aa"] * 3 * 0.001
    assert f"up to about {duration(upper)}" in line and "estimate" in line and "100 correctly" in line
    assert duration(40) == "40 s" and duration(600) == "10 min" and duration(3 * 3600) == "3.0 h"
    assert len(line.splitlines()) == 1


# ---------------------------------------------------------------------------- 6. filters in percent
def test_a_filter_in_percent_says_accuracies_are_fractions(monkeypatch, synth):
    _at(monkeypatch, synth)
    _, out, err = cli("runs", "--where", "best_robust_acc > 60", code=0)
    assert out.splitlines()[0] == "no runs match --where 'best_robust_acc > 60' (12 runs in the store)"
    assert out.splitlines()[1].startswith("hint: accuracies are fractions") and "0.6 for 60 %" in out
    _, out, err = cli("runs", "--where", "best_robust_acc > 0.3", code=0)
    assert len([ln for ln in out.splitlines() if ln.startswith("0000")]) == 12 and err == ""
    _, out, err = cli("runs", "--where", "best_robust_acc < 60", code=0)  # matches, but surely not meant
    assert "accuracies are fractions" in one_line(err)
    _, out, _ = cli("runs", "--where", "seed > 5", code=0)
    assert out.strip() == "no runs match --where 'seed > 5' (12 runs in the store)"
    rc, _, err = cli("compare", "--where", "best_robust_acc > 60")
    assert rc == 2 and "no selected run matches" in one_line(err) and "accuracies are fractions" in err


# ---------------------------------------------------------------------------- 7. diff and repair
def test_diff_shows_accuracies_in_percent_with_a_delta(monkeypatch, synth):
    _at(monkeypatch, synth)
    _, out, _ = cli("diff", "00000000", "00000002", code=0)
    _fits(out)
    a, b = (run_summary(synth.get(r)) for r in ("00000000", "00000002"))
    row = next(ln for ln in out.splitlines() if ln.startswith("best_robust_acc"))
    assert row.split() == [
        "best_robust_acc",
        "%",
        f"{100 * a['robust_best']:.2f}",
        f"{100 * b['robust_best']:.2f}",
        f"{100 * (b['robust_best'] - a['robust_best']):+.2f}",
    ]
    assert "Δ" in out and "A: 00000000" in out and "B: 00000002" in out


def test_repair_on_a_healthy_store_says_so_in_one_line(monkeypatch, tmp_path):
    store = build_store(tmp_path / "h", n_runs=3, n_epochs=4, n_running=0, seeds=1)
    _at(monkeypatch, store)
    _, out, _ = cli("repair", code=0)  # fabricated runs lack the copy of config.json: made now
    assert "kept a copy of config.json" in out and "healthy" not in out
    _, out, _ = cli("repair", code=0)
    assert out.splitlines() == [f"healthy: 3 run(s) checked in {store.home}, nothing to repair"]
    store.run_dir("00000001").status_path.write_text("{")
    _, out, _ = cli("repair", code=0)
    assert "00000001  repaired: status.json" in out and "healthy" not in out
