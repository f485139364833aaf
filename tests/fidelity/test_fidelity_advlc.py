"""AdvLC and its Table 3 variants: loss value AND parameter gradients against an explicit
computation written with plain torch ops (Eqs 13-16, Algorithm 1).

The reference re-does everything independently of engine code: PGD (no random start, train
mode) as an explicit loop, the clean and adversarial logits as two ordinary forward passes in
train mode, the penalty from its formula (global top-N by sorting; softmax / KL / JS written
out; the nuclear norm from torch.linalg.svdvals), the CE written out, and the parameter
gradients by autograd through BOTH branches. Guards:
- the clean branch is not detached (Sec. 5: gradient flows through f(x) and f(x + delta));
- top-N is taken over the whole B x C batch, not per row and not "all entries";
- each variant's gradient (not only its value) is that of its formula.

float64 throughout; a 12-sample batch and a 16-12-5 MLP with train-mode BatchNorm, < 1 s.
"""

import copy

import pytest
import torch
import torch.nn as nn

from engine.config import schema as C
from engine.nn.methods import get_method
from engine.nn.methods.advlc import advlc_penalty
from engine.nn.methods.context import StepContext

EPS, STEPS, LAM, TOP_N = 0.1, 3, 0.8, 17  # TOP_N: neither a multiple of B = 12 nor of C = 5
VARIANTS = ("advlc", "advlc_l1", "advlc_sql2", "advlc_kl", "advlc_js", "advlc_nuclear")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one intra-op thread (conftest.py)


class Net(nn.Module):
    """MLP with BatchNorm1d: in train mode BN couples the samples, so the branches matter."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 12)
        self.bn = nn.BatchNorm1d(12)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x.flatten(1)))))


def _setup(seed=0):
    torch.manual_seed(seed)
    model = Net().double().train()
    x = 0.2 + 0.6 * torch.rand(12, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 5, (12,))
    return model, x, y


def _pgd_loop(model, x, y):
    """Explicit PGD: STEPS signed steps of EPS/4 from x, projected to the eps-ball and [0, 1]."""
    xa = x.clone()
    for _ in range(STEPS):
        xa = xa.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(_ce_sum(model(xa), y) / len(y), xa)
        xa = torch.min(torch.max(xa + EPS / 4 * g.sign(), x - EPS), x + EPS).clamp(0.0, 1.0)
    return xa.detach()


def _ce_sum(logits, y):
    return -(logits.gather(1, y[:, None]).squeeze(1) - logits.exp().sum(1).log()).sum()


def _softmax(z):
    e = (z - z.max(1, keepdim=True).values).exp()
    return e / e.sum(1, keepdim=True)


def _reg(name, la, lc):
    d = la - lc
    p, q = _softmax(lc), _softmax(la)
    if name == "advlc":
        return d.abs().flatten().sort(descending=True).values[:TOP_N].sum()
    if name == "advlc_l1":
        return d.abs().sum()
    if name == "advlc_sql2":
        return (d * d).sum()
    if name == "advlc_kl":  # KL(softmax f(x) || softmax f(x + delta)), summed over the batch
        return (p * (p.log() - q.log())).sum()
    if name == "advlc_js":
        m = (p + q) / 2
        return 0.5 * (p * (p.log() - m.log())).sum() + 0.5 * (q * (q.log() - m.log())).sum()
    if name == "advlc_nuclear":
        return torch.linalg.svdvals(d).sum()
    raise AssertionError(name)


def _reference(model, x, y, name, detach_clean=False):
    xa = _pgd_loop(model, x, y)
    la, lc = model(xa), model(x)  # two train-mode forward passes
    if detach_clean:
        lc = lc.detach()
    return (_ce_sum(la, y) + LAM * _reg(name, la, lc)) / len(x)


def _cfg(name):
    return C.build(
        {
            "attack": {"name": "pgd", "eps": EPS, "steps": STEPS, "train_mode": True},
            "method": {"name": name, "lam": LAM, "advlc": {"top_n": TOP_N}},
        },
        "test",
    )


def _grads(loss, model):
    return torch.autograd.grad(loss, list(model.parameters()))


def _max_rel_diff(ga, gb):
    num = max((a - b).abs().max().item() for a, b in zip(ga, gb))
    den = max(b.abs().max().item() for b in gb)
    return num / den


@pytest.mark.parametrize("name", VARIANTS)
def test_loss_and_parameter_gradients_equal_explicit_formula(name):
    model, x, y = _setup()
    ref_model = copy.deepcopy(model)
    torch.manual_seed(1)
    loss, _ = get_method(name).loss(model, x, y, StepContext(cfg=_cfg(name), epoch=0, lam=LAM))
    ref = _reference(ref_model, x, y, name)
    assert torch.allclose(loss, ref, rtol=1e-10, atol=1e-12)
    got, want = _grads(loss, model), _grads(ref, ref_model)
    assert _max_rel_diff(got, want) < 1e-7, name


@pytest.mark.parametrize("name", VARIANTS)
def test_detaching_the_clean_branch_would_be_visible(name):
    """Sanity of the test above: the detached-clean objective has a clearly different gradient
    (so a `.detach()` on the clean logits cannot pass it)."""
    model, x, y = _setup()
    full = _grads(_reference(model, x, y, name), model)
    det = _grads(_reference(model, x, y, name, detach_clean=True), model)
    assert _max_rel_diff(det, full) > 1e-3, name


def test_top_n_is_over_the_whole_batch_hand_case():
    """|diff| = [[5, 0, 0], [4, 3, 0], [2, 1, 0]]: the global top-3 is 5 + 4 + 3 = 12 (row 2 left
    unregularised); per-row top-1 would be 5 + 4 + 2 = 11, all entries 15; the gradient is +-1
    exactly on the three selected entries of both branches."""
    clean = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[5.0, 0, 0], [-4.0, 3, 0], [2.0, -1, 0]], dtype=torch.float64, requires_grad=True)
    pen = advlc_penalty(adv, clean, 3)
    assert pen.item() == 12.0
    g_adv, g_clean = torch.autograd.grad(pen, (adv, clean))
    sel = torch.tensor([[1.0, 0, 0], [-1.0, 1, 0], [0.0, 0, 0]], dtype=torch.float64)
    assert torch.equal(g_adv, sel) and torch.equal(g_clean, -sel)
