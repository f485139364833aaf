"""AdvLC: the penalty on a hand-computed case, the full objective against Eq. 16, and its parameter
gradient through both branches (the clean branch is not detached)."""

import pytest
import torch
import torch.nn.functional as F

from engine.config import schema as C
from engine.nn.methods import get_method
from engine.nn.methods.advlc import advlc_penalty
from engine.nn.methods.context import StepContext

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one intra-op thread (conftest.py)


def test_penalty_hand_computed():
    clean = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, -1.0]])
    adv = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.2, 1.0]])
    # |diff| = [[0.5, 2.0, 0.0], [3.0, 0.2, 2.0]]: top-3 over the whole batch = 3 + 2 + 2 = 7
    assert advlc_penalty(adv, clean, 3).item() == 7.0
    assert abs(advlc_penalty(adv, clean, 1).item() - 3.0) < 1e-7
    assert abs(advlc_penalty(adv, clean, 6).item() - 7.7) < 1e-6  # all = l1 norm
    assert abs(advlc_penalty(adv, clean, 100).item() - 7.7) < 1e-6  # N larger than B*C


def test_penalty_gradient_flows_to_both_branches():
    clean = torch.tensor([[0.0, 1.0]], requires_grad=True)
    adv = torch.tensor([[2.0, 1.5]], requires_grad=True)
    advlc_penalty(adv, clean, 1).backward()
    assert clean.grad.tolist() == [[-1.0, 0.0]] and adv.grad.tolist() == [[1.0, 0.0]]


def _cfg(attack="pgd", lam=0.4, top_n=20, train_mode=True, clean="start"):
    return C.build(
        {
            "attack": {"name": attack, "eps": 0.1, "steps": 2, "train_mode": train_mode},
            "method": {"name": "advlc", "lam": lam, "advlc": {"top_n": top_n, "clean": clean}},
        },
        "test",
    )


def test_objective_equals_eq16(tiny_model, digits_batch):
    """(sum CE(f(x_adv)) + lam * top-N |f(x_adv) - f(x)|) / M, both passes in train mode."""
    import copy

    x, y = digits_batch
    cfg = _cfg()
    ctx = StepContext(cfg=cfg, epoch=0, lam=0.4)
    model = tiny_model.train()
    ref_model = copy.deepcopy(model)
    torch.manual_seed(0)
    loss, stats = get_method("advlc").loss(model, x, y, ctx)

    # independent computation: PGD from x (no random start) in train mode, then the formula
    from engine.nn.attacks import pgd

    x_adv = pgd(ref_model, x, y, eps=0.1, alpha=0.025, steps=2, train_mode=True)
    ref_model2 = copy.deepcopy(tiny_model)  # BN statistics differ after the attack; train mode uses batch stats
    ref_model2.train()
    la, lc = ref_model2(x_adv), ref_model2(x)
    diff = (la - lc).abs().flatten()
    expected = (F.cross_entropy(la, y, reduction="sum") + 0.4 * diff.sort(descending=True).values[:20].sum()) / len(x)
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(stats["logits"], la, atol=1e-5)


def _explicit_objective(model, x, y, lam, top_n, detach_clean=False):
    """Eq. 16 written out: PGD (2 steps of eps/4 from x, train mode) as a plain loop, then two
    train-mode forward passes and the global top-N of |f(x_adv) - f(x)|."""
    xa = x.clone()
    for _ in range(2):
        xa = xa.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        xa = torch.min(torch.max(xa + 0.025 * g.sign(), x - 0.1), x + 0.1).clamp(0.0, 1.0)
    la, lc = model(xa.detach()), model(x)
    if detach_clean:
        lc = lc.detach()
    reg = (la - lc).abs().flatten().sort(descending=True).values[:top_n].sum()
    return (F.cross_entropy(la, y, reduction="sum") + lam * reg) / len(x)


@pytest.mark.parametrize("clean", ["start", "x"])
def test_clean_branch_not_detached(tiny_model, digits_batch, clean):
    """The parameter gradient equals that of the explicit objective with gradients through BOTH
    branches, for the shared first forward pass of the attack (clean = "start") and for a
    separate pass on x (clean = "x"); detaching the clean branch changes it by far more than the
    tolerance. (Comparing lambda = 0 with lambda > 0 cannot show this: the adversarial branch of
    the penalty changes the gradient whether or not the clean one is detached.)"""
    import copy

    x, y = digits_batch
    x = x.double()
    model = copy.deepcopy(tiny_model).double().train()
    ref = copy.deepcopy(model)
    cfg = _cfg(lam=0.7, top_n=37, clean=clean)
    loss, _ = get_method("advlc").loss(model, x, y, StepContext(cfg=cfg, epoch=0, lam=0.7))
    got = torch.autograd.grad(loss, list(model.parameters()))
    want = torch.autograd.grad(_explicit_objective(ref, x, y, 0.7, 37), list(ref.parameters()))
    det = torch.autograd.grad(_explicit_objective(ref, x, y, 0.7, 37, detach_clean=True), list(ref.parameters()))
    scale = max(w.abs().max().item() for w in want)
    assert max((a - b).abs().max().item() for a, b in zip(got, want)) < 1e-9 * scale
    assert max((a - b).abs().max().item() for a, b in zip(det, want)) > 1e-3 * scale


def test_fgsm_n_clean_logits_are_of_noisy_input(tiny_model, digits_batch):
    """For FGSM-N the shared clean branch is f(x~), the noisy starting point (authors' code)."""
    from engine.nn.attacks import run_attack

    x, y = digits_batch
    m = tiny_model.eval()  # eval: BN constant, so logits are comparable
    torch.manual_seed(5)
    res = run_attack(m, x, y, name="fgsm_n", eps=0.1, alpha=0.1, noise=0.1, keep_start_logits=True)
    with torch.no_grad():
        assert torch.allclose(res.logits_start, m(res.x_start), atol=1e-6)
        assert not torch.allclose(res.logits_start, m(x), atol=1e-3)
