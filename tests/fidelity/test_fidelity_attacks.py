"""Training/evaluation attacks: noise distribution, step size and projection of each attack,
checked against hand-computed or explicitly re-implemented results (not against engine code).

`SignNet` makes the input gradient's sign known by hand: logits = [w (sum(x) - c), 0], so
d CE / dx has sign -1 everywhere for label 0 and +1 for label 1. With x = 0.5 (interior) and
budgets well inside [0, 1], clipping never acts and every step can be read off exactly:
- fgsm:    x_adv = x + eps * dir                       (alpha is NOT used; no random start)
- fgsm_rs: x0 = x + U(-eps, eps); x_adv = proj_eps(x0 + alpha * dir)
- fgsm_n:  x~ = x + U(-k, k) (k = noise, default eps); x_adv = x~ + alpha * dir, NOT projected
- pgd:     explicit loop (projection after every step, no random start by default)
Uniformity is checked with a Kolmogorov-Smirnov test (scipy) at a fixed seed, plus range and
moments. float64; each test < 1 s.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import stats

from engine.config import schema as C
from engine.nn import attacks

EPS = 0.1


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one intra-op thread (conftest.py)


class SignNet(nn.Module):
    def forward(self, x):
        s = 0.01 * (x.flatten(1).sum(1, keepdim=True) - 0.5 * x[0].numel())
        return torch.cat([s, torch.zeros_like(s)], 1)


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def _sign_batch(n=64):
    x = torch.full((n, 3, 8, 8), 0.5, dtype=torch.float64)
    y = torch.arange(n) % 2
    direction = (2.0 * y - 1.0).to(torch.float64).view(n, 1, 1, 1).expand_as(x)  # -1 (label 0), +1 (label 1)
    return x, y, direction


def _assert_uniform(u, k):
    """u ~ U(-k, k): range, both ends reached, KS test, mean and variance."""
    u = u.flatten().double()
    n = u.numel()
    assert u.abs().max() <= k * (1 + 1e-12)
    end = 1 - 10 / n  # P(an end not reached) ~ e^-5 per end
    assert u.max() > end * k and u.min() < -end * k
    assert stats.kstest(u.numpy(), stats.uniform(loc=-k, scale=2 * k).cdf).pvalue > 1e-3
    assert abs(u.mean().item()) < 4 * k / (3 * n) ** 0.5
    assert abs(u.var().item() / (k * k / 3) - 1) < 0.05


# ---------------------------------------------------------------------------------------- FGSM-N


@pytest.mark.parametrize("k,alpha", [(None, 0.07), (0.04, 0.07), (0.1, 0.1)])
def test_fgsm_n_noise_step_and_no_projection(k, alpha):
    model = SignNet()
    x, y, d = _sign_batch()
    torch.manual_seed(0)
    res = attacks.run_attack(model, x, y, name="fgsm_n", eps=EPS, alpha=alpha, noise=k)
    kk = EPS if k is None else k
    _assert_uniform(res.x_start - x, kk)  # x~ = x + U(-k, k)
    assert torch.allclose(res.x_adv - res.x_start, alpha * d, atol=1e-12)  # one step of alpha
    # not projected back to the eps-ball around x: it reaches k + alpha
    assert (res.x_adv - x).abs().max() > 0.999 * kk + alpha
    if kk + alpha > EPS:
        assert (res.x_adv - x).abs().max() > EPS + 1e-3


def test_fgsm_n_public_defaults_and_config():
    """fgsm_n(): noise and step default to eps; the config resolves attack.noise = attack.alpha = eps."""
    model = SignNet()
    x, y, d = _sign_batch()
    torch.manual_seed(1)
    res = attacks.run_attack(model, x, y, name="fgsm_n", eps=EPS, alpha=EPS)
    torch.manual_seed(1)
    xa = attacks.fgsm_n(model, x, y, eps=EPS)
    assert torch.equal(xa, res.x_adv)
    _assert_uniform(res.x_start - x, EPS)
    assert torch.allclose(xa - res.x_start, EPS * d, atol=1e-12)
    cfg = C.build({"method": {"name": "fgsm_n"}, "attack": {"eps": "8/255"}}, "test")
    assert cfg.attack.noise == cfg.attack.alpha == cfg.attack.eps == 8 / 255


# ---------------------------------------------------------------------------------------- FGSM


def test_fgsm_steps_eps_from_x_whatever_alpha():
    model = SignNet()
    x, y, d = _sign_batch(8)
    res = attacks.run_attack(model, x, y, name="fgsm", eps=EPS, alpha=0.03)
    assert torch.equal(res.x_start, x)
    assert torch.allclose(res.x_adv, x + EPS * d, atol=1e-12)


# ---------------------------------------------------------------------------------------- FGSM-R


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.16])
def test_fgsm_rs_start_step_and_projection(alpha):
    model = SignNet()
    x, y, d = _sign_batch()
    torch.manual_seed(2)
    res = attacks.run_attack(model, x, y, name="fgsm_rs", eps=EPS, alpha=alpha)
    _assert_uniform(res.x_start - x, EPS)
    expected = torch.min(torch.max(res.x_start + alpha * d, x - EPS), x + EPS)
    assert torch.allclose(res.x_adv, expected, atol=1e-12)
    # the step is alpha where the projection does not act, and the projection does act
    free = (res.x_start - x + alpha * d).abs() < EPS - 1e-9
    assert free.any() and (~free).any()
    assert torch.allclose((res.x_adv - res.x_start)[free], (alpha * d)[free], atol=1e-12)


def test_fgsm_rs_public_default_step_is_eps():
    model = SignNet()
    x, y, d = _sign_batch()
    torch.manual_seed(3)
    xa = attacks.fgsm_rs(model, x, y, eps=EPS)
    torch.manual_seed(3)
    start = x + torch.empty_like(x).uniform_(-EPS, EPS)  # first and only draw: the start
    assert torch.allclose(xa, torch.min(torch.max(start + EPS * d, x - EPS), x + EPS), atol=1e-12)


# ---------------------------------------------------------------------------------------- PGD


def _pgd_loop(model, x, y, eps, alpha, steps, start=None):
    xa = x.clone() if start is None else start.clone()
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        xa = torch.min(torch.max(xa + alpha * g.sign(), x - eps), x + eps).clamp(0.0, 1.0)
    return xa.detach()


def _conv_batch():
    torch.manual_seed(4)
    model = ConvBN().double()
    x = torch.rand(16, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 5, (16,))
    return model, x, y


@pytest.mark.parametrize("train_mode", [False, True])
def test_pgd_equals_explicit_loop(train_mode):
    """steps x alpha, projected to the eps-ball and [0, 1] after EVERY step, no random start by
    default (attacks.pgd called without random_start), in the requested mode."""
    model, x, y = _conv_batch()
    eps, alpha, steps = 0.05, 0.02, 6  # steps * alpha > eps: the projection acts mid-way
    got = attacks.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, train_mode=train_mode)
    model.train(train_mode)
    want = _pgd_loop(model, x, y, eps, alpha, steps)
    assert torch.allclose(got, want, atol=1e-12)
    assert (got - x).abs().max() <= eps + 1e-12
    # the projection-at-the-end-only variant is a different attack on this model
    xa = x.clone()
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        xa = xa + alpha * g.sign()
    end_only = torch.min(torch.max(xa.detach(), x - eps), x + eps).clamp(0, 1)
    assert not torch.allclose(end_only, want, atol=1e-6)


def test_pgd_random_start_is_uniform_then_explicit_loop():
    model, x, y = _conv_batch()
    x = 0.3 + 0.4 * x  # interior: the start is not clipped
    torch.manual_seed(5)
    res = attacks.run_attack(model, x, y, name="pgd", eps=0.05, alpha=0.02, steps=4, random_start=True)
    _assert_uniform(res.x_start - x, 0.05)
    model.eval()
    assert torch.allclose(res.x_adv, _pgd_loop(model, x, y, 0.05, 0.02, 4, start=res.x_start), atol=1e-12)
