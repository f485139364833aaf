"""engine.nn.metrics: IG, HS (exact / lanczos / power), AV, effectiveness, alignment, weight
Hessian, validated against dense autograd on tiny float64 models over sklearn digits."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.bench.hs import benchmark_hs
from engine.nn.attacks import pgd
from engine.nn.metrics.effectiveness import (
    attack_effectiveness,
    training_attack_effectiveness,
)
from engine.nn.metrics.evaluation import adversarial_vulnerability
from engine.nn.metrics.gradients import gradient_alignment, input_gradient_norm
from engine.nn.metrics.hessian import (
    hessian_spectrum,
    hessian_spectrum_with_method,
    hs_metric,
    lanczos_topk,
    power_topk,
)
from engine.nn.metrics.weight_hessian import weight_hessian
from engine.nn.models import is_piecewise_linear

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one intra-op thread (conftest.py)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float64).reshape(-1, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    return x, y


def mlp(act=nn.ReLU, hidden=24, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), act(), nn.Linear(hidden, 10)).double()


def tiny_cnn(act=nn.ReLU, seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), act(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 16, 10)
    ).double()
    # non-trivial BN running statistics
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.2, 0.2)
        m[1].running_var.uniform_(0.5, 1.5)
    return m


def dense_topk(model, x, y, k):
    model.eval()
    H = torch.autograd.functional.hessian(lambda z: F.cross_entropy(model(z), y), x)
    d = x.numel()
    return torch.linalg.eigvalsh(H.reshape(d, d)).flip(0)[:k]


def rel(a, b):
    return ((a - b).abs() / b.abs().clamp_min(1e-300)).max().item()


def no_grads(model):
    return all(p.grad is None for p in model.parameters())


# -- solvers on a known spectrum ---------------------------------------------------------


def known_matrix(dim=150, seed=0):
    g = torch.Generator().manual_seed(seed)
    top = 5.0 * 0.8 ** torch.arange(25, dtype=torch.float64)
    rest = torch.rand(dim - 25, generator=g, dtype=torch.float64) * 0.4 - 0.3
    lam = torch.cat([top, rest])
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return Q @ torch.diag(lam) @ Q.T, lam.sort(descending=True).values


def test_lanczos_and_power_recover_known_spectrum():
    A, lam = known_matrix()
    hvp = lambda v: A @ v  # noqa: E731
    k = 10
    lz = lanczos_topk(hvp, A.shape[0], k, dtype=torch.float64)
    assert rel(lz, lam[:k]) < 1e-8
    pw = power_topk(hvp, A.shape[0], 5, dtype=torch.float64, seed=1)
    assert rel(pw, lam[:5]) < 1e-2  # power iteration stops at a 1e-3 relative change
    pw2 = power_topk(hvp, A.shape[0], 5, dtype=torch.float64, seed=1)
    assert torch.equal(pw, pw2)  # seeded


def test_lanczos_largest_magnitude_and_multiplicity():
    dim = 60
    lam = torch.cat(
        [torch.tensor([3.0, 2.0, 2.0, -4.0], dtype=torch.float64), torch.zeros(dim - 4, dtype=torch.float64)]
    )
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    A = Q @ torch.diag(lam) @ Q.T
    la = lanczos_topk(lambda v: A @ v, dim, 5, dtype=torch.float64)
    assert torch.allclose(la, torch.tensor([3.0, 2.0, 2.0, 0.0, 0.0], dtype=torch.float64), atol=1e-10)
    lm = lanczos_topk(lambda v: A @ v, dim, 3, which="LM", dtype=torch.float64)
    assert torch.allclose(lm, torch.tensor([3.0, 2.0, -4.0], dtype=torch.float64), atol=1e-10)
    # dim < k: padded with zeros
    small = lanczos_topk(lambda v: 2 * v, 3, 5, dtype=torch.float64)
    assert torch.allclose(small, torch.tensor([2.0, 2.0, 2.0, 0.0, 0.0], dtype=torch.float64))


# -- HS on networks vs the dense Hessian ---------------------------------------------------


@pytest.mark.parametrize("make", [mlp, tiny_cnn], ids=["mlp", "cnn"])
def test_exact_and_lanczos_match_dense_relu(digits, make):
    x, y = digits[0][:4], digits[1][:4]
    m = make()
    m.train()
    ref = dense_topk(m, x, y, 20)
    m.train()
    ex, used = hessian_spectrum_with_method(m, x, y, 20, "exact")
    assert used == "exact" and m.training  # caller's mode restored
    assert rel(ex, ref) < 1e-5
    lz = hessian_spectrum(m, x, y, 20, "lanczos")
    assert rel(lz, ref) < 1e-5
    assert hessian_spectrum_with_method(m, x, y, 20, "auto")[1] == "exact"
    pw = hessian_spectrum(m, x, y, 3, "power")
    assert rel(pw, ref[:3]) < 5e-2
    assert no_grads(m)


def test_exact_pads_with_zeros_past_rank(digits):
    x, y = digits[0][:1], digits[1][:1]
    ex = hessian_spectrum(mlp(), x, y, 12, "exact")  # one sample: rank <= C - 1 = 9
    assert ex.shape == (12,) and torch.all(ex[9:] <= 1e-12 * ex[0]) and torch.all(ex[:9] > 0)
    assert rel(ex[:9], dense_topk(mlp(), x, y, 9)) < 1e-5


def test_softplus_lanczos_matches_exact_raises_auto_lanczos(digits):
    x, y = digits[0][:4], digits[1][:4]
    m = mlp(nn.Softplus)
    ref = dense_topk(m, x, y, 20)
    lz, used = hessian_spectrum_with_method(m, x, y, 20, "auto")
    assert used == "lanczos"
    assert rel(lz, ref) < 1e-5
    with pytest.raises(ValueError, match="piecewise-linear"):
        hessian_spectrum(m, x, y, 20, "exact")
    with pytest.raises(ValueError):
        hessian_spectrum(m, x, y, 20, "bogus")


def test_piecewise_linear_sees_functions_held_as_attributes():
    assert is_piecewise_linear(mlp())
    assert not is_piecewise_linear(mlp(nn.Softplus))
    assert not is_piecewise_linear(nn.Sequential(nn.Linear(2, 2), nn.GELU()))

    class Functional(nn.Module):
        def __init__(self, act):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.act = act

    assert not is_piecewise_linear(Functional(F.softplus))
    assert not is_piecewise_linear(Functional("softplus"))
    assert is_piecewise_linear(Functional(F.relu))


def test_hs_metric_averages_batches(digits):
    x, y = digits[0][:10], digits[1][:10]
    m = mlp()
    hs, used = hs_metric(m, x, y, n=10, batch=4, k=5)  # two full batches; the last 2 dropped
    assert used == "exact"
    want = sum(hessian_spectrum(m, x[s], y[s], 5, "exact").abs().mean().item() for s in (slice(0, 4), slice(4, 8))) / 2
    assert hs == pytest.approx(want, rel=1e-12)
    hs_l, used_l = hs_metric(m, x, y, n=10, batch=4, k=5, method="lanczos")
    assert used_l == "lanczos" and hs_l == pytest.approx(hs, rel=1e-6)


@pytest.mark.parametrize("act", [nn.ReLU, nn.Softplus], ids=["relu", "softplus"])
def test_hs_reduce_mean_and_sum_against_the_dense_hessian(digits, act):
    """eval.hs_reduce: "mean" (default, the authors' code: mean |lambda| of the top 20) and "sum"
    (the paper's "l1 norm of the top 20 eigenvalues"): each against the top-20 |eigenvalues| of
    the dense input Hessian of each batch (mean over the two batches), and sum = 20 x mean."""
    x, y = digits[0][:12], digits[1][:12]
    m = mlp(act)
    # the 20 largest |eigenvalues| (softplus: some are negative; HS takes the largest magnitudes)
    top = [
        dense_topk(m, x[s], y[s], 6 * 64).abs().sort(descending=True).values[:20] for s in (slice(0, 6), slice(6, 12))
    ]
    want = {"mean": sum(t.mean().item() for t in top) / 2, "sum": sum(t.sum().item() for t in top) / 2}
    method = "exact" if act is nn.ReLU else "lanczos"
    hs = {r: hs_metric(m, x, y, n=12, batch=6, k=20, method=method, reduce=r)[0] for r in ("mean", "sum")}
    assert hs_metric(m, x, y, n=12, batch=6, k=20, method=method)[0] == hs["mean"]  # the default
    assert hs["mean"] == pytest.approx(want["mean"], rel=1e-6)
    assert hs["sum"] == pytest.approx(want["sum"], rel=1e-6)
    assert hs["sum"] == pytest.approx(20 * hs["mean"], rel=1e-12)
    with pytest.raises(ValueError, match="reduce"):
        hs_metric(m, x, y, n=12, batch=6, reduce="max")


def test_benchmark_hs_runs_and_validates(digits):
    x, y = digits[0][:8].float(), digits[1][:8]
    m = tiny_cnn().float()
    r = benchmark_hs(m, x, y, batch=4, k=5)
    assert set(r["methods"]) == {"exact", "power", "lanczos"}
    assert r["n_batches"] == 2 and r["speedup_exact_vs_power"] > 0
    v = r["validation"]
    assert v["exact64_vs_dense"]["max_rel"] < 1e-6
    assert v["exact_vs_dense"]["max_rel"] < 1e-3
    assert v["lanczos_vs_exact"]["max_rel"] < 1e-3
    import json

    json.dumps(r)


# -- IG -------------------------------------------------------------------------------------


def test_input_gradient_norm_matches_per_sample_autograd(digits):
    x, y = digits[0][:7], digits[1][:7]
    m = tiny_cnn()
    m.train()
    ig = input_gradient_norm(m, x, y, batch_size=3)
    assert m.training and no_grads(m)
    m.eval()
    want = 0.0
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(m(xi), y[i : i + 1]), xi)
        want += g.abs().sum().item()
    assert isinstance(ig, float)
    assert ig == pytest.approx(want / len(x), rel=1e-10)


# -- weight Hessian (pyhessian) -------------------------------------------------------------


def test_weight_hessian_top_eigenvalue_vs_dense(digits):
    from torch.func import functional_call

    x, y = digits[0][:16], digits[1][:16]
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 10)).double()
    names = [n for n, _ in m.named_parameters()]
    shapes = [p.shape for p in m.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    def loss_of(theta):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            params[n] = theta[i : i + s.numel()].view(s)
            i += s.numel()
        return F.cross_entropy(functional_call(m, params, (x,)), y)

    H = torch.autograd.functional.hessian(loss_of, flat)
    ev = torch.linalg.eigvalsh(H)
    top = ev[ev.abs().argmax()].item()  # power iteration: largest magnitude
    # a pre-existing grad must survive
    m[1].weight.grad = torch.ones_like(m[1].weight)
    m.train()
    rng = torch.get_rng_state()
    n_tr = 400
    out = weight_hessian(m, x, y, top_n=1, trace=True, trace_iters=n_tr, trace_tol=0.0, max_iter=500, tol=1e-7)
    assert torch.equal(torch.get_rng_state(), rng)  # caller's RNG untouched
    assert m.training
    assert out["eigenvalues"][0] == pytest.approx(top, rel=1e-2)
    # Hutchinson (Rademacher): Var[v^T H v] = 2 (||H||_F^2 - sum_i H_ii^2); allow 4 std
    sd = (2 * ((H**2).sum() - (H.diagonal() ** 2).sum()) / n_tr).sqrt().item()
    assert out["trace"] == pytest.approx(H.trace().item(), abs=4 * sd)
    assert sd < 0.5 * abs(H.trace().item())  # the check means something
    assert torch.equal(m[1].weight.grad, torch.ones_like(m[1].weight))
    assert all(p.grad is None for n, p in m.named_parameters() if n != "1.weight")
    out2 = weight_hessian(m, x, y, top_n=1, trace=False, max_iter=500, tol=1e-7)
    assert out2["eigenvalues"] == out["eigenvalues"] and out2["trace"] is None  # seeded


# -- AV, effectiveness, alignment -----------------------------------------------------------


def test_effectiveness_pgd50_is_one_and_zero_perturbation_is_zero(digits):
    x, y = digits[0][:40], digits[1][:40]
    m = tiny_cnn()
    m.train()
    eps = 0.1
    x_ref = pgd(m, x, y, eps=eps, alpha=eps / 4, steps=50)
    assert attack_effectiveness(m, x, y, x_ref, eps=eps) == pytest.approx(1.0, abs=1e-12)
    assert attack_effectiveness(m, x, y, x.clone(), eps=eps) == pytest.approx(0.0, abs=1e-12)
    assert m.training and no_grads(m)
    e = training_attack_effectiveness(m, x, y, "fgsm", eps=eps, alpha=eps)
    assert 0.0 < e <= 1.5
    bufs = [b.clone() for b in m.buffers()]
    torch.manual_seed(0)
    e_n = training_attack_effectiveness(m, x, y, "fgsm_n", eps=eps, alpha=eps, noise=2 * eps, train_mode=True)
    assert e_n == e_n  # not nan
    assert all(torch.equal(a, b) for a, b in zip(bufs, m.buffers()))  # BN stats restored
    assert m.training and no_grads(m)


def test_gradient_alignment_eps0_is_one(digits):
    x, y = digits[0][:20], digits[1][:20]
    m = tiny_cnn()
    assert gradient_alignment(m, x, y, eps=0.0) == pytest.approx(1.0, abs=1e-10)
    g = torch.Generator().manual_seed(0)
    a = gradient_alignment(m, x, y, eps=0.3, generator=g)
    assert -1.0 <= a <= 1.0
    assert no_grads(m)


def test_adversarial_vulnerability(digits):
    x, y = digits[0][:50], digits[1][:50]
    m = tiny_cnn()
    m.train()
    r = adversarial_vulnerability(m, x, y, eps=0.1, batch_size=20)
    assert m.training and no_grads(m)
    assert r["av"] == pytest.approx(r["adv_loss"] - r["clean_loss"], abs=1e-12)
    assert r["adv_loss"] >= r["clean_loss"]
    m.eval()
    with torch.no_grad():
        assert r["clean_loss"] == pytest.approx(F.cross_entropy(m(x), y).item(), rel=1e-10)
