"""Speed benchmarks behind `advlc bench`: method step cost, epoch time of the fast path
against the plain reference loop, and the cost of the HS methods.

Every speed claim is a ratio measured in one process (docs/ARCHITECTURE.md, performance):
the variants being compared are built side by side, warmed up, and then timed in rounds.
In a round, the variants compared with each other (a method and its base attack; a
scheme's reference loop and its fast path) run back to back, each a block of consecutive
steps between two device synchronisations (`torch.cuda.synchronize` on CUDA; the host
clock is `time.perf_counter`), the order reversed every other round, so that drift of the
machine (other jobs, clocks, heat) hits both sides of a ratio alike. Reported seconds are
medians over rounds; ratios are the median of the per-round ratios.

Functions return plain JSON-able dicts and print nothing; `progress(line)` callbacks report
what is running. `engine.bench.markdown` renders a result as the section of docs/BENCHMARKS.md
that `write_section` puts in place. The command line is `advlc bench` (tui/cli/bench.py).

Modules: `common` (devices, configs, synthetic data, the round-robin timer), `steps`
(`advlc bench`), `epoch` (`--epoch`), `hs` (`--hs`), `markdown`, `reference_loop`.

Data are synthetic and CIFAR-shaped (3 x 32 x 32, 10 classes; `data.dataset = "synthetic"`):
the content of an image does not change the time a step takes.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from engine.config.schema import DataConfig, ModelConfig, RunConfig, config_keys, resolve, set_key
from engine.nn.datasets import load_dataset
from engine.nn.methods import get_method
from engine.nn.models import build_model
from engine.run import provenance
from engine.run.device import pick_device

BASE_ATTACKS = ("fgsm_n", "pgd")
ALIASES = {"pgd10": "pgd"}

# Table 1 of the paper: seconds per mini-batch of 100, PreActResNet18, CIFAR-10, one V100.
PAPER_S_PER_BATCH = {"standard": 0.017, "fgsm_n": 0.047, "fgsm_n+advlc": 0.054, "pgd": 0.326, "pgd+advlc": 0.337}
PAPER_RATIO = {"fgsm_n+advlc": 0.054 / 0.047, "pgd+advlc": 0.337 / 0.326}

# `advlc bench epoch`: the six schemes (GradAlign and CURE with FGSM-N).
EPOCH_VARIANTS = ("fgsm_n", "fgsm_n+advlc", "pgd", "pgd+advlc", "fgsm_n+gradalign", "fgsm_n+cure")

Progress = Callable[[str], None] | None


# ---------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
    """`--device` of a benchmark: the run's own rule (engine.run.device.pick_device)."""
    return pick_device(name, "--device")


def default_arch(device: torch.device) -> str:
    """PreActResNet18 on a GPU; the small CNN on a CPU (PreActResNet18 takes ~3 s per FGSM-N
    batch of 100 and ~15 s per PGD10 batch on one core of the project's test CPU)."""
    return "preact_resnet18" if device.type == "cuda" else "cnn_small"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def say(progress: Progress, line: str) -> None:
    if progress is not None:
        progress(line)


def environment(device: torch.device) -> dict:
    """Where the numbers come from: device name, library versions, code version."""
    code = provenance.code_version()
    return {
        "device": str(device),
        "device_name": provenance.device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "commit": code["commit"],
        "dirty": code["dirty"],
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def label(attack: str, method: str) -> str:
    return method if not attack else f"{attack}+{method}"


def make_config(
    method: str,
    attack: str = "",
    *,
    arch: str,
    batch: int,
    device: torch.device,
    channels_last: bool = False,
    amp: str = "off",
    compile: bool = False,
    dataset: str = "synthetic",
    where: str = "advlc bench",
):
    """A resolved RunConfig for timing `method` (with training `attack` for a regulariser)
    at the paper's settings: eps 8/255, PGD-10 with step eps/4, train-mode attacks,
    top-N = 10 % of the B x C logit differences, the method's strength from Sec. 5.1."""
    cfg = RunConfig()
    cfg.data.dataset = dataset
    cfg.model.arch = arch
    cfg.method.name = method
    cfg.attack.name = attack
    cfg.attack.eps = 8 / 255
    cfg.attack.steps = 10
    # the paper's strength (Sec. 5.1) keeps the benchmark's training numerically sane; the time
    # of a step does not depend on lambda
    lam = get_method(method).paper_lam or (0.5, 0.5)  # valid for every lam rule
    cfg.method.lam = lam[1] if attack == "pgd" else lam[0]
    if f"method.{method}.top_n" in config_keys():
        set_key(cfg, f"method.{method}.top_n", max(1, batch), where)  # 10 % of B x C for C = 10
    cfg.train.batch_size = batch
    cfg.train.device = str(device)
    cfg.train.channels_last = channels_last
    cfg.train.amp = amp
    cfg.train.compile = compile
    return resolve(cfg, where)


def synthetic_data(n: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n CIFAR-shaped synthetic images as float32 in [0, 1] on `device`, and labels."""
    d = load_dataset(DataConfig(dataset="synthetic", n_train=n, split_seed=seed), "cpu")
    return d.train_x.to(device), d.train_y.to(device)


def bench_model(arch: str, device: torch.device, seed: int, in_channels: int = 3, image_size: int = 32):

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(ModelConfig(arch=arch), num_classes=10, in_channels=in_channels, image_size=image_size).to(
            device
        )


def bench_optimizer(model) -> torch.optim.Optimizer:
    # lr 0.01 (not the paper's 0.1) keeps every method finite over a benchmark's few hundred
    # steps on random data; the optimiser's cost does not depend on it.
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


def random_teachers(roles: tuple[str, ...], arch: str, device: torch.device, seed: int) -> dict:
    """Random frozen eval-mode teachers of the student's architecture for a distillation
    method's teacher `roles` (their cost only)."""
    out = {}
    for i, role in enumerate(roles):
        t = bench_model(arch, device, seed + 100 + i).eval()
        for p in t.parameters():
            p.requires_grad_(False)
        out[role] = t
    return out


def allow_recompiles() -> None:
    """With torch.compile, each model instance and mode (train/eval, batch size) may need its
    own graph; a benchmark holds dozens of instances, more than dynamo's default recompile
    limit (8), past which it would silently run the rest eagerly."""
    import torch._dynamo.config as dc  # only with torch.compile

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dc, name):
            setattr(dc, name, max(getattr(dc, name), 256))


def time_groups(
    groups: list[tuple[str, ...]],
    run_block: Callable[[str, int], None],
    *,
    rounds: int,
    per_round: int,
    device: torch.device,
    progress: Progress,
):
    """Time groups of variants that are compared with each other, back to back.

    In each of `rounds` rounds every group runs once: each member times a block of
    `per_round` consecutive steps between two device synchronisations, the members right
    after one another, so a ratio within a group compares blocks seconds apart. The order
    of the groups and of the members in a group is reversed every other round. Returns
    (times, ratios): every block's seconds per step of each name (a name may be in several
    groups), and for every ordered pair (a, b) of one group the per-round a/b ratios.
    """
    times: dict[str, list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        for g in groups if r % 2 == 0 else groups[::-1]:
            t = {}
            for n in g if r % 2 == 0 else g[::-1]:
                sync(device)
                t0 = time.perf_counter()
                run_block(n, per_round)
                sync(device)
                t[n] = (time.perf_counter() - t0) / per_round
                times.setdefault(n, []).append(t[n])
            for a in g:
                for b in g:
                    if a != b and t[b] > 0:
                        ratios.setdefault((a, b), []).append(t[a] / t[b])
        say(progress, f"round {r + 1}/{rounds} done")
    return times, ratios
