"""The fast path (engine/nn/fastpath.py) computes what the plain reference loop computes.

The augmentation side — on-device crop + flip against torchvision's RandomCrop(padding) +
RandomHorizontalFlip — is checked in tests/nn/test_data.py (test_augment_offsets_and_flips_uniform:
every offset x flip state equally likely, chi-square; test_augment_crop_only_is_a_window_of_padded_input).
Here the randomness is decoupled: both loops' step functions get identical pre-augmented batches
and the same global seed, and must give the same loss trajectory.
"""

import copy
import os
import shutil

import pytest
import torch
import torch.nn as nn

from engine.bench.reference_loop import (
    authors_transform,
    make_loader,
    reference_step,
    train_epoch,
)
from engine.config import schema as C
from engine.config.schema import RunConfig, build, resolve
from engine.errors import UserError
from engine.nn.datasets import as_float, augment, epoch_batches
from engine.nn.fastpath import (
    autocast,
    describe,
    epoch_stream,
    needs_double_backprop,
    prepare_model,
    train_step,
)
from engine.nn.methods import get_method
from engine.nn.methods.context import StepContext
from engine.nn.models import PreActResNet18


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared CPU: one thread (two oversubscribe and spin; ~10x slower here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(method="fgsm_n", attack="", *, top_n=8, **train):
    """A resolved PreActResNet18 config of `method` with `attack` (eps 8/255, 3 steps) and [train] switches."""
    cfg = RunConfig()
    cfg.model.arch = "preact_resnet18"
    cfg.method.name = method
    cfg.attack.name = attack
    cfg.attack.eps = 8 / 255
    cfg.attack.steps = 3
    cfg.method.lam = 0.5 if method != "standard" and attack else 0.0
    if method == "advlc":
        C.set_key(cfg, "method.advlc.top_n", top_n, "test")
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return resolve(cfg, "test")


class SmallBNNet(nn.Module):
    """Two convs with BatchNorm (train/eval mode and memory format both matter), pool, linear;
    `width` channels, then twice as many."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return self.fc(out.mean((2, 3)))


def _net(seed=0):
    torch.manual_seed(seed)
    return SmallBNNet()


def _preact(seed=0):
    torch.manual_seed(seed)
    return PreActResNet18(num_classes=10, in_channels=3)


def _rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ------------------------------------------------------------------------------ config


def test_train_config_fields_default_off_and_validated():
    t = RunConfig().train
    assert (t.channels_last, t.amp, t.compile) == (False, "off", False)
    cfg = build(
        {"method": {"name": "fgsm_n"}}, "x.toml", ["train.amp=bf16", "train.channels_last=true", "train.compile=true"]
    )
    assert (cfg.train.amp, cfg.train.channels_last, cfg.train.compile) == ("bf16", True, True)
    with pytest.raises(UserError, match="train.amp"):
        build({"method": {"name": "fgsm_n"}}, "x.toml", ["train.amp=fp16"])
    assert describe(cfg) == "bf16 channels_last compile" and describe(RunConfig()) == "fp32"


# ------------------------------------------------------------------------------ channels_last, amp


def test_channels_last_same_outputs_and_input_grads():
    ref = _preact()
    fast = prepare_model(copy.deepcopy(ref), _cfg(channels_last=True))
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert list(fast.state_dict()) == list(ref.state_dict())
    x = torch.rand(4, 3, 8, 8)
    for train in (True, False):
        ref.train(train)
        fast.train(train)
        xr = x.clone().requires_grad_(True)
        xf = x.clone().requires_grad_(True)
        out_r, out_f = ref(xr), fast(xf)
        assert _rel(out_f, out_r) < 1e-5
        (gr,) = torch.autograd.grad(out_r.logsumexp(1).sum(), xr)
        (gf,) = torch.autograd.grad(out_f.logsumexp(1).sum(), xf)
        assert _rel(gf, gr) < 1e-4


def test_amp_off_is_exact_fp32():
    cfg = _cfg()
    ctx = autocast(cfg, "cpu")
    m = _net().eval()
    x = torch.rand(4, 3, 8, 8)
    with ctx:
        assert not torch.is_autocast_enabled("cpu")
        out = m(x)
    assert out.dtype == torch.float32 and torch.equal(out, m(x))
    # a whole training step through train_step is bit-identical to the plain step
    a, b = _net(), _net()
    oa = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    ob = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    method, sc = get_method("fgsm_n"), StepContext(cfg=cfg, epoch=0, lam=0.0)
    y = torch.randint(0, 10, (4,))
    torch.manual_seed(5)
    la, _ = train_step(a, oa, method, sc, x, y, amp=lambda: autocast(cfg, "cpu"))
    torch.manual_seed(5)
    lb, _ = method.loss(b, x, y, sc)
    ob.zero_grad()
    lb.backward()
    ob.step()
    assert torch.equal(la, lb)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_bf16_autocast_on_cpu_close_to_fp32_and_noop_elsewhere():
    cfg = _cfg(amp="bf16")
    m = _net().eval()
    x = torch.rand(4, 3, 8, 8)
    with autocast(cfg, "cpu"):
        assert torch.is_autocast_enabled("cpu")
        out = m(x)
    assert out.dtype == torch.bfloat16
    assert _rel(out.float(), m(x)) < 5e-2
    assert not isinstance(autocast(cfg, "meta"), torch.autocast)  # other devices: fp32


# ------------------------------------------------------------------------------ compile


def test_compile_skipped_for_double_backprop_methods():
    assert needs_double_backprop("cure") and needs_double_backprop("gradalign") and not needs_double_backprop("advlc")
    lines = []
    m = prepare_model(_net(), _cfg("cure", "fgsm_n", compile=True), log=lines.append)
    assert getattr(m, "_compiled_call_impl", None) is None
    assert "compile skipped" in lines[0]


@pytest.mark.skipif(
    not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")),
    reason="torch.compile on a CPU needs a C++ compiler",
)
def test_compiled_advlc_step_matches_eager():
    """AdvLC reuses a retained graph (the attack's first forward pass): needs donated buffers off."""
    cfg = _cfg("advlc", "fgsm_n", compile=True)
    eager = _net()
    comp = prepare_model(copy.deepcopy(eager), cfg)
    assert list(comp.state_dict()) == list(eager.state_dict())
    method = get_method("advlc")
    sc = StepContext(cfg=cfg, epoch=0, lam=0.5)
    x, y = torch.rand(8, 3, 8, 8), torch.randint(0, 10, (8,))
    oe = torch.optim.SGD(eager.parameters(), lr=0.01)
    oc = torch.optim.SGD(comp.parameters(), lr=0.01)
    for _ in range(2):
        torch.manual_seed(1)
        le, _ = train_step(eager, oe, method, sc, x, y)
        torch.manual_seed(1)
        lc, _ = train_step(comp, oc, method, sc, x, y)
        assert lc.item() == pytest.approx(le.item(), rel=1e-4)


# ------------------------------------------------------------------------------ trajectories


def _batches(n=4, b=8, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n * b, 3, size, size), dtype=torch.uint8, generator=g)
    ys = torch.randint(0, 10, (n * b,), generator=g)
    out = []
    for i in range(n):
        xb = as_float(augment(imgs[i * b : (i + 1) * b], padding=2, flip=True, generator=g))
        out.append((xb, ys[i * b : (i + 1) * b]))
    return out


def _loops(method, attack, channels_last, lr=0.05, momentum=0.9):
    cfg = _cfg(method, attack, channels_last=channels_last)
    ref = _net()
    fast = prepare_model(copy.deepcopy(ref), cfg)
    opt = [torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum, weight_decay=1e-4) for m in (ref, fast)]
    ref.train()
    fast.train()
    return cfg, StepContext(cfg=cfg, epoch=0, lam=cfg.method.lam), get_method(method), ref, fast, opt


@pytest.mark.parametrize("method,attack", [("advlc", "fgsm_n"), ("pgd", ""), ("standard", "")])
def test_fast_and_reference_steps_same_loss_trajectory(method, attack):
    """fp32 fast path (channels_last off: the default) = reference loop, bit for bit, over 4 batches."""
    batches = _batches()
    cfg, sc, fn, ref, fast, (o_ref, o_fast) = _loops(method, attack, False)
    torch.manual_seed(123)  # attack noise comes from the global RNG in both loops
    ref_losses = [reference_step(ref, o_ref, fn, sc, x, y, "cpu")[0] for x, y in batches]
    torch.manual_seed(123)
    fast_losses = [
        train_step(fast, o_fast, fn, sc, x, y, amp=lambda: autocast(cfg, "cpu"))[0].item() for x, y in batches
    ]
    assert fast_losses == ref_losses
    assert all(torch.equal(p, q) for p, q in zip(fast.parameters(), ref.parameters()))


@pytest.mark.parametrize("method,attack", [("advlc", "fgsm_n"), ("pgd", "")])
def test_channels_last_steps_equal_to_rounding(method, attack):
    """channels_last runs other conv kernels: every step agrees to fp32 rounding from the same
    weights (teacher-forced over 4 batches). Free-running trajectories of sign-based attacks
    part after a few steps, once a rounding difference flips the sign of an input-gradient
    component (measured here: 1e-6 relative at steps 1-2, 1e-3 at step 3); that is inherent
    to sign attacks (two GPUs, or two thread counts, do the same), so a smooth objective is
    compared free-running instead (next test)."""
    batches = _batches()
    cfg, sc, fn, ref, fast, (o_ref, o_fast) = _loops(method, attack, True, momentum=0.0)
    for i, (x, y) in enumerate(batches):
        fast.load_state_dict(ref.state_dict())
        torch.manual_seed(100 + i)
        l_ref, _ = reference_step(ref, o_ref, fn, sc, x, y, "cpu")
        torch.manual_seed(100 + i)
        l_fast, _ = train_step(fast, o_fast, fn, sc, x, y, amp=lambda: autocast(cfg, "cpu"))
        assert l_fast.item() == pytest.approx(l_ref, rel=1e-5)
        for p, q in zip(fast.parameters(), ref.parameters()):
            assert _rel(p, q) < 1e-5


def test_channels_last_smooth_trajectory_to_tolerance():
    batches = _batches(n=6)
    cfg, sc, fn, ref, fast, (o_ref, o_fast) = _loops("standard", "", True)
    ref_losses = [reference_step(ref, o_ref, fn, sc, x, y, "cpu")[0] for x, y in batches]
    fast_losses = [train_step(fast, o_fast, fn, sc, x, y)[0].item() for x, y in batches]
    assert fast_losses == pytest.approx(ref_losses, rel=1e-4)


def test_epoch_stream_is_the_training_loop_order():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(50)
    got = list(epoch_stream(x, y, batch_size=16, padding=2, flip=True, generator=torch.Generator().manual_seed(4)))
    g = torch.Generator().manual_seed(4)
    want = [
        (as_float(augment(x[idx], padding=2, flip=True, generator=g)), y[idx], idx)
        for idx in epoch_batches(50, 16, g, "cpu")
    ]
    assert len(got) == 3
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) for a, b in zip(got, want)
    )


# ------------------------------------------------------------------------------ reference loop


def test_reference_loader_is_the_authors_pipeline():
    import torchvision.transforms as T

    t = authors_transform(32, 4, True)
    assert [type(s) for s in t.transforms] == [T.RandomHorizontalFlip, T.RandomCrop, T.ToTensor]
    assert t.transforms[1].padding == 4
    x = torch.rand(20, 3, 8, 8)
    loader = make_loader(
        x, torch.arange(20) % 10, batch_size=6, padding=0, flip=False, generator=torch.Generator().manual_seed(0)
    )
    xb, yb = next(iter(loader))
    assert xb.shape == (6, 3, 8, 8) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert len(loader) == 3  # drop_last
    # no augmentation: the images come back as uint8-quantised copies of the inputs
    i = int(yb[0])
    assert any(torch.allclose(xb[0], x[j], atol=0.5 / 255 + 1e-6) for j in range(i, 20, 10))

    m = _net()
    res = train_epoch(
        m,
        torch.optim.SGD(m.parameters(), lr=0.01),
        loader,
        get_method("fgsm_n"),
        StepContext(cfg=_cfg(), epoch=0, lam=0.0),
        "cpu",
        max_batches=2,
    )
    assert res["batches"] == 2 and res["loss"] > 0 and 0 <= res["acc"] <= 1
