"""scripts/gpu-check.sh: its --smoke run on a CPU (every step, tiny sizes), its report, and
`advlc bench --fold DIR`, which writes a gpu-check folder into docs/BENCHMARKS.md's generated block.

The smoke run takes about a minute and a half on 2 shared cores: it is marked slow (`make test-slow`).
The tests on the folder format, the budget, a machine without CUDA and --fold are fast.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli, one_line

from engine.bench import epoch, markdown
from engine.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"
STEPS = ["env", "data", "pytest", "train", "hs", "epoch", "epoch_compile", "step_cost", "report"]
RESULTS = {
    "env": "env.json",
    "data": "data.json",
    "pytest": "pytest.json",
    "train": "train.json",
    "hs": "hs.json",
    "epoch": "epoch.json",
    "epoch_compile": "epoch_compile.json",
    "step_cost": "step_cost.json",
    "report": "summary.json",
}
SCHEMES = ["fgsm_n", "fgsm_n+advlc", "pgd", "pgd+advlc", "fgsm_n+cure", "fgsm_n+gradalign"]

needs_bash = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and coreutils' timeout"
)


def _script(*args, timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("ADVLC_HOME", "COMPILE_METHODS")}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def _status(out: Path) -> dict:
    return {d["step"]: d for d in map(json.loads, (out / "status.jsonl").read_text().splitlines())}


# ------------------------------------------------------------------------------ the smoke run


@pytest.mark.slow
@needs_bash
def test_smoke_run_reports_every_step(tmp_path):
    out = tmp_path / "check"
    p = _script("--smoke", "--out", str(out))
    steps = _status(out)
    assert list(steps) == STEPS, p.stderr[-3000:]
    assert {s: d["status"] for s, d in steps.items()} == dict.fromkeys(STEPS, "ok"), {
        s: d.get("note") for s, d in steps.items()
    }
    assert p.returncode == 0, p.stderr[-3000:]
    for step, name in RESULTS.items():
        json.loads((out / name).read_text())  # every result parses
        assert (out / "logs" / f"{step}.log").is_file()
    env = json.loads((out / "env.json").read_text())
    assert env["smoke"] and env["torch"] and env["device_name"] and "cuda" in env
    assert json.loads((out / "data.json").read_text())["n_train"] == 100
    pt = json.loads((out / "pytest.json").read_text())
    assert pt["total"] >= 7 and pt["failed"] == pt["error"] == 0  # gpu tests skip on a CPU
    tr = json.loads((out / "train.json").read_text())
    assert tr["state"] == "finished" and tr["rc"] == 0 and tr["run"] and tr["model"] == "cnn_small"
    assert len(tr["epochs"]) == 1 and tr["summary"]["last_images_per_s"] > 0 and tr["summary"]["last_epoch_time_s"] > 0
    assert "peak_gpu_memory_allocated_bytes" in tr and tr["max_rss_bytes"] > 0
    assert (out / "train-run" / "metrics.json").is_file()
    hs = json.loads((out / "hs.json").read_text())
    assert hs["model"]["source"].startswith(f"run {tr['run']}") and hs["sec_per_batch"]["exact"] > 0
    ep = json.loads((out / "epoch.json").read_text())
    assert [r["scheme"] for r in ep["results"]] == SCHEMES and ep["amps"] == ["off", "bf16"]
    assert all(set(r["fast"]) == {"off", "bf16"} for r in ep["results"]) and "eval_bf16" in ep["costs"]
    epc = json.loads((out / "epoch_compile.json").read_text())
    assert epc["amps"] == ["bf16+compile"] and all("bf16+compile" in r["fast"] for r in epc["results"])
    assert json.loads((out / "step_cost.json").read_text())["results"]
    for md in ("summary.md", "gpu-check.md", "train.md", "hs.md", "epoch.md", "epoch_compile.md", "step_cost.md"):
        assert (out / md).read_text().strip(), md
    summary = (out / "summary.md").read_text()
    assert all(f"| {s} | ok |" in summary for s in STEPS[:-1]) and "A smoke run" in summary
    assert "fast bf16+compile s/epoch" in summary and "Peak GPU memory" in summary and "no result" not in summary

    # fold: refused into the real docs (a smoke run), written into another file, twice = one block
    with pytest.raises(UserError, match="smoke"):
        markdown.fold(out, tmp_path / "never.md")
    docs = tmp_path / "BENCHMARKS.md"
    docs.write_text("# Benchmarks\n\n## Other\n\nkeep me\n")
    for _ in range(2):
        cli("bench", "fold", str(out), "--docs", str(docs), code=0)
    text = docs.read_text()
    assert text.count(markdown.BEGIN) == 1 and "keep me" in text
    assert f"## {markdown.SECTION_GPU_CHECK}" in text and "| fgsm_n+advlc |" in text


# ------------------------------------------------------------------------------ fast checks


@needs_bash
def test_budget_spent_steps_are_skipped_and_reported(tmp_path):
    out = tmp_path / "check"
    p = _script("--smoke", "--budget", "0", "--out", str(out), timeout=120)
    assert p.returncode == 1
    steps = _status(out)
    assert list(steps) == STEPS
    assert {s: d["status"] for s, d in steps.items()} == {**dict.fromkeys(STEPS[:-1], "skipped"), "report": "ok"}
    text = (out / "summary.md").read_text()
    assert "| epoch | skipped |" in text and "no result (step skipped" in text


@needs_bash
def test_without_cuda_and_without_smoke_it_stops_at_once(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "check"
    p = _script("--out", str(out), timeout=120)
    assert p.returncode == 3 and "--smoke" in p.stderr
    assert list(_status(out)) == ["env"] and (out / "summary.md").is_file()


@needs_bash
def test_bad_arguments(tmp_path):
    assert _script("--nosuch").returncode == 2
    assert _script("--limit", "epoch", "--out", str(tmp_path)).returncode == 2


def _fake_folder(out: Path) -> None:
    """A gpu-check folder as a GPU run leaves it when its epoch step was cut: env, status, pytest."""
    out.mkdir()
    (out / "env.json").write_text(
        json.dumps(
            {
                "date": "2026-12-07",
                "smoke": False,
                "device_name": "NVIDIA H100",
                "devices": [{"index": 0}],
                "torch": "2.x",
                "cuda": "13.0",
                "cudnn": 91000,
                "python": "3.11",
                "commit": "abc",
                "dirty": False,
                "nvidia_smi": {"gpus": [{"driver_version": "580"}]},
            }
        )
    )
    lines = [
        {"step": "env", "status": "ok", "seconds": 4.0, "limit_s": 20, "expected_gpu_s": 5},
        {"step": "pytest", "status": "ok", "seconds": 50.0, "limit_s": 90, "expected_gpu_s": 60},
        {
            "step": "epoch",
            "status": "cut",
            "seconds": 90.0,
            "limit_s": 90,
            "expected_gpu_s": 60,
            "note": "cut after 90 s",
        },
    ]
    (out / "status.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    (out / "pytest.json").write_text(
        json.dumps(
            {
                "total": 2,
                "passed": 1,
                "failed": 1,
                "error": 0,
                "skipped": 0,
                "tests": [{"id": "t::a", "outcome": "failed"}],
            }
        )
    )
    (out / "hs.json").write_text("{broken")


def test_markdown_of_a_partial_folder(tmp_path):
    out = tmp_path / "check"
    _fake_folder(out)
    d = markdown.load_gpu_check(out)
    assert [s["step"] for s in d["status"]] == ["env", "pytest", "epoch"] and "unreadable" in d["hs"]
    text = markdown.markdown_gpu_check(d)
    assert "**NVIDIA H100** (1 visible, driver 580)" in text and "A smoke run" not in text
    assert "| epoch | cut | 90.0 | 90 | 60 | cut after 90 s |" in text
    assert "1 passed, 1 failed, 0 errors, 0 skipped (failed: t::a)" in text
    assert "no result (step cut after 90 s" in text and "hs.json does not parse" in text


def test_fold_writes_the_block_and_keeps_the_rest(tmp_path):
    out = tmp_path / "check"
    _fake_folder(out)
    docs = tmp_path / "B.md"
    docs.write_text(
        f"# Benchmarks\n\n## {markdown.SECTION_GPU_CHECK}\n\nHand-written.\n\n{markdown.BEGIN}\nOLD-BLOCK\n"
        f"{markdown.END}\n\nAfter.\n\n## Next\n\nkeep\n"
    )
    rc, stdout, _ = cli("bench", "fold", str(out), "--docs", str(docs), code=0)
    text = docs.read_text()
    assert "OLD-BLOCK" not in text and "NVIDIA H100" in text and text.count(markdown.BEGIN) == 1
    assert text.index("Hand-written.") < text.index(markdown.BEGIN) < text.index("After.") < text.index("## Next")
    assert "wrote section" in stdout
    rc, _, err = cli("bench", "fold", str(tmp_path), "--docs", str(docs), code=2)  # not a gpu-check folder
    assert "not the output folder of scripts/gpu-check.sh" in one_line(err)
    rc, _, err = cli("bench", "fold", str(out), "--epoch", code=2)  # fold takes no benchmark options
    assert "No such option: --epoch" in one_line(err)


def test_epoch_amp_specs():
    assert epoch.amp_spec("bf16+compile") == ("bf16", True) and epoch.amp_spec("off") == ("off", False)
    assert epoch.amp_spec("off", compile_all=True) == ("off", True)
    assert epoch.spec_name("bf16+compile") == "bf16+compile" and epoch.spec_name("off", True) == "fp32"
    with pytest.raises(UserError, match="optionally with \\+compile"):
        epoch.amp_spec("fp8")


def test_script_header_states_each_step_and_its_gpu_time():
    head = SCRIPT.read_text().split("\nset -uo pipefail", 1)[0]
    for step in STEPS:
        assert f"#   {step} " in head or f"#   {step}\t" in head, step
    assert "8 minutes" in head and os.access(SCRIPT, os.X_OK) and sys.executable
