"""The config switches between the paper's text and the authors' code reach the code that uses
them (docs/FIDELITY.md). `eval.hs_reduce`: HS of the top 20 |eigenvalues| as their mean (the
authors' code, default) or their sum (the paper's "l1 norm of the top 20 eigenvalues"): the
per-epoch test HS (engine.run.trainer), the train_hs extra metric (engine.run.epoch_metrics) and
an experiment's HS (engine.run.experiments) of a run with "sum" are 20 times those of the same
run with "mean" (same seed, so the same model). The values themselves are checked against the
dense Hessian in tests/nn/test_landscape.py; CURE's `[method.cure] form` in tests/nn/test_methods.py.
About 2 s with one thread (plus the one-time import of the training stack).
"""

import pytest

from engine.config.presets import preset_runs
from engine.launch.supervisor import create_runs
from engine.run.process import run
from engine.store.index import Store

OV = [
    "train.epochs=1",
    "data.n_train=100",
    "eval.n=50",
    "eval.ig=false",
    "eval.hs_every=1",
    "eval.hs_samples=50",
    "eval.hs_batch=25",
    "eval.extra=[train_hs]",
    "eval.final=[]",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one intra-op thread (conftest.py)


def _run(store, home, preset, overrides):
    [rd] = create_runs(store, preset_runs(preset, overrides, home=home))
    assert run(rd, store, log=lambda s: None) == "finished"
    return rd


def test_hs_reduce_reaches_the_epoch_records_and_the_experiments(tmp_path):
    store = Store(tmp_path)
    recs, points = {}, {}
    for reduce in ("mean", "sum"):
        src = _run(store, tmp_path, "quick/digits-pgd10", OV + [f"eval.hs_reduce={reduce}"])
        [recs[reduce]] = src.epochs()
        exp = _run(
            store,
            tmp_path,
            "quick/digits-fig4a",
            [
                f"experiment.source={src.id}",
                "experiment.fig4a.values=[0.0]",
                "experiment.fig4a.random_values=0",
                "experiment.samples=50",
                "eval.hs_batch=25",
                f"eval.hs_reduce={reduce}",
            ],
        )
        [points[reduce]] = exp.records("points")
    for key in ("hs", "train_hs"):
        assert recs["mean"][key] > 0
        assert recs["sum"][key] == pytest.approx(20 * recs["mean"][key], rel=1e-9), key
    assert points["mean"]["hs"] > 0
    assert points["sum"]["hs"] == pytest.approx(20 * points["mean"]["hs"], rel=1e-9)
    # the rest of the run is unchanged by the switch
    assert recs["sum"]["robust_acc"] == recs["mean"]["robust_acc"]
    assert points["sum"]["eff_pgd10"] == points["mean"]["eff_pgd10"]
