"""Bounded parsers and plans: hostile or runaway input is one line and exit code 2, never a
traceback, a hang or a run folder.

`--where` (engine.report.query: MAX_LENGTH, MAX_DEPTH, MAX_TERMS, MAX_NUMBER), preset files
(engine.config.schema.load_toml: MAX_TOML_BYTES, MAX_TOML_DEPTH; engine.config.presets: `extends`
by resolved path, MAX_EXTENDS, broken files listed as broken), plans (engine.config.presets:
MAX_RUNS / ADVLC_MAX_RUNS, counted before planning; seeds within schema.SEED_MAX) and the
integer fields of the config (each has an upper bound). No test trains.
"""

from __future__ import annotations

import dataclasses
import re
import time

import pytest

from engine.config import presets as P
from engine.config import schema as C
from engine.errors import UserError
from engine.report import query as Q
from helpers import cli, one_line


@pytest.fixture(autouse=True)
def no_runs_created(monkeypatch):
    """Every command here must stop before a run is created: creating one (and so training or
    starting a process, e.g. when a limit is removed to check its test) fails the test at once."""
    import engine.launch.supervisor as supervisor
    import tui.cli.runs as cli_runs

    def refuse(*_a, **_k):
        raise AssertionError("the command went on to create runs")

    monkeypatch.setattr(supervisor, "create_runs", refuse)
    monkeypatch.setattr(cli_runs, "create_runs", refuse)


def runs_written(home) -> list:
    """The run folders of the store (none may be written by a refused command)."""
    d = home / "runs"
    return sorted(d.iterdir()) if d.is_dir() else []


def refused(home, *args, code: int = 2) -> str:
    """`advlc ARGS` fails with exactly one line and exit `code`, writing no run: the line."""
    rc, _out, err = cli(*args)
    assert rc == code, (rc, err[-2000:])
    line = one_line(err)
    assert runs_written(home) == []
    return line


def user_preset(home, name: str, text: str):
    d = home / "presets"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.toml").write_text(text)
    return f"user/{name}"


# --------------------------------------------------------------------------- --where

WHERE_COMMANDS = ["runs", "compare", "report"]


def _where(cmd, text, tmp_path):
    """`advlc CMD --where TEXT` (report: into a folder under tmp_path, which must not be made)."""
    return [cmd, "--where", text] + (["--out", str(tmp_path / "rep")] if cmd == "report" else [])


@pytest.mark.parametrize("cmd", WHERE_COMMANDS)
@pytest.mark.parametrize(
    "text, says",
    [
        ("(" * 1000 + "seed == 0" + ")" * 1000, "characters long, at most 2000"),
        ("not " * 1000 + "archived", "characters long, at most 2000"),
        (" or ".join(["seed == 0"] * 9000), "characters long, at most 2000"),
        ("seed == " + "9" * 5000, "characters long, at most 2000"),
    ],
    ids=["1000-parens", "1000-nots", "9000-or", "5000-digits"],
)
def test_where_reported_inputs_are_one_line(home, tmp_path, cmd, text, says):
    """The inputs of the report: each is one line on runs, compare and report (MAX_LENGTH)."""
    line = refused(home, *_where(cmd, text, tmp_path))
    assert says in line and "--where" in line
    assert len(line) < 300  # the expression is shown by its start, not in full
    assert not (tmp_path / "rep").exists()


def test_where_length_limit(home):
    """MAX_LENGTH: 2,000 characters pass the length check, 2,001 do not."""
    ok = "seed == 0" + " " * (Q.MAX_LENGTH - 9)
    assert Q.parse(ok).matches({"seed": 0})
    line = refused(home, "runs", "--where", ok + " ")
    assert line.endswith(f"the expression is {Q.MAX_LENGTH + 1} characters long, at most {Q.MAX_LENGTH} are allowed")


@pytest.mark.parametrize(
    "text",
    [
        "(" * 600 + "seed == 0" + ")" * 600,  # under MAX_LENGTH: only the depth limit stops it
        "not " * 450 + "archived",
        "seed in " + "[" * 900 + "]" * 900,
    ],
    ids=["parens", "nots", "lists"],
)
def test_where_depth_limit(home, text):
    """MAX_DEPTH: parentheses, `not`s and lists nest at most 32 deep (parsing recursed per level)."""
    assert len(text) <= Q.MAX_LENGTH
    line = refused(home, "runs", "--where", text)
    assert f"nested more than {Q.MAX_DEPTH} deep" in line


def test_where_depth_limit_edge():
    """32 levels of each kind parse and evaluate; 33 do not."""
    assert Q.parse("(" * 32 + "seed == 0" + ")" * 32).matches({"seed": 0})
    assert Q.parse("not " * 32 + "archived").matches({"archived": True}) is True
    assert Q.parse("not " * 31 + "archived").matches({"archived": True}) is False
    with pytest.raises(UserError, match="nested more than 32 deep"):
        Q.parse("not " * 33 + "archived")


def test_where_term_limit(home):
    """MAX_TERMS: a long `or` chain (the 9,000-term one, cut to fit MAX_LENGTH) is one line."""
    text = " or ".join(["0"] * 300)
    assert len(text) <= Q.MAX_LENGTH
    line = refused(home, "runs", "--where", text)
    assert f"more than {Q.MAX_TERMS} values" in line
    chain = " or ".join(["seed == 7"] * 128)  # 256 values: allowed, and evaluated without recursing per term
    assert Q.parse(chain).matches({"seed": 7}) and not Q.parse(chain).matches({"seed": 1})


def test_where_at_its_limits_selects_runs(home):
    """An expression at the limits (256 values in an `or` chain, 32 levels deep) selects from a store."""
    import json

    from fabricate import build_store

    build_store(home, n_runs=3, n_epochs=2, n_running=0, seeds=3)
    chain = " or ".join(["seed == 9"] * 127 + ["seed == 1"])
    deep = "(" * 31 + "not seed == 0 and not seed == 2" + ")" * 31
    for text in (chain, deep, "not " * 32 + "seed == 1"):
        rc, out, err = cli("runs", "--json", "--where", text, code=0)
        assert [r["seed"] for r in json.loads(out)] == [1], (text[:40], err)


def test_where_number_limit(home):
    """MAX_NUMBER: a number literal has at most 32 characters (the 5,000-digit one, cut to fit)."""
    line = refused(home, "runs", "--where", "seed == " + "9" * 1500)
    assert f"a number of 1500 characters (at most {Q.MAX_NUMBER})" in line and "column 9" in line
    assert Q.parse("seed == " + "1" * 32).matches({"seed": int("1" * 32)})


# --------------------------------------------------------------------------- preset files


@pytest.mark.parametrize("spelling", ["user/me.toml", "user/me", "{abs}"])
def test_extends_itself_by_any_spelling_is_circular(home, spelling):
    """`extends` naming its own file (with .toml, without, by absolute path): one line, compared by resolved path."""
    path = home / "presets" / "me.toml"
    ref = user_preset(home, "me", f'[preset]\nextends = "{spelling.format(abs=path)}"\n')
    line = refused(home, "run", ref)
    assert "me.toml: preset.extends" in line and "circular" in line


def test_extends_cycle_of_two_files(home):
    user_preset(home, "a", '[preset]\nextends = "user/b"\n')
    user_preset(home, "b", '[preset]\nextends = "user/a.toml"\n')
    line = refused(home, "run", "user/a")
    assert "circular" in line and "a.toml -> " in line and "b.toml -> " in line


def test_extends_chain_length_limit(home):
    """MAX_EXTENDS: a chain of distinct files longer than 32 (each recursion a Python frame) is one line."""
    n = P.MAX_EXTENDS + 5
    for i in range(n):
        parent = f"user/c{i + 1}" if i + 1 < n else "quick/digits-fgsm_n"
        user_preset(home, f"c{i}", f'[preset]\nextends = "{parent}"\n')
    line = refused(home, "run", "user/c0")
    assert f"the extends chain is longer than {P.MAX_EXTENDS} presets" in line


def test_extends_not_a_string(home):
    ref = user_preset(home, "five", "[preset]\nextends = 5\n")
    line = refused(home, "run", ref)
    assert line.endswith("five.toml: preset.extends = 5: must be a preset name (a string)")


@pytest.mark.parametrize(
    "body, key",
    [
        ('preset = "x"\n', "preset"),
        ("train = 3\n", "train"),
        ('slurm = "gpu"\n[preset]\nextends = "quick/digits-fgsm_n"\n', "slurm"),
    ],
)
def test_known_table_given_as_a_value(home, body, key):
    """`[preset]` (or a section, or [slurm]) written as a plain value: one line naming the file and key."""
    ref = user_preset(home, "flat", body)
    line = refused(home, "run", ref)
    assert f"flat.toml: '{key}' must be a table [{key}]" in line


@pytest.mark.parametrize(
    "depth, says", [(5000, "nested too deeply for the parser"), (300, "values nested more than 16 deep")]
)
def test_deeply_nested_toml_array(home, depth, says):
    """5,000 levels make tomllib raise RecursionError; 300 parse but would recurse later (hash, copies)."""
    ref = user_preset(
        home, "deep", "[preset]\ndescription = 'x'\n[train]\nlr_milestones = " + "[" * depth + "]" * depth + "\n"
    )
    line = refused(home, "run", ref)
    assert "deep.toml: " in line and says in line


def test_toml_parser_failure_of_any_kind_is_one_line(home, monkeypatch):
    """Any exception of the parser (not only TOMLDecodeError) is one line naming the file."""
    ref = user_preset(home, "odd", "[preset]\n")

    def boom(text):
        raise IndexError("parser bug")

    monkeypatch.setattr(C.tomllib, "loads", boom)
    line = refused(home, "preset", "show", ref)
    assert "odd.toml: cannot be parsed as TOML (IndexError: parser bug)" in line


def test_preset_file_size_limit(home):
    ref = user_preset(home, "huge", "[preset]\ndescription = '" + "x" * C.MAX_TOML_BYTES + "'\n")
    line = refused(home, "run", ref)
    assert f"larger than the {C.MAX_TOML_BYTES} a preset file may have" in line


def test_deep_set_value_is_one_line(home):
    line = refused(home, "run", "quick/digits-fgsm_n", "--set", "train.lr_milestones=" + "[" * 5000 + "]" * 5000)
    assert "--set train.lr_milestones=…: the value cannot be read" in line
    line = refused(home, "run", "quick/digits-fgsm_n", "--set", "train.lr_milestones=" + "[" * 20 + "]" * 20)
    assert f"nested more than {C.MAX_TOML_DEPTH} deep" in line


def test_broken_user_presets_are_listed_and_do_not_break_others(home):
    """Broken files in the user's folder: `advlc presets` lists them as broken with the reason; other
    presets show and plan; an unknown name still gets its one line (its hints list every preset)."""
    user_preset(home, "deep", "[x]\ny = " + "[" * 5000 + "]" * 5000 + "\n")
    user_preset(home, "self", '[preset]\nextends = "user/self.toml"\n')
    user_preset(home, "five", "[preset]\nextends = 5\n")
    user_preset(home, "flat", 'preset = "x"\n')
    user_preset(home, "orphan", '[preset]\nextends = "user/nothere"\n')
    user_preset(home, "good", '[preset]\nextends = "quick/digits-fgsm_n"\ndescription = "fine"\n')
    entries = {e.name: e for e in P.list_presets(home)}
    for name, why in [
        ("user/deep", "nested too deeply"),
        ("user/self", "circular"),
        ("user/five", "must be a preset name"),
        ("user/flat", "must be a table [preset]"),
        ("user/orphan", "no preset 'user/nothere'"),
    ]:
        assert why in entries[name].error and entries[name].description.startswith("(broken: "), entries[name]
    assert entries["user/good"].error == "" and entries["user/good"].description == "fine"
    rc, out, err = cli("presets", "--json", code=0)
    assert "Traceback" not in err and '"user/deep"' in out and "(broken: " in out
    cli("presets", code=0)
    cli("preset", "show", "user/good", code=0)
    cli("preset", "show", "quick/digits-fgsm_n", code=0)
    assert len(P.preset_runs("user/good", home=home)) == 1
    assert "no preset 'user/nosuch'" in refused(home, "run", "user/nosuch")
    assert runs_written(home) == []


# --------------------------------------------------------------------------- plans


def test_sweep_cap_is_counted_before_planning(home, monkeypatch):
    """A 100 x 100 x 100 sweep (planned point by point it took > 15 minutes) is refused at once."""
    vals = ", ".join(str(i / 1000) for i in range(100))
    ref = user_preset(
        home,
        "grid",
        '[preset]\nextends = "quick/digits-fgsm_n-advlc"\n[sweep]\n'
        f'"method.lam" = [{vals}]\n"attack.eps" = [{vals}]\n"train.lr" = [{vals}]\n',
    )
    planned = []
    real = C.from_dict

    def counting(*a, **k):  # planning point by point past the cap fails at once, not in 15 minutes
        planned.append(1)
        assert len(planned) <= P.MAX_RUNS, "points planned past the cap"
        return real(*a, **k)

    monkeypatch.setattr(C, "from_dict", counting)
    t0 = time.monotonic()
    line = refused(home, "run", ref, "--detach")
    assert time.monotonic() - t0 < 10 and planned == []
    assert "[sweep] of 100 x 100 x 100 points x 1 seed" in line and "1000000 runs, more than the 1000" in line
    assert "ADVLC_MAX_RUNS=N" in line


def test_seeds_cap(home, monkeypatch):
    """--seeds has no cap of its own: the plan's (points x seeds) refuses it, before planning."""
    monkeypatch.setattr(P, "_with_seed", lambda *a: pytest.fail("seeds planned past the cap"))
    line = refused(home, "run", "quick/digits-fgsm_n", "--seeds", "1000000000000", "--detach")
    assert "1 point x 1000000000000 seeds (--seeds)" in line and "more than the 1000" in line


def test_run_cap_raised_by_environment(home, monkeypatch):
    """ADVLC_MAX_RUNS raises (or lowers) the cap; a bad value is one line naming the variable."""
    ref = user_preset(
        home,
        "small",
        '[preset]\nextends = "quick/digits-fgsm_n-advlc"\n[sweep]\n"method.lam" = [0.1, 0.2, 0.3]\nseeds = 2\n',
    )
    assert len(P.preset_runs(ref, home=home)) == 6
    monkeypatch.setenv("ADVLC_MAX_RUNS", "5")
    assert "[sweep] of 3 points x 2 seeds ([sweep] seeds) is 6 runs, more than the 5" in refused(home, "run", ref)
    assert len(P.preset_runs(ref, home=home, limit=6)) == 6
    monkeypatch.setenv("ADVLC_MAX_RUNS", "6")
    assert len(P.preset_runs(ref, home=home)) == 6
    monkeypatch.setenv("ADVLC_MAX_RUNS", "lots")
    assert "environment variable ADVLC_MAX_RUNS='lots': must be an integer" in refused(home, "run", ref)


def test_detached_cpu_runs_cap(home, monkeypatch):
    """--detach starts every CPU run at once: more than ADVLC_MAX_DETACHED (32) is refused before any is created."""
    local = pytest.importorskip("engine.launch.executors.local")
    if not hasattr(local, "check_concurrency"):
        pytest.skip("needs the engine/launch/executors/local.py change (check_concurrency)")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    line = refused(home, "run", "quick/digits-fgsm_n", "--seeds", "40", "--detach", "--device", "cpu")
    assert "starting 40 detached CPU runs" in line and f"more than the {local.MAX_DETACHED} allowed" in line
    monkeypatch.setenv("ADVLC_MAX_DETACHED", "3")
    line = refused(home, "run", "quick/digits-fgsm_n", "--seeds", "4", "--detach", "--device", "cpu")
    assert "ADVLC_MAX_DETACHED=N" in line


# --------------------------------------------------------------------------- seeds and integers


@pytest.mark.parametrize(
    "args, says",
    [
        (["--set", f"train.seed={2**70}"], f"train.seed = {2**70}: must be between 0 and 4294967295"),
        (["--set", f"train.seed={2**32}"], "train.seed = 4294967296: must be between 0 and 4294967295"),
        (["--set", f"data.split_seed={2**32}"], "data.split_seed = 4294967296: must be between 0 and 4294967295"),
        (["--seed", str(2**32)], "'--seed'"),
        (["--seed", str(2**32 - 1), "--seeds", "2"], "the last seed would be 4294967296"),
    ],
    ids=["2**70", "2**32", "split_seed", "--seed", "seed+seeds"],
)
def test_seed_range(home, args, says):
    """Seeds are 0 ... 2**32-1 (numpy's RandomState; torch.manual_seed takes up to 2**64-1 and the
    trainer's seed + 1 + 1_000_003 * (epoch + 1) stays below it); a seed past it failed the run."""
    line = refused(home, "run", "quick/digits-fgsm_n", *args)
    assert says in line and "4294967295" in line


def test_seed_edge_plans(home):
    runs = P.preset_runs("quick/digits-fgsm_n", [f"train.seed={C.SEED_MAX - 1}"], seeds=2, home=home)
    assert [r.seed for r in runs] == [C.SEED_MAX - 1, C.SEED_MAX]
    from tui.cli import runs as cli_runs

    assert cli_runs.SEED_MAX == C.SEED_MAX


def _int_fields():
    for section, cls in C.section_classes().items():
        hints = C.field_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, list[int]):
                yield f"{section}.{f.name}", hints[f.name]


INT_FIELDS = list(_int_fields())


@pytest.mark.parametrize("key, tp", INT_FIELDS, ids=[k for k, _ in INT_FIELDS])
def test_every_integer_field_has_an_upper_bound(key, tp):
    """No integer field takes 2**70 (a batch of 2**70 images failed the run; torch takes int64 at most)."""
    value = f"[{2**70}]" if tp == list[int] else str(2**70)
    with pytest.raises(UserError, match=re.escape(f"--set {key}={value}: {key} = ") + ".*: must be (between|<=)"):
        C.build({}, "x", [f"{key}={value}"])


@pytest.mark.parametrize(
    "key", ["train.batch_size", "train.epochs", "eval.batch_size", "data.n_train", "train.lr_milestones"]
)
def test_huge_integers_on_the_command_line(home, key):
    value = f"[{2**70}]" if key == "train.lr_milestones" else str(10**30)
    line = refused(home, "run", "quick/digits-fgsm_n", "--set", f"{key}={value}")
    assert f"{key} = " in line and "must be between" in line


def test_slots_per_gpu_bound(home):
    line = refused(home, "run", "quick/digits-fgsm_n", "--slots-per-gpu", str(10**9), "--gpus", "0")
    assert "--slots-per-gpu" in line
