"""Attack properties and agreement with torchattacks."""

import pytest
import torch
import torch.nn.functional as F

from engine.nn import attacks

EPS = 0.1


def _loss(model, x, y):
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


@pytest.mark.parametrize("name", ["fgsm", "fgsm_rs", "fgsm_n", "pgd"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_attack_properties(tiny_model, digits_batch, name, train_mode):
    x, y = digits_batch
    model = tiny_model
    model.train(not train_mode)  # the caller's mode is the opposite, so restoring is observable
    caller_mode = model.training
    torch.manual_seed(1)
    res = attacks.run_attack(
        model,
        x,
        y,
        name=name,
        eps=EPS,
        alpha=EPS if name != "pgd" else EPS / 4,
        steps=10,
        noise=EPS,
        train_mode=train_mode,
    )
    xa = res.x_adv
    assert model.training == caller_mode
    assert all(p.grad is None for p in model.parameters())
    assert xa.min() >= 0 and xa.max() <= 1
    bound = 2 * EPS if name == "fgsm_n" else EPS  # FGSM-N is not projected back to the eps-ball
    assert (xa - x).abs().max() <= bound + 1e-6
    if name != "fgsm_n":
        assert _loss(model, xa, y) >= _loss(model, x, y)
    assert not xa.requires_grad


def test_fgsm_n_is_not_projected(tiny_model, digits_batch):
    """The authors' FGSM-N steps eps from the noisy point and does not project to the eps-ball."""
    x, y = digits_batch
    torch.manual_seed(3)
    res = attacks.run_attack(tiny_model, x, y, name="fgsm_n", eps=EPS, alpha=EPS, noise=EPS)
    step = res.x_adv - res.x_start
    inside = (res.x_start + EPS * step.sign() > 0) & (res.x_start + EPS * step.sign() < 1)
    assert torch.allclose(step.abs()[inside], torch.full_like(step[inside], EPS), atol=1e-6)
    assert (res.x_adv - x).abs().max() > EPS + 1e-3


def test_fgsm_equals_hand_computation(tiny_model, digits_batch):
    x, y = digits_batch
    tiny_model.eval()
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(tiny_model(xr), y), xr)
    expected = (x + EPS * g.sign()).clamp(0, 1)
    assert torch.equal(attacks.fgsm(tiny_model, x, y, eps=EPS), expected)


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_matches_torchattacks(tiny_model, digits_batch, random_start):
    import torchattacks

    x, y = digits_batch
    tiny_model.eval()
    ta = torchattacks.PGD(tiny_model, eps=EPS, alpha=EPS / 4, steps=10, random_start=random_start)
    torch.manual_seed(7)
    ref = ta(x, y)
    torch.manual_seed(7)
    ours = attacks.pgd(tiny_model, x, y, eps=EPS, alpha=EPS / 4, steps=10, random_start=random_start)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_pgd_shared_start_logits_are_clean_logits(tiny_model, digits_batch):
    """keep_start_logits returns f(x) from the attack's first pass, with a graph to the weights."""
    x, y = digits_batch
    tiny_model.eval()
    res = attacks.run_attack(tiny_model, x, y, name="pgd", eps=EPS, alpha=EPS / 4, steps=3, keep_start_logits=True)
    with torch.no_grad():
        assert torch.allclose(res.logits_start, tiny_model(x), atol=1e-6)
    assert res.logits_start.requires_grad
    g = torch.autograd.grad(res.logits_start.sum(), tiny_model.fc.weight)[0]
    assert g.abs().sum() > 0
