"""SWA: the average is the mean of the snapshots, BN re-estimation, records, checkpoints, resume."""

import copy

import pytest
from helpers import without_timing
import torch
import torch.nn as nn
from conftest import TinyNet

from engine.config.presets import preset_runs
from engine.config.schema import SWAConfig
from engine.launch.supervisor import create_runs, prepare_resume
from engine.nn import swa as S
from engine.run.process import run
from engine.store.index import Store
from engine.store.summary import summarize

PRESET = "quick/digits-fgsm_n-advlc-swa"
OV = ["train.epochs=4", "swa.start=1", "eval.n=100", "data.n_train=500"]


def test_average_equals_mean_of_snapshots(tiny_model):
    model = tiny_model
    swa = S.SWA(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    snaps = []
    torch.manual_seed(1)
    for k in range(1, 6):
        for _ in range(2):  # a few real SGD steps between snapshots
            loss = model(torch.rand(8, 1, 8, 8)).logsumexp(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        snaps.append({n: p.detach().clone() for n, p in model.named_parameters()})
        assert swa.update(model) == k
        for name, p in swa.average.named_parameters():
            mean = torch.stack([s[name] for s in snaps]).mean(0)
            torch.testing.assert_close(p, mean, rtol=1e-5, atol=1e-6)
            assert not p.requires_grad
    # the live model's parameters are untouched by averaging
    for name, p in model.named_parameters():
        assert torch.equal(p, snaps[-1][name])


def test_state_dict_roundtrip_and_plain_keys(tiny_model):
    swa = S.SWA(tiny_model)
    swa.update(tiny_model)
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(1.0)
    swa.update(tiny_model)
    st = swa.state_dict()
    assert st["n"] == 2 and set(st["model"]) == set(tiny_model.state_dict())  # loads into a plain model
    other = S.SWA(TinyNet())
    other.load_state_dict(copy.deepcopy(st))
    assert other.n == 2
    for (n1, a), (n2, b) in zip(swa.average.state_dict().items(), other.average.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b)


def test_non_bn_buffers_follow_latest_snapshot():
    class WithBuf(TinyNet):
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.ones(1))

    m = WithBuf()
    swa = S.SWA(m)
    m.scale.fill_(3.0)
    swa.update(m)
    m.scale.fill_(5.0)
    swa.update(m)
    assert swa.average.scale.item() == 5.0


def test_update_bn_exact_statistics():
    torch.manual_seed(0)
    model = TinyNet().eval()
    model.bn.momentum = 0.1
    x = torch.rand(60, 1, 8, 8) * 2 + 0.5
    with torch.no_grad():
        feats = model.conv(x)  # the BN layer's input
    # one batch holding all the data: the exact mean and (unbiased) variance of the data
    n = S.update_bn(model, [x])
    assert n == 60
    torch.testing.assert_close(model.bn.running_mean, feats.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.bn.running_var, feats.var((0, 2, 3), unbiased=True), rtol=1e-5, atol=1e-6)
    assert not model.training and model.bn.momentum == 0.1  # mode and momentum restored
    # equal batches: exact mean; variance = the average of the per-batch (unbiased) variances,
    # as in the reference bn_update and torch.optim.swa_utils.update_bn
    chunks = list(x.split(20))
    S.update_bn(model, chunks)
    torch.testing.assert_close(model.bn.running_mean, feats.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    per_batch = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats.split(20)]).mean(0)
    torch.testing.assert_close(model.bn.running_var, per_batch, rtol=1e-5, atol=1e-6)
    # same result as torch's update_bn
    ref = copy.deepcopy(model)
    torch.optim.swa_utils.update_bn(chunks, ref)
    torch.testing.assert_close(model.bn.running_var, ref.bn.running_var)
    torch.testing.assert_close(model.bn.running_mean, ref.bn.running_mean)
    # stale statistics are discarded, not mixed in
    model.bn.running_mean.fill_(100.0)
    S.update_bn(model, [x])
    torch.testing.assert_close(model.bn.running_mean, feats.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)


def test_update_bn_without_batchnorm_consumes_nothing():
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def batches():
        raise AssertionError("consumed")
        yield  # pragma: no cover

    assert S.update_bn(m, batches()) == 0


def test_update_schedule():
    c = SWAConfig(enabled=True, start=3, every=2)
    assert [e for e in range(10) if S.is_update_epoch(c, e)] == [3, 5, 7, 9]
    assert S.last_update_epoch(c, 10) == 9 and S.last_update_epoch(c, 9) == 7
    assert S.last_update_epoch(c, 3) is None
    assert not S.is_update_epoch(SWAConfig(enabled=False, start=0), 5)


def _snapshots_run(home, overrides, on_epoch=None):
    """Run the SWA digits preset; record the main model's weights after every epoch."""
    store = Store(home)
    [rd] = create_runs(store, preset_runs(PRESET, overrides, home=home))
    snaps = {}

    def event(kind, info):
        if kind == "epoch":
            snaps[info["epoch"]] = torch.load(rd.ckpt("last"), weights_only=True)["model"]
            if on_epoch:
                on_epoch(info)

    state = run(rd, store, on_event=event, log=lambda s: None)
    return rd, state, snaps


@pytest.mark.slow
def test_digits_swa_run_records_checkpoints_and_average(tmp_path):
    rd, state, snaps = _snapshots_run(tmp_path / "a", OV)
    assert state == "finished"
    swa_recs = rd.records("swa")
    assert [r["epoch"] for r in swa_recs] == [1, 2, 3]
    from engine.run.trainer import EPOCH_KEYS

    for r in swa_recs:
        assert tuple(r) == EPOCH_KEYS
        assert r["train_loss"] is None and 0.0 <= r["robust_acc"] <= r["clean_acc"] + 1e-9 <= 1.0 + 1e-9
    # checkpoints: swa_end = the mean of the main model at the ends of epochs 1..3
    end = torch.load(rd.ckpt("swa_end"), weights_only=True)
    best = torch.load(rd.ckpt("swa_best"), weights_only=True)
    assert end["epoch"] == 3 and end["n"] == 3
    for name, w in end["model"].items():
        mean = torch.stack([snaps[e][name].float() for e in (1, 2, 3)]).mean(0)
        torch.testing.assert_close(w, mean, rtol=1e-5, atol=1e-6)
    best_rec = max(swa_recs, key=lambda r: (r["robust_acc"], r["epoch"]))
    assert best["epoch"] == best_rec["epoch"] and best["robust_acc"] == best_rec["robust_acc"]
    last = torch.load(rd.ckpt("last"), weights_only=True)
    assert last["swa"]["n"] == 3 and last["swa"]["best_robust_acc"] == best_rec["robust_acc"]
    # the index summary carries the SWA model's best/end
    doc = summarize(rd)
    assert doc["swa_best_robust_acc"] == best_rec["robust_acc"] and doc["swa_best_epoch"] == best_rec["epoch"]
    assert doc["swa_end_robust_acc"] == swa_recs[-1]["robust_acc"]
    assert doc["swa_end_clean_acc"] == swa_recs[-1]["clean_acc"]
    # SWA leaves the main model's training untouched: same records as without SWA
    store = Store(tmp_path / "b")
    [rd_b] = create_runs(store, preset_runs(PRESET, OV + ["swa.enabled=false"], home=tmp_path / "b"))
    assert run(rd_b, store, log=lambda s: None) == "finished"
    assert without_timing(rd_b.epochs()) == without_timing(rd.epochs())
    assert rd_b.records("swa") == [] and not rd_b.ckpt("swa_end").exists()
    assert summarize(rd_b)["swa_best_robust_acc"] is None


@pytest.mark.slow
def test_resume_with_swa_is_exact(tmp_path):
    full, state, _ = _snapshots_run(tmp_path / "full", OV)
    assert state == "finished"

    def stop_after_two(rec):
        if rec["epoch"] == 1:
            raise KeyboardInterrupt

    part, state, _ = _snapshots_run(tmp_path / "part", OV, on_epoch=stop_after_two)
    assert state == "stopped"
    assert [r["epoch"] for r in part.records("swa")] == [1]
    store = Store(tmp_path / "part")
    prepare_resume(store, part, foreground=True)
    assert run(part, store, log=lambda s: None) == "finished"
    assert without_timing(part.epochs()) == without_timing(full.epochs())
    assert without_timing(part.records("swa")) == without_timing(full.records("swa"))
    for name in ("swa_end", "swa_best", "best"):
        a = torch.load(full.ckpt(name), weights_only=True)
        b = torch.load(part.ckpt(name), weights_only=True)
        assert a["epoch"] == b["epoch"]
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (name, k)


@pytest.mark.slow
@pytest.mark.parametrize("every,expected", [(2, [1, 3])])
def test_swa_every_and_eval_schedule(tmp_path, every, expected):
    """Updates at start, start+every, ...; the last update is always evaluated."""
    store = Store(tmp_path)
    [rd] = create_runs(store, preset_runs(PRESET, OV + [f"swa.every={every}", "eval.every=3"], home=tmp_path))
    assert run(rd, store, log=lambda s: None) == "finished"
    recs = rd.records("swa")
    assert [r["epoch"] for r in recs] == expected
    # epoch 1: the main model is not evaluated (every 3) and neither is the SWA model;
    # epoch 3: the last epoch and the last update -> evaluated
    assert recs[0]["robust_acc"] is None and recs[-1]["robust_acc"] is not None
    assert torch.load(rd.ckpt("swa_end"), weights_only=True)["n"] == len(expected)
