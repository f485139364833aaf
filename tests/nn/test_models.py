"""engine.nn.models: shapes, parameter counts, the two PreActResNet18 shortcuts, activations,
`is_piecewise_linear`, and gradients to the input. CPU only, a few seconds."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.config.schema import ModelConfig
from engine.errors import UserError
from engine.nn.models import build_model, is_piecewise_linear

torch.set_num_threads(min(2, torch.get_num_threads()))

# (arch, cfg overrides, num_classes, in_channels, image_size): the small instances tested below
SMALL = {
    "cnn_small": (dict(), 10, 1, 8),
    "preact_resnet18": (dict(), 10, 3, 32),
    "wide_resnet": (dict(depth=10, width=1), 10, 3, 32),
}


def make(arch, activation="relu", num_classes=None, in_channels=None, image_size=None, **kw):
    over, nc, c, s = SMALL[arch]
    cfg = ModelConfig(arch=arch, activation=activation, **{**over, **kw})
    return build_model(cfg, num_classes=num_classes or nc, in_channels=in_channels or c, image_size=image_size or s)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics, so eval-mode
    BN is not (nearly) the identity and wiring mistakes show up in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))


# ---------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch,nc,c,s",
    [
        ("cnn_small", 10, 1, 8),
        ("cnn_small", 10, 3, 32),
        ("cnn_small", 7, 2, 7),  # odd size: the stride-2 conv gives ceil(s / 2)
        ("preact_resnet18", 10, 3, 32),
        ("preact_resnet18", 200, 3, 64),  # TinyImageNet: same network, adaptive pool
        ("wide_resnet", 10, 3, 32),
        ("wide_resnet", 100, 3, 64),
    ],
)
@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_output_shape(arch, nc, c, s, activation):
    torch.manual_seed(0)
    model = make(arch, activation, num_classes=nc, in_channels=c, image_size=s)
    for train in (True, False):
        model.train(train)
        out = model(torch.rand(2, c, s, s))
        assert out.shape == (2, nc)
        assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------
# parameter counts, checked against the architecture written out as arithmetic
# ---------------------------------------------------------------------------------------


def bn(c):
    return 2 * c


def conv(cin, cout, k):
    return cin * cout * k * k


def preact_resnet18_count(nc, cin=3):
    total = conv(cin, 64, 3)
    in_planes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for s in (stride, 1):
            total += bn(in_planes) + conv(in_planes, planes, 3) + bn(planes) + conv(planes, planes, 3)
            if s != 1 or in_planes != planes:
                total += conv(in_planes, planes, 1)
            in_planes = planes
    return total + bn(512) + 512 * nc + nc


def wide_resnet_count(depth, width, nc, cin=3):
    n = (depth - 4) // 6
    stages = [16, 16 * width, 32 * width, 64 * width]
    total = conv(cin, 16, 3)
    in_planes = 16
    for planes, stride in zip(stages[1:], (1, 2, 2)):
        for s in [stride] + [1] * (n - 1):
            total += bn(in_planes) + conv(in_planes, planes, 3) + bn(planes) + conv(planes, planes, 3)
            if s != 1 or in_planes != planes:
                total += conv(in_planes, planes, 1)
            in_planes = planes
    return total + bn(stages[3]) + stages[3] * nc + nc


def test_cnn_small_parameter_count():
    # conv1 (1*32*9 + 32) + conv2 (32*64*9 + 64) + fc1 (64*4*4*128 + 128) + fc2 (128*10 + 10)
    assert n_params(make("cnn_small")) == 320 + 18_496 + 131_200 + 1_290 == 151_306


def test_cnn_small_width_multiplier():
    # cnn_width = 2: conv1 (1*64*9 + 64) + conv2 (64*128*9 + 128) + fc1 (128*4*4*256 + 256) + fc2 (256*10 + 10)
    m = make("cnn_small", cnn_width=2)
    assert n_params(m) == 640 + 73_856 + 524_544 + 2_570 == 601_610
    assert (m.conv1.out_channels, m.conv2.out_channels, m.fc1.out_features) == (64, 128, 256)
    assert make("cnn_small", cnn_width=2)(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_preact_resnet18_parameter_count():
    assert preact_resnet18_count(10) == 11_172_170
    assert preact_resnet18_count(200) == 11_269_640
    for shortcut in ("common", "authors"):
        assert n_params(make("preact_resnet18", shortcut=shortcut)) == 11_172_170
    assert n_params(make("preact_resnet18", num_classes=200, image_size=64)) == 11_269_640


def test_wide_resnet_parameter_count():
    assert n_params(make("wide_resnet")) == wide_resnet_count(10, 1, 10) == 77_850
    assert n_params(make("wide_resnet", depth=16, width=2)) == wide_resnet_count(16, 2, 10)
    # the default WideResNet-34-10 (the paper's analysis model): ~46.2M
    wrn = build_model(ModelConfig(arch="wide_resnet"), num_classes=10, in_channels=3, image_size=32)
    assert (wrn.depth, wrn.width) == (34, 10)
    assert n_params(wrn) == wide_resnet_count(34, 10, 10) == 46_160_474
    assert abs(n_params(wrn) - 46.2e6) / 46.2e6 < 0.01


def test_parameter_names_follow_the_authors_code():
    """So the authors' released checkpoints load with load_state_dict."""
    prn = make("preact_resnet18").state_dict()
    assert {
        "conv1.weight",
        "layer2.0.shortcut.0.weight",
        "layer1.1.bn2.running_var",
        "bn.weight",
        "linear.weight",
    } <= set(prn)
    assert not any("shortcut" in k for k in prn if k.startswith("layer1."))
    wrn = make("wide_resnet", width=2).state_dict()  # width 1: layer1 needs no projection
    assert {
        "conv1.weight",
        "layer1.block0.bn1.weight",
        "layer1.block0.shortcut.0.weight",
        "layer2.block0.conv2.weight",
        "bn1.weight",
        "fc0.weight",
        "fc0.bias",
    } <= set(wrn)


# ---------------------------------------------------------------------------------------
# the two PreActResNet18 shortcut variants
# ---------------------------------------------------------------------------------------


def test_shortcut_variants_share_parameters_but_differ():
    torch.manual_seed(0)
    common = make("preact_resnet18", shortcut="common")
    authors = make("preact_resnet18", shortcut="authors")
    randomise_bn(common)
    sd = common.state_dict()
    assert [(k, v.shape) for k, v in sd.items()] == [(k, v.shape) for k, v in authors.state_dict().items()]
    authors.load_state_dict(sd)
    x = torch.rand(2, 3, 32, 32)
    common.eval(), authors.eval()
    with torch.no_grad():
        a, c = authors(x), common(x)
    assert not torch.allclose(a, c, atol=1e-4)


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_shortcut_block_wiring(activation):
    torch.manual_seed(0)
    act = F.relu if activation == "relu" else F.softplus
    models = {s: make("preact_resnet18", activation, shortcut=s) for s in ("common", "authors")}
    randomise_bn(models["common"])
    models["authors"].load_state_dict(models["common"].state_dict())
    h = torch.randn(2, 64, 16, 16)  # the input of layer2, the first downsampling block
    h_id = torch.randn(2, 128, 8, 8)  # the input of layer2's second (identity) block
    with torch.no_grad():
        for shortcut, model in models.items():
            model.eval()
            b = model.layer2[0]
            assert b.shortcut is not None and b.conv1.stride == (2, 2)
            pre = act(b.bn1(h))
            residual = b.conv2(act(b.bn2(b.conv1(pre))))
            skip = b.shortcut(h) if shortcut == "authors" else b.shortcut(pre)
            torch.testing.assert_close(b(h), residual + skip)
            # identity shortcuts add the block input x in both variants
            b = model.layer2[1]
            assert b.shortcut is None
            expect = b.conv2(act(b.bn2(b.conv1(act(b.bn1(h_id)))))) + h_id
            torch.testing.assert_close(b(h_id), expect)
    with torch.no_grad():
        outs = [m.layer2[0](h) for m in models.values()]
    assert not torch.allclose(*outs, atol=1e-4)


def test_wide_resnet_block_wiring():
    """Stride on the second conv (authors' code); the 1x1 shortcut acts on the block input."""
    torch.manual_seed(0)
    model = make("wide_resnet", depth=16, width=2)
    randomise_bn(model)
    model.eval()
    b = model.layer2.block0
    assert b.conv1.stride == (1, 1) and b.conv2.stride == (2, 2)
    h = torch.randn(2, 32, 32, 32)
    with torch.no_grad():
        expect = b.conv2(F.relu(b.bn2(b.conv1(F.relu(b.bn1(h)))))) + b.shortcut(h)
        torch.testing.assert_close(b(h), expect)
        assert b(h).shape == (2, 64, 16, 16)
        b = model.layer2.block1
        assert b.shortcut is None
        h = torch.randn(2, 64, 16, 16)
        torch.testing.assert_close(b(h), b.conv2(F.relu(b.bn2(b.conv1(F.relu(b.bn1(h)))))) + h)


# ---------------------------------------------------------------------------------------
# activations and is_piecewise_linear
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(SMALL))
def test_activation_everywhere_and_piecewise_linear(arch):
    relu = make(arch, "relu")
    soft = make(arch, "softplus")
    assert is_piecewise_linear(relu)
    assert not is_piecewise_linear(soft)
    assert not any(isinstance(m, nn.Softplus) for m in relu.modules())
    assert not any(isinstance(m, (nn.ReLU, nn.LeakyReLU)) for m in soft.modules())
    softplus = [m for m in soft.modules() if isinstance(m, nn.Softplus)]
    assert softplus and all(m.beta == 1 for m in softplus)
    # the two differ only in the non-linearity: same parameter names and shapes
    assert [(k, v.shape) for k, v in relu.state_dict().items()] == [(k, v.shape) for k, v in soft.state_dict().items()]


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_activation_is_what_forward_uses(activation):
    """Swapping `self.act` everywhere changes the output: no F.relu is hard-wired in forward."""
    torch.manual_seed(0)
    model = make("wide_resnet", activation).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        for m in list(model.modules()):
            if hasattr(m, "act"):
                m.act = nn.Tanh()
        assert not torch.allclose(before, model(x))
    assert not is_piecewise_linear(model)


def test_is_piecewise_linear_walks_wrappers_and_is_conservative():
    from torch.optim.swa_utils import AveragedModel

    assert is_piecewise_linear(AveragedModel(make("cnn_small")))
    assert not is_piecewise_linear(AveragedModel(make("cnn_small", "softplus")))
    assert is_piecewise_linear(
        nn.Sequential(
            nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.LeakyReLU(), nn.Flatten(), nn.Linear(2, 2), nn.Sequential()
        )
    )
    for smooth in (nn.GELU(), nn.Tanh(), nn.Sigmoid(), nn.SiLU(), nn.Softplus(), nn.ELU(), nn.LayerNorm(2)):
        assert not is_piecewise_linear(nn.Sequential(nn.Linear(2, 2), smooth))


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_input_curvature_matches_is_piecewise_linear(activation):
    """ReLU net: the logits are piecewise linear in x, so a Hessian-vector product of a
    logit vanishes; softplus net: it does not (the case HS needs HVPs for)."""
    torch.manual_seed(0)
    model = make("cnn_small", activation).eval()
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    (g,) = torch.autograd.grad(model(x)[:, 0].sum(), x, create_graph=True)
    v = torch.randn_like(x)
    if g.requires_grad:
        (hv,) = torch.autograd.grad((g * v).sum(), x, allow_unused=True)
        hv = torch.zeros_like(x) if hv is None else hv
    else:
        hv = torch.zeros_like(x)
    assert (hv.abs().max() < 1e-6) == is_piecewise_linear(model)


# ---------------------------------------------------------------------------------------
# gradients to the input
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(SMALL))
@pytest.mark.parametrize("activation", ["relu", "softplus"])
@pytest.mark.parametrize("train", [True, False])
def test_gradient_reaches_input(arch, activation, train):
    torch.manual_seed(0)
    model = make(arch, activation).train(train)
    _, nc, c, s = SMALL[arch]
    x = torch.rand(2, c, s, s, requires_grad=True)
    F.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------
# errors and import hygiene
# ---------------------------------------------------------------------------------------


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="model.depth = 30"):
        build_model(ModelConfig(arch="wide_resnet", depth=30), num_classes=10, in_channels=3, image_size=32)
    with pytest.raises(UserError, match="model.arch"):
        build_model(ModelConfig(arch="vgg"), num_classes=10, in_channels=3, image_size=32)
    with pytest.raises(UserError, match="model.activation"):
        build_model(ModelConfig(activation="gelu"), num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(UserError, match="model.shortcut"):
        build_model(ModelConfig(arch="preact_resnet18", shortcut="x"), num_classes=10, in_channels=3, image_size=32)


def test_import_touches_no_cuda_and_no_ui():
    code = (
        "import sys, torch, engine.nn.models as m; "
        "assert not torch.cuda.is_initialized(); "
        "assert not any(k.split('.')[0] in ('textual', 'rich', 'tui') for k in sys.modules), "
        "[k for k in sys.modules if k.split('.')[0] in ('textual', 'rich', 'tui')]"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
