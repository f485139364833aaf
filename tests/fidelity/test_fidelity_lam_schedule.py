"""The linear lambda ramp (Table 2, TinyImageNet: "linearly increased at each epoch ... from 0 at
the start to 0.15 at the end"; the authors' code, src/utils/train.py: reg_lam * (epoch + 1) /
epochs with a 0-based epoch): the values of `lam_at` by hand, and the lambda the training loop
(engine.run.loop) actually hands to the method in every step of a real (tiny) run."""

import pytest

from engine.config import schema as C
from engine.config.presets import preset_runs
from engine.launch.supervisor import create_runs
from engine.nn.methods import Method, lam_at
from engine.run.process import run
from engine.store.index import Store

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one intra-op thread (conftest.py)


def _cfg(schedule, lam=0.15, epochs=4):
    return C.build(
        {
            "attack": {"name": "fgsm_n"},
            "method": {"name": "advlc", "lam": lam, "lam_schedule": schedule},
            "train": {"epochs": epochs},
        },
        "test",
    )


def test_lam_at_by_hand():
    cfg = _cfg("linear")
    assert [lam_at(cfg, e) for e in range(4)] == pytest.approx([0.0375, 0.075, 0.1125, 0.15], abs=1e-15)
    assert lam_at(cfg, 3) == 0.15  # reaches lam exactly at the last epoch
    assert [lam_at(_cfg("constant"), e) for e in range(4)] == [0.15] * 4


def test_training_uses_the_ramp_in_every_step(tmp_path, monkeypatch):
    """Every call of the method's loss during a 3-epoch run gets lambda = 0.3 (e + 1) / 3 in its
    StepContext (recorded where the loop calls Method.loss; expected values by hand)."""
    seen: dict[int, set] = {}
    original = Method.loss

    def recording(self, model, x, y, ctx):
        if self.name == "advlc":
            seen.setdefault(ctx.epoch, set()).add(ctx.lam)
        return original(self, model, x, y, ctx)

    monkeypatch.setattr(Method, "loss", recording)
    ov = [
        "method.lam_schedule=linear",
        "method.lam=0.3",
        "train.epochs=3",
        "data.n_train=50",
        "eval.n=10",
        "eval.ig=false",
        "eval.hs_every=0",
        "eval.final=[]",
    ]
    store = Store(tmp_path)
    [rd] = create_runs(store, preset_runs("quick/digits-fgsm_n-advlc", ov, home=tmp_path))
    assert run(rd, store, log=lambda s: None) == "finished"
    assert sorted(seen) == [0, 1, 2]
    for epoch, lams in seen.items():
        assert len(lams) == 1 and abs(lams.pop() - 0.3 * (epoch + 1) / 3) < 1e-15, (epoch, lams)
