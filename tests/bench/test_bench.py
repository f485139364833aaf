"""`advlc bench` (engine/bench/, tui/cli/bench.py) on tiny settings: the right keys and
positive ratios. No assertion is about speed: timings on a shared CPU are noise."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.bench import epoch, hs, markdown, steps
from engine.errors import UserError


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared CPU: one thread (two oversubscribe and spin; ~10x slower here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_plan_step_variants():
    labels = lambda names: [v.label for v in steps.plan_step_variants(names)]  # noqa: E731
    assert labels(["fgsm_n", "advlc"]) == ["fgsm_n", "fgsm_n+advlc"]
    assert labels(["advlc"]) == ["fgsm_n", "pgd", "fgsm_n+advlc", "pgd+advlc"]
    assert labels(["pgd10+advlc"]) == ["pgd", "pgd+advlc"]
    assert labels(["standard"]) == ["fgsm_n", "standard"]
    v = {x.label: x for x in steps.plan_step_variants(None)}
    assert {"fgsm_n", "pgd", "fgsm_n+advlc", "pgd+advlc", "standard"} <= set(v)
    assert v["pgd+advlc"].base == "pgd" and v["pgd+advlc"].attack == "pgd" and v["fgsm_n"].base is None
    with pytest.raises(UserError, match="unknown method"):
        steps.plan_step_variants(["nosuch"])
    with pytest.raises(UserError, match="attack"):
        steps.plan_step_variants(["fgsm+advlc"])


def test_bench_steps_tiny():
    r = steps.bench_steps(["fgsm_n", "advlc", "kdsa"], arch="cnn_small", device="cpu", batch=8, iters=2, warmup=1)
    for k in ("device_name", "torch", "model", "batch", "iters", "rounds", "results", "advlc_vs_paper", "skipped"):
        assert k in r
    json.dumps(r)
    rows = {row["label"]: row for row in r["results"]}
    assert set(rows) == {"fgsm_n", "fgsm_n+advlc", "fgsm_n+kdsa"}, r["skipped"]  # KDSA with random teachers
    for row in rows.values():
        assert row["s_per_batch"] > 0 and row["ratio"] > 0 and len(row["rounds"]) >= 2 and row["finite"]
    assert rows["fgsm_n"]["ratio"] == 1.0 and rows["fgsm_n+advlc"]["base"] == "fgsm_n"
    a = r["advlc_vs_paper"]["fgsm_n+advlc"]
    assert a["paper_ratio"] == pytest.approx(0.054 / 0.047) and a["ratio"] > 0
    assert "fgsm_n+advlc" in markdown.markdown_steps(r)


def test_bench_epoch_tiny():
    r = epoch.bench_epoch(
        ["fgsm_n", "fgsm_n+advlc", "fgsm_n+nosuch"],
        arch="cnn_small",
        device="cpu",
        batch=8,
        n_train=64,
        batches=2,
        warmup=1,
        rounds=2,
        eval_n=16,
        eval_batch=8,
        hs_n=8,
    )
    json.dumps(r)
    assert r["extrapolated"] and r["batches_per_epoch"] == 8 and r["measured_batches"] == 2
    assert "fgsm_n+nosuch" in r["skipped"]
    assert [row["scheme"] for row in r["results"]] == ["fgsm_n", "fgsm_n+advlc"]
    for row in r["results"]:
        assert row["reference_s_per_epoch"] > 0
        f = row["fast"]["off"]
        assert f["s_per_epoch"] > 0 and f["speedup"] > 0 and f["finite"]
    assert r["costs"]["eval_off"]["s_per_10k"] > 0 and r["costs"]["hs"]["s_per_2000"] > 0
    assert r["costs"]["hs"]["method"] == "exact"
    md = markdown.markdown_epoch(r)
    assert "Extrapolated" in md and "fgsm_n+advlc" in md


def test_bench_hs_tiny():
    r = hs.bench_hs(device="cpu", n=20, power_n=10, epochs=1)
    json.dumps(r)
    assert r["n_samples"] == 20 and r["power_samples"] == 10
    assert all(r["sec_per_batch"][m] > 0 for m in ("exact", "lanczos", "power"))
    assert r["speedup_exact_vs_power"] > 0 and r["speedup_exact_vs_lanczos"] > 0
    assert {"exact_vs_dense", "power_vs_exact", "lanczos_vs_exact"} <= set(r["validation"])
    assert set(r["goals"]) == {
        "exact_100x_faster_than_power",
        "exact_vs_dense_within_1e-3",
        "power_vs_exact_within_1e-3",
    }
    assert "power iteration" in markdown.markdown_hs(r)


def test_write_section_replaces_only_its_block(tmp_path):
    p = tmp_path / "B.md"
    markdown.write_section(p, "Alpha", "first\n")
    text = p.read_text()
    assert text.startswith("# Benchmarks\n") and "## Alpha" in text and "first" in text
    # hand-written notes in the section and other sections survive a rewrite
    p.write_text(text.replace("## Alpha\n", "## Alpha\n\nNotes above.\n") + "\nNotes below.\n\n## Other\n\nkeep me\n")
    markdown.write_section(p, "Alpha", "second\n")
    markdown.write_section(p, "Beta", "beta body\n")
    text = p.read_text()
    assert "second" in text and "first" not in text
    assert "Notes above." in text and "Notes below." in text and "keep me" in text
    assert text.index("## Alpha") < text.index("## Other") < text.index("## Beta")
    assert text.count(markdown.BEGIN) == 2


def test_cli_bench_json_subprocess():
    """The console script end to end (batch 20 instead of 100 to keep the test short)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [
        "bench",
        "steps",
        "--json",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--methods",
        "fgsm_n,advlc",
        "--batch",
        "20",
        "--device",
        "cpu",
    ]
    script = Path(sys.executable).with_name("advlc")
    cmd = (
        [str(script)] + args
        if script.exists()
        else [sys.executable, "-c", "import sys; from tui.cli import main; sys.exit(main(sys.argv[1:]))"] + args
    )
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert [row["label"] for row in r["results"]] == ["fgsm_n", "fgsm_n+advlc"]
    assert all(row["ratio"] > 0 for row in r["results"])
    assert r["command"] == "advlc bench steps --methods fgsm_n,advlc --device cpu --batch 20 --iters 2 --warmup 1"


def test_cli_bench_bad_input():
    from typer.testing import CliRunner

    from tui.cli import app

    for args in (["bench", "--epoch"], ["bench", "epoch", "--hs"], ["bench"], ["bench", "steps", "--amp", "fp8"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code != 0, args


def test_bench_hs_on_a_run(home):
    """bench hs --run RUN loads the run's checkpoint and data (a one-epoch digits run)."""
    from typer.testing import CliRunner

    from tui.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["run", "quick/digits-standard", "--set", "train.epochs=1"])
    assert res.exit_code == 0, res.output
    rid = json.loads(runner.invoke(app, ["runs", "--json"]).output)[0]["id"]
    res = runner.invoke(app, ["bench", "hs", "--run", rid, "--ckpt", "last", "--n", "20", "--power-n", "10", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout[res.stdout.index("{") :])
    assert r["model"]["source"].startswith(f"run {rid}") and r["n_samples"] == 20
    res = runner.invoke(app, ["bench", "hs", "--run", rid, "--ckpt", "nosuch"])
    assert res.exit_code != 0
