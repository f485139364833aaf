"""Recordable per-epoch metrics (engine.run.epoch_metrics) and the analysis experiments (engine.run.experiments):
Fig. 4a/b/c and A.1 as runs with `points`, on a small digits model."""

import json

import pytest
import torch
from helpers import force_status

from engine.config.presets import list_presets, load_preset, preset_runs
from engine.config.schema import EXTRA_METRICS
from engine.errors import UserError
from engine.launch.supervisor import create_runs, prepare_resume
from engine.nn.datasets import load_dataset
from engine.nn.metrics.effectiveness import training_attack_effectiveness
from engine.nn.metrics.evaluation import adversarial_vulnerability
from engine.nn.metrics.gradients import gradient_alignment, input_gradient_norm
from engine.nn.metrics.hessian import hs_metric
from engine.nn.metrics.weight_hessian import weight_hessian
from engine.run import experiments as X
from engine.run.checkpoints import load_run_model
from engine.run.epoch_metrics import extra_epoch_metrics
from engine.run.process import run
from engine.store.index import Store


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished digits PGD-10 AT run (3 epochs) to analyse."""
    home = tmp_path_factory.mktemp("home")
    store = Store(home)
    [rd] = create_runs(store, preset_runs("quick/digits-pgd10", ["train.epochs=3", "eval.n=60"]))
    assert run(rd, store, log=lambda s: None) == "finished"
    return home, store, rd


def _experiment(store, preset, overrides):
    [rd] = create_runs(store, preset_runs(preset, overrides))
    lines = []
    state = run(rd, store, log=lines.append)
    assert state == "finished", (rd.status().error, lines[-3:])
    return rd, {p["index"]: p for p in rd.records("points")}


# ---------------------------------------------------------------------------- epoch metrics


def test_extra_epoch_metrics_equal_direct_landscape_computations(source):

    _, _, rd = source
    model, cfg, _ = load_run_model(rd, "end")
    data = load_dataset(cfg.data)
    e = cfg.eval
    e.extra = list(EXTRA_METRICS)
    e.extra_samples, e.effect_samples, e.hs_samples, e.hs_batch, e.n, e.whess_samples = 120, 90, 100, 50, 70, 40
    cfg.train.epochs = 3
    rng = torch.get_rng_state()
    got = extra_epoch_metrics(model, data, cfg, epoch=2)
    assert torch.equal(rng, torch.get_rng_state())  # the training's random stream is untouched
    assert set(got) == set(EXTRA_METRICS) | {"extra_time_s"}
    eps, seed, bs = e.eps, cfg.train.seed, e.batch_size
    xs, ys = data.train_x[:120], data.train_y[:120]
    want = {
        "train_ig": input_gradient_norm(model, xs, ys),
        "train_hs": hs_metric(model, data.train_x[:100], data.train_y[:100], n=100, batch=50, seed=seed)[0],
        "ga": gradient_alignment(model, xs, ys, eps=eps, generator=torch.Generator().manual_seed(seed)),
    }
    av = adversarial_vulnerability(model, xs, ys, eps=eps, steps=20)
    want.update(
        train_clean_loss=av["clean_loss"],
        train_adv_loss=av["adv_loss"],
        train_av=av["av"],
        train_clean_acc=av["clean_acc"],
        train_adv_acc=av["adv_acc"],
    )
    av = adversarial_vulnerability(model, data.test_x[:70], data.test_y[:70], eps=eps, steps=20)
    want.update(test_adv_loss20=av["adv_loss"], test_av20=av["av"], test_adv_acc20=av["adv_acc"])
    xe, ye = data.train_x[:90], data.train_y[:90]
    a = cfg.attack
    for name, kw in (
        ("eff_fgsm", dict(attack_name="fgsm", alpha=eps)),
        ("eff_fgsm_n", dict(attack_name="fgsm_n", alpha=eps, noise=eps)),
        ("eff_pgd10", dict(attack_name="pgd", alpha=eps / 4, steps=10)),
        ("eff_train", dict(attack_name=a.name, alpha=a.alpha, steps=a.steps, train_mode=a.train_mode)),
    ):
        torch.manual_seed(seed)
        want[name] = training_attack_effectiveness(model, xe, ye, eps=eps, batch_size=bs, **kw)
    wh = weight_hessian(model, data.train_x[:40], data.train_y[:40], top_n=1, trace=True, seed=seed)
    want.update(whess_top=wh["eigenvalues"][0], whess_trace=wh["trace"])
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    assert got["eff_fgsm_n"] != got["eff_fgsm"] and 0 < got["eff_pgd10"] <= 1 + 1e-6
    # not due -> the names with None; nothing configured -> nothing
    e.extra_every = 2
    assert extra_epoch_metrics(model, data, cfg, epoch=0) == dict.fromkeys(EXTRA_METRICS)
    e.extra = []
    assert extra_epoch_metrics(model, data, cfg, epoch=2) == {}


def test_standard_training_has_no_eff_train(source):
    _, _, rd = source
    model, _, _ = load_run_model(rd, "end")
    _, cfg, _ = load_preset("quick/digits-standard", ['eval.extra=["eff_train","eff_fgsm"]', "eval.effect_samples=30"])
    got = extra_epoch_metrics(model, load_dataset(cfg.data), cfg, epoch=cfg.train.epochs - 1)
    assert got["eff_train"] is None and got["eff_fgsm"] > 0


def test_training_records_extra_metrics(tmp_path):
    store = Store(tmp_path)
    [rd] = create_runs(
        store,
        preset_runs(
            "quick/digits-fig3-fgsm_n",
            [
                "train.epochs=2",
                "eval.n=40",
                "eval.hs_every=0",
                "eval.extra_samples=40",
                "eval.effect_samples=40",
                "eval.hs_samples=40",
                "eval.extra_every=2",
            ],
        ),
    )
    assert run(rd, store, log=lambda s: None) == "finished"
    first, last = rd.epochs()
    assert first["eff_fgsm"] is None and last["eff_fgsm"] > 0 and last["eff_train"] > 0 and last["train_hs"] > 0


# ---------------------------------------------------------------------------- experiments


def test_fig4a_zero_noise_is_the_checkpoint_itself(source):

    _, store, src = source
    rd, pts = _experiment(
        store,
        "quick/digits-fig4a",
        [
            f"experiment.source={src.id}",
            "experiment.fig4a.values=[0, 0.05]",
            "experiment.fig4a.random_values=1",
            "experiment.samples=100",
        ],
    )
    assert sorted(pts) == [0, 1, 2] and pts[0]["s"] == 0 and pts[1]["s"] == 0.05 and 0 <= pts[2]["s"] <= 0.1
    model, cfg, _ = load_run_model(src, "end")
    data = load_dataset(cfg.data)
    x, y = data.train_x[:100], data.train_y[:100]
    assert pts[0]["hs"] == pytest.approx(hs_metric(model, x, y, n=100, batch=cfg.eval.hs_batch)[0], rel=1e-4)
    torch.manual_seed(0)
    eff = training_attack_effectiveness(model, x, y, "fgsm", eps=cfg.eval.eps, alpha=cfg.eval.eps)
    assert pts[0]["eff_fgsm"] == pytest.approx(eff, rel=1e-4)
    assert pts[1]["hs"] != pts[0]["hs"] and pts[1]["clean_loss"] != pts[0]["clean_loss"]
    for p in pts.values():
        assert set(X.POINT_KEYS["fig4a"]) <= set(p) and p["kind"] == "fig4a"
    conf = rd.config()
    assert conf.source.run == src.id and conf.run.label == "fig4a:pgd"
    assert conf.section("model") == src.config_json()["model"]
    [row] = [r for r in store.runs() if r["id"] == rd.id]
    assert row["state"] == "finished" and row["label"] == "fig4a:pgd"


def test_fig4b_and_fig4c_one_epoch_on_modified_perturbations(source):
    _, store, src = source

    def common(kind):
        return [
            f"experiment.source={src.id}",
            f"experiment.{kind}.train_images=150",
            "experiment.samples=60",
            f"experiment.{kind}.train_eff_every=1",
            "eval.n=40",
        ]

    _, b = _experiment(store, "quick/digits-fig4b", common("fig4b") + ["experiment.fig4b.values=[0, 0.5, 1]"])
    # the flat keys of earlier versions still set the kind's own parameters
    _, c = _experiment(
        store,
        "quick/digits-fig4c",
        [
            f"experiment.source={src.id}",
            "experiment.train_images=150",
            "experiment.samples=60",
            "experiment.train_eff_every=1",
            "eval.n=40",
            "experiment.values=[0, 0.5]",
        ],
    )
    # p = 0: clean examples, effectiveness exactly 0; p = 1: unmodified PGD-20 ~ as effective as PGD-50
    assert b[0]["train_adv_eff"] == 0
    assert 0 < b[1]["train_adv_eff"] < b[2]["train_adv_eff"] and b[2]["train_adv_eff"] > 0.8
    # flipping nothing is training on the unmodified perturbation: the same numbers as p = 1 scaling
    for k in ("train_loss", "train_adv_eff", "hs", "eff_fgsm", "eff_pgd10", "test_robust_acc"):
        assert c[0][k] == b[2][k], k
    assert c[1]["train_adv_eff"] < c[0]["train_adv_eff"]
    for p in list(b.values()) + list(c.values()):
        assert set(X.POINT_KEYS[p["kind"]]) <= set(p) and p["lr"] == 0.02 and p["hs"] > 0


def test_a1_pgd_loss_grows_with_steps_and_matches_pgd_k(source):

    _, store, src = source
    rd, pts = _experiment(
        store,
        "quick/digits-figA1",
        [f"experiment.source={src.id}", "experiment.samples=80", "experiment.a1.steps=[50, 1, 5, 20]"],
    )
    curve = {(p["split"], p["steps"]): p for p in pts.values()}
    assert set(curve) == {(s, k) for s in ("train", "test") for k in (1, 5, 20, 50)}
    for s in ("train", "test"):
        assert curve[(s, 50)]["adv_loss"] >= curve[(s, 1)]["adv_loss"] > curve[(s, 1)]["clean_loss"]
        assert curve[(s, 50)]["adv_acc"] <= curve[(s, 1)]["adv_acc"]
    model, cfg, _ = load_run_model(src, "end")
    data = load_dataset(cfg.data)
    av = adversarial_vulnerability(model, data.test_x[:80], data.test_y[:80], eps=cfg.eval.eps, steps=20)
    assert curve[("test", 20)]["adv_loss"] == pytest.approx(av["adv_loss"], rel=1e-5)
    assert curve[("test", 20)]["adv_acc"] == pytest.approx(av["adv_acc"])


def test_resumed_experiment_computes_only_missing_points(source):
    _, store, src = source
    rd, pts = _experiment(
        store,
        "quick/digits-fig4a",
        [f"experiment.source={src.id}", "experiment.fig4a.values=[0, 0.02]", "experiment.samples=40"],
    )

    t = rd.metrics_table("points")
    t.remove(lambda r: r["index"] == 1)
    t.update({"hs": -1.0}, lambda r: r["index"] == 0)  # a kept point is not recomputed
    force_status(rd, state="stopped")
    prepare_resume(store, rd, foreground=True)
    assert run(rd, store, log=lambda s: None) == "finished"
    again = {p["index"]: p for p in rd.records("points")}
    assert again[0]["hs"] == -1.0 and again[1]["hs"] == pytest.approx(pts[1]["hs"])


def test_a_diverged_epoch_fails_the_experiment_naming_its_own_lr(source):
    _, store, src = source
    overrides = [
        f"experiment.source={src.id}",
        "experiment.fig4b.lr=1e30",
        "experiment.fig4b.values=[1]",
        "experiment.fig4b.train_images=100",
        "experiment.samples=20",
        "eval.n=20",
    ]
    [rd] = create_runs(store, preset_runs("quick/digits-fig4b", overrides))
    assert run(rd, store, log=lambda s: None) == "failed"
    assert "fig4b point p = 1: the epoch diverged" in rd.status().error
    assert "lower experiment.fig4b.lr (it is 1e+30)" in rd.status().error and "method.lam" not in rd.status().error


def test_source_resolution_and_bad_experiments(source):
    _, store, src = source
    assert X.resolve_source(store, src.id[:5]).id == src.id
    assert X.resolve_source(store, "quick/digits-pgd10").id == src.id
    with pytest.raises(UserError, match="train it first: advlc run quick/digits-fgsm_n"):
        X.resolve_source(store, "quick/digits-fgsm_n")
    [rd] = create_runs(store, preset_runs("quick/digits-fig4b", ["experiment.source=quick/digits-fgsm_n"]))
    assert run(rd, store, log=lambda s: None) == "failed"
    assert "train it first" in rd.status().error
    _, cfg, _ = load_preset("quick/digits-fig4c", ["experiment.fig4c.values=[0.5, 1.5]"])
    with pytest.raises(UserError, match="flipped fractions"):
        X.validate(cfg)


def test_cli_experiment_and_points(source, capsys):
    from tui.cli import main

    home, _, src = source

    def cli(*args):
        with pytest.raises(SystemExit) as ei:
            main(["--home", str(home), *args])
        cap = capsys.readouterr()
        return ei.value.code, cap.out, cap.err

    code, out, err = cli(
        "experiment",
        "quick/digits-figA1",
        "--source",
        src.id,
        "--set",
        "experiment.samples=30",
        "--set",
        "experiment.a1.steps=[1,2]",
        "--set",
        'experiment.a1.splits=["test"]',
    )
    assert code == 0, err
    rid = out.split("experiment ", 1)[1].split()[0]
    code, out, err = cli("points", rid, "--json")
    doc = json.loads(out)
    assert [(p["split"], p["steps"]) for p in doc["points"]] == [("test", 1), ("test", 2)]
    assert doc["source"]["run"] == src.id
    code, out, err = cli("experiment", "quick/digits-pgd10")
    assert code == 2 and "has no [experiment] kind" in err and len(err.strip().splitlines()) == 1


def test_train_run_dispatches_experiments(source):
    _, store, src = source
    [rd] = create_runs(
        store,
        preset_runs(
            "quick/digits-figA1", [f"experiment.source={src.id}", "experiment.samples=20", "experiment.a1.steps=[1]"]
        ),
    )
    assert run(rd, store, log=lambda s: None) == "finished"
    assert len(rd.records("points")) == 2 and rd.epochs() == []


def test_figure_presets_resolve_and_experiment_presets_are_valid():
    names = [e.name for e in list_presets() if "/fig" in e.name or "-fig" in e.name]
    for required in (
        "paper/fig1/standard",
        "paper/fig1/fgsm_rs",
        "paper/fig1/pgd10",
        "paper/fig3/pgd10",
        "paper/fig3/fgsm_n",
        "paper/fig3/fgsm",
        "paper/fig4/a-noise",
        "paper/fig4/b-scale",
        "paper/fig4/c-flip",
        "paper/figA1/pgd10",
        "paper/figA2/pgd10-relu",
        "paper/figA2/pgd10-softplus",
        "quick/digits-fig1-pgd10",
        "quick/digits-fig3-fgsm",
        "quick/digits-fig4a",
        "quick/digits-fig4b",
        "quick/digits-fig4c",
        "quick/digits-figA1",
        "quick/digits-figA2-softplus",
    ):
        assert required in names, required
    for n in names:
        _, cfg, _ = load_preset(n)
        if cfg.experiment.kind:
            X.validate(cfg, n)
            assert X.grid(cfg)
        else:
            assert cfg.eval.extra, n
    _, fig1, _ = load_preset("paper/fig1/pgd10")
    assert (fig1.model.arch, fig1.model.depth, fig1.model.width) == ("wide_resnet", 34, 10)
    assert fig1.eval.final == ["pgd50"] and fig1.eval.hs_every == 1
