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


def test_full_digits_fgsm_n_run_through_cli(tmp_path):
    p = advlc("run", "quick/digits-fgsm_n", home=tmp_path)
    assert "robust best/end" in p.stdout
    runs = json.loads(advlc("runs", "--json", home=tmp_path).stdout)
    assert len(runs) == 1
    r = runs[0]
    assert (r["preset"], r["label"], r["state"], r["epoch"], r["seed"]) == ("quick/digits-fgsm_n", "fgsm_n", "finished", 20, 0)
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


@pytest.mark.parametrize("args,needle", [
    (["run", "no/such-preset"], "no preset 'no/such-preset'"),
    (["run", "quick/digits-pgd10", "--set", "attack.eps=1.5"], "attack.eps = 1.5"),
    (["run", "quick/digits-pgd10", "--set", "train.foo=1"], "unknown key 'train.foo'"),
    (["run", "quick/digits-pgd10", "--bogus"], "No such option"),
    (["show", "zzzz"], "no run 'zzzz'"),
    (["runs", "--status", "sleeping"], "--status sleeping"),
    (["preset", "show", "quick/nope"], "no preset"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    p = advlc(*args, home=tmp_path, check=False)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_missing_dataset_folder_fails_in_one_line(tmp_path):
    p = advlc("run", "paper/table1/pgd10", "--set", f"data.root={tmp_path}/nowhere", "--set", "train.epochs=1",
              home=tmp_path, check=False)
    assert p.returncode != 0
    assert "cifar-10-batches-py" in p.stderr and "Traceback" not in p.stderr + p.stdout


def test_presets_json_lists_reference():
    p = subprocess.run(ADVLC + ["presets", "--json"], capture_output=True, text=True, check=True)
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert rows["paper/table1/fgsm_n-advlc"]["reference"].startswith("Table 1")


def test_ctrl_c_marks_stopped_and_keeps_last_checkpoint(tmp_path):
    import signal
    import time

    env = {**os.environ, "ADVLC_HOME": str(tmp_path), "COLUMNS": "160"}
    p = subprocess.Popen(ADVLC + ["run", "quick/digits-pgd10", "--set", "train.epochs=200"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
