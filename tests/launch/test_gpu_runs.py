"""Detached runs on a CUDA device (`pytest -m gpu` on a GPU machine; scripts/gpu-check.sh runs it).

tests/launch/test_supervisor.py checks the GPU queue with fake GPU ids and CPU runs; here the runs ask
for `cuda`, the queue leases real device ids, and each run process trains on the GPU it leased.
"""

import math

import pytest
import torch
from helpers import cli, wait_for

from engine.launch.executors import gpuqueue
from engine.store.index import Store
from engine.store.records import GpuQueueLaunch
from engine.store.states import FINAL_STATES

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

PRESET = "quick/digits-fgsm_n"
TIMEOUT = 180


@pytest.fixture(autouse=True)
def _child_env(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("ADVLC_SCHEDULER_POLL_S", "0.2")


def test_detached_cuda_runs_lease_real_gpus_and_finish(home):
    """`advlc run … --device cuda --detach` goes through the GPU queue over every visible GPU;
    `--gpus N` names one. Each run finishes, records the GPU it leased, ran with
    CUDA_VISIBLE_DEVICES set to it, and its provenance names that GPU; no lease stays live."""
    n = torch.cuda.device_count()
    last = n - 1
    args = ["--set", "train.epochs=1", "--set", "eval.n=100", "--device", "cuda"]
    cli("run", PRESET, *args, "--detach", code=0)  # every visible GPU
    cli("run", PRESET, *args, "--seed", "1", "--gpus", str(last), "--slots-per-gpu", "2", code=0)  # the last one
    store = Store(home)
    rows = sorted(store.runs(), key=lambda r: r["seed"])
    assert len(rows) == 2
    a, b = (store.get(r["id"]) for r in rows)
    assert isinstance(a.status().launch, GpuQueueLaunch) and a.status().launch.gpus == list(range(n))
    assert b.status().launch.gpus == [last]
    for rd in (a, b):
        wait_for(lambda: rd.status().state in FINAL_STATES, TIMEOUT, what=f"{rd.id} to end")
    for rd, allowed in ((a, range(n)), (b, [last])):
        st = rd.status()
        assert st.state == "finished", rd.log_tail(20)
        assert st.gpu in allowed
        assert f"CUDA_VISIBLE_DEVICES={st.gpu}" in rd.log_path.read_text()
        start = rd.runtime().starts[-1]
        assert start.device == "cuda" and start.device_name == torch.cuda.get_device_name(st.gpu)
        recs = rd.epochs()
        assert recs and all(math.isfinite(r["train_loss"]) for r in recs if r.get("train_loss") is not None)
    leases = gpuqueue.read_leases(store)
    assert not any(le["live"] for le in leases)
    assert {(le["gpu"], le["run"]) for le in leases} <= {(a.status().gpu, a.id), (b.status().gpu, b.id)}
