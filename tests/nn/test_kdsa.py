"""KDSA: the loss against the written-out formula, teacher resolution and its one-line errors,
and a digits run distilled from (1-epoch) teacher runs."""

import copy
import json
import math
import textwrap

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet
from helpers import force_status

from engine.config import schema as C
from engine.errors import UserError
from engine.launch import plan as T
from engine.launch.plan import plan_runs
from engine.launch.supervisor import create_runs
from engine.nn.methods import get_method
from engine.nn.methods.context import StepContext
from engine.run.process import run
from engine.store.index import Store

FAST = ["eval.n=100"]


# ------------------------------------------------------------------------------ the loss
def _kdsa_cfg(**method):
    cfg = C.RunConfig()
    cfg.method.name = "kdsa"
    cfg.attack.name = "fgsm"  # deterministic, so the test can redo the attack
    cfg.attack.eps = 0.1
    for k, v in method.items():
        C.set_key(cfg, f"method.kdsa.{k}", v, "test")
    return C.resolve(cfg, "test")


def _formula(s, t_std, t_adv, y, T_, a_std, a_adv):
    """(1-a-b) CE + a T^2 KL(p_std || p_s) + b T^2 KL(p_adv || p_s), written out by hand."""

    def kl(t):
        p_t = torch.exp(t / T_) / torch.exp(t / T_).sum(1, keepdim=True)
        log_p_s = s / T_ - torch.log(torch.exp(s / T_).sum(1, keepdim=True))
        return (p_t * (torch.log(p_t) - log_p_s)).sum(1).mean()

    ce = -(s.gather(1, y[:, None]).squeeze(1) - torch.log(torch.exp(s).sum(1))).mean()
    return (1 - a_std - a_adv) * ce + a_std * T_**2 * kl(t_std) + a_adv * T_**2 * kl(t_adv)


@pytest.mark.parametrize("T_,a_std,a_adv", [(2.0, 0.1, 0.6), (4.0, 0.3, 0.3), (1.0, 0.0, 1.0)])
def test_loss_equals_formula(digits_batch, T_, a_std, a_adv):
    x, y = digits_batch
    x, y = x[:16], y[:16]
    torch.manual_seed(0)
    student = TinyNet().train()
    t_std, t_adv = TinyNet().eval(), TinyNet().eval()
    for t in (t_std, t_adv):
        for p in t.parameters():
            p.requires_grad_(False)
    twin = copy.deepcopy(student)
    cfg = _kdsa_cfg(temperature=T_, alpha_std=a_std, alpha_adv=a_adv)
    ctx = StepContext(cfg=cfg, epoch=0, lam=0.0, extras={"teachers": {"standard": t_std, "adversarial": t_adv}})
    loss, stats = get_method("kdsa").loss(student, x, y, ctx)

    # independently: the same (deterministic) FGSM example, then the formula by hand
    x_adv = ctx.attack(twin, x, y).x_adv
    s = twin(x_adv)
    expected = _formula(s.double(), t_std(x_adv).double(), t_adv(x_adv).double(), y, T_, a_std, a_adv)
    assert torch.allclose(loss.double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(stats["logits"], s) or torch.allclose(stats["logits"], s, atol=1e-6)

    # the gradient reaches the student only
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for t in (t_std, t_adv) for p in t.parameters())


def test_kl_form_has_the_original_codes_gradient():
    """The original code's KD term is the soft-target CE (= KL + teacher entropy): same gradient."""
    from engine.nn.methods.kdsa import kd_term

    torch.manual_seed(0)
    s = torch.randn(5, 10, requires_grad=True)
    t = torch.randn(5, 10)
    T_ = 2.0
    soft_ce = -(F.softmax(t / T_, 1) * F.log_softmax(s / T_, 1)).sum(1).mean() * T_**2
    (g1,) = torch.autograd.grad(kd_term(s, t, T_), s)
    (g2,) = torch.autograd.grad(soft_ce, s)
    torch.testing.assert_close(g1, g2)
    entropy = -(F.softmax(t / T_, 1) * F.log_softmax(t / T_, 1)).sum(1).mean() * T_**2
    torch.testing.assert_close(kd_term(s, t, T_) + entropy, soft_ce)
    assert kd_term(t, t, T_).abs().item() < 1e-6


def test_method_without_teachers_and_bad_weights():
    cfg = _kdsa_cfg()
    ctx = StepContext(cfg=cfg, epoch=0, lam=0.0)
    with pytest.raises(UserError, match="teachers"):
        get_method("kdsa").loss(TinyNet(), torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), ctx)
    with pytest.raises(UserError, match="method.kdsa.alpha_std \\+ method.kdsa.alpha_adv = 1.2: must be <= 1"):
        _kdsa_cfg(alpha_std=0.6, alpha_adv=0.6)


# ------------------------------------------------------------------------------ teachers
def _user_preset(home, name, text):
    p = home / "presets" / f"{name}.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return f"user/{name}"


def test_missing_teachers_one_line_message(home):
    with pytest.raises(UserError) as exc:
        plan_runs("quick/digits-kdsa", home=home)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg == (
        "KDSA needs finished runs of teacher presets 'quick/digits-standard' (standard) and "
        "'quick/digits-pgd10' (adversarial); run them first: advlc run quick/digits-standard; "
        "advlc run quick/digits-pgd10 (or add --with-teachers)"
    )
    # --set overrides of [data]/[model]/train.device go into the suggested command
    with pytest.raises(UserError, match="advlc run quick/digits-standard --set train.device=cpu;"):
        plan_runs("quick/digits-kdsa", ["train.device=cpu", "train.epochs=2"], home=home)


def test_teachers_table_errors(home):
    ref = _user_preset(
        home,
        "noteach",
        """
        [preset]
        extends = "quick/digits-kdsa"
        [teachers]
        standard = "quick/digits-standard"
        adversarial = "quick/digits-pgd10"
        extra = "quick/digits-pgd10"
    """,
    )
    with pytest.raises(UserError, match=r"noteach.toml: \[teachers\] unknown key 'extra'"):
        plan_runs(ref, home=home)
    ref = _user_preset(
        home,
        "bad",
        """
        [preset]
        extends = "quick/_digits"
        [attack]
        name = "pgd"
        [method]
        name = "kdsa"
    """,
    )
    with pytest.raises(UserError, match=r"bad.toml: method 'kdsa' needs a \[teachers\] table"):
        plan_runs(ref, home=home)
    ref = _user_preset(
        home,
        "typo",
        """
        [preset]
        extends = "quick/digits-kdsa"
        [teachers]
        standard = "quick/digits-standrd"
    """,
    )
    with pytest.raises(UserError, match=r"typo.toml: \[teachers\] standard = 'quick/digits-standrd': no preset"):
        plan_runs(ref, home=home)
    ref = _user_preset(
        home,
        "notkd",
        """
        [preset]
        extends = "quick/digits-pgd10"
        [teachers]
        standard = "quick/digits-standard"
    """,
    )
    with pytest.raises(UserError, match="method 'pgd' uses no teachers"):
        plan_runs(ref, home=home)


def test_find_run_newest_finished_same_dataset_arch(tmp_path):
    store = Store(tmp_path)
    [p] = plan_runs("quick/digits-standard", home=tmp_path)

    def make(state, created, cfg_changes=()):
        rd = create_runs(store, [p])[0]
        conf = json.loads(rd.config_path.read_text())
        conf["run"]["created"] = created
        for (sec, key), v in dict(cfg_changes).items():
            conf[sec][key] = v
        from engine.store.files import write_json

        write_json(rd.config_path, conf)
        force_status(rd, state=state)
        rd.ckpt("last").write_bytes(b"")
        store.sync(rd)
        return rd

    old = make("finished", 1.0)
    new = make("finished", 2.0)
    make("failed", 3.0)
    make("finished", 4.0, {("model", "arch"): "preact_resnet18"})
    assert T.find_run(store, "quick/digits-standard", "digits", "cnn_small", "end") == new.id
    new.ckpt("last").unlink()  # no checkpoint -> not usable
    assert T.find_run(store, "quick/digits-standard", "digits", "cnn_small", "end") == old.id
    assert T.find_run(store, "quick/digits-standard", "digits", "cnn_small", "best") is None
    assert T.find_run(store, "quick/digits-pgd10", "digits", "cnn_small", "end") is None


def test_with_teachers_plans_them_first(home):
    store = Store(home)
    planned = plan_runs(
        "quick/digits-kdsa", ["train.device=cpu", "train.epochs=2"], home=home, with_teachers=True, seeds=2
    )
    assert [(p.preset, p.role) for p in planned] == [
        ("quick/digits-standard", "teacher:standard"),
        ("quick/digits-pgd10", "teacher:adversarial"),
        ("quick/digits-kdsa", ""),
        ("quick/digits-kdsa", ""),
    ]
    assert planned[0].cfg.train.epochs == 20  # teachers train as their preset says
    assert planned[2].cfg.train.epochs == 2
    rds = create_runs(store, planned)
    confs = [rd.config_json()["run"] for rd in rds]
    assert confs[0]["group"] is None and confs[1]["group"] is None
    assert confs[2]["group"] == confs[3]["group"] is not None
    for c in confs[2:]:
        assert c["teachers"]["standard"]["run"] == rds[0].id and c["teachers"]["standard"]["which"] == "end"
        assert c["teachers"]["standard"]["checkpoint"] == str(rds[0].ckpt("last"))
        assert c["teachers"]["adversarial"]["run"] == rds[1].id
        assert c["teachers"]["adversarial"]["checkpoint"] == str(rds[1].ckpt("best"))
    # the student cannot start before its teachers have finished: one clear line
    assert run(rds[2], store, log=lambda s: None) == "failed"
    err = rds[2].status().error
    assert "\n" not in err and f"teacher run {rds[0].id} (standard, preset 'quick/digits-standard') is queued" in err


# ------------------------------------------------------------------------------ a digits run
@pytest.fixture(scope="module")
def teacher_home(tmp_path_factory):
    """A store with 1-epoch digits teacher runs (standard, PGD-10)."""
    home = tmp_path_factory.mktemp("kd")
    store = Store(home)
    for preset in ("quick/digits-standard", "quick/digits-pgd10"):
        [rd] = create_runs(store, plan_runs(preset, ["train.epochs=1"] + FAST, home=home))
        assert run(rd, store, log=lambda s: None) == "finished"
    return home


def test_only_one_teacher_missing_names_it(tmp_path):
    store = Store(tmp_path)
    [rd] = create_runs(store, plan_runs("quick/digits-standard", ["train.epochs=1"] + FAST, home=tmp_path))
    assert run(rd, store, log=lambda s: None) == "finished"
    with pytest.raises(UserError) as exc:
        plan_runs("quick/digits-kdsa", home=tmp_path)
    assert str(exc.value) == (
        "KDSA needs a finished run of teacher preset 'quick/digits-pgd10' (adversarial); "
        "run it first: advlc run quick/digits-pgd10 (or add --with-teachers)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["quick/digits-kdsa", "quick/digits-kdsa-swa"])
def test_kdsa_digits_run_trains(teacher_home, preset):
    store = Store(teacher_home)
    teachers = {r["preset"]: r["id"] for r in store.runs(state="finished")}
    ov = ["train.epochs=2"] + FAST + (["swa.start=0"] if preset.endswith("swa") else [])
    [p] = plan_runs(preset, ov, home=teacher_home)
    assert p.teachers["standard"].run_id == teachers["quick/digits-standard"]
    assert p.teachers["adversarial"].run_id == teachers["quick/digits-pgd10"]
    [rd] = create_runs(store, [p])
    assert run(rd, store, log=lambda s: None) == "finished", rd.status().error
    recs = rd.epochs()
    assert len(recs) == 2
    assert all(math.isfinite(r["train_loss"]) for r in recs)
    assert recs[-1]["clean_acc"] > 0.2  # chance is 0.1 (2 epochs; teachers of 1 epoch)
    if preset.endswith("swa"):
        assert [r["epoch"] for r in rd.records("swa")] == [0, 1]
        assert rd.ckpt("swa_best").exists() and rd.ckpt("swa_end").exists()
