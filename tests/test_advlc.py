"""AdvLC: the penalty on a hand-computed case and the full objective against Eq. 16."""

import torch
import torch.nn.functional as F

from engine.config import schema as C
from engine.nn.methods import get_method
from engine.nn.methods.advlc import advlc_penalty
from engine.nn.methods.context import StepContext


def test_penalty_hand_computed():
    clean = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, -1.0]])
    adv = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.2, 1.0]])
    # |diff| = [[0.5, 2.0, 0.0], [3.0, 0.2, 2.0]]: top-3 over the whole batch = 3 + 2 + 2 = 7
    assert advlc_penalty(adv, clean, 3).item() == 7.0
    assert abs(advlc_penalty(adv, clean, 1).item() - 3.0) < 1e-7
    assert abs(advlc_penalty(adv, clean, 6).item() - 7.7) < 1e-6   # all = l1 norm
    assert abs(advlc_penalty(adv, clean, 100).item() - 7.7) < 1e-6  # N larger than B*C


def test_penalty_gradient_flows_to_both_branches():
    clean = torch.tensor([[0.0, 1.0]], requires_grad=True)
    adv = torch.tensor([[2.0, 1.5]], requires_grad=True)
    advlc_penalty(adv, clean, 1).backward()
    assert clean.grad.tolist() == [[-1.0, 0.0]] and adv.grad.tolist() == [[1.0, 0.0]]


def _cfg(attack="pgd", lam=0.4, top_n=20, train_mode=True, clean="start"):
    return C.build({"attack": {"name": attack, "eps": 0.1, "steps": 2, "train_mode": train_mode},
                    "method": {"name": "advlc", "lam": lam, "top_n": top_n, "clean": clean}}, "test")


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


def test_clean_branch_not_detached(tiny_model, digits_batch):
    """With lam > 0 the loss depends on the clean pass: its gradient differs from lam = 0."""
    x, y = digits_batch
    grads = []
    for lam in (0.0, 1.0):
        m = __import__("copy").deepcopy(tiny_model).train()
        torch.manual_seed(0)
        loss, _ = get_method("advlc").loss(m, x, y, StepContext(cfg=_cfg(lam=max(lam, 1e-9)), epoch=0, lam=lam))
        grads.append(torch.autograd.grad(loss, m.conv.weight)[0])
    assert not torch.allclose(grads[0], grads[1])


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
