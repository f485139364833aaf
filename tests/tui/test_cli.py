"""The command line end to end: a real digits run, listings, and one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from engine.run.trainer import EPOCH_KEYS

ADVLC = [sys.executable, "-c", "from tui.cli import main; main()"]


def advlc(*args, home, check=True):
    env = {**os.environ, "ADVLC_HOME": str(home), "COLUMNS": "160"}
    p = subprocess.run(ADVLC + list(args), capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


@pytest.mark.slow
def test_full_digits_fgsm_n_run_through_cli(tmp_path):
    p = advlc("run", "quick/digits-fgsm_n", home=tmp_path)
    assert "robust %" in p.stdout and "best/end" in p.stdout  # the summary's two-line header
    runs = json.loads(advlc("runs", "--json", home=tmp_path).stdout)
    assert len(runs) == 1
    r = runs[0]
    assert (r["preset"], r["label"], r["state"], r["epoch"], r["seed"]) == (
        "quick/digits-fgsm_n",
        "fgsm_n",
        "finished",
        20,
        0,
    )
    show = json.loads(advlc("show", r["id"][:4], "--json", home=tmp_path).stdout)
    epochs = show["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(20))
    assert all(set(e) == set(EPOCH_KEYS) for e in epochs)
    for e in epochs:
        assert 0 <= e["clean_acc"] <= 1 and 0 <= e["robust_acc"] <= 1 and e["robust_acc"] <= e["clean_acc"]
        assert abs(e["av"] - (e["robust_loss"] - e["clean_loss"])) < 1e-9
        assert e["ig"] > 0 and e["time_s"] > 0 and e["hs"] > 0  # the digits presets record HS every epoch
    assert epochs[-1]["clean_acc"] > 0.9
    best = max(epochs, key=lambda e: (e["robust_acc"], e["epoch"]))
    assert r["best_robust_acc"] == best["robust_acc"] and r["end_robust_acc"] == epochs[-1]["robust_acc"]
    cfg = show["config"]
    assert cfg["method"]["name"] == "fgsm_n" and cfg["attack"]["name"] == "fgsm_n"
    assert cfg["provenance"]["torch"] and cfg["provenance"]["device"] == "cpu"
    run_dir = tmp_path / "runs" / r["id"]
    assert (run_dir / "checkpoints" / "last.pt").exists() and (run_dir / "checkpoints" / "best.pt").exists()
    import torch

    ck = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert ck["epoch"] == best["epoch"] and ck["robust_acc"] == best["robust_acc"]
    assert show["status"]["state"] == "finished"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["run", "no/such-preset"], "no preset 'no/such-preset'"),
        (["run", "quick/digits-pgd10", "--set", "attack.eps=1.5"], "attack.eps = 1.5"),
        (["run", "quick/digits-pgd10", "--set", "train.foo=1"], "unknown key 'train.foo'"),
        (["run", "quick/digits-pgd10", "--bogus"], "No such option"),
        (["show", "zzzz"], "no run 'zzzz'"),
        (["runs", "--status", "sleeping"], "--status sleeping"),
        (["preset", "show", "quick/nope"], "no preset"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    p = advlc(*args, home=tmp_path, check=False)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_missing_dataset_folder_fails_in_one_line(tmp_path):
    p = advlc(
        "run",
        "paper/table1/pgd10",
        "--set",
        f"data.root={tmp_path}/nowhere",
        "--set",
        "train.epochs=1",
        home=tmp_path,
        check=False,
    )
    assert p.returncode != 0
    assert "cifar-10-batches-py" in p.stderr and "Traceback" not in p.stderr + p.stdout


def test_presets_json_lists_reference():
    p = subprocess.run(ADVLC + ["presets", "--json"], capture_output=True, text=True, check=True)
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert rows["paper/table1/fgsm_n-advlc"]["reference"].startswith("Table 1")


@pytest.mark.slow
def test_ctrl_c_marks_stopped_and_keeps_last_checkpoint(tmp_path):
    import signal
    import time

    env = {**os.environ, "ADVLC_HOME": str(tmp_path), "COLUMNS": "160"}
    p = subprocess.Popen(
        ADVLC + ["run", "quick/digits-pgd10", "--set", "train.epochs=200"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    last = None
    while time.time() < deadline:
        found = list((tmp_path / "runs").glob("*/checkpoints/last.pt")) if (tmp_path / "runs").exists() else []
        if found:
            last = found[0]
            break
        time.sleep(0.2)
    assert last is not None, "no epoch finished in time"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert "Traceback" not in err, err
    status = json.loads((last.parent.parent / "status.json").read_text())
    assert status["state"] == "stopped" and last.exists()
    assert "resume" in out


# ---------------------------------------------------------------------------- 80 columns
def _store_of_presets(home, presets):
    from engine.store.index import Store
    from fabricate import fabricate_run

    store = Store(home).ensure()
    for i, preset in enumerate(presets):
        fabricate_run(
            store,
            f"{i:08x}",
            preset=preset,
            seed=i % 2,
            group=None,
            total=10,
            done=10 if i else 4,
            state="finished" if i else "running",
            created=1_700_000_000 + i,
        )
    store.reindex()
    return store


PRESETS_80 = (
    "quick/digits-fgsm_n-advlc",
    "quick/digits-fgsm_n",
    "quick/digits-pgd10-advlc",
    "quick/digits-pgd10",
    "paper/table1/fgsm_n-advlc",
    "paper/table1/fgsm_n",
    "paper/table1/pgd10-advlc",
    "paper/table1/pgd10",
)


def test_runs_at_80_columns_tells_presets_apart(tmp_path):
    _store_of_presets(tmp_path, PRESETS_80)
    env = {**os.environ, "ADVLC_HOME": str(tmp_path), "COLUMNS": "80"}
    p = subprocess.run(ADVLC + ["runs"], capture_output=True, text=True, env=env, timeout=120, check=True)
    lines = p.stdout.rstrip("\n").splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines), p.stdout
    rows = {line.split()[0]: line.split()[1] for line in lines if line[:8].isalnum() and line.startswith("0000")}
    assert len(rows) == len(PRESETS_80)  # one line per run
    shown = [rows[f"{i:08x}"] for i in range(len(PRESETS_80))]
    assert len(set(shown)) == len(PRESETS_80), shown  # every preset looks different
    for name, cell in zip(PRESETS_80, shown):
        assert cell == name or (cell.startswith("…") and name.endswith(cell[1:])) or "…" in cell, (name, cell)
    assert "running" in p.stdout and "finished" in p.stdout


def test_runs_table_keeps_the_distinctive_tail():
    from rich.console import Console

    from tui.cli.runs import runs_table, shorten, shorten_all

    assert shorten("quick/digits-fgsm_n-advlc", 20) == "…digits-fgsm_n-advlc"
    assert shorten("quick/digits-pgd10", 20) == "quick/digits-pgd10"
    # tails that would look alike: cut in the middle instead, keeping both ends
    short = shorten_all(["paper/table1/fgsm_n-advlc", "paper/table3/fgsm_n-advlc"], 12)
    assert len(set(short.values())) == 2 and all(len(v) == 12 for v in short.values())
    rows = [
        {
            "id": f"{i:08x}",
            "preset": p,
            "label": "fgsm_n+advlc",
            "seed": 0,
            "state": "finished",
            "epoch": 200,
            "epochs": 200,
            "best_robust_acc": 0.5,
            "end_robust_acc": 0.45,
            "end_clean_acc": 0.8,
            "ig": 12.3,
        }
        for i, p in enumerate(PRESETS_80)
    ]
    for width in (60, 80, 120):
        con = Console(width=width, record=True, file=__import__("io").StringIO())
        con.print(runs_table(rows, width))
        text = con.export_text()
        assert max(len(line.rstrip()) for line in text.splitlines()) <= width, text
        shown = [line.split()[1] for line in text.splitlines() if line.startswith("0000")]
        assert len(shown) == len(rows) and len(set(shown)) == len(rows), text
        if width >= 120:
            assert shown == list(PRESETS_80) and "IG" in text and "label" in text


def test_presets_at_80_columns_never_wrap_names(tmp_path):
    env = {**os.environ, "ADVLC_HOME": str(tmp_path), "COLUMNS": "80"}
    p = subprocess.run(ADVLC + ["presets"], capture_output=True, text=True, env=env, timeout=120, check=True)
    names = [
        r["name"]
        for r in json.loads(
            subprocess.run(
                ADVLC + ["presets", "--json"], capture_output=True, text=True, env=env, timeout=120, check=True
            ).stdout
        )
    ]
    lines = p.stdout.rstrip("\n").splitlines()
    assert len(lines) == len(names) + 1  # a header and one line per preset
    assert [line.split()[0] for line in lines[1:]] == names
    assert all(len(line.rstrip()) <= 80 for line in lines)


def test_bench_write_docs_refuses_outside_a_checkout(tmp_path, monkeypatch, capsys):
    """Installed, CODE_ROOT is site-packages: --write-docs must not create site-packages/docs/."""
    import tui.cli.bench
    from tui.cli import main

    monkeypatch.setattr(tui.cli.bench, "CODE_ROOT", tmp_path / "site-packages")
    with pytest.raises(SystemExit) as exc:
        main(["--home", str(tmp_path / "h"), "bench", "steps", "--write-docs"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--docs" in err and "BENCHMARKS.md" in err
    assert not (tmp_path / "site-packages").exists()


def test_runs_table_keeps_the_label_when_it_tells_a_presets_runs_apart():
    """A sweep over method.name (the showcase group) gives one preset two labels: when a column
    must go, IG goes and the label stays, so the two rows are told apart; with one label per
    preset the label goes first, as the preset names the scheme."""
    from rich.console import Console

    from tui.cli.runs import runs_table

    def table(second_preset: str, width: int = 76) -> str:
        rows = [
            {
                "id": f"{i:08x}",
                "preset": p,
                "label": label,
                "seed": 0,
                "state": "finished",
                "epoch": 100,
                "epochs": 100,
                "best_robust_acc": 0.67,
                "end_robust_acc": 0.6,
                "end_clean_acc": 0.95,
                "ig": 1.96,
            }
            for i, (p, label) in enumerate([("quick/robust-overfitting", "pgd"), (second_preset, "pgd+advlc")])
        ]
        con = Console(width=width, record=True, file=__import__("io").StringIO())
        con.print(runs_table(rows, width))
        return con.export_text()

    same = table("quick/robust-overfitting")
    assert "pgd+advlc" in same and "label" in same and " IG" not in same, same
    apart = table("quick/robust-overfitting-advlc")
    assert "label" not in apart and " IG" in apart, apart
