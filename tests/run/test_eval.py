"""Final evaluation (`advlc eval`, engine.run.final_eval): AutoAttack from both implementations, the
`evals` records, and the single-writer rule."""

import json
import time

import pytest
import torch
from helpers import force_status

from engine.config.presets import preset_runs
from engine.errors import UserError
from engine.launch.supervisor import create_runs
from engine.run.checkpoints import load_run_model
from engine.run.final_eval import eval_run, robust_accuracy, run_final_evals
from engine.run.process import run
from engine.store.files import write_json
from engine.store.index import Store

EVAL_KEYS = {
    "ckpt",
    "attack",
    "implementation",
    "eps",
    "n",
    "clean_acc",
    "robust_acc",
    "epoch",
    "device",
    "time_s",
    "created",
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models and thousands of tiny ops (Square's 5000 queries): one thread is fastest, and
    far faster than two on a shared, loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits PGD-10 AT run of 3 epochs (robust enough for the attacks to differ)."""
    home = tmp_path_factory.mktemp("home")
    store = Store(home)
    [rd] = create_runs(store, preset_runs("quick/digits-pgd10", ["train.epochs=3", "eval.n=100"]))
    assert run(rd, store, log=lambda s: None) == "finished"
    return home, store, rd


def _cli(capsys, home, *args):
    from tui.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["--home", str(home), *args])
    cap = capsys.readouterr()
    return ei.value.code, cap.out, cap.err


@pytest.mark.slow
def test_autoattack_not_above_pgd20_for_both_implementations(trained, capsys):
    home, store, rd = trained
    n = 60
    recs = {
        r["attack"]: r
        for r in eval_run(rd, ckpts=["end"], attacks=["pgd20", "aa", "apgd50x5"], n=n, log=lambda s: None)
    }
    # torchattacks' version through the command line: its output says it is the weaker one
    code, out, err = _cli(
        capsys, home, "eval", rd.id, "--ckpt", "end", "--attack", "aa-torchattacks", "--n", str(n), "--json"
    )
    assert code == 0, err
    assert "weaker" in err and "10 steps" in err
    [recs["aa-torchattacks"]] = json.loads(out)
    pgd20 = recs["pgd20"]["robust_acc"]
    assert 0 < pgd20 < recs["pgd20"]["clean_acc"]
    for a in ("aa", "aa-torchattacks", "apgd50x5"):
        assert recs[a]["clean_acc"] == recs["pgd20"]["clean_acc"] and recs[a]["n"] == n
        assert recs[a]["robust_acc"] <= pgd20, (a, recs[a]["robust_acc"], pgd20)
    assert recs["aa"]["implementation"].startswith("pyautoattack 0.2")
    assert "torchattacks" in recs["aa-torchattacks"]["implementation"]
    assert "10-step" in recs["aa-torchattacks"]["implementation"]
    assert "APGD-CE 50 steps x 5 restarts" in recs["apgd50x5"]["implementation"]
    stored = {(r["ckpt"], r["attack"]) for r in rd.evals()}
    assert {("end", a) for a in recs} <= stored


def test_robust_accuracy_leaves_mode_and_rng_alone(trained):
    _, _, rd = trained
    model, cfg, info = load_run_model(rd, "best")
    assert info["epoch"] == rd.epochs()[-1]["epoch"] or info["epoch"] in [e["epoch"] for e in rd.epochs()]
    from engine.nn.datasets import load_dataset

    data = load_dataset(cfg.data)
    model.train()
    state = torch.get_rng_state()
    r = robust_accuracy(model, data.test_x[:40], data.test_y[:40], attack="pgd50", eps=cfg.eval.eps)
    assert model.training and torch.equal(state, torch.get_rng_state())
    assert 0 <= r["robust_acc"] <= r["clean_acc"] <= 1 and r["n"] == 40


def test_cli_eval_writes_an_evals_record_that_show_lists(trained, capsys):
    home, _, rd = trained
    code, out, err = _cli(capsys, home, "eval", rd.id[:5], "--ckpt", "best", "--attack", "pgd50", "--n", "60", "--json")
    assert code == 0, err
    [rec] = json.loads(out)
    assert set(rec) == EVAL_KEYS
    assert (rec["ckpt"], rec["attack"], rec["n"], rec["device"]) == ("best", "pgd50", 60, "cpu")
    assert abs(rec["eps"] - 0.15) < 1e-12 and 0 <= rec["robust_acc"] <= rec["clean_acc"] <= 1
    code, out, err = _cli(capsys, home, "show", rd.id, "--json")
    assert code == 0, err
    shown = [e for e in json.loads(out)["evals"] if (e["ckpt"], e["attack"], e["n"]) == ("best", "pgd50", 60)]
    assert shown == [rec]
    # a repeat replaces the record instead of adding one
    _cli(capsys, home, "eval", rd.id, "--ckpt", "best", "--attack", "pgd50", "--n", "60")
    assert len([e for e in rd.evals() if (e["ckpt"], e["attack"], e["n"]) == ("best", "pgd50", 60)]) == 1
    code, out, _ = _cli(capsys, home, "show", rd.id)
    assert "eval best pgd50" in out


def test_eval_refuses_a_running_run(trained, capsys):
    home, _, rd = trained
    import os

    from engine.cores import create_time

    n_before = len(rd.evals())
    # a live process (this one) owns the run, so the CLI's reconcile keeps it `running`
    force_status(
        rd,
        state="running",
        pid=os.getpid(),
        pid_create_time=create_time(os.getpid()),
        host=os.uname().nodename,
        heartbeat=time.time(),
    )
    try:
        code, out, err = _cli(capsys, home, "eval", rd.id, "--attack", "pgd20")
    finally:
        force_status(rd, state="finished", pid=None)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "is running" in lines[0] and "Traceback" not in err
    assert len(rd.evals()) == n_before


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--ckpt", "swa_best"], "no 'swa_best' checkpoint"),
        (["--ckpt", "latest"], "--ckpt latest: must be one of best, end, swa_best, swa_end"),
        (["--attack", "cw"], "--attack cw: must be one of"),
        (["--device", "tpu"], "--device tpu"),
    ],
)
def test_bad_eval_arguments_are_one_line(trained, capsys, args, needle):
    home, _, rd = trained
    code, out, err = _cli(capsys, home, "eval", rd.id, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


def test_run_final_evals_follows_the_config_and_skips_done_ones(trained):
    _, store, rd = trained
    conf = json.loads(rd.config_path.read_text())  # config.json as written, edited by hand
    saved = json.loads(json.dumps(conf))
    conf["eval"].update(final=["pgd20", "pgd50"], final_ckpts=["best", "end", "swa_end"], final_n=30)
    write_json(rd.config_path, conf)
    lines = []
    try:
        recs = run_final_evals(rd, log=lines.append)
        assert {(r["ckpt"], r["attack"]) for r in recs} == {(c, a) for c in ("best", "end") for a in ("pgd20", "pgd50")}
        assert all(r["n"] == 30 for r in recs)
        assert any("no swa_end checkpoint" in line for line in lines)
        assert run_final_evals(rd, log=lambda s: None) == []  # already recorded
    finally:
        write_json(rd.config_path, saved)
    assert run_final_evals(rd) == []  # eval.final empty


def test_experiment_runs_have_no_checkpoint_to_evaluate(trained):
    _, store, rd = trained
    [ex] = create_runs(store, preset_runs("quick/digits-figA1", [f"experiment.source={rd.id}"]))
    with pytest.raises(UserError, match="experiment"):
        eval_run(ex, attacks=["pgd20"])


def test_training_requests_final_evals(tmp_path):
    store = Store(tmp_path)
    [rd] = create_runs(
        store,
        preset_runs(
            "quick/digits-pgd10",
            ["train.epochs=1", "eval.n=40", 'eval.final=["pgd20"]', 'eval.final_ckpts=["end"]', "eval.final_n=40"],
        ),
    )
    assert run(rd, store, log=lambda s: None) == "finished"
    [rec] = rd.evals()
    assert (rec["ckpt"], rec["attack"], rec["n"]) == ("end", "pgd20", 40)
