"""What the analyses share: the context every point reads, the landscape measurements of a
model, and the per-point record loop of the kinds that compute one point at a time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from engine.nn.metrics.effectiveness import attack_all, effectiveness
from engine.nn.metrics.evaluation import clean_loss_and_accuracy
from engine.nn.metrics.hessian import hs_metric


@dataclass
class Context:
    """What every point of an experiment reads (built once by engine.run.experiments)."""

    cfg: Any  # the experiment's RunConfig
    scfg: Any  # the source run's RunConfig
    model: torch.nn.Module  # the analysed checkpoint, eval mode; points work on copies
    data: Any  # engine.nn.datasets.Dataset on `device`
    device: torch.device
    eps: float  # the source's eval.eps
    ckpt_epoch: int | None  # the checkpoint's 0-based epoch, when known
    train_subset: tuple[torch.Tensor, torch.Tensor]  # the first experiment.samples training images
    heartbeat: Callable[[], None]  # cheap to call often: writes status.json at most every few seconds


def landscape_point(
    model,
    x,
    y,
    *,
    eps: float,
    hs_batch: int,
    seed: int,
    batch_size: int,
    effect_train_mode: bool = False,
    hs_reduce: str = "mean",
) -> dict:
    """HS (reduced as `hs_reduce`: mean or sum |lambda|), FGSM / PGD-10 effectiveness and clean
    loss/accuracy of `model` on (x, y)."""
    dev = x.device
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        hs, method = hs_metric(model, x, y, n=len(x), batch=hs_batch, seed=seed, reduce=hs_reduce)
        advs = {}
        for name, s in (
            ("eff_fgsm", dict(attack_name="fgsm", eps=eps, alpha=eps, steps=1)),
            ("eff_pgd10", dict(attack_name="pgd", eps=eps, alpha=eps / 4, steps=10)),
        ):
            torch.manual_seed(seed)
            advs[name] = attack_all(model, x, y, train_mode=effect_train_mode, batch_size=batch_size, **s)
        out = effectiveness(model, x, y, advs, eps=eps, batch_size=batch_size)
        cl, ca = clean_loss_and_accuracy(model, x, y, batch_size=batch_size)
    return {"hs": hs, "hs_method": method, **out, "clean_loss": cl, "clean_acc": ca}


def landscape(ctx: Context, model) -> dict:
    """`landscape_point` of `model` on the train subset, with the experiment's [eval] settings."""
    e = ctx.cfg.eval
    xs, ys = ctx.train_subset
    return landscape_point(
        model,
        xs,
        ys,
        eps=ctx.eps,
        hs_batch=e.hs_batch,
        seed=ctx.cfg.train.seed,
        batch_size=e.batch_size,
        effect_train_mode=e.effect_train_mode,
        hs_reduce=e.hs_reduce,
    )


def each_point(ctx: Context, pts: list[dict], done: set, fn: Callable[[Context, dict], dict]) -> Iterator[dict]:
    """The records of the points not done yet, one `fn(ctx, point)` each, timed with the device
    synchronised so time_s is the point's own."""
    kind = ctx.cfg.experiment.kind
    for p in pts:
        if p["index"] in done:
            continue
        t0 = time.perf_counter()
        rec = {"kind": kind, **p, **fn(ctx, p)}
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        rec["n"] = len(ctx.train_subset[0])
        rec["time_s"] = time.perf_counter() - t0
        yield rec
