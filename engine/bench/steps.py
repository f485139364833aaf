"""`advlc bench`: the cost of one training step of each method, as a ratio to its base attack."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from engine.bench.common import (
    ALIASES,
    BASE_ATTACKS,
    PAPER_RATIO,
    PAPER_S_PER_BATCH,
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
from engine.errors import UserError
from engine.nn.fastpath import autocast, prepare_model, train_step
from engine.nn.methods import get_method, lam_at
from engine.nn.methods import methods as registered_methods
from engine.nn.methods.context import StepContext


@dataclass
class StepVariant:
    label: str  # "fgsm_n", "pgd+advlc", "standard"
    method: str
    attack: str  # training attack of a regulariser; "" for plain methods
    base: str | None  # label of the base it is compared with (None for a base itself)


def plan_step_variants(names: list[str] | None = None) -> list[StepVariant]:
    """The variants `advlc bench` times for the requested names.

    Names are registered methods (`pgd10` = `pgd`) or explicit `attack+method` pairs.
    - fgsm_n / pgd are the bases; a regulariser (a method without a fixed attack) is timed
      with each base that is listed (with both when none is) that it combines with;
    - other plain methods (standard, fgsm, fgsm_rs, eq10_grad_penalty) are compared with fgsm_n;
    - None = every registered method.
    """
    get_method("standard")  # loads every method module
    if not names:
        names = sorted(registered_methods())
    names = [ALIASES.get(n.strip(), n.strip()) for n in names if n.strip()]
    bases: list[str] = []
    regs: list[str] = []
    pairs: list[tuple[str, str]] = []
    plain: list[str] = []
    for n in names:
        if "+" in n:
            atk, _, m = n.partition("+")
            atk = ALIASES.get(atk, atk)
            if (
                atk not in BASE_ATTACKS
                or m not in registered_methods()
                or registered_methods()[m].fixed_attack is not None
                or atk not in registered_methods()[m].attacks
            ):
                raise UserError(
                    f"--methods {n}: expected <attack>+<regulariser> with attack fgsm_n or pgd "
                    f"and a regulariser that combines with it"
                )
            pairs.append((atk, m))
        elif n not in registered_methods():
            raise UserError(f"--methods {n}: unknown method (known: {', '.join(sorted(registered_methods()))}, pgd10)")
        elif n in BASE_ATTACKS:
            bases.append(n)
        elif registered_methods()[n].fixed_attack is None:
            regs.append(n)
        else:
            plain.append(n)
    with_attacks = bases or list(BASE_ATTACKS)
    for m in regs:
        for atk in with_attacks:
            if atk in registered_methods()[m].attacks:
                pairs.append((atk, m))
    need = set(bases) | {a for a, _ in pairs} | ({"fgsm_n"} if plain else set())
    out = [StepVariant(b, b, "", None) for b in BASE_ATTACKS if b in need]
    seen = {v.label for v in out}
    for atk, m in pairs:
        lab = label(atk, m)
        if lab not in seen:
            out.append(StepVariant(lab, m, atk, atk))
            seen.add(lab)
    for m in plain:
        if m not in seen:
            out.append(StepVariant(m, m, "", "fgsm_n"))
            seen.add(m)
    return out


def _build(
    variants: list[StepVariant], *, arch, batch, dev, channels_last, amp, compile, seed, skipped: dict
) -> dict[str, dict]:
    """For each variant that configures: its own copy of one initial model, optimiser and step context."""
    init = bench_model(arch, dev, seed)
    teachers = None
    state: dict[str, dict] = {}
    for v in variants:
        try:
            cfg = make_config(
                v.method,
                v.attack,
                arch=arch,
                batch=batch,
                device=dev,
                channels_last=channels_last,
                amp=amp,
                compile=compile,
            )
        except UserError as exc:
            skipped[v.label] = str(exc)
            continue
        extras = {}
        roles = get_method(v.method).teachers
        if roles:
            teachers = teachers or random_teachers(roles, arch, dev, seed)
            extras["teachers"] = teachers
        model = prepare_model(copy.deepcopy(init), cfg)
        state[v.label] = {
            "cfg": cfg,
            "model": model,
            "opt": bench_optimizer(model),
            "method": get_method(v.method),
            "ctx": StepContext(cfg=cfg, epoch=0, lam=lam_at(cfg, 0), extras=extras),
            "amp": (lambda c=cfg: autocast(c, dev)),
            "i": 0,
            "last_loss": None,
        }
    return state


def _rows(ready: list[str], by_label: dict, state: dict, times: dict, ratios: dict) -> list[dict]:
    rows = []
    for lab in ready:
        v = by_label[lab]
        t = times[lab]
        rows.append(
            {
                "label": lab,
                "method": v.method,
                "attack": v.attack or state[lab]["cfg"].attack.name,
                "base": v.base,
                "s_per_batch": median(t),
                "min": min(t),
                "max": max(t),
                "rounds": t,
                "ratio": 1.0 if v.base is None else median(ratios[(lab, v.base)]),
                "ratio_of_medians": 1.0 if v.base is None else median(t) / median(times[v.base]),
                "finite": bool(torch.isfinite(state[lab]["last_loss"]).item()),
                "paper_s_per_batch": PAPER_S_PER_BATCH.get(lab),
                "paper_ratio": PAPER_RATIO.get(lab),
            }
        )
    return rows


def _vs_paper(rows: list[dict]) -> dict:
    """AdvLC's overhead over its base attack, next to the paper's (Table 1)."""
    out = {}
    for lab, paper in PAPER_RATIO.items():
        r = next((row for row in rows if row["label"] == lab), None)
        if r is not None and r["ratio"] is not None:
            out[lab] = {
                "ratio": r["ratio"],
                "overhead_pct": 100 * (r["ratio"] - 1),
                "paper_ratio": paper,
                "paper_overhead_pct": 100 * (paper - 1),
                "within_paper": r["ratio"] <= paper,
            }
    return out


def _warm_up(variants, state: dict, run_block, warmup: int, skipped: dict, progress: Progress) -> list[str]:
    """Warm each variant up; the labels that ran. One that fails is reported in `skipped` (not
    fatal), and so is a variant whose base failed (it cannot be compared)."""
    ready = []
    for v in variants:
        if v.label not in state:
            continue
        say(progress, f"warm-up {v.label}")
        try:
            run_block(v.label, max(1, warmup))
            ready.append(v.label)
        except Exception as exc:  # a method that cannot run here is reported, not fatal
            skipped[v.label] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            del state[v.label]
    by_label = {v.label: v for v in variants}
    for lab in list(ready):
        base = by_label[lab].base
        if base is not None and base not in ready:
            skipped[lab] = f"its base {base} did not run"
            ready.remove(lab)
    return ready


def bench_steps(
    methods: list[str] | None = None,
    *,
    arch: str | None = None,
    device: str = "auto",
    batch: int = 100,
    iters: int | None = None,
    warmup: int | None = None,
    rounds: int | None = None,
    channels_last: bool = False,
    amp: str = "off",
    compile: bool = False,
    seed: int = 0,
    progress: Progress = None,
) -> dict:
    """Seconds per training batch (attack + loss + backward + SGD step) of each method, and
    its ratio to its base attack, all in one process.

    Each method is timed right next to its base in every round (see `_time_groups`), and
    its ratio is the median of those per-round ratios. Defaults: on a CPU cnn_small, 10
    rounds of 1 step after 1 warm-up step; on a GPU PreActResNet18, 10 rounds of 5 steps
    after 5 warm-up steps. Each method trains its own copy of one initial model on the same
    4 rotating synthetic batches.
    """
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
        allow_recompiles()

    xs, ys = synthetic_data(4 * batch, dev, seed)
    batches = [(xs[i * batch : (i + 1) * batch], ys[i * batch : (i + 1) * batch]) for i in range(4)]
    skipped: dict[str, str] = {}
    state = _build(
        variants,
        arch=arch,
        batch=batch,
        dev=dev,
        channels_last=channels_last,
        amp=amp,
        compile=compile,
        seed=seed,
        skipped=skipped,
    )

    def run_block(label: str, k: int) -> None:
        s = state[label]
        s["model"].train()
        for _ in range(k):
            x, y = batches[s["i"] % len(batches)]
            s["i"] += 1
            loss, _ = train_step(s["model"], s["opt"], s["method"], s["ctx"], x, y, amp=s["amp"])
            s["last_loss"] = loss.detach()

    ready = _warm_up(variants, state, run_block, warmup, skipped, progress)
    by_label = {v.label: v for v in variants}
    sync(dev)
    say(progress, f"timing {len(ready)} methods: {rounds} rounds x {per_round} steps, each next to its base")
    paired = {by_label[lab].base for lab in ready if by_label[lab].base is not None}
    groups = [
        (by_label[lab].base, lab) if by_label[lab].base is not None else (lab,)
        for lab in ready
        if by_label[lab].base is not None or lab not in paired
    ]
    times, ratios = time_groups(groups, run_block, rounds=rounds, per_round=per_round, device=dev, progress=progress)

    rows = _rows(ready, by_label, state, times, ratios)
    return {
        "kind": "steps",
        **environment(dev),
        "model": arch,
        "batch": batch,
        "image": [3, 32, 32],
        "iters": rounds * per_round,
        "warmup": warmup,
        "rounds": rounds,
        "steps_per_round": per_round,
        "channels_last": channels_last,
        "amp": amp,
        "compile": compile,
        "results": rows,
        "advlc_vs_paper": _vs_paper(rows),
        "skipped": skipped,
    }
