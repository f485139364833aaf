"""The regularised methods of issue 4 (AdvLC variants, IGR, CURE, GradAlign, LogitAlign,
Consistency, the Eq. 9/10 ablations): each loss against an independent computation of its
formula, their parameter gradients, lambda = 0, every training attack, the validation
messages, and a two-epoch digits run of each quick preset.

The references are written out from the formulas: input gradients with
`torch.autograd.functional.jacobian`, KL/JS as explicit p * log(p / q) sums, the nuclear norm
with `torch.linalg.svdvals`, parameter gradients of the double-backprop penalties by central
finite differences. Attacks are made deterministic with PGD without random start, or by
seeding torch identically before the method and the reference.
"""

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.functional import jacobian
from torch.func import functional_call

from engine.config import schema as C
from engine.errors import UserError
from engine.nn.attacks import fgsm, fgsm_rs, pgd
from engine.nn.datasets import augment
from engine.nn.methods import get_method
from engine.nn.methods.advlc_variants import PENALTIES
from engine.nn.methods.context import StepContext
from engine.nn.methods.penalties import nuclear_norm

EPS = 0.1
REGULARISED = (
    "advlc_l1",
    "advlc_sql2",
    "advlc_kl",
    "advlc_js",
    "advlc_nuclear",
    "igr",
    "cure",
    "gradalign",
    "logitalign",
    "consistency",
    "eq9_clean_loss",
)
ALL = REGULARISED + ("eq10_grad_penalty",)


class SoftNet(nn.Module):
    """A float64 softplus MLP with BatchNorm: smooth (non-zero input Hessian), and train-mode
    BN couples the samples, so the references must treat the batch as one input."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 24)
        self.bn = nn.BatchNorm1d(24)
        self.act = nn.Softplus()
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc2(self.act(self.bn(self.fc1(x.flatten(1)))))


def make_model(seed=0):
    torch.manual_seed(seed)
    return SoftNet().double().train()


@pytest.fixture(scope="module")
def batch():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:32], dtype=torch.float64).unsqueeze(1) / 16.0
    y = torch.tensor(d.target[:32], dtype=torch.long)
    return x, y


def make_cfg(method, attack="pgd", lam=1.0, data=None, **method_kw):
    tables = {
        "method": {"name": method, "lam": lam, **({method: method_kw} if method_kw else {})},
        "attack": {"eps": EPS, "steps": 2},
        "data": data or {"crop_padding": 0, "flip": False},
    }
    if get_method(method).fixed_attack is None:
        tables["attack"]["name"] = attack
    return C.build(tables, "test")


def call(method, model, x, y, cfg, lam, seed=0):
    torch.manual_seed(seed)
    return get_method(method).loss(model, x, y, StepContext(cfg=cfg, epoch=0, lam=lam))


def ce(logits, y, reduction="mean"):
    return F.cross_entropy(logits, y, reduction=reduction)


def input_grad_ref(model, x, y):
    """d mean-CE / dX for the whole batch (train-mode BN included), via autograd.functional."""
    return jacobian(lambda z: F.cross_entropy(model(z), y), x)


def softmax_ref(logits, t=1.0):
    e = torch.exp(logits / t - (logits / t).max(1, keepdim=True).values)
    return e / e.sum(1, keepdim=True)


def kl_ref(p, q):
    return (p * torch.log(p / q)).sum(1)


def js_ref(p, q):
    m = (p + q) / 2
    return 0.5 * (p * torch.log(p / m)).sum(1) + 0.5 * (q * torch.log(q / m)).sum(1)


def pgd_ref(model, x, y):
    return pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=2, train_mode=True)


def close(a, b, rtol=1e-9, atol=1e-11):
    return torch.allclose(
        torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), rtol=rtol, atol=atol
    )


# ---------------------------------------------------------------------------------------
# the penalties on their own
# ---------------------------------------------------------------------------------------


def test_variant_penalties_against_direct_formulas():
    torch.manual_seed(1)
    adv, clean = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    p, q = softmax_ref(clean), softmax_ref(adv)
    d = adv - clean
    expected = {
        "l1": sum(abs(v) for v in d.flatten().tolist()),
        "sql2": sum(v * v for v in d.flatten().tolist()),
        "kl": kl_ref(p, q).sum(),
        "js": js_ref(p, q).sum(),
        "nuclear": torch.linalg.svdvals(d).sum(),
    }
    for key, pen in PENALTIES.items():
        assert close(pen(adv, clean), expected[key]), key
    # JS is symmetric and bounded by log 2; KL is not symmetric
    assert close(PENALTIES["js"](adv, clean), PENALTIES["js"](clean, adv))
    assert PENALTIES["js"](adv, clean) <= 7 * math.log(2)
    assert not close(PENALTIES["kl"](adv, clean), PENALTIES["kl"](clean, adv))


@pytest.mark.parametrize("shape", [(50, 10), (10, 50), (6, 6)])
def test_nuclear_norm_value_and_gradient_match_svd(shape):
    torch.manual_seed(2)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        d = torch.randn(*shape, dtype=dtype, requires_grad=True)
        (g,) = torch.autograd.grad(nuclear_norm(d), d)
        d2 = d.detach().clone().requires_grad_(True)
        ref = torch.linalg.svdvals(d2).sum()
        (g2,) = torch.autograd.grad(ref, d2)  # U V^T
        assert torch.allclose(nuclear_norm(d.detach()), ref.detach(), rtol=tol)
        assert torch.allclose(g, g2, atol=50 * tol)
    d = torch.randn(*shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the iteration itself stays in float32
        assert torch.allclose(nuclear_norm(d), torch.linalg.svdvals(d).sum(), rtol=2e-5)
    z = torch.zeros(4, 3, requires_grad=True)
    assert nuclear_norm(z).item() == 0.0
    assert torch.autograd.grad(nuclear_norm(z), z)[0].abs().sum().item() == 0.0


# ---------------------------------------------------------------------------------------
# each objective against its formula
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(PENALTIES))
def test_advlc_variant_objective(key, batch):
    """(sum CE(f(x_adv)) + lam * L_reg(f(x_adv), f(x))) / M, both passes in train mode."""
    x, y = batch
    model = make_model()
    ref = copy.deepcopy(model)
    loss, stats = call(f"advlc_{key}", model, x, y, make_cfg(f"advlc_{key}"), lam=0.7)
    la, lc = ref(pgd_ref(ref, x, y)), ref(x)
    d = la - lc
    p, q = softmax_ref(lc), softmax_ref(la)
    reg = {
        "l1": d.abs().sum(),
        "sql2": (d * d).sum(),
        "kl": kl_ref(p, q).sum(),
        "js": js_ref(p, q).sum(),
        "nuclear": torch.linalg.svdvals(d).sum(),
    }[key]
    expected = (ce(la, y, "sum") + 0.7 * reg) / len(x)
    assert close(loss, expected)
    assert close(stats["reg"], reg / len(x)) and not stats["reg"].requires_grad
    assert close(stats["logits"], la)


def test_igr_objective(batch):
    x, y = batch
    model = make_model()
    ref = copy.deepcopy(model)
    loss, stats = call("igr", model, x, y, make_cfg("igr"), lam=300.0)
    g = input_grad_ref(ref, x, y)
    # the batch-mean CE's gradient = per-sample gradients / B: ||g||^2 = sum_i ||g_i||^2 / B^2
    per_sample = torch.stack(
        [
            jacobian(
                lambda z: F.cross_entropy(ref(torch.cat([x[:i], z, x[i + 1 :]])), y, reduction="sum"), x[i : i + 1]
            )
            for i in range(3)
        ]
    )
    assert close(g[:3], per_sample.squeeze(1) / len(x), rtol=1e-7)  # not the per-sample gradient
    expected = ce(ref(pgd_ref(ref, x, y)), y) + 300.0 * (g * g).sum()
    assert close(loss, expected)
    assert close(stats["reg"], (g * g).sum())


def test_cure_objective(batch):
    x, y = batch
    model = make_model()
    ref = copy.deepcopy(model)
    loss, stats = call("cure", model, x, y, make_cfg("cure"), lam=500.0)
    g0 = input_grad_ref(ref, x, y)
    g1 = input_grad_ref(ref, x + EPS * torch.sign(g0), y)  # not clipped: the distance is exactly eps
    reg = ((g1 - g0) ** 2).sum()
    assert close(loss, ce(ref(pgd_ref(ref, x, y)), y) + 500.0 * reg)
    assert close(stats["reg"], reg)


def test_cure_batch_sq_is_the_default_form(batch):
    x, y = batch
    assert make_cfg("cure").method.params.form == "batch_sq"
    a, _ = call("cure", make_model(), x, y, make_cfg("cure", lam=500.0), lam=500.0)
    b, _ = call("cure", make_model(), x, y, make_cfg("cure", lam=500.0, form="batch_sq"), lam=500.0)
    assert torch.equal(a, b)


def test_cure_original_form(batch):
    """[method.cure] form = "original" (the public CURE code): model in EVAL mode for the penalty,
    (1/B^2) sum_i ||grad_x CE_i(x_i + h_i) - grad_x CE_i(x_i)||_2 (unsquared per-sample norms of
    the per-sample gradient difference, i.e. the mean over samples of the norms of the
    batch-mean-CE gradient's rows), h = eps * sign(grad), the adversarial CE in train mode
    and computed before the penalty (the original's order). Value against per-sample gradients
    written out (eval mode: the samples are independent); parameter gradient against a central
    difference of that formula (so an eval-mode BN whose running statistics changed between the
    penalty's forward and backward passes would fail)."""
    x, y = batch
    B = len(x)
    model = make_model()
    ref = copy.deepcopy(model)
    lam = 5.0
    loss, stats = call("cure", model, x, y, make_cfg("cure", lam=lam, form="original"), lam=lam, seed=9)
    assert model.training  # the trainer's mode is restored
    # the original's order: the attack and the train-mode pass on x_adv (both update the BN
    # running statistics), then the eval-mode penalty with the statistics as they are then
    xa = pgd_ref(ref, x, y)
    with torch.no_grad():
        ref.train()(xa)
    bufs = {k: b.detach().clone() for k, b in ref.named_buffers()}

    def objective(theta):
        state = {**theta, **{k: b.clone() for k, b in bufs.items()}}  # BN updates stay local

        def f(z):
            return functional_call(ref, state, (z,))

        ref.eval()
        g0 = jacobian(lambda u: F.cross_entropy(f(u), y, reduction="sum"), x)  # rows: per-sample
        g1 = jacobian(lambda u: F.cross_entropy(f(u), y, reduction="sum"), x + EPS * torch.sign(g0))
        reg = sum(torch.sqrt(((g1[i] - g0[i]) ** 2).sum()) for i in range(B)) / B**2
        ref.train()
        return ce(f(xa), y) + lam * reg, reg

    theta0 = {k: p.detach() for k, p in ref.named_parameters()}
    want, reg = objective(theta0)
    assert close(loss, want) and close(stats["reg"], reg)
    # the default (squared, train-mode) form gives another value on this model
    sq, _ = call("cure", make_model(), x, y, make_cfg("cure", lam=lam), lam=lam, seed=9)
    assert not close(sq, loss, rtol=1e-3)
    _fd_check(model, loss, lambda theta: objective(theta)[0])


def test_gradalign_objective(batch):
    x, y = batch
    model = make_model()
    ref = copy.deepcopy(model)
    loss, stats = call("gradalign", model, x, y, make_cfg("gradalign"), lam=7.0, seed=3)
    torch.manual_seed(3)  # PGD without random start draws nothing; eta is the first draw
    eta = torch.empty_like(x).uniform_(-EPS, EPS)
    g1 = input_grad_ref(ref, x, y).flatten(1)
    g2 = input_grad_ref(ref, x + eta, y).flatten(1)
    cos = torch.stack([g1[i] @ g2[i] / (g1[i].norm() * g2[i].norm()) for i in range(len(x))])
    assert close(loss, ce(ref(pgd_ref(ref, x, y)), y) + 7.0 * (1 - cos.mean()))
    assert close(stats["reg"], 1 - cos.mean())


def test_gradalign_skips_zero_gradients():
    """Samples with a zero input gradient are left out of the mean cosine, without a host sync."""
    from engine.nn.methods.gradalign import gradalign_penalty

    torch.manual_seed(0)
    lin = nn.Linear(4, 3).double()
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])

    class Masked(nn.Module):  # sample 1 is multiplied by zero: its input gradient is 0
        def forward(self, z):
            return lin(z.flatten(1) * torch.tensor([[1.0], [0.0], [1.0]], dtype=z.dtype))

    m = Masked()
    torch.manual_seed(4)
    reg = gradalign_penalty(m, x, y, 0.5)
    torch.manual_seed(4)
    eta = torch.empty_like(x).uniform_(-0.5, 0.5)
    g1, g2 = input_grad_ref(m, x, y).flatten(1), input_grad_ref(m, x + eta, y).flatten(1)
    cos = [g1[i] @ g2[i] / (g1[i].norm() * g2[i].norm()) for i in (0, 2)]
    assert close(reg, 1 - (cos[0] + cos[1]) / 2)


def test_gradalign_cosine_is_safe_for_tiny_and_zero_gradients():
    """Value and gradient of the mean cosine equal the direct formula; a zero or ~1e-30
    gradient is left out and gets a zero (not an overflowing) gradient in float32."""
    from engine.nn.methods.gradalign import mean_cosine

    torch.manual_seed(12)
    g1 = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    g2 = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    got = mean_cosine(g1, g2)
    ref = torch.stack([g1[i] @ g2[i] / (g1[i].norm() * g2[i].norm()) for i in range(4)]).mean()
    assert close(got, ref)
    for a, b in zip(torch.autograd.grad(got, (g1, g2)), torch.autograd.grad(ref, (g1, g2))):
        assert close(a, b)

    a = torch.randn(4, 6)
    b = torch.randn(4, 6)
    b[1] = 0.0
    b[2] *= 1e-30
    b[3] *= 1e-12  # small but valid: kept, with an exact cosine
    b.requires_grad_(True)
    got = mean_cosine(a, b)
    (gb,) = torch.autograd.grad(got, b)
    cos = [float(a[i] @ b[i].detach() / (a[i].norm() * b[i].detach().norm())) for i in (0, 3)]
    assert abs(got.item() - sum(cos) / 2) < 1e-6
    assert torch.isfinite(gb).all() and gb[1].abs().sum() == 0 and gb[2].abs().sum() == 0
    assert mean_cosine(a, torch.zeros(4, 6)).item() == 0.0  # none valid: penalty 1 - 0


def test_logitalign_objective(batch):
    x, y = batch
    model = make_model()
    ref = copy.deepcopy(model)
    loss, stats = call("logitalign", model, x, y, make_cfg("logitalign"), lam=20.0, seed=5)
    xa = pgd_ref(ref, x, y)
    torch.manual_seed(5)
    x_nb = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1)
    xa_nb = pgd_ref(ref, x_nb, y)
    la, lb = ref(xa), ref(xa_nb)
    reg = kl_ref(softmax_ref(la), softmax_ref(lb)).mean()  # KL(adv of x || adv of neighbour), batch mean
    assert close(loss, ce(la, y) + 20.0 * reg)
    assert close(stats["reg"], reg) and close(stats["logits"], la)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_consistency_objective_with_augmentation(batch, temperature):
    x, y = batch
    model = make_model()
    ref = copy.deepcopy(model)
    data = {"crop_padding": 2, "flip": True}
    cfg = make_cfg("consistency", data=data, temperature=temperature)
    loss, stats = call("consistency", model, x, y, cfg, lam=10.0, seed=6)
    torch.manual_seed(6)
    x2 = augment(x, padding=2, flip=True, generator=None)
    assert not torch.equal(x2, x)
    xx, yy = torch.cat([x, x2]), torch.cat([y, y])
    out = ref(pgd_ref(ref, xx, yy))  # both views in one batch, as the authors' code
    l1, l2 = out[: len(x)], out[len(x) :]
    reg = js_ref(softmax_ref(l1, temperature), softmax_ref(l2, temperature)).mean()
    assert close(loss, ce(out, yy) + 10.0 * reg)
    assert close(stats["reg"], reg) and close(stats["logits"], l1)


def test_consistency_uses_unaugmented_batch_when_given(batch):
    x, y = batch
    cfg = make_cfg("consistency", data={"crop_padding": 2, "flip": True})
    raw = x.flip(0)  # any other tensor: view 2 must be an augmentation of it, not of x
    model = make_model()
    torch.manual_seed(7)
    loss, _ = get_method("consistency").loss(
        model, x, y, StepContext(cfg=cfg, epoch=0, lam=3.0, extras={"x_unaugmented": raw})
    )
    ref = make_model()
    torch.manual_seed(7)
    x2 = augment(raw, padding=2, flip=True, generator=None)
    out = ref(pgd_ref(ref, torch.cat([x, x2]), torch.cat([y, y])))
    reg = js_ref(softmax_ref(out[:32]), softmax_ref(out[32:])).mean()
    assert close(loss, ce(out, torch.cat([y, y])) + 3.0 * reg)


@pytest.mark.parametrize("attack", ["fgsm_rs", "fgsm"])
def test_eq9_objective(batch, attack):
    """CE(f(x + delta)) - alpha CE(f(x)) at the clean x (FGSM shares the attack's forward pass)."""
    x, y = batch
    model = make_model()
    ref = copy.deepcopy(model)
    loss, stats = call("eq9_clean_loss", model, x, y, make_cfg("eq9_clean_loss", attack, lam=0.6), lam=0.6, seed=8)
    torch.manual_seed(8)
    xa = (fgsm_rs if attack == "fgsm_rs" else fgsm)(ref, x, y, eps=EPS, train_mode=True)
    assert close(loss, ce(ref(xa), y) - 0.6 * ce(ref(x), y))
    assert close(stats["reg"], ce(ref(x), y))


def test_eq10_objective(batch):
    x, y = batch
    cfg = make_cfg("eq10_grad_penalty", lam=50.0)
    assert cfg.attack.name == "none"
    model = make_model()
    ref = copy.deepcopy(model)
    loss, stats = call("eq10_grad_penalty", model, x, y, cfg, lam=50.0)
    g = input_grad_ref(ref, x, y)
    assert close(loss, ce(ref(x), y) + 50.0 * (g * g).sum())
    assert close(stats["logits"], ref(x)) and close(stats["reg"], (g * g).sum())


# ---------------------------------------------------------------------------------------
# parameter gradients of the double-backprop penalties: finite differences of the formula
# ---------------------------------------------------------------------------------------


def _fd_check(model, impl_loss, ref_loss):
    """<d impl_loss / d theta, v> against a central difference of ref_loss(theta) along v."""
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(impl_loss, list(params.values()))
    torch.manual_seed(11)
    v = {k: torch.randn_like(p) for k, p in params.items()}
    directional = sum((g * v[k]).sum() for g, k in zip(grads, params))
    base = {k: p.detach() for k, p in params.items()}
    h = 1e-5
    plus = ref_loss({k: base[k] + h * v[k] for k in base})
    minus = ref_loss({k: base[k] - h * v[k] for k in base})
    assert close(directional, (plus - minus) / (2 * h), rtol=1e-6, atol=1e-9)
    assert directional.abs() > 1e-6


def _f(ref, theta):
    return lambda z: functional_call(ref, theta, (z,))


def _grad(ref, theta, z, y):
    return jacobian(lambda u: F.cross_entropy(_f(ref, theta)(u), y), z)


@pytest.mark.parametrize("name", ["igr", "cure", "gradalign", "eq10_grad_penalty"])
def test_double_backprop_parameter_gradient(name, batch):
    x, y = batch
    model = make_model()
    ref = copy.deepcopy(model)
    lam = {"igr": 300.0, "cure": 500.0, "gradalign": 7.0, "eq10_grad_penalty": 50.0}[name]
    loss, _ = call(name, model, x, y, make_cfg(name, lam=lam), lam=lam, seed=9)
    theta0 = {k: p.detach() for k, p in ref.named_parameters()}
    xa = pgd_ref(ref, x, y)  # constants of the objective (detached in the method too)
    h = EPS * torch.sign(_grad(ref, theta0, x, y))
    torch.manual_seed(9)
    eta = torch.empty_like(x).uniform_(-EPS, EPS)
    g1_const = _grad(ref, theta0, x, y).flatten(1)

    def objective(theta):
        f = _f(ref, theta)
        if name == "eq10_grad_penalty":
            return ce(f(x), y) + lam * (_grad(ref, theta, x, y) ** 2).sum()
        if name == "igr":
            reg = (_grad(ref, theta, x, y) ** 2).sum()
        elif name == "cure":
            reg = ((_grad(ref, theta, x + h, y) - _grad(ref, theta, x, y)) ** 2).sum()
        else:  # GradAlign: g(x) is a constant (the authors' code), g(x + eta) is differentiated
            g2 = _grad(ref, theta, x + eta, y).flatten(1)
            reg = 1 - (F.cosine_similarity(g1_const, g2, dim=1)).mean()
        return ce(f(xa), y) + lam * reg

    _fd_check(model, loss, objective)


# ---------------------------------------------------------------------------------------
# lambda = 0, every attack, validation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REGULARISED)
def test_lambda_zero_is_the_base_objective(name, batch):
    """With lambda = 0 loss and parameter gradients are those of plain AT with the same attack
    (FGSM-N, random, same seed); Consistency's base is plain AT on the stacked two views."""
    x, y = batch
    lam = 0.5
    cfg = make_cfg(name, "fgsm_n", lam=lam)
    model = make_model()
    base_model = copy.deepcopy(model)
    loss, _ = call(name, model, x, y, cfg, lam=0.0, seed=10)
    if name == "consistency":
        xb, yb = torch.cat([x, x]), torch.cat([y, y])  # digits: no augmentation, equal views
    else:
        xb, yb = x, y
    base, _ = call("fgsm_n", base_model, xb, yb, make_cfg("fgsm_n"), lam=0.0, seed=10)
    assert close(loss, base)
    for p, q in zip(
        torch.autograd.grad(loss, list(model.parameters())), torch.autograd.grad(base, list(base_model.parameters()))
    ):
        assert close(p, q, rtol=1e-8, atol=1e-12)


def test_eq10_beta_zero_is_standard_training(batch):
    x, y = batch
    model = make_model()
    base_model = copy.deepcopy(model)
    loss, stats = call("eq10_grad_penalty", model, x, y, make_cfg("eq10_grad_penalty", lam=0.0), lam=0.0)
    base, _ = call("standard", base_model, x, y, make_cfg("standard"), lam=0.0)
    assert close(loss, base) and stats["reg"] > 0
    for p, q in zip(
        torch.autograd.grad(loss, list(model.parameters())), torch.autograd.grad(base, list(base_model.parameters()))
    ):
        assert close(p, q)


@pytest.mark.parametrize("attack", ["fgsm", "fgsm_rs", "fgsm_n", "pgd"])
def test_every_method_with_every_attack(attack, batch):
    x, y = batch
    x, y = x.float(), y
    for name in ALL:
        if name == "eq10_grad_penalty" and attack != "fgsm":
            continue
        lam = 0.5 if name == "eq9_clean_loss" else 2.0
        cfg = make_cfg(name, attack, lam=lam)
        torch.manual_seed(0)
        model = SoftNet().train()
        loss, stats = call(name, model, x, y, cfg, lam=lam)
        assert loss.dim() == 0 and torch.isfinite(loss), name
        assert stats["logits"].shape == (len(x), 10), name
        assert torch.isfinite(stats["reg"]) and not stats["reg"].requires_grad, name
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name


PAPER = {
    "advlc_l1": "Table 3",
    "advlc_sql2": "Table 3",
    "advlc_kl": "Table 3",
    "advlc_js": "Table 3",
    "advlc_nuclear": "Table 3",
    "igr": "1200",
    "cure": "1500",
    "gradalign": "7",
    "logitalign": "100",
    "consistency": "50",
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_lambda_zero_rejected_with_the_papers_value(name):
    with pytest.raises(UserError, match=rf"test: method.lam = 0.0: .*lambda > 0 .*{PAPER[name]}"):
        make_cfg(name, "fgsm_n", lam=0.0)


def test_ablation_strength_ranges():
    make_cfg("eq9_clean_loss", "fgsm_rs", lam=0.0)  # alpha = 0 is FGSM-R AT (the sweep's baseline)
    make_cfg("eq9_clean_loss", "fgsm_rs", lam=1.0)
    with pytest.raises(UserError, match=r"method.lam = 1.5: Eq. 9's alpha must be in \[0, 1\]"):
        make_cfg("eq9_clean_loss", "fgsm_rs", lam=1.5)
    make_cfg("eq10_grad_penalty", lam=0.0)  # beta = 0 is standard training
    with pytest.raises(UserError, match="attack.name = 'pgd'"):
        C.build({"attack": {"name": "pgd"}, "method": {"name": "eq10_grad_penalty", "lam": 1.0}}, "test")
    with pytest.raises(UserError, match=r"method.consistency.temperature = 0.0: must be between"):
        make_cfg("consistency", "fgsm_n", lam=1.0, temperature=0.0)


@pytest.mark.gpu  # run on a GPU machine with `pytest -m gpu` (deselected by default)
@pytest.mark.parametrize("attack", ["fgsm_n", "pgd"])
def test_no_host_sync_on_cuda(attack, batch):
    x, y = batch[0].float().cuda(), batch[1].cuda()
    for name in ALL:
        if name == "eq10_grad_penalty" and attack != "pgd":
            continue
        lam = 0.5 if name == "eq9_clean_loss" else 2.0
        cfg = make_cfg(name, attack, lam=lam)
        model = SoftNet().cuda().train()
        call(name, model, x, y, cfg, lam=lam)  # warm-up (lazy CUDA initialisation may sync)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loss, stats = call(name, model, x, y, cfg, lam=lam)
            loss.backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.isfinite(loss), name


# ---------------------------------------------------------------------------------------
# two-epoch digits runs of each quick preset
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_digits_preset_trains(name, tmp_path):
    from engine.config.presets import preset_runs
    from engine.launch.supervisor import create_runs
    from engine.run.process import run
    from engine.store.index import Store

    store = Store(tmp_path)
    [rd] = create_runs(store, preset_runs(f"quick/digits-{name}", ["train.epochs=2", "eval.n=100"]))
    assert rd.config_json()["method"]["name"] == name
    assert run(rd, store, log=lambda s: None) == "finished"
    recs = rd.epochs()
    assert len(recs) == 2
    assert all(math.isfinite(r["train_loss"]) for r in recs)
    assert recs[-1]["clean_acc"] > 0.2, recs[-1]
