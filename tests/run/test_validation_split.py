"""A validation split, selection on it, and early stopping on robust overfitting.

The split is checked image by image (disjoint from the training images used and from the test
set, the same for every method and seed, the training set's label quality); the selection by
runs whose *test* numbers are replaced by noise: best.pt must not move; early stopping by runs
whose evaluation numbers follow a hand-made overfitting curve: the run must end at the epoch
computed by hand, `finished`, with its reason recorded and shown.

The runs train for real (tiny digits CNN, 50 images); only the evaluation numbers the trainer
records are replaced, so the test runs in seconds and its outcome does not depend on how a model
happens to train on this machine.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from helpers import cli, one_line, pilot_wait, train_one

from engine.config.origin import config_key
from engine.config.presets import load_preset
from engine.errors import UserError
from engine.nn.datasets import load_dataset
from engine.run import trainer as T
from engine.store.alerts import early_stop, overfitting_onset
from engine.store.index import Store
from engine.store.records import EarlyStop
from engine.store.summary import summarize

PRESET = "quick/digits-pgd10"
TINY = [
    "train.epochs=14",
    "data.n_train=50",
    "train.batch_size=25",
    "train.lr_milestones=[3]",
    "eval.n=20",
    "eval.hs_every=0",
    "data.val_size=40",
    "train.select_on=val",
]


# ------------------------------------------------------------------------------ the split
def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


def test_the_split_is_disjoint_from_training_and_test_images_and_the_same_for_every_seed():
    """Synthetic images are random (every image distinct): the split is exactly the pool's images the
    training set does not use, none of the test set's, fixed by data.split_seed alone."""
    _, cfg, _ = load_preset(PRESET, ["data.dataset=synthetic"])  # 1000 training, 500 test images
    pool = load_dataset(cfg.data)
    cfg.data.val_size = 100
    ds = load_dataset(cfg.data)
    val, train, test = _rows(ds.val_x), _rows(ds.train_x), _rows(ds.test_x)
    assert len(val) == 100 and len(train) == 900
    assert not val & train and not val & test and not train & test
    assert val | train == _rows(pool.train_x)  # the pool, split in two
    digits = dataclasses.replace(cfg.data, dataset="digits", n_train=150)  # n_train counts the images left
    assert len(load_dataset(digits).train_x) == 150
    # the labels travel with their images
    pool_label = {r.numpy().tobytes(): int(y) for r, y in zip(pool.train_x.reshape(1000, -1), pool.train_y)}
    assert all(pool_label[r.numpy().tobytes()] == int(y) for r, y in zip(ds.val_x.reshape(100, -1), ds.val_y))
    other = dataclasses.replace(cfg.data)  # another method and seed: [data] is the same
    assert torch.equal(load_dataset(other).val_x, ds.val_x)
    other.split_seed = 1
    assert not torch.equal(load_dataset(other).val_x, ds.val_x)


def test_the_split_has_the_training_sets_label_noise_and_the_test_set_none():
    _, cfg, _ = load_preset("quick/robust-overfitting-val")
    clean = dataclasses.replace(cfg.data, label_noise=0.0)
    noisy, plain = load_dataset(cfg.data), load_dataset(clean)
    assert torch.equal(noisy.val_x, plain.val_x) and torch.equal(noisy.test_y, plain.test_y)
    flipped = (noisy.val_y != plain.val_y).float().mean().item()
    assert flipped == pytest.approx(round(0.2 * cfg.data.val_size) / cfg.data.val_size)
    assert (noisy.train_y != plain.train_y).float().mean().item() == pytest.approx(0.2)
    # without a split the training labels are drawn exactly as before the split existed
    before = load_dataset(dataclasses.replace(cfg.data, val_size=0))
    assert before.val_x is None and len(before.train_x) == cfg.data.n_train


def test_select_on_val_without_a_split_and_a_split_as_large_as_the_pool_are_one_line(home):
    rc, _, err = cli("preset", "show", PRESET, "--set", "train.select_on=val")
    assert rc != 0 and 'train.select_on = "val" needs a validation split: set data.val_size' in one_line(err)
    _, cfg, _ = load_preset(PRESET)
    n = len(load_dataset(cfg.data).train_x)
    cfg.data.val_size = n
    with pytest.raises(UserError, match=rf"data.val_size = {n}: must be less than the {n} training images of digits"):
        load_dataset(cfg.data)
    cfg.data.val_size = n - 1
    assert len(load_dataset(cfg.data).train_x) == 1


def test_runs_of_an_older_store_are_seeds_of_the_default_configuration():
    """A config.json written before these keys existed groups with a new run that has their defaults."""
    _, cfg, _ = load_preset(PRESET)
    new = cfg.to_dict()
    old = {
        s: {k: v for k, v in t.items() if k not in ("val_size", "select_on", "stop_on_overfit", "overfit_patience")}
        for s, t in new.items()
    }
    assert config_key(old) == config_key(new)
    assert config_key(old) != config_key({**new, "train": {**new["train"], "select_on": "val"}})


# ------------------------------------------------------------------------------ the alert and the stop rule
def _curve(robust, lr_drop=3, train=None):
    return [
        dict(epoch=e, lr=0.1 if e < lr_drop else 0.01, robust_acc=r, train_acc=(train[e] if train else 0.5 + e / 100))
        for e, r in enumerate(robust)
    ]


def test_early_stop_waits_for_the_patience_and_a_new_best_resets_it():
    # peak 0.5 at epoch 4, then 0.4: the 10-epoch streak completes at epoch 14 (the onset)
    recs = _curve([0.3] * 4 + [0.5] + [0.4] * 20)
    assert overfitting_onset(recs)["epoch"] == 14
    assert [early_stop(recs[:n], 3) for n in (15, 16)] == [None, None]
    assert early_stop(recs[:17], 3) == {"epoch": 16, "onset": 14}
    assert early_stop(recs[:15], 1) == {"epoch": 14, "onset": 14}
    # a new best at epoch 15 breaks the condition: no stop until it has held 3 times again
    back = _curve([0.3] * 4 + [0.5] + [0.4] * 10 + [0.55] + [0.4] * 15)
    assert early_stop(back[:18], 3) is None
    # the condition needs the training accuracy to have risen since the best
    flat = _curve([0.3] * 4 + [0.5] + [0.4] * 20, train=[0.9] * 5 + [0.8] * 20)
    assert overfitting_onset(flat) is None and early_stop(flat, 1) is None
    # and is judged on the key asked for (the validation split's)
    val = [dict(r, val_robust_acc=r["robust_acc"], robust_acc=0.3) for r in recs]
    assert early_stop(val, 3) is None and early_stop(val[:17], 3, key="val_robust_acc") == {"epoch": 16, "onset": 14}


# ------------------------------------------------------------------------------ runs with scripted numbers
def _scripted(monkeypatch, val_curve, test_curve, train_curve=None):
    """Replace the numbers the trainer records: the validation and test evaluations follow the
    curves (indexed by epoch), the training accuracy too when given. Training itself is real."""
    real_on_epoch = T._Trainer.on_epoch
    current = {}

    def on_epoch(self, r):
        current["epoch"] = r.epoch
        if train_curve is not None:
            r = dataclasses.replace(r, train_acc=train_curve[r.epoch])
        return real_on_epoch(self, r)

    def evaluate(model, x, y, **kw):
        curve = val_curve if len(x) == 40 else test_curve  # 40 validation, 20 test images (TINY)
        v = curve[current["epoch"]]
        return {
            "clean_loss": 1.0,
            "clean_acc": min(1.0, v + 0.3),
            "robust_loss": 2.0,
            "robust_acc": v,
            "av": 1.0,
            "ig": None,
        }

    monkeypatch.setattr(T._Trainer, "on_epoch", on_epoch)
    monkeypatch.setattr(T, "evaluate", evaluate)


def _train(home, overrides):
    return train_one(home, PRESET, TINY + overrides)


def _best(rd) -> tuple[int, dict]:
    ck = torch.load(rd.ckpt("best"), map_location="cpu", weights_only=False)
    return ck["epoch"], ck["model"]


def test_with_select_on_val_no_test_number_moves_best_pt(tmp_path, monkeypatch, one_thread):
    """Two runs alike but for their test numbers (noise, drawn differently): the same best.pt,
    at the validation curve's best epoch, while the test curves' best epochs differ."""
    val = [0.2, 0.3, 0.45, 0.4, 0.5, 0.42, 0.41, 0.5, 0.3, 0.35, 0.3, 0.3, 0.3, 0.3]  # best: epoch 7 (tie: later)
    bests = []
    for i, seed in enumerate((1, 2)):
        rng = random.Random(seed)
        test = [rng.random() for _ in val]
        with monkeypatch.context() as m:
            _scripted(m, val, test)
            store, rd = _train(tmp_path / f"h{i}", [])
        bests.append(_best(rd))
        row = summarize(rd)
        assert row["best_epoch"] == 7 and row["test_best_epoch"] == max(range(14), key=lambda e: (test[e], e))
        assert row["best_robust_acc"] == pytest.approx(test[7]) and row["best_val_robust_acc"] == 0.5
        assert row["test_best_robust_acc"] == pytest.approx(max(test))
    (e1, m1), (e2, m2) = bests
    assert e1 == e2 == 7
    assert all(torch.equal(m1[k], m2[k]) for k in m1)


def test_a_run_stops_early_when_it_overfits_on_the_validation_split(tmp_path, monkeypatch, one_thread):
    """Validation robust accuracy peaks at epoch 1 and stays 10 points below after the decay at 3,
    training accuracy rising: the 10-epoch streak completes at epoch 11 (the onset), a patience of
    2 stops after epoch 12 of 14, the test curve (which never overfits) notwithstanding."""
    val = [0.3, 0.6] + [0.5] * 12
    test = [0.3 + e / 100 for e in range(14)]
    _scripted(monkeypatch, val, test, train_curve=[0.3 + e / 50 for e in range(14)])
    store, rd = _train(tmp_path / "h", ["train.stop_on_overfit=true", "train.overfit_patience=2"])
    st = rd.status()
    assert st.state == "finished" and st.early_stop == EarlyStop(epoch=12, onset=11, planned=14, split="val")
    assert [r["epoch"] for r in rd.epochs()] == list(range(13))
    assert _best(rd)[0] == 1  # best.pt: the validation best, already saved
    ck = torch.load(rd.ckpt("last"), map_location="cpu", weights_only=False)
    assert ck["epoch"] == 13
    row = summarize(rd)
    assert (row["stopped_early_at"], row["epochs_saved"], row["overfit_epoch"]) == (12, 1, 11)
    monkeypatch.setenv("ADVLC_HOME", str(store.home))
    _, out, _ = cli("show", rd.id, code=0)
    assert (
        "stopped early at epoch 12: robust overfitting (validation) since epoch 11; 1 of 14 epochs not trained" in out
    )
    _, out, _ = cli("runs", "--where", "stopped_early_at == 12", code=0)
    assert rd.id in out and "13/14⏹" in out
    # the reason travels with the run in an archive (data, like its records)
    cli("pack", rd.id, "-o", str(tmp_path / "a.tar.gz"), code=0)
    monkeypatch.setenv("ADVLC_HOME", str(tmp_path / "other"))
    cli("unpack", str(tmp_path / "a.tar.gz"), code=0)
    assert Store(tmp_path / "other").get(rd.id).status().early_stop == st.early_stop


def test_without_stop_on_overfit_the_same_run_trains_to_the_end(tmp_path, monkeypatch, one_thread):
    val = [0.3, 0.6] + [0.5] * 12
    _scripted(monkeypatch, val, [0.3] * 14, train_curve=[0.3 + e / 50 for e in range(14)])
    store, rd = _train(tmp_path / "h", [])
    assert rd.status().early_stop is None and len(rd.epochs()) == 14
    assert summarize(rd)["overfit_epoch"] == 11


# ------------------------------------------------------------------------------ the app
@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_app_marks_a_run_that_stopped_early_and_says_why(tmp_path, size):
    from helpers import force_status

    from fabricate import fabricate_run
    from tui.app import make_app
    from tui.screens.run_detail import RunDetailScreen
    from tui.widgets.alert_bar import AlertBar

    store = Store(tmp_path / "home").ensure()
    rd = fabricate_run(
        store,
        "0000e5a1",
        preset="quick/digits-fgsm_n",
        seed=0,
        group=None,
        total=20,
        done=13,
        state="finished",
        created=1.7e9,
    )
    force_status(rd, early_stop={"epoch": 12, "onset": 9, "planned": 20, "split": "val"})
    store.sync(rd)
    app = make_app(store.home)
    async with app.run_test(size=size) as pilot:
        await pilot_wait(pilot, lambda: "0000e5a1" in app.runs_screen._ids)
        cell = app.runs_screen.query_one("#runs-table").get_cell("0000e5a1", "epoch")
        assert "13/20" in str(cell) and str(cell).rstrip().endswith("⏹")
        await pilot.press("enter")
        await pilot_wait(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        bar = app.screen.query_one("#alerts", AlertBar)
        await pilot_wait(pilot, lambda: "stopped early" in str(bar.render()))
        assert (
            "⏹ stopped early at epoch 12: robust overfitting (validation) since epoch 9; 7 of 20 epochs not "
            "trained" in str(bar.render())
        )
