"""`advlc bench epoch`: epoch time of the fast path against the authors'-style reference loop."""

from __future__ import annotations

import copy
import math
import time
from types import SimpleNamespace

import torch

from engine.bench.common import (
    ALIASES,
    EPOCH_VARIANTS,
    Progress,
    allow_recompiles,
    bench_model,
    bench_optimizer,
    default_arch,
    environment,
    label,
    make_config,
    median,
    random_teachers,
    resolve_device,
    say,
    sync,
    synthetic_data,
    time_groups,
)
from engine.bench.reference_loop import make_loader, reference_step
from engine.errors import UserError
from engine.nn.fastpath import autocast, epoch_stream, prepare_model, train_step
from engine.nn.methods import get_method, lam_at
from engine.nn.methods import methods as registered_methods
from engine.nn.methods.context import StepContext
from engine.nn.metrics.evaluation import evaluate
from engine.nn.metrics.hessian import hs_metric


AMP_SPECS = ("off", "bf16", "off+compile", "bf16+compile")
"""`--amp` entries of `--epoch`: a precision, optionally with `+compile` (that fast variant only is compiled)."""


def amp_spec(spec: str, compile_all: bool = False) -> tuple[str, bool]:
    """'bf16+compile' -> ('bf16', True); 'off' -> ('off', compile_all). A bad entry is a UserError."""
    if spec not in AMP_SPECS:
        raise UserError(f"--amp {spec}: must be off or bf16, optionally with +compile (e.g. off,bf16+compile)")
    amp, _, comp = spec.partition("+")
    return amp, compile_all or comp == "compile"


def spec_name(spec: str, compile_all: bool = False) -> str:
    """The variant's name in tables: 'fp32', 'bf16', 'fp32+compile', 'bf16+compile'."""
    amp, comp = amp_spec(spec, compile_all)
    return ("bf16" if amp == "bf16" else "fp32") + ("+compile" if comp and not compile_all else "")


def _parse_label(label: str) -> tuple[str, str]:
    """'fgsm_n+advlc' -> ('advlc', 'fgsm_n'); 'pgd10' -> ('pgd', '')."""
    label = ALIASES.get(label, label)
    if "+" in label:
        atk, _, m = label.partition("+")
        return m, ALIASES.get(atk, atk)
    return label, ""


class _Batches:
    """The same synthetic images for both loops: the reference loop's DataLoader (uint8 on the
    host, PIL transforms) and the fast path's `epoch_stream` (uint8 on the device), each restarted
    when an epoch ends; and float evaluation images on the device."""

    def __init__(self, n_train: int, n_eval: int, batch: int, dev: torch.device, workers: int, seed: int):
        x_f, y = synthetic_data(max(n_train, n_eval), torch.device("cpu"), seed)
        x_u8 = (x_f * 255).round_().to(torch.uint8)
        del x_f
        self.train_x, self.train_y = x_u8[:n_train].to(dev), y[:n_train].to(dev)
        self.eval_x = x_u8[:n_eval].to(dev).float() / 255.0
        self.eval_y = y[:n_eval].to(dev)
        self.batch = batch
        self.loader = make_loader(
            x_u8[:n_train],
            y[:n_train],
            batch_size=batch,
            padding=4,
            flip=True,
            workers=workers,
            pin_memory=dev.type == "cuda",
            generator=torch.Generator().manual_seed(seed),
        )
        self.ref_iter = iter(self.loader)
        self.gen = torch.Generator(device=dev).manual_seed(seed + 1)
        self.fast_iter = iter(())

    def next_reference(self):
        try:
            return next(self.ref_iter)
        except StopIteration:
            self.ref_iter = iter(self.loader)
            return next(self.ref_iter)

    def next_fast(self):
        try:
            return next(self.fast_iter)[:2]
        except StopIteration:
            self.fast_iter = epoch_stream(
                self.train_x, self.train_y, batch_size=self.batch, padding=4, flip=True, generator=self.gen
            )
            return next(self.fast_iter)[:2]


def _variants(schemes, amps, *, arch, batch, dev, channels_last, compile, seed, skipped) -> dict[str, dict]:
    """For each scheme, a reference variant and a fast variant per precision, each with its own
    copy of one initial model, its optimiser and step context."""
    init = bench_model(arch, dev, seed)
    roles = tuple(dict.fromkeys(r for _, m, _ in schemes for r in get_method(m).teachers))
    teachers = random_teachers(roles, arch, dev, seed) if roles else None
    variants: dict[str, dict] = {}
    for lab, m, atk in schemes:
        for loop, spec in [("reference", "off")] + [("fast", a) for a in amps]:
            fast = loop == "fast"
            amp, comp = amp_spec(spec, compile) if fast else ("off", False)
            try:
                cfg = make_config(
                    m,
                    atk,
                    arch=arch,
                    batch=batch,
                    device=dev,
                    channels_last=channels_last and fast,
                    amp=amp,
                    compile=comp,
                    where="advlc bench epoch",
                )
            except UserError as exc:
                skipped[lab] = str(exc)
                break
            model = copy.deepcopy(init)
            notes: list[str] = []
            if fast:
                model = prepare_model(model, cfg, log=notes.append)
            name = f"{lab} | {loop}" + (f" {spec_name(spec, compile)}" if fast else "")
            variants[name] = {
                "scheme": lab,
                "loop": loop,
                "amp": amp,
                "spec": spec,
                "cfg": cfg,
                "model": model,
                "opt": bench_optimizer(model),
                "method": get_method(m),
                "ctx": StepContext(
                    cfg=cfg,
                    epoch=0,
                    lam=lam_at(cfg, 0),
                    extras={"teachers": teachers} if get_method(m).teachers else {},
                ),
                "autocast": (lambda c=cfg: autocast(c, dev)),
                "notes": notes,
                "loss_sum": torch.zeros((), device=dev),
                "correct": torch.zeros((), device=dev, dtype=torch.long),
            }
    return variants


def _costs(model, data: _Batches, amps, eval_n: int, hs_n: int, eval_batch: int, dev, progress) -> dict:
    """Seconds of the per-epoch evaluation per 10,000 images and of HS per 2000 samples."""
    costs = {}
    eps = 8 / 255
    for a in dict.fromkeys(amp_spec(s)[0] for s in amps) if eval_n else ():  # per precision, never compiled
        say(progress, f"evaluation cost ({'bf16' if a == 'bf16' else 'fp32'}): {eval_n} images")
        with autocast(SimpleNamespace(amp=a), dev):
            w = min(eval_batch, eval_n)
            evaluate(
                model,
                data.eval_x[:w],
                data.eval_y[:w],
                eps=eps,
                alpha=eps / 4,
                steps=10,
                batch_size=eval_batch,
                ig=True,
            )  # warm-up
            sync(dev)
            t0 = time.perf_counter()
            evaluate(
                model,
                data.eval_x[:eval_n],
                data.eval_y[:eval_n],
                eps=eps,
                alpha=eps / 4,
                steps=10,
                batch_size=eval_batch,
                ig=True,
            )
            sync(dev)
        dt = time.perf_counter() - t0
        costs[f"eval_{a}"] = {
            "images": eval_n,
            "seconds": dt,
            "s_per_10k": dt * 10_000 / eval_n,
            "extrapolated": eval_n < 10_000,
        }
    if not hs_n:
        return costs
    say(progress, f"HS cost: {hs_n} samples")
    hs_metric(
        model, data.eval_x[: min(100, hs_n)], data.eval_y[: min(100, hs_n)], n=min(100, hs_n), batch=100
    )  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    _, used = hs_metric(model, data.eval_x[:hs_n], data.eval_y[:hs_n], n=hs_n, batch=100)
    sync(dev)
    dt = time.perf_counter() - t0
    costs["hs"] = {
        "samples": hs_n,
        "method": used,
        "seconds": dt,
        "s_per_2000": dt * 2000 / hs_n,
        "extrapolated": hs_n < 2000,
    }
    return costs


def _schemes(labels: list[str], skipped: dict) -> list[tuple[str, str, str]]:
    """(label, method, attack) of each scheme asked for whose method is registered."""
    out = []
    for lab in labels:
        m, atk = _parse_label(lab)
        if m not in registered_methods():
            skipped[lab] = f"method {m!r} is not registered"
            continue
        out.append((label(atk, m), m, atk))
    return out


def _rows(schemes, amps, variants: dict, times: dict, ratios: dict, per_epoch: int, compile: bool) -> list[dict]:
    """Per scheme: the reference loop's seconds and each precision's fast-path seconds and speed-up."""
    rows = []
    for lab, _, _ in schemes:
        ref = f"{lab} | reference"
        if ref not in times:
            continue
        row = {
            "scheme": lab,
            "reference_s_per_batch": median(times[ref]),
            "reference_s_per_epoch": median(times[ref]) * per_epoch,
            "fast": {},
        }
        for a in amps:
            name = f"{lab} | fast {spec_name(a, compile)}"
            if name not in times:
                continue
            t = times[name]
            row["fast"][a] = {
                "s_per_batch": median(t),
                "s_per_epoch": median(t) * per_epoch,
                "speedup": median(ratios[(ref, name)]),
                "finite": bool(torch.isfinite(variants[name]["loss_sum"]).item()),
                "notes": variants[name]["notes"],
            }
        rows.append(row)
    return rows


def _block_runner(variants: dict, data, dev):
    """run_block(name, k): k training batches of one variant, its reference or fast loop's step."""

    def run_block(name: str, k: int) -> None:
        v = variants[name]
        v["model"].train()
        if v["loop"] == "reference":
            for _ in range(k):
                xb, yb = data.next_reference()
                reference_step(v["model"], v["opt"], v["method"], v["ctx"], xb, yb, dev)
        else:
            for _ in range(k):  # the training loop's step, bookkeeping included
                xb, yb = data.next_fast()
                loss, stats = train_step(v["model"], v["opt"], v["method"], v["ctx"], xb, yb, amp=v["autocast"])
                v["loss_sum"] += loss.detach() * len(yb)
                v["correct"] += (stats["logits"].detach().argmax(1) == yb).sum()

    return run_block


def _warm_up(variants: dict, run_block, warmup: int, skipped: dict, progress) -> list[str]:
    """Warm every variant up; the ones that fail (a compile error, out of memory) are skipped with why."""
    ready = []
    for name in variants:
        say(progress, f"warm-up {name}")
        try:
            run_block(name, max(1, warmup))
            ready.append(name)
        except Exception as exc:  # noqa: BLE001 - one variant failing must not lose the others' numbers
            skipped[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return ready


def bench_epoch(
    methods: list[str] | None = None,
    *,
    arch: str | None = None,
    device: str = "auto",
    batch: int = 100,
    n_train: int = 50_000,
    batches: int | None = None,
    warmup: int | None = None,
    rounds: int | None = None,
    amps: list[str] | None = None,
    channels_last: bool = True,
    compile: bool = False,
    workers: int | None = None,
    eval_n: int | None = None,
    eval_batch: int = 500,
    hs_n: int | None = None,
    seed: int = 0,
    progress: Progress = None,
) -> dict:
    """Seconds per CIFAR-10-sized epoch (`n_train` images, batch `batch`) of each scheme on
    the fast path and on the reference loop, in one process, and the speed-up ratio.

    Fast path: uint8 images resident on the device, `epoch_stream` (shuffle + on-device crop
    and flip), `prepare_model` (channels_last, compile), `autocast` for each entry of `amps`
    ("off" = fp32, "bf16"; "+compile" after one, e.g. "bf16+compile", compiles that variant only,
    `compile` every fast variant), no host read inside the loop. Reference: `engine.bench.reference_loop`
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
    2000 samples, both on the fast-path model, extrapolated from `eval_n` / `hs_n` images (0: not measured).
    """
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    arch = arch or default_arch(dev)
    amps = amps or (["off", "bf16"] if cuda else ["off"])
    for a in amps:
        amp_spec(a)
    per_epoch = n_train // batch
    if per_epoch < 1:
        raise UserError(f"--n-train {n_train}: smaller than one batch of {batch}")
    batches = batches or (per_epoch if cuda else 6)
    rounds = max(1, min(rounds or (5 if cuda else 3), batches))
    per_round = math.ceil(batches / rounds)
    warmup = (5 if cuda else 1) if warmup is None else warmup
    workers = (4 if cuda else 0) if workers is None else workers
    eval_n = (10_000 if cuda else 500) if eval_n is None else eval_n  # 0: no evaluation cost
    hs_n = (2000 if cuda else 200) if hs_n is None else hs_n  # 0: no HS cost

    skipped: dict[str, str] = {}
    schemes = _schemes(list(methods) if methods else list(EPOCH_VARIANTS), skipped)

    say(progress, f"data: {n_train} synthetic CIFAR-shaped images")
    data = _Batches(n_train, max(eval_n, hs_n), batch, dev, workers, seed)
    if compile or any(amp_spec(a)[1] for a in amps):
        allow_recompiles()
    variants = _variants(
        schemes,
        amps,
        arch=arch,
        batch=batch,
        dev=dev,
        channels_last=channels_last,
        compile=compile,
        seed=seed,
        skipped=skipped,
    )

    run_block = _block_runner(variants, data, dev)
    ready = _warm_up(variants, run_block, warmup, skipped, progress)
    sync(dev)
    say(progress, f"timing {len(ready)} variants: {rounds} rounds x {per_round} batches")
    groups = []
    for lab, _, _ in schemes:  # each scheme's reference and fast variants back to back
        g = tuple(n for n in ready if variants[n]["scheme"] == lab)
        if g:
            groups.append(g)
    times, ratios = time_groups(groups, run_block, rounds=rounds, per_round=per_round, device=dev, progress=progress)
    measured = rounds * per_round

    rows = _rows(schemes, amps, variants, times, ratios, per_epoch, compile)
    fast_model = next(
        (variants[n]["model"] for n in ready if variants[n]["loop"] == "fast" and not variants[n]["cfg"].train.compile),
        None,
    )
    fast_model = fast_model or next((variants[n]["model"] for n in ready if variants[n]["loop"] == "fast"), None)
    costs = _costs(fast_model, data, amps, eval_n, hs_n, eval_batch, dev, progress) if fast_model is not None else {}

    return {
        "kind": "epoch",
        **environment(dev),
        "model": arch,
        "reduced_model": arch != "preact_resnet18",
        "batch": batch,
        "n_train": n_train,
        "batches_per_epoch": per_epoch,
        "measured_batches": measured,
        "warmup": warmup,
        "rounds": rounds,
        "extrapolated": measured < per_epoch,
        "channels_last": channels_last,
        "compile": compile,
        "amps": amps,
        "amp_names": {a: spec_name(a, compile) for a in amps},
        "workers": workers,
        "results": rows,
        "costs": costs,
        "skipped": skipped,
    }
