"""The fast path on a CUDA device (`pytest -m gpu` on a GPU machine; scripts/gpu-check.sh runs it).

What tests/nn/test_fastpath.py checks on a CPU, on the GPU: the fast path computes what the
reference loop computes; bf16 autocast and torch.compile give finite losses and trajectories
close to fp32 eager; the data stay on the device (uint8, augmented there, no host sync inside an
epoch). Each check is a function of the device (`_check_*`), so that it can be tried on a CPU
too; the tests call them with CUDA and skip without it.
"""

import copy
import pickle

import numpy as np
import pytest
import torch

from engine.bench.reference_loop import reference_step
from engine.config.schema import build
from engine.nn.datasets import as_float, augment, load_dataset
from engine.nn.fastpath import autocast, epoch_stream, prepare_model, train_step
from engine.nn.methods import get_method
from engine.nn.methods.context import StepContext
from engine.nn.models import PreActResNet18
from test_fastpath import SmallBNNet, _cfg  # the CPU tests' config and network, wider here

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def _deterministic_cudnn():
    """Deterministic cuDNN kernels, so the two loops can agree to rounding (restored after)."""
    old = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old


def _batches(n=4, b=16, size=32, seed=0):
    """Pre-augmented float batches on the CPU (the same ones for every loop)."""
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n * b, 3, size, size), dtype=torch.uint8, generator=g)
    ys = torch.randint(0, 10, (n * b,), generator=g)
    return [
        (as_float(augment(imgs[i * b : (i + 1) * b], padding=4, flip=True, generator=g)), ys[i * b : (i + 1) * b])
        for i in range(n)
    ]


def _rel(a, b):
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _sgd(model, lr=0.05, momentum=0.9):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=1e-4)


# ------------------------------------------------------------------------------ fast path = reference loop


def _check_fast_equals_reference(dev, method, attack):
    """Teacher-forced over 4 batches (each step starts both loops from the same weights): the fp32
    fast path's loss and weights agree with the reference loop's to fp32 rounding on `dev`."""
    cfg = _cfg(method, attack, top_n=16)
    fn, sc = get_method(method), StepContext(cfg=cfg, epoch=0, lam=cfg.method.lam)
    torch.manual_seed(0)
    ref = PreActResNet18(num_classes=10, in_channels=3).to(dev).train()
    fast = prepare_model(copy.deepcopy(ref), cfg).train()
    o_ref, o_fast = _sgd(ref, momentum=0.0), _sgd(fast, momentum=0.0)  # stateless: only the weights to copy
    for i, (x, y) in enumerate(_batches()):
        fast.load_state_dict(ref.state_dict())
        torch.manual_seed(100 + i)
        l_ref, _ = reference_step(ref, o_ref, fn, sc, x, y, dev)  # moves the CPU batch itself
        torch.manual_seed(100 + i)
        l_fast, _ = train_step(fast, o_fast, fn, sc, x.to(dev), y.to(dev), amp=lambda: autocast(cfg, dev))
        assert torch.isfinite(l_fast)
        assert l_fast.item() == pytest.approx(l_ref, rel=1e-4), (method, i)
        for p, q in zip(fast.parameters(), ref.parameters()):
            assert p.device.type == torch.device(dev).type
            assert _rel(p, q) < 1e-4, (method, i)


@pytest.mark.parametrize("method,attack", [("advlc", "fgsm_n"), ("pgd", ""), ("standard", "")])
def test_fast_path_matches_reference_loop_on_cuda(method, attack):
    _check_fast_equals_reference("cuda", method, attack)


# ------------------------------------------------------------------------------ bf16, torch.compile


def _trajectory(dev, method, attack, steps=6, **train):
    """Losses of `steps` SGD steps of SmallBNNet from one seed, with the given [train] switches."""
    cfg = _cfg(method, attack, top_n=16, **train)
    fn, sc = get_method(method), StepContext(cfg=cfg, epoch=0, lam=cfg.method.lam)
    torch.manual_seed(0)
    model = prepare_model(SmallBNNet(width=16).to(dev), cfg).train()
    opt = _sgd(model, lr=0.02)
    losses = []
    for i, (x, y) in enumerate(_batches(n=steps, b=32)):
        torch.manual_seed(100 + i)
        loss, _ = train_step(model, opt, fn, sc, x.to(dev), y.to(dev), amp=lambda: autocast(cfg, dev))
        losses.append(loss.detach().float())
    return torch.stack(losses).cpu()


def _check_bf16_and_compile(dev):
    fp32 = _trajectory(dev, "standard", "")
    for name, traj, tol in (
        ("bf16", _trajectory(dev, "standard", "", amp="bf16"), 5e-2),
        ("compile", _trajectory(dev, "standard", "", compile=True), 2e-3),
    ):
        assert torch.isfinite(traj).all(), name
        assert traj.tolist() == pytest.approx(fp32.tolist(), rel=tol), name
    # AdvLC (sign attack, a retained graph): finite and near eager over a few steps. (bf16 and
    # compile together: the epoch_compile step of scripts/gpu-check.sh, whose report names any loss
    # that is not finite.)
    eager = _trajectory(dev, "advlc", "fgsm_n", steps=3)
    for name, train in (("bf16", {"amp": "bf16"}), ("compile", {"compile": True})):
        traj = _trajectory(dev, "advlc", "fgsm_n", steps=3, **train)
        assert torch.isfinite(traj).all(), name
        assert traj.tolist() == pytest.approx(eager.tolist(), rel=5e-2), name


def test_bf16_and_compile_finite_and_close_on_cuda():
    _check_bf16_and_compile("cuda")


# ------------------------------------------------------------------------------ data stay on the device


def _write_cifar10(root, n_train=200, n_test=100):
    """A random CIFAR-10 folder in torchvision's on-disk format (python-2 pickles, bytes keys)."""
    rng = np.random.default_rng(0)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name, n in [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]:
        with open(base / name, "wb") as f:
            pickle.dump(
                {
                    b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                    b"labels": [int(v) for v in rng.integers(0, 10, n)],
                },
                f,
                protocol=2,
            )


def _check_data_stay_on_device(dev, root):
    from engine.run.loop import train

    _write_cifar10(root)
    cfg = build(
        {
            "data": {"dataset": "cifar10", "root": str(root)},
            "model": {"arch": "preact_resnet18"},
            "attack": {"name": "fgsm_n", "eps": 8 / 255},
            "method": {"name": "advlc", "lam": 0.5, "advlc": {"top_n": 50}},
            "train": {"batch_size": 50, "epochs": 1, "device": str(dev)},
        },
        "test",
    )
    data = load_dataset(cfg.data, dev)
    for t in (data.train_x, data.test_x):
        assert t.device.type == torch.device(dev).type and t.dtype == torch.uint8
    assert data.train_y.device.type == torch.device(dev).type
    torch.manual_seed(0)
    model = PreActResNet18(num_classes=10, in_channels=3).to(dev)
    opt = _sgd(model, lr=0.01)
    fn, sc = get_method("advlc"), StepContext(cfg=cfg, epoch=0, lam=0.5)
    gen = torch.Generator(device=dev).manual_seed(0)
    stream = epoch_stream(data.train_x, data.train_y, batch_size=50, padding=4, flip=True, generator=gen)
    xb, yb, _ = next(stream)  # warm-up: lazy initialisation may synchronise once
    train_step(model, opt, fn, sc, xb, yb)
    cuda = torch.device(dev).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any host read in the loop's body raises
    try:
        for xb, yb, idx in stream:
            assert xb.device.type == yb.device.type == idx.device.type == torch.device(dev).type
            assert xb.dtype == torch.float32
            loss, stats = train_step(model, opt, fn, sc, xb, yb)
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)
    # the training loop itself, one epoch: one read-back at the end of the epoch
    seen = []
    train(model, opt, fn, data, cfg, device=torch.device(dev), generator=gen, on_epoch=seen.append)
    assert len(seen) == 1 and seen[0].images == 200 and np.isfinite(seen[0].train_loss)


def test_data_stay_on_the_device_on_cuda(tmp_path):
    _check_data_stay_on_device("cuda", tmp_path)
