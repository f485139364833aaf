"""A run does what its config and the paper say, checked against independent code.

The functions of a run (attacks, methods, metrics) have their own fidelity tests; these guard
the wiring: the mode the model is in, which data and settings each step and each evaluation
get, the optimiser, the schedules, the random streams, resume and SWA.

- Differential: a real run (engine.run.process.run, in this process) and the reference loop of
  tests/fidelity/reference_training.py (written from Algorithm 1 and the authors' code; it shares only
  the model constructor with engine/) train a BatchNorm WideResNet-10-1 on augmented digits
  from the same seed. The weights after every epoch, the lr and lambda of every step and the
  training loss and accuracy must agree (the reference draws the random stream advlc documents,
  so they agree to the last bit on one machine; the tolerances allow for other kernels).
- Records from the checkpoints: each epoch's record, each SWA record and each final evaluation
  is recomputed by the reference from the run's own checkpoint of that epoch: clean and PGD at
  eval.eps (!= attack.eps) with step eval.eps / 4 on the first eval.n un-augmented test images
  in eval mode, IG, HS of the first eval.hs_samples images (a dense autograd Hessian), best /
  swa_best as the most robust epoch.
- In every step: the model in train mode, every parameter in an SGD group with the schedule's
  lr, the config's momentum and weight decay and no Nesterov. Besides: the data order and
  augmentation fixed by train.seed, BN running statistics moved by training steps only,
  swa_best chosen on the SWA model's robust accuracy.

About 12 s with one thread on a CPU (docs/FIDELITY.md, tests/README.md).
"""

from __future__ import annotations

import pytest
import torch

import engine.run.loop as loop
import engine.run.trainer as trainer
import reference_training as R
from engine.config import schema as C
from engine.config.presets import list_presets, load_preset, preset_runs
from engine.launch.supervisor import create_runs, prepare_resume
from engine.nn.datasets import load_dataset
from engine.nn.models import build_model
from engine.run.process import run
from engine.store.index import Store

pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # tiny ops: one intra-op thread (conftest.py)
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]  # torch.func

N_TRAIN = 100  # six full batches of 16 and a partial one, dropped (drop_last)
WRN = C.ModelConfig(arch="wide_resnet", depth=10, width=1)


def new_model():
    return build_model(WRN, num_classes=10, in_channels=1, image_size=8)


def model_from(state: dict):
    m = new_model()
    m.load_state_dict(state)
    return m.eval()


@pytest.fixture(scope="module")
def digits():
    """The digits split every quick preset uses (data.split_seed 0): the input, not the wiring."""
    return load_dataset(C.DataConfig(dataset="digits"))


def setup(**changes) -> R.Setup:
    """FGSM-N + AdvLC; every number differs from its default and from the numbers it could be
    confused with (eval.eps from attack.eps, the noise from the step, ...)."""
    base = dict(
        seed=3,
        epochs=2,
        batch_size=16,
        lr=0.1,
        milestones=(1,),
        gamma=0.2,
        momentum=0.85,
        weight_decay=5e-4,
        padding=1,
        flip=True,
        attack="fgsm_n",
        eps=0.1,
        alpha=0.08,
        steps=1,
        noise=0.07,
        train_mode=True,
        lam=0.5,
        lam_linear=True,
        top_n=16,
        clean="start",
        eval_eps=0.12,
        eval_steps=5,
        eval_n=32,
        hs_every=0,
        hs_samples=8,
        hs_batch=4,
    )
    base.update(changes)
    return R.Setup(**base)


def overrides(s: R.Setup, n_train: int = N_TRAIN) -> list[str]:
    """The same settings as `advlc run --set` overrides of quick/digits-fgsm_n-advlc."""

    def b(v):
        return str(v).lower()

    ov = [
        "model.arch=wide_resnet",
        "model.depth=10",
        "model.width=1",
        f"data.n_train={n_train}",
        f"data.crop_padding={s.padding}",
        f"data.flip={b(s.flip)}",
        f"train.epochs={s.epochs}",
        f"train.batch_size={s.batch_size}",
        f"train.lr={s.lr!r}",
        f"train.lr_milestones=[{','.join(map(str, s.milestones))}]",
        f"train.lr_gamma={s.gamma!r}",
        f"train.momentum={s.momentum!r}",
        f"train.weight_decay={s.weight_decay!r}",
        f"train.seed={s.seed}",
        f"attack.name={s.attack}",
        f"attack.eps={s.eps!r}",
        f"attack.alpha={s.alpha!r}",
        f"attack.steps={s.steps}",
        f"attack.noise={s.noise!r}",
        f"attack.train_mode={b(s.train_mode)}",
        "method.name=advlc",
        f"method.lam={s.lam!r}",
        f"method.advlc.top_n={s.top_n}",
        f"method.advlc.clean={s.clean}",
        f"method.lam_schedule={'linear' if s.lam_linear else 'constant'}",
        f"eval.eps={s.eval_eps!r}",
        f"eval.pgd_steps={s.eval_steps}",
        f"eval.n={s.eval_n}",
        f"eval.batch_size={s.eval_n}",
        "eval.every=1",
        "eval.ig=true",
        f"eval.hs_every={s.hs_every}",
        f"eval.hs_samples={s.hs_samples}",
        f"eval.hs_batch={s.hs_batch}",
        "eval.hs_reduce=mean",
    ]
    if s.swa_start is not None:
        ov += ["swa.enabled=true", f"swa.start={s.swa_start}", "swa.every=1", "swa.bn_batches=0"]
    return ov


@pytest.fixture
def steps(monkeypatch):
    """Every SGD step of the run as the loop takes it: its context, the optimiser's settings and
    the model's mode (a spy around engine.run.loop.train_step; the step itself is unchanged)."""
    seen = []
    real = loop.train_step

    def spy(model, optimizer, method, ctx, x, y, **kw):
        seen.append(
            {
                "epoch": ctx.epoch,
                "lam": ctx.lam,
                "training": model.training,
                "optimizer": type(optimizer),
                "param_ids": sorted(id(p) for p in model.parameters()),
                "groups": [dict(g, params=[id(p) for p in g["params"]]) for g in optimizer.param_groups],
            }
        )
        return real(model, optimizer, method, ctx, x, y, **kw)

    monkeypatch.setattr(loop, "train_step", spy)
    return seen


def train_run(home, s: R.Setup, extra: list[str] = (), stop_at: tuple[int, int] | None = None):
    """Run quick/digits-fgsm_n-advlc with `s`; with `stop_at` = (epoch, batch) it is stopped there
    (Ctrl-C) and resumed. Returns (run dir, {epoch: last.pt}, {epoch: swa_end.pt}) with each
    checkpoint as it was at the end of that epoch."""
    store = Store(home)
    [rd] = create_runs(store, preset_runs("quick/digits-fgsm_n-advlc", overrides(s) + list(extra), home=home))
    last, swa, stops = {}, {}, [stop_at]

    def event(kind, info):
        if kind == "epoch":
            last[info["epoch"]] = torch.load(rd.ckpt("last"), weights_only=True)
        elif kind == "swa":
            swa[info["epoch"]] = torch.load(rd.ckpt("swa_end"), weights_only=True)
        elif kind == "batch" and (info["epoch"], info["batch"]) == stops[-1]:
            stops.append(None)
            raise KeyboardInterrupt

    state = run(rd, store, on_event=event, log=lambda line: None)
    if stop_at is not None:
        assert state == "stopped" and sorted(last) == list(range(stop_at[0]))
        prepare_resume(store, rd, foreground=True)
        state = run(rd, store, on_event=event, log=lambda line: None)
    assert state == "finished"
    assert sorted(last) == list(range(s.epochs))
    return rd, last, swa


def assert_same_weights(got: dict, want: dict, skip: tuple[str, ...] = ()):
    assert set(got) == set(want)
    for k in want:
        if any(k.endswith(name) for name in skip):
            continue
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")


def assert_record(got: dict, want: dict):
    """A stored record against the reference's numbers: accuracies exact, the rest to float32 rounding."""
    for k, v in want.items():
        if v is None or isinstance(v, int) or k.endswith("_acc"):
            assert got[k] == v, (got["epoch"], k, got[k], v)
        else:
            assert got[k] == pytest.approx(v, rel=2e-5, abs=1e-7), (got["epoch"], k, got[k], v)


def check_steps(seen, s: R.Setup, ref: dict):
    """Every step: train mode, lambda and lr of its epoch, one SGD with the config's momentum, no
    Nesterov, no dampening and the config's weight decay covering every parameter once."""
    assert seen and {st["epoch"] for st in seen} == set(range(s.epochs))
    for st in seen:
        e = st["epoch"]
        assert st["training"], f"epoch {e}: a training step with the model in eval mode"
        assert st["lam"] == pytest.approx(ref["lam"][e], rel=1e-12), (e, st["lam"], ref["lam"][e])
        assert st["optimizer"] is torch.optim.SGD
        assert sorted(i for g in st["groups"] for i in g["params"]) == st["param_ids"]
        for g in st["groups"]:
            assert g["lr"] == pytest.approx(ref["lr"][e], rel=1e-12), (e, g["lr"], ref["lr"][e])
            assert (g["momentum"], g["nesterov"], g["dampening"], g["weight_decay"], g["maximize"]) == (
                s.momentum,
                False,
                0,
                s.weight_decay,
                False,
            ), g


def check_training(rd, last, s: R.Setup, ref: dict, digits) -> list[dict]:
    """Weights and training numbers of every epoch equal the reference's; the evaluation part of
    each record equals the reference's evaluation of the run's own checkpoint. Returns the
    expected records."""
    recs = rd.epochs()
    assert [r["epoch"] for r in recs] == list(range(s.epochs))
    expected = []
    for e, rec in enumerate(recs):
        assert_same_weights(last[e]["model"], ref["weights"][e])
        want = {"epoch": e, "lr": ref["lr"][e], "train_loss": ref["train_loss"][e], "train_acc": ref["train_acc"][e]}
        want.update(R.evaluate(s, model_from(last[e]["model"]), digits.test_x, digits.test_y, R.hs_due(s, e)))
        assert_record(rec, want)
        expected.append(want)
    return expected


def most_robust(recs: list[dict]) -> int:
    """The authors' `pgd >= best_pgd`: the most robust epoch, the later one on ties."""
    best = max(r["robust_acc"] for r in recs)
    return [r["epoch"] for r in recs if r["robust_acc"] == best][-1]


def test_fgsm_n_advlc_swa_run_with_a_stop_equals_the_reference(home, digits, steps):
    """FGSM-N + AdvLC + SWA, 4 epochs with the lr decayed at 2, lambda ramped, SWA from 0-based
    epoch 1, HS at the end; stopped in the middle of epoch 2 and resumed. Every number the run
    stores is the reference's."""
    s = setup(seed=7, epochs=4, milestones=(2,), hs_every=4, swa_start=1)
    final = ["eval.final=[pgd20]", "eval.final_ckpts=[best,end,swa_best,swa_end]", "eval.final_n=24"]
    rd, last, swa = train_run(home, s, final, stop_at=(2, 3))
    ref = R.train_reference(s, new_model, digits.train_x[:N_TRAIN], digits.train_y[:N_TRAIN])
    assert ref["lam"] == pytest.approx([0.125, 0.25, 0.375, 0.5]) and ref["lr"] == pytest.approx([0.1, 0.1, 0.02, 0.02])
    check_steps(steps, s, ref)
    expected = check_training(rd, last, s, ref, digits)

    best = torch.load(rd.ckpt("best"), weights_only=True)
    assert best["epoch"] == most_robust(expected)
    assert_same_weights(best["model"], last[best["epoch"]]["model"])

    # SWA: updated after epochs 1, 2, 3; equal-weight average with BN re-estimated on augmented
    # training batches; each record is the evaluation of the average, swa_best the most robust
    swa_recs = rd.records("swa")
    assert [r["epoch"] for r in swa_recs] == sorted(swa) == sorted(ref["swa"]) == [1, 2, 3]
    swa_expected = []
    for rec in swa_recs:
        e = rec["epoch"]
        assert swa[e]["epoch"] == e and swa[e]["n"] == e
        assert_same_weights(swa[e]["model"], ref["swa"][e], skip=("num_batches_tracked",))
        want = {"epoch": e, "lr": ref["lr"][e], "train_loss": None, "train_acc": None}
        want.update(R.evaluate(s, model_from(swa[e]["model"]), digits.test_x, digits.test_y, R.hs_due(s, e)))
        assert_record(rec, want)
        swa_expected.append(want)
    swa_best = torch.load(rd.ckpt("swa_best"), weights_only=True)
    assert swa_best["epoch"] == most_robust(swa_expected)
    assert_same_weights(swa_best["model"], swa[swa_best["epoch"]]["model"])

    # final evaluation: PGD-20 at eval.eps on the first final_n test images of each checkpoint
    x, y = digits.test_x[:24], digits.test_y[:24]
    evals = {r["ckpt"]: r for r in rd.records("evals")}
    assert sorted(evals) == ["best", "end", "swa_best", "swa_end"]
    for ckpt, file in (("best", "best"), ("end", "last"), ("swa_best", "swa_best"), ("swa_end", "swa_end")):
        r = evals[ckpt]
        want = R.final_pgd(model_from(torch.load(rd.ckpt(file), weights_only=True)["model"]), x, y, s.eval_eps, 20)
        assert (r["attack"], r["n"], r["eps"]) == ("pgd20", 24, s.eval_eps)
        assert (r["clean_acc"], r["robust_acc"]) == (want["clean_acc"], want["robust_acc"]), ckpt
    assert evals["end"]["epoch"] == 3 and evals["swa_end"]["epoch"] == 3


@pytest.mark.parametrize(
    "attack,clean,train_mode", [("pgd", "start", True), ("fgsm_n", "x", True), ("fgsm_n", "start", False)]
)
def test_run_equals_the_reference(home, digits, steps, attack, clean, train_mode):
    """PGD-5 + AdvLC (step eps / 4, so the projection acts; the clean branch is f(x)); FGSM-N +
    AdvLC with [method.advlc] clean = "x" (f(x), not the noisy start f(x~)); FGSM-N with the attack in
    eval mode (the clean branch is then a train-mode pass of its own at x~, not the attack's
    eval-mode one). Two epochs, constant lambda."""
    pgd = attack == "pgd"
    s = setup(
        seed=5 if pgd else 4,
        attack=attack,
        steps=5 if pgd else 1,
        alpha=0.025 if pgd else 0.08,
        clean=clean,
        train_mode=train_mode,
        lam_linear=False,
        lam=0.4,
    )
    rd, last, _ = train_run(home, s, ["eval.final=[]"])
    ref = R.train_reference(s, new_model, digits.train_x[:N_TRAIN], digits.train_y[:N_TRAIN])
    check_steps(steps, s, ref)
    check_training(rd, last, s, ref, digits)


def test_seed_fixes_the_data_order_and_augmentation(home, monkeypatch):
    """Equal train.seed, equal batches (indices and augmented images); another seed, other ones;
    and the order changes from epoch to epoch (one stream, not re-seeded per epoch)."""
    batches = []
    real = loop.epoch_stream

    def spy(*args, **kw):
        for xb, yb, idx in real(*args, **kw):
            batches[-1].append((idx.clone(), xb.clone()))
            yield xb, yb, idx

    monkeypatch.setattr(loop, "epoch_stream", spy)
    store = Store(home)
    ov = [
        "data.n_train=48",
        "train.batch_size=16",
        "train.epochs=2",
        "data.crop_padding=1",
        "data.flip=true",
        "eval.n=8",
        "eval.ig=false",
        "eval.hs_every=0",
        "eval.final=[]",
    ]
    for seed in (3, 3, 4):
        batches.append([])
        [rd] = create_runs(store, preset_runs("quick/digits-standard", ov + [f"train.seed={seed}"], home=home))
        assert run(rd, store, log=lambda line: None) == "finished"
    a, b, c = batches
    assert len(a) == len(b) == len(c) == 6
    for (ia, xa), (ib, xb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(xa, xb)
    assert not torch.equal(torch.cat([i for i, _ in a]), torch.cat([i for i, _ in c]))
    assert not torch.equal(torch.cat([i for i, _ in a[:3]]), torch.cat([i for i, _ in a[3:]]))
    # augmentation drawn from the seed: the same images in the same batch, augmented otherwise
    xa0, xc0 = dict(zip(a[0][0].tolist(), a[0][1])), dict(zip(c[0][0].tolist(), c[0][1]))
    common = sorted(set(xa0) & set(xc0))
    assert common and any(not torch.equal(xa0[i], xc0[i]) for i in common)


def test_bn_statistics_move_in_training_steps_only(home, monkeypatch):
    """The live model's BN running statistics change in every epoch's training (two train-mode
    passes per FGSM-N + AdvLC step: the attack's start, shared with the clean branch, and the
    adversarial batch) and not at all in what follows it: the per-epoch evaluation, HS, the SWA
    update and its evaluation, and the extra metrics (whose attacks run in train mode)."""
    snaps = []
    real = trainer._Trainer.on_epoch

    def buffers(model):
        return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}

    def spy(self, r):
        before = buffers(self.model)
        stop = real(self, r)
        snaps.append((before, buffers(self.model)))
        return stop

    monkeypatch.setattr(trainer._Trainer, "on_epoch", spy)
    s = setup(swa_start=0, hs_every=1, hs_samples=4, eval_n=8)
    extra = [
        "eval.extra=[train_ig,train_av,eff_train]",
        "eval.extra_samples=8",
        "eval.effect_samples=8",
        "eval.final=[]",
    ]
    store = Store(home)
    [rd] = create_runs(store, preset_runs("quick/digits-fgsm_n-advlc", overrides(s, n_train=32) + extra, home=home))
    assert run(rd, store, log=lambda line: None) == "finished"
    assert len(snaps) == 2 and rd.epochs()[-1]["eff_train"] is not None
    previous = buffers(new_model())  # fresh statistics: mean 0, var 1, no batches
    steps_per_epoch = 32 // s.batch_size
    for before, after in snaps:
        for k in before:
            assert torch.equal(before[k], after[k]), f"{k} changed after training ended"
            if k.endswith("num_batches_tracked"):
                assert int(before[k] - previous[k]) == 2 * steps_per_epoch, k
            else:
                assert not torch.equal(before[k], previous[k]), f"{k} did not move in training"
        previous = after


def test_best_and_swa_best_are_the_most_robust_epochs_across_a_resume(home, monkeypatch):
    """best.pt: the live model's most robust epoch; swa_best.pt: the SWA model of the update with
    the highest SWA robust accuracy, the later one on ties: not chosen on clean accuracy, not the
    latest, not the live model's best epoch. Both survive a stop and resume (the best so far is
    restored, not reset). The accuracies are scripted (the real evaluation runs first); the trainer
    evaluates the live model, then the SWA model, each epoch."""
    main_robust = iter([0.7, 0.2, 0.1, 0.3])
    swa_scores = iter([(0.6, 0.1), (0.4, 0.9), (0.6, 0.3), (0.5, 0.2)])  # (robust, clean)
    calls = []
    real = trainer.evaluate

    def scripted(model, x, y, **kw):
        out = real(model, x, y, **kw)
        calls.append(model)
        if len(calls) % 2:
            out["robust_acc"] = next(main_robust)
        else:
            out["robust_acc"], out["clean_acc"] = next(swa_scores)
        return out

    monkeypatch.setattr(trainer, "evaluate", scripted)
    store = Store(home)
    ov = [
        "data.n_train=32",
        "train.batch_size=16",
        "train.epochs=4",
        "swa.start=0",
        "eval.n=8",
        "eval.ig=false",
        "eval.hs_every=0",
        "eval.final=[]",
    ]
    [rd] = create_runs(store, preset_runs("quick/digits-fgsm_n-advlc-swa", ov, home=home))
    last, swa, stops = {}, {}, [(3, 1)]

    def event(kind, info):
        if kind == "epoch":
            last[info["epoch"]] = torch.load(rd.ckpt("last"), weights_only=True)["model"]
        elif kind == "swa":
            swa[info["epoch"]] = torch.load(rd.ckpt("swa_end"), weights_only=True)["model"]
        elif kind == "batch" and (info["epoch"], info["batch"]) == stops[-1]:
            stops.append(None)
            raise KeyboardInterrupt

    assert run(rd, store, on_event=event, log=lambda line: None) == "stopped"
    prepare_resume(store, rd, foreground=True)
    assert run(rd, store, on_event=event, log=lambda line: None) == "finished"
    assert calls[0] is not calls[1] and calls[1] is calls[3]  # the live model, then the average
    assert [r["robust_acc"] for r in rd.records("swa")] == [0.6, 0.4, 0.6, 0.5]
    best = torch.load(rd.ckpt("best"), weights_only=True)
    assert (best["epoch"], best["robust_acc"]) == (0, 0.7)
    swa_best = torch.load(rd.ckpt("swa_best"), weights_only=True)
    assert (swa_best["epoch"], swa_best["robust_acc"], swa_best["clean_acc"], swa_best["n"]) == (2, 0.6, 0.3, 3)
    for k in last[0]:
        assert torch.equal(best["model"][k], last[0][k]), k
        assert torch.equal(swa_best["model"][k], swa[2][k]), k


def swa_paper_presets(home) -> list[str]:
    return sorted(
        p.name
        for p in list_presets(home)
        if p.name.startswith("paper/") and load_preset(p.name, home=home)[1].swa.enabled
    )


def test_swa_paper_presets_evaluate_their_swa_checkpoints(home):
    """Table 1's "+SWA" rows report the SWA model's AutoAttack accuracy: a SWA preset's final
    evaluation must include swa_best and swa_end."""
    names = swa_paper_presets(home)
    assert len(names) == 4
    for name in names:
        e = load_preset(name, home=home)[1].eval
        assert "aa" in e.final and {"swa_best", "swa_end"} <= set(e.final_ckpts), name
