"""Speed benchmarks behind `advlc bench`: method step cost, epoch time of the fast path
against the plain reference loop, and the cost of the HS methods.

Every speed claim is a ratio measured in one process (DESIGN.md, performance principles):
the variants being compared are built side by side, warmed up, and then timed in rounds.
In a round, the variants compared with each other (a method and its base attack; a
scheme's reference loop and its fast path) run back to back, each a block of consecutive
steps between two device synchronisations (`torch.cuda.synchronize` on CUDA; the host
clock is `time.perf_counter`), the order reversed every other round, so that drift of the
machine (other jobs, clocks, heat) hits both sides of a ratio alike. Reported seconds are
medians over rounds; ratios are the median of the per-round ratios.

Functions return plain JSON-able dicts and print nothing; `progress(line)` callbacks report
what is running. `markdown_*` render a result as the section of docs/BENCHMARKS.md that
`write_section` puts in place. The command line is `tui/cli_bench.py`.

Data are synthetic and CIFAR-shaped (3 x 32 x 32, 10 classes; `data.dataset = "synthetic"`):
the content of an image does not change the time a step takes.
"""

from __future__ import annotations

import copy
import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch

from engine.errors import UserError

__all__ = [
    "bench_steps", "bench_epoch", "bench_hs", "plan_step_variants",
    "markdown_steps", "markdown_epoch", "markdown_hs", "write_section",
    "SECTION_STEPS", "SECTION_EPOCH", "SECTION_HS", "PAPER_S_PER_BATCH", "PAPER_RATIO",
]

SECTION_STEPS = "Method step cost (advlc bench)"
SECTION_EPOCH = "Epoch time: fast path vs reference loop (advlc bench --epoch)"
SECTION_HS = "Input-Hessian spectrum (advlc bench --hs)"

BASE_ATTACKS = ("fgsm_n", "pgd")
ALIASES = {"pgd10": "pgd"}

# Table 1 of the paper: seconds per mini-batch of 100, PreActResNet18, CIFAR-10, one V100.
PAPER_S_PER_BATCH = {"standard": 0.017, "fgsm_n": 0.047, "fgsm_n+advlc": 0.054,
                     "pgd": 0.326, "pgd+advlc": 0.337}
PAPER_RATIO = {"fgsm_n+advlc": 0.054 / 0.047, "pgd+advlc": 0.337 / 0.326}

# Strengths from Sec. 5.1 (with FGSM-N, with PGD10). The time of a step does not depend on
# lambda; these only keep the benchmark's training numerically sane and the configs valid.
STRENGTH = {"advlc": (0.55, 0.4), "igr": (1200.0, 1000.0), "cure": (1500.0, 1500.0),
            "gradalign": (7.0, 6.0), "logitalign": (100.0, 50.0), "consistency": (50.0, 50.0),
            "eq9_clean_loss": (0.5, 0.5), "eq10_grad_penalty": (1.0, 1.0)}

# `advlc bench --epoch`: the six schemes (GradAlign and CURE with FGSM-N).
EPOCH_VARIANTS = ("fgsm_n", "fgsm_n+advlc", "pgd", "pgd+advlc", "fgsm_n+gradalign", "fgsm_n+cure")

Progress = Callable[[str], None] | None


# ---------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without CUDA is a UserError."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: must be cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: must be cpu, cuda or cuda:N")
    return dev


def default_arch(device: torch.device) -> str:
    """PreActResNet18 on a GPU; the small CNN on a CPU (PreActResNet18 takes ~3 s per FGSM-N
    batch of 100 and ~15 s per PGD10 batch on one core of the project's test CPU)."""
    return "preact_resnet18" if device.type == "cuda" else "cnn_small"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _say(progress: Progress, line: str) -> None:
    if progress is not None:
        progress(line)


def environment(device: torch.device) -> dict:
    """Where the numbers come from: device name, library versions, code version."""
    from engine.run import provenance

    code = provenance.code_version()
    return {"device": str(device), "device_name": provenance.device_name(device),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "threads": torch.get_num_threads(), "commit": code["commit"], "dirty": code["dirty"],
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _label(attack: str, method: str) -> str:
    return method if not attack else f"{attack}+{method}"


def make_config(method: str, attack: str = "", *, arch: str, batch: int, device: torch.device,
                channels_last: bool = False, amp: str = "off", compile: bool = False,
                dataset: str = "synthetic", where: str = "advlc bench"):
    """A resolved RunConfig for timing `method` (with training `attack` for a regulariser)
    at the paper's settings: eps 8/255, PGD-10 with step eps/4, train-mode attacks,
    top-N = 10 % of the B x C logit differences, the method's strength from Sec. 5.1."""
    from engine.config.schema import RunConfig, resolve

    cfg = RunConfig()
    cfg.data.dataset = dataset
    cfg.model.arch = arch
    cfg.method.name = method
    cfg.attack.name = attack
    cfg.attack.eps = 8 / 255
    cfg.attack.steps = 10
    lam = STRENGTH.get(method, (1.0, 1.0))
    cfg.method.lam = lam[1] if attack == "pgd" else lam[0]
    cfg.method.top_n = max(1, batch)  # 10 % of B x C for C = 10
    cfg.train.batch_size = batch
    cfg.train.device = str(device)
    cfg.train.channels_last = channels_last
    cfg.train.amp = amp
    cfg.train.compile = compile
    return resolve(cfg, where)


def _synthetic(n: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n CIFAR-shaped synthetic images as float32 in [0, 1] on `device`, and labels."""
    from engine.config.schema import DataConfig
    from engine.nn.datasets import load_dataset

    d = load_dataset(DataConfig(dataset="synthetic", n_train=n, split_seed=seed), "cpu")
    return d.train_x.to(device), d.train_y.to(device)


def _model(arch: str, device: torch.device, seed: int, in_channels: int = 3, image_size: int = 32):
    from engine.config.schema import ModelConfig
    from engine.nn.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(ModelConfig(arch=arch), num_classes=10, in_channels=in_channels,
                           image_size=image_size).to(device)


def _optimizer(model) -> torch.optim.Optimizer:
    # lr 0.01 (not the paper's 0.1) keeps every method finite over a benchmark's few hundred
    # steps on random data; the optimiser's cost does not depend on it.
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


def _teachers(arch: str, device: torch.device, seed: int) -> dict:
    """Random frozen eval-mode teachers of the student's architecture (KDSA's cost only)."""
    out = {}
    for i, role in enumerate(("standard", "adversarial")):
        t = _model(arch, device, seed + 100 + i).eval()
        for p in t.parameters():
            p.requires_grad_(False)
        out[role] = t
    return out


def _allow_recompiles() -> None:
    """With torch.compile, each model instance and mode (train/eval, batch size) may need its
    own graph; a benchmark holds dozens of instances, more than dynamo's default recompile
    limit (8), past which it would silently run the rest eagerly."""
    import torch._dynamo.config as dc

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dc, name):
            setattr(dc, name, max(getattr(dc, name), 256))


def _time_groups(groups: list[tuple[str, ...]], run_block: Callable[[str, int], None], *, rounds: int,
                 per_round: int, device: torch.device, progress: Progress):
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
        for g in (groups if r % 2 == 0 else groups[::-1]):
            t = {}
            for n in (g if r % 2 == 0 else g[::-1]):
                _sync(device)
                t0 = time.perf_counter()
                run_block(n, per_round)
                _sync(device)
                t[n] = (time.perf_counter() - t0) / per_round
                times.setdefault(n, []).append(t[n])
            for a in g:
                for b in g:
                    if a != b and t[b] > 0:
                        ratios.setdefault((a, b), []).append(t[a] / t[b])
        _say(progress, f"round {r + 1}/{rounds} done")
    return times, ratios


# ---------------------------------------------------------------------------------------
# advlc bench: seconds per training batch of each method, as a ratio to its base attack
# ---------------------------------------------------------------------------------------


@dataclass
class StepVariant:
    label: str          # "fgsm_n", "pgd+advlc", "standard"
    method: str
    attack: str         # training attack of a regulariser; "" for plain methods
    base: str | None    # label of the base it is compared with (None for a base itself)


def plan_step_variants(names: list[str] | None = None) -> list[StepVariant]:
    """The variants `advlc bench` times for the requested names.

    Names are registered methods (`pgd10` = `pgd`) or explicit `attack+method` pairs.
    - fgsm_n / pgd are the bases; a regulariser (a method without a fixed attack) is timed
      with each base that is listed (with both when none is) that it combines with;
    - other plain methods (standard, fgsm, fgsm_rs, eq10_grad_penalty) are compared with fgsm_n;
    - None = every registered method.
    """
    from engine.nn.methods import METHODS, get_method

    get_method("standard")  # loads every method module
    if not names:
        names = sorted(METHODS)
    names = [ALIASES.get(n.strip(), n.strip()) for n in names if n.strip()]
    bases: list[str] = []
    regs: list[str] = []
    pairs: list[tuple[str, str]] = []
    plain: list[str] = []
    for n in names:
        if "+" in n:
            atk, _, m = n.partition("+")
            atk = ALIASES.get(atk, atk)
            if atk not in BASE_ATTACKS or m not in METHODS or METHODS[m].fixed_attack is not None \
                    or atk not in METHODS[m].attacks:
                raise UserError(f"--methods {n}: expected <attack>+<regulariser> with attack fgsm_n or pgd "
                                f"and a regulariser that combines with it")
            pairs.append((atk, m))
        elif n not in METHODS:
            raise UserError(f"--methods {n}: unknown method (known: {', '.join(sorted(METHODS))}, pgd10)")
        elif n in BASE_ATTACKS:
            bases.append(n)
        elif METHODS[n].fixed_attack is None:
            regs.append(n)
        else:
            plain.append(n)
    with_attacks = bases or list(BASE_ATTACKS)
    for m in regs:
        for atk in with_attacks:
            if atk in METHODS[m].attacks:
                pairs.append((atk, m))
    need = set(bases) | {a for a, _ in pairs} | ({"fgsm_n"} if plain else set())
    out = [StepVariant(b, b, "", None) for b in BASE_ATTACKS if b in need]
    seen = {v.label for v in out}
    for atk, m in pairs:
        lab = _label(atk, m)
        if lab not in seen:
            out.append(StepVariant(lab, m, atk, atk))
            seen.add(lab)
    for m in plain:
        if m not in seen:
            out.append(StepVariant(m, m, "", "fgsm_n"))
            seen.add(m)
    return out


def bench_steps(methods: list[str] | None = None, *, arch: str | None = None, device: str = "auto",
                batch: int = 100, iters: int | None = None, warmup: int | None = None,
                rounds: int | None = None, channels_last: bool = False, amp: str = "off",
                compile: bool = False, seed: int = 0, progress: Progress = None) -> dict:
    """Seconds per training batch (attack + loss + backward + SGD step) of each method, and
    its ratio to its base attack, all in one process.

    Each method is timed right next to its base in every round (see `_time_groups`), and
    its ratio is the median of those per-round ratios. Defaults: on a CPU cnn_small, 10
    rounds of 1 step after 1 warm-up step; on a GPU PreActResNet18, 10 rounds of 5 steps
    after 5 warm-up steps. Each method trains its own copy of one initial model on the same
    4 rotating synthetic batches.
    """
    from engine.nn.fastpath import autocast, prepare_model, train_step
    from engine.nn.methods import StepContext, get_method, lam_at

    dev = resolve_device(device)
    arch = arch or default_arch(dev)
    iters = iters or (50 if dev.type == "cuda" else 10)
    warmup = (5 if dev.type == "cuda" else 1) if warmup is None else warmup
    rounds = max(1, min(rounds or 10, iters))
    per_round = math.ceil(iters / rounds)
    if batch < 1:
        raise UserError(f"--batch {batch}: must be >= 1")
    variants = plan_step_variants(methods)
    if compile:
        _allow_recompiles()

    xs, ys = _synthetic(4 * batch, dev, seed)
    batches = [(xs[i * batch:(i + 1) * batch], ys[i * batch:(i + 1) * batch]) for i in range(4)]
    init = _model(arch, dev, seed)
    teachers = None
    state: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for v in variants:
        try:
            cfg = make_config(v.method, v.attack, arch=arch, batch=batch, device=dev,
                              channels_last=channels_last, amp=amp, compile=compile)
        except UserError as exc:
            skipped[v.label] = str(exc)
            continue
        extras = {}
        if v.method == "kdsa":
            teachers = teachers or _teachers(arch, dev, seed)
            extras["teachers"] = teachers
        model = prepare_model(copy.deepcopy(init), cfg)
        state[v.label] = {"cfg": cfg, "model": model, "opt": _optimizer(model), "method": get_method(v.method),
                          "ctx": StepContext(cfg=cfg, epoch=0, lam=lam_at(cfg, 0), extras=extras),
                          "amp": (lambda c=cfg: autocast(c, dev)), "i": 0, "last_loss": None}

    def run_block(label: str, k: int) -> None:
        s = state[label]
        s["model"].train()
        for _ in range(k):
            x, y = batches[s["i"] % len(batches)]
            s["i"] += 1
            loss, _ = train_step(s["model"], s["opt"], s["method"], s["ctx"], x, y, amp=s["amp"])
            s["last_loss"] = loss.detach()

    ready = []
    for v in variants:
        if v.label not in state:
            continue
        _say(progress, f"warm-up {v.label}")
        try:
            run_block(v.label, max(1, warmup))
            ready.append(v.label)
        except Exception as exc:  # a method that cannot run here is reported, not fatal
            skipped[v.label] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            del state[v.label]
    # a variant whose base failed cannot be compared; drop it too
    by_label = {v.label: v for v in variants}
    for lab in list(ready):
        base = by_label[lab].base
        if base is not None and base not in ready:
            skipped[lab] = f"its base {base} did not run"
            ready.remove(lab)
    _sync(dev)
    _say(progress, f"timing {len(ready)} methods: {rounds} rounds x {per_round} steps, each next to its base")
    paired = {by_label[lab].base for lab in ready if by_label[lab].base is not None}
    groups = [(by_label[lab].base, lab) if by_label[lab].base is not None else (lab,)
              for lab in ready if by_label[lab].base is not None or lab not in paired]
    times, ratios = _time_groups(groups, run_block, rounds=rounds, per_round=per_round, device=dev,
                                 progress=progress)

    rows = []
    for lab in ready:
        v = by_label[lab]
        t = times[lab]
        row = {"label": lab, "method": v.method, "attack": v.attack or state[lab]["cfg"].attack.name,
               "base": v.base, "s_per_batch": _median(t), "min": min(t), "max": max(t), "rounds": t,
               "ratio": 1.0 if v.base is None else _median(ratios[(lab, v.base)]),
               "ratio_of_medians": 1.0 if v.base is None else _median(t) / _median(times[v.base]),
               "finite": bool(torch.isfinite(state[lab]["last_loss"]).item()),
               "paper_s_per_batch": PAPER_S_PER_BATCH.get(lab), "paper_ratio": PAPER_RATIO.get(lab)}
        rows.append(row)
    advlc = {}
    for lab, paper in PAPER_RATIO.items():
        r = next((row for row in rows if row["label"] == lab), None)
        if r is not None and r["ratio"] is not None:
            advlc[lab] = {"ratio": r["ratio"], "overhead_pct": 100 * (r["ratio"] - 1),
                          "paper_ratio": paper, "paper_overhead_pct": 100 * (paper - 1),
                          "within_paper": r["ratio"] <= paper}
    return {"kind": "steps", **environment(dev), "model": arch, "batch": batch, "image": [3, 32, 32],
            "iters": rounds * per_round, "warmup": warmup, "rounds": rounds, "steps_per_round": per_round,
            "channels_last": channels_last, "amp": amp, "compile": compile,
            "results": rows, "advlc_vs_paper": advlc, "skipped": skipped}


# ---------------------------------------------------------------------------------------
# advlc bench --epoch: CIFAR-10-sized epoch, fast path vs the plain reference loop
# ---------------------------------------------------------------------------------------


def _parse_label(label: str) -> tuple[str, str]:
    """'fgsm_n+advlc' -> ('advlc', 'fgsm_n'); 'pgd10' -> ('pgd', '')."""
    label = ALIASES.get(label, label)
    if "+" in label:
        atk, _, m = label.partition("+")
        return m, ALIASES.get(atk, atk)
    return label, ""


def bench_epoch(methods: list[str] | None = None, *, arch: str | None = None, device: str = "auto",
                batch: int = 100, n_train: int = 50_000, batches: int | None = None,
                warmup: int | None = None, rounds: int | None = None, amps: list[str] | None = None,
                channels_last: bool = True, compile: bool = False, workers: int | None = None,
                eval_n: int | None = None, eval_batch: int = 500, hs_n: int | None = None,
                seed: int = 0, progress: Progress = None) -> dict:
    """Seconds per CIFAR-10-sized epoch (`n_train` images, batch `batch`) of each scheme on
    the fast path and on the reference loop, in one process, and the speed-up ratio.

    Fast path: uint8 images resident on the device, `epoch_stream` (shuffle + on-device crop
    and flip), `prepare_model` (channels_last, compile), `autocast` for each entry of `amps`
    ("off" = fp32, "bf16"), no host read inside the loop. Reference: `engine.bench.reference_loop`
    (PIL transforms in a DataLoader with `workers` processes, per-batch `.item()`, fp32 NCHW).
    Each (scheme, loop, precision) trains its own copy of one initial model.

    Timing: `warmup` batches each, then `rounds` rounds of `batches / rounds` consecutive
    batches each; s/epoch = median s/batch x (n_train // batch). When fewer batches than an
    epoch are measured the epoch time is an extrapolation (`extrapolated: true`).
    Defaults: CPU: cnn_small (a reduced model: PreActResNet18 is too slow there),
    6 batches in 3 rounds after 1 warm-up, eval on 500 images, HS on 200 samples, fp32,
    DataLoader workers 0; CUDA: PreActResNet18, 500 batches (one epoch) in 5 rounds after
    5 warm-ups, eval on 10,000 images, HS on 2000 samples, fp32 and bf16, workers 4.

    Also: the per-epoch evaluation (`engine.nn.metrics.evaluation.evaluate`: clean + PGD-10 with step
    eps/4 + IG, batch `eval_batch`) per 10,000 test images, and HS (`hs_metric`, exact) per
    2000 samples, both on the fast-path model, extrapolated from `eval_n` / `hs_n` images.
    """
    from engine.nn.metrics.evaluation import evaluate
    from engine.nn.fastpath import autocast, epoch_stream, prepare_model, train_step
    from engine.nn.metrics.landscape import hs_metric
    from engine.nn.methods import METHODS, StepContext, get_method, lam_at
    from engine.bench.reference_loop import make_loader, reference_step

    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    arch = arch or default_arch(dev)
    amps = amps or (["off", "bf16"] if cuda else ["off"])
    for a in amps:
        if a not in ("off", "bf16"):
            raise UserError(f"--amp {a}: must be off or bf16")
    per_epoch = n_train // batch
    if per_epoch < 1:
        raise UserError(f"--n-train {n_train}: smaller than one batch of {batch}")
    batches = batches or (per_epoch if cuda else 6)
    rounds = max(1, min(rounds or (5 if cuda else 3), batches))
    per_round = math.ceil(batches / rounds)
    warmup = (5 if cuda else 1) if warmup is None else warmup
    workers = (4 if cuda else 0) if workers is None else workers
    eval_n = eval_n or (10_000 if cuda else 500)
    hs_n = hs_n or (2000 if cuda else 200)

    get_method("standard")
    labels = list(methods) if methods else list(EPOCH_VARIANTS)
    skipped: dict[str, str] = {}
    schemes = []
    for lab in labels:
        m, atk = _parse_label(lab)
        if m not in METHODS:
            skipped[lab] = f"method {m!r} is not registered"
            continue
        schemes.append((_label(atk, m), m, atk))

    # ---------------------------------------------------------------- data
    _say(progress, f"data: {n_train} synthetic CIFAR-shaped images")
    x_f, y = _synthetic(max(n_train, eval_n, hs_n), torch.device("cpu"), seed)
    x_u8 = (x_f * 255).round_().to(torch.uint8)
    del x_f
    train_x, train_y = x_u8[:n_train].to(dev), y[:n_train].to(dev)
    eval_x = (x_u8[:max(eval_n, hs_n)].to(dev).float() / 255.0)
    eval_y = y[:max(eval_n, hs_n)].to(dev)
    loader = make_loader(x_u8[:n_train], y[:n_train], batch_size=batch, padding=4, flip=True,
                         workers=workers, pin_memory=cuda,
                         generator=torch.Generator().manual_seed(seed))
    ref_iter = iter(loader)
    gen = torch.Generator(device=dev).manual_seed(seed + 1)
    fast_iter = iter(())

    def next_ref():
        nonlocal ref_iter
        try:
            return next(ref_iter)
        except StopIteration:
            ref_iter = iter(loader)
            return next(ref_iter)

    def next_fast():
        nonlocal fast_iter
        try:
            return next(fast_iter)
        except StopIteration:
            fast_iter = epoch_stream(train_x, train_y, batch_size=batch, padding=4, flip=True, generator=gen)
            return next(fast_iter)

    # ---------------------------------------------------------------- variants
    if compile:
        _allow_recompiles()
    init = _model(arch, dev, seed)
    teachers = _teachers(arch, dev, seed) if any(m == "kdsa" for _, m, _ in schemes) else None
    variants: dict[str, dict] = {}
    for lab, m, atk in schemes:
        for loop, amp in [("reference", "off")] + [("fast", a) for a in amps]:
            fast = loop == "fast"
            try:
                cfg = make_config(m, atk, arch=arch, batch=batch, device=dev,
                                  channels_last=channels_last and fast, amp=amp,
                                  compile=compile and fast, where="advlc bench --epoch")
            except UserError as exc:
                skipped[lab] = str(exc)
                break
            model = copy.deepcopy(init)
            notes: list[str] = []
            if fast:
                model = prepare_model(model, cfg, log=notes.append)
            name = f"{lab} | {loop}" + (f" {'bf16' if amp == 'bf16' else 'fp32'}" if fast else "")
            variants[name] = {"scheme": lab, "loop": loop, "amp": amp, "cfg": cfg, "model": model,
                              "opt": _optimizer(model), "method": get_method(m),
                              "ctx": StepContext(cfg=cfg, epoch=0, lam=lam_at(cfg, 0),
                                                 extras={"teachers": teachers} if m == "kdsa" else {}),
                              "autocast": (lambda c=cfg: autocast(c, dev)), "notes": notes,
                              "loss_sum": torch.zeros((), device=dev),
                              "correct": torch.zeros((), device=dev, dtype=torch.long)}

    def run_block(name: str, k: int) -> None:
        v = variants[name]
        v["model"].train()
        if v["loop"] == "reference":
            for _ in range(k):
                xb, yb = next_ref()
                reference_step(v["model"], v["opt"], v["method"], v["ctx"], xb, yb, dev)
        else:
            for _ in range(k):  # the training loop's step, bookkeeping included
                xb, yb = next_fast()
                loss, stats = train_step(v["model"], v["opt"], v["method"], v["ctx"], xb, yb, amp=v["autocast"])
                v["loss_sum"] += loss.detach() * len(yb)
                v["correct"] += (stats["logits"].detach().argmax(1) == yb).sum()

    ready = []
    for name in variants:
        _say(progress, f"warm-up {name}")
        try:
            run_block(name, max(1, warmup))
            ready.append(name)
        except Exception as exc:
            skipped[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    _sync(dev)
    _say(progress, f"timing {len(ready)} variants: {rounds} rounds x {per_round} batches")
    groups = []
    for lab, _, _ in schemes:  # each scheme's reference and fast variants back to back
        g = tuple(n for n in ready if variants[n]["scheme"] == lab)
        if g:
            groups.append(g)
    times, ratios = _time_groups(groups, run_block, rounds=rounds, per_round=per_round, device=dev,
                                 progress=progress)
    measured = rounds * per_round

    rows = []
    for lab, _, _ in schemes:
        ref = f"{lab} | reference"
        if ref not in times:
            continue
        row = {"scheme": lab, "reference_s_per_batch": _median(times[ref]),
               "reference_s_per_epoch": _median(times[ref]) * per_epoch, "fast": {}}
        for a in amps:
            name = f"{lab} | fast {'bf16' if a == 'bf16' else 'fp32'}"
            if name not in times:
                continue
            t = times[name]
            row["fast"][a] = {"s_per_batch": _median(t), "s_per_epoch": _median(t) * per_epoch,
                              "speedup": _median(ratios[(ref, name)]),
                              "finite": bool(torch.isfinite(variants[name]["loss_sum"]).item()),
                              "notes": variants[name]["notes"]}
        rows.append(row)

    # ---------------------------------------------------------------- evaluation and HS cost
    costs = {}
    fast_model = next((variants[n]["model"] for n in ready if variants[n]["loop"] == "fast"), None)
    if fast_model is not None:
        model = fast_model
        eps = 8 / 255
        for a in amps:
            _say(progress, f"evaluation cost ({'bf16' if a == 'bf16' else 'fp32'}): {eval_n} images")
            with autocast(SimpleNamespace(amp=a), dev):
                w = min(eval_batch, eval_n)
                evaluate(model, eval_x[:w], eval_y[:w], eps=eps, alpha=eps / 4, steps=10,
                         batch_size=eval_batch, ig=True)  # warm-up
                _sync(dev)
                t0 = time.perf_counter()
                evaluate(model, eval_x[:eval_n], eval_y[:eval_n], eps=eps, alpha=eps / 4, steps=10,
                         batch_size=eval_batch, ig=True)
                _sync(dev)
            dt = time.perf_counter() - t0
            costs[f"eval_{a}"] = {"images": eval_n, "seconds": dt, "s_per_10k": dt * 10_000 / eval_n,
                                  "extrapolated": eval_n < 10_000}
        _say(progress, f"HS cost: {hs_n} samples")
        hs_metric(model, eval_x[:min(100, hs_n)], eval_y[:min(100, hs_n)], n=min(100, hs_n), batch=100)  # warm-up
        _sync(dev)
        t0 = time.perf_counter()
        _, used = hs_metric(model, eval_x[:hs_n], eval_y[:hs_n], n=hs_n, batch=100)
        _sync(dev)
        dt = time.perf_counter() - t0
        costs["hs"] = {"samples": hs_n, "method": used, "seconds": dt, "s_per_2000": dt * 2000 / hs_n,
                       "extrapolated": hs_n < 2000}

    return {"kind": "epoch", **environment(dev), "model": arch, "reduced_model": arch != "preact_resnet18",
            "batch": batch, "n_train": n_train, "batches_per_epoch": per_epoch,
            "measured_batches": measured, "warmup": warmup, "rounds": rounds, "extrapolated": measured < per_epoch,
            "channels_last": channels_last, "compile": compile, "amps": amps, "workers": workers,
            "results": rows, "costs": costs, "skipped": skipped}


# ---------------------------------------------------------------------------------------
# advlc bench --hs: exact vs power iteration vs Lanczos
# ---------------------------------------------------------------------------------------


def _train_digits_model(epochs: int, device: torch.device, seed: int):
    """cnn_small trained `epochs` epochs on digits (standard CE, SGD 0.05, momentum 0.9, batch 50)."""
    import torch.nn.functional as F

    from engine.config.schema import DataConfig
    from engine.nn.datasets import epoch_batches, load_dataset

    data = load_dataset(DataConfig(dataset="digits"), device)
    model = _model("cnn_small", device, seed, in_channels=1, image_size=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator(device=device).manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in epoch_batches(len(data.train_x), 50, gen, device):
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(data.test_x).argmax(1) == data.test_y).float().mean())
    return model, data, {"source": f"digits cnn_small, {epochs} epochs of standard training", "test_acc": acc}


def _run_model(run: str, home, ckpt: str, device: torch.device):
    from engine.nn.datasets import load_dataset
    from engine.nn.models import build_model
    from engine.store.index import Store

    rd = Store(home).get(run)
    cfg = rd.run_config()
    name = {"end": "last", "last": "last"}.get(ckpt, ckpt)
    path = rd.ckpt(name)
    if not path.exists():
        raise UserError(f"run {rd.id}: no checkpoint {path.name} (use --ckpt best|last)")
    data = load_dataset(cfg.data, device)
    model = build_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                        image_size=data.image_size).to(device)
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True)["model"])
    return model.eval(), data, {"source": f"run {rd.id} ({cfg.label}), {path.name}"}


def bench_hs(*, run: str | None = None, home=None, ckpt: str = "best", device: str = "cpu",
             n: int = 2000, power_n: int | None = None, epochs: int = 5, seed: int = 0,
             progress: Progress = None) -> dict:
    """HS by the exact formula vs power iteration vs Lanczos (`engine.bench.hs.benchmark_hs`)
    on `n` samples of batch 100, with the validation errors.

    The model: a run's checkpoint (`run`, `ckpt`) with its own data, or cnn_small trained
    `epochs` epochs on digits. Samples: test images then training images (digits has 1797
    in all; up to `n` are used, cycled when n is larger, which only affects timing).
    Power iteration is timed on the first `power_n` samples (default all n; it is the slow
    one: ~2 s per batch of 100 digits on one CPU thread) against exact on the same samples;
    exact and Lanczos on all n. The HS of every method is reported on the samples it ran on,
    with exact's on the power samples beside power's.
    """
    from engine.bench.hs import benchmark_hs
    from engine.nn.datasets import as_float

    dev = resolve_device(device)
    if run:
        _say(progress, f"loading run {run}")
        model, data, source = _run_model(run, home, ckpt, dev)
    else:
        _say(progress, f"training cnn_small on digits for {epochs} epochs")
        model, data, source = _train_digits_model(epochs, dev, seed)
    x = torch.cat([data.test_x, data.train_x])
    y = torch.cat([data.test_y, data.train_y])
    distinct = len(x)
    if n > len(x):
        reps = math.ceil(n / len(x))
        x, y = x.repeat(reps, 1, 1, 1), y.repeat(reps)
    x, y = as_float(x[:n]), y[:n]
    power_n = min(n, power_n or n)
    _say(progress, f"exact and lanczos on {n} samples")
    a = benchmark_hs(model, x, y, batch=100, methods=("exact", "lanczos"), seed=seed)
    _say(progress, f"exact and power on {power_n} samples")
    b = benchmark_hs(model, x[:power_n], y[:power_n], batch=100, methods=("exact", "power"), seed=seed)
    sec = {"exact": a["methods"].get("exact", {}).get("sec_per_batch"),
           "lanczos": a["methods"].get("lanczos", {}).get("sec_per_batch"),
           "power": b["methods"].get("power", {}).get("sec_per_batch"),
           "exact_on_power_samples": b["methods"].get("exact", {}).get("sec_per_batch")}
    val = dict(a["validation"])
    for k in ("power_vs_dense", "power_vs_exact"):
        if k in b["validation"]:
            val[k] = b["validation"][k]
    sp_power = b.get("speedup_exact_vs_power")
    goals = {
        "exact_100x_faster_than_power": None if sp_power is None else sp_power >= 100,
        "exact_vs_dense_within_1e-3": (val.get("exact_vs_dense", {}).get("max_rel", math.inf) <= 1e-3)
        if "exact_vs_dense" in val else None,
        "power_vs_exact_within_1e-3": (val.get("power_vs_exact", {}).get("max_rel", math.inf) <= 1e-3)
        if "power_vs_exact" in val else None,
    }
    return {"kind": "hs", **environment(dev), "model": source, "n_samples": a["n_samples"],
            "distinct_samples": min(distinct, n), "power_samples": b["n_samples"], "batch": 100, "k": 20,
            "sec_per_batch": sec, "speedup_exact_vs_power": sp_power,
            "speedup_exact_vs_lanczos": a.get("speedup_exact_vs_lanczos"),
            "hs": {m: r.get("hs") for m, r in a["methods"].items()} | {"power": b["methods"].get("power", {}).get("hs"),
                                                                      "exact_on_power_samples": b["methods"].get("exact", {}).get("hs")},
            "errors": {m: r2["error"] for res in (a, b) for m, r2 in res["methods"].items() if "error" in r2},
            "validation": val, "goals": goals}


# ---------------------------------------------------------------------------------------
# docs/BENCHMARKS.md
# ---------------------------------------------------------------------------------------


def _f(v, fmt="{:.3g}") -> str:
    return "—" if v is None else fmt.format(v)


def _header(r: dict, command: str) -> list[str]:
    dirty = " (with uncommitted changes)" if r.get("dirty") else ""
    return [f"Measured {r['date']} by `{command}` on **{r['device_name']}**, torch {r['torch']}"
            + (f", CUDA {r['cuda']}" if r.get("cuda") and r["device"].startswith("cuda") else "")
            + f", commit {str(r.get('commit'))[:10]}{dirty}.", ""]


def markdown_steps(r: dict, command: str = "advlc bench") -> str:
    lines = _header(r, command)
    lines += [f"Model {r['model']}, synthetic {r['image'][0]}x{r['image'][1]}x{r['image'][2]} batches of "
              f"{r['batch']}; precision {'bf16' if r['amp'] == 'bf16' else 'fp32'}"
              f"{', channels_last' if r['channels_last'] else ''}{', compiled' if r['compile'] else ''}; "
              f"{r['warmup']} warm-up step{'' if r['warmup'] == 1 else 's'}, then {r['rounds']} rounds of {r['steps_per_round']} "
              f"step(s) per method, each method timed right after (or, every other round, right before) "
              f"its base; seconds are medians over rounds, ratios the median of those per-round "
              f"ratios.", "",
              "| method | base | s/batch | ratio to base | paper s/batch (V100) | paper ratio |",
              "|---|---|---:|---:|---:|---:|"]
    for row in r["results"]:
        lines.append(f"| {row['label']}{'' if row['finite'] else ' (loss not finite)'} | {row['base'] or '—'} | "
                     f"{_f(row['s_per_batch'], '{:.4f}')} | {_f(row['ratio'], '{:.3f}')} | "
                     f"{_f(row['paper_s_per_batch'])} | {_f(row['paper_ratio'], '{:.3f}')} |")
    if r["advlc_vs_paper"]:
        lines += [""]
        for lab, a in r["advlc_vs_paper"].items():
            lines.append(f"- **{lab}**: +{a['overhead_pct']:.1f} % over its base (paper: "
                         f"+{a['paper_overhead_pct']:.1f} %) — {'within' if a['within_paper'] else 'above'} "
                         f"the paper's overhead.")
    if r["skipped"]:
        lines += ["", "Not timed: " + "; ".join(f"{k} ({v})" for k, v in r["skipped"].items()) + "."]
    return "\n".join(lines) + "\n"


def markdown_epoch(r: dict, command: str = "advlc bench --epoch") -> str:
    lines = _header(r, command)
    ext = (f"**Extrapolated**: {r['measured_batches']} batches measured per variant, × "
           f"{r['batches_per_epoch'] / r['measured_batches']:.0f} to {r['batches_per_epoch']} batches "
           f"({r['n_train']:,} images)." if r["extrapolated"] else
           f"{r['measured_batches']} batches ({r['n_train']:,} images) measured per variant.")
    model = r["model"] + (" (a reduced model standing in for PreActResNet18)" if r["reduced_model"] else "")
    lines += [f"Model {model}, batch {r['batch']}, synthetic CIFAR-shaped data. {ext} "
              f"{r['warmup']} warm-up batch{'' if r['warmup'] == 1 else 'es'}, then {r['rounds']} rounds, each scheme's "
              f"variants back to back; "
              f"medians; speed-up = median of the per-round reference/fast ratios. "
              f"Fast path: uint8 data on the device, on-device crop+flip, "
              f"{'channels_last, ' if r['channels_last'] else ''}{'torch.compile, ' if r['compile'] else ''}"
              f"no host sync in the loop. Reference: torchvision DataLoader ({r['workers']} workers) + "
              f"per-image PIL RandomHorizontalFlip/RandomCrop(padding 4)/ToTensor, fp32, `loss.item()` per batch.",
              ""]
    amps = r["amps"]
    head = "| scheme | reference s/epoch |" + "".join(
        f" fast {'bf16' if a == 'bf16' else 'fp32'} s/epoch | speed-up |" for a in amps)
    lines += [head, "|---|---:|" + "---:|---:|" * len(amps)]
    for row in r["results"]:
        cells = f"| {row['scheme']} | {_f(row['reference_s_per_epoch'], '{:.1f}')} |"
        for a in amps:
            f = row["fast"].get(a)
            cells += (f" {_f(f['s_per_epoch'], '{:.1f}')} | {_f(f['speedup'], '{:.2f}')}× |" if f else " — | — |")
        lines.append(cells)
    c = r["costs"]
    if c:
        lines += [""]
        for a in amps:
            e = c.get(f"eval_{a}")
            if e:
                lines.append(f"- Per-epoch evaluation (clean + PGD-10 + IG, batch 500) "
                             f"{'bf16' if a == 'bf16' else 'fp32'}: {e['s_per_10k']:.1f} s per 10,000 test images"
                             + (f" (extrapolated from {e['images']})" if e["extrapolated"] else "") + ".")
        if c.get("hs"):
            h = c["hs"]
            lines.append(f"- HS ({h['method']}, batch 100): {h['s_per_2000']:.1f} s per 2000 samples"
                         + (f" (extrapolated from {h['samples']})" if h["extrapolated"] else "") + ".")
    if r["skipped"]:
        lines += ["", "Not timed: " + "; ".join(f"{k} ({v})" for k, v in r["skipped"].items()) + "."]
    return "\n".join(lines) + "\n"


def markdown_hs(r: dict, command: str = "advlc bench --hs") -> str:
    lines = _header(r, command)
    s = r["sec_per_batch"]
    v = r["validation"]
    lines += [f"Model: {r['model']['source']}. {r['n_samples']} samples ({r['distinct_samples']} distinct) in "
              f"batches of {r['batch']}, top-{r['k']} eigenvalues"
              + ("." if r["power_samples"] == r["n_samples"] else
                 f"; power iteration timed on the first {r['power_samples']} samples against exact on the same "
                 f"samples.") + " The dense-Hessian checks use one batch of 2 samples (a 128 x 128 Hessian).", "",
              "| method | s/batch | exact is faster by | HS |", "|---|---:|---:|---:|",
              f"| exact | {_f(s['exact'], '{:.4f}')} | — | {_f(r['hs'].get('exact'), '{:.4g}')} |",
              f"| Lanczos | {_f(s['lanczos'], '{:.3f}')} | {_f(r['speedup_exact_vs_lanczos'], '{:.0f}')}× | "
              f"{_f(r['hs'].get('lanczos'), '{:.4g}')} |",
              f"| power iteration (authors') | {_f(s['power'], '{:.2f}')} | {_f(r['speedup_exact_vs_power'], '{:.0f}')}× | "
              f"{_f(r['hs'].get('power'), '{:.4g}')}"
              + ("" if r["power_samples"] == r["n_samples"] else
                 f" (on {r['power_samples']} samples; exact there: {_f(r['hs'].get('exact_on_power_samples'), '{:.4g}')})")
              + " |", "",
              "Validation of the top-20 eigenvalues: max relative error of any eigenvalue (eigenvalues "
              "below 1e-6 of the largest left out) / max error relative to the largest eigenvalue:", ""]
    for k, e in v.items():
        if isinstance(e, dict):
            lines.append(f"- {k.replace('_', ' ')}: {e['max_rel']:.2e} / {e['max_abs_scaled']:.2e}"
                         + (f" (per-batch max relative error, mean over batches {e['mean_max_rel']:.2e})"
                            if "mean_max_rel" in e else ""))
    hs = r["hs"]
    ref = hs.get("exact_on_power_samples") or hs.get("exact")
    if hs.get("power") is not None and ref:
        lines.append(f"- HS itself (mean |λ| of the top 20), power iteration vs exact: "
                     f"{abs(hs['power'] - ref) / abs(ref):.2e} relative; Lanczos vs exact: "
                     + (f"{abs(hs['lanczos'] - hs['exact']) / abs(hs['exact']):.2e}" if hs.get("lanczos") is not None
                        and hs.get("exact") else "—") + " relative.")
    g = r["goals"]
    lines += ["", "Goals: exact ≥ 100× faster than power iteration: "
              f"{_yes(g['exact_100x_faster_than_power'])}; exact = dense Hessian to 1e-3: "
              f"{_yes(g['exact_vs_dense_within_1e-3'])}; power iteration within 1e-3 of exact: "
              f"{_yes(g['power_vs_exact_within_1e-3'])}."]
    return "\n".join(lines) + "\n"


def _yes(b) -> str:
    return "—" if b is None else ("yes" if b else "**no**")


BEGIN, END = "<!-- advlc bench: begin (generated; replaced by --write-docs) -->", "<!-- advlc bench: end -->"


def write_section(path: Path, heading: str, body: str, *, title: str = "# Benchmarks") -> None:
    """Put `body` under `## heading` in the markdown file `path`, between the generated-block
    markers; text of the section outside the markers, and every other section, is kept. A
    missing file or section is created (the section at the end)."""
    path = Path(path)
    text = path.read_text() if path.exists() else f"{title}\n"
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == f"## {heading}"), None)
    if start is None:
        new = text.rstrip("\n") + f"\n\n## {heading}\n\n{block}\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if re.match(r"^##? ", lines[i])), len(lines))
        section = "\n".join(lines[start + 1:end])
        if BEGIN in section and END in section:
            pre, _, rest = section.partition(BEGIN)
            _, _, post = rest.partition(END)
            section = pre + block + post
        else:
            section = "\n\n" + block + "\n" + section.strip("\n") + ("\n" if section.strip() else "")
        body_lines = section.strip("\n").splitlines()
        new_lines = lines[:start + 1] + [""] + body_lines + ([""] if end < len(lines) else []) + lines[end:]
        new = "\n".join(new_lines) + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(new)
    tmp.replace(path)
