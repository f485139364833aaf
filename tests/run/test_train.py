"""The run process: determinism, the learning-rate schedule, and what each epoch records."""

import pytest
from helpers import without_timing
import torch

from engine.config import schema as C
from engine.config.presets import preset_runs
from engine.launch.supervisor import create_runs
from engine.run.loop import lr_at
from engine.run.process import run
from engine.store.index import Store


def _run(home, preset, overrides):
    store = Store(home)
    [rd] = create_runs(store, preset_runs(preset, overrides))
    assert run(rd, store, log=lambda s: None) == "finished"
    return rd


@pytest.mark.slow
def test_same_seed_same_records(tmp_path):
    ov = ["train.epochs=3", "eval.n=100"]
    a = _run(tmp_path / "a", "quick/digits-fgsm_n-advlc", ov)
    b = _run(tmp_path / "b", "quick/digits-fgsm_n-advlc", ov)
    c = _run(tmp_path / "c", "quick/digits-fgsm_n-advlc", ov + ["train.seed=1"])
    assert without_timing(a.epochs()) == without_timing(b.epochs())
    assert without_timing(a.epochs()) != without_timing(c.epochs())


def test_lr_schedule_piecewise():
    t = C.TrainConfig(lr=0.1, lr_milestones=[100, 150], lr_gamma=0.1)
    assert [lr_at(t, e) for e in (0, 99, 100, 149, 150, 199)] == [
        0.1,
        0.1,
        0.1 * 0.1,
        0.1 * 0.1,
        0.1 * 0.1 * 0.1,
        0.1 * 0.1 * 0.1,
    ]


@pytest.mark.slow
def test_eval_every_and_ig_against_autograd(tmp_path):
    rd = _run(tmp_path, "quick/digits-pgd10", ["train.epochs=3", "eval.every=2", "eval.n=50"])
    recs = rd.epochs()
    assert [r["robust_acc"] is None for r in recs] == [True, False, False]  # epochs 1 and the last
    # IG recorded at the end equals a direct autograd computation on the END-of-training model,
    # which last.pt holds (its "epoch" counts the epochs done). The best checkpoint and the IG
    # recorded at its epoch: tests/fidelity/test_fidelity_checkpoints.py.
    from engine.nn.datasets import load_dataset
    from engine.nn.models import build_model

    cfg = C.from_json(rd.config_json())
    data = load_dataset(cfg.data)
    m = build_model(cfg.model, num_classes=10, in_channels=1, image_size=8)
    last = torch.load(rd.ckpt("last"), weights_only=True)
    assert last["epoch"] == 3
    m.load_state_dict(last["model"])
    m.eval()
    x, y = data.test_x[:50], data.test_y[:50]
    total = 0.0
    for i in range(50):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(m(xi), y[i : i + 1]), xi)
        total += g.abs().sum().item()
    assert abs(recs[-1]["ig"] - total / 50) < 1e-4 * max(1.0, total / 50)
