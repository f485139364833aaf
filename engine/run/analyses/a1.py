"""Fig. A.1, PGD convergence: mean CE and accuracy of PGD-k for each k, on the train and test images.

One PGD trajectory of max(k) steps per batch gives every k (PGD-k is its k-th iterate, the same
examples engine.nn.attacks.pgd makes), each iterate measured by the evaluation loop."""

from __future__ import annotations

import time
from typing import Iterator

import torch

from engine.errors import UserError
from engine.nn.attacks import grad_sign, model_mode, project
from engine.nn.metrics.batches import batches
from engine.nn.metrics.evaluation import per_sample
from engine.run.analyses.common import Context
from engine.run.epoch_metrics import first_n


def check(cfg, where: str) -> None:
    x = cfg.experiment.params
    if not x.steps or not x.splits:
        raise UserError(f"{where}: experiment.a1.steps and experiment.a1.splits must not be empty")


def grid(cfg) -> list[dict]:
    x = cfg.experiment.params
    steps = sorted(set(int(k) for k in x.steps))
    return [
        {"index": i * len(steps) + j, "split": sp, "steps": k}
        for i, sp in enumerate(x.splits)
        for j, k in enumerate(steps)
    ]


def _iterates(model, x, y, *, eps: float, alpha: float, want: list[int]) -> Iterator[tuple[int, torch.Tensor]]:
    """(k, PGD-k of x) for each k in `want` (sorted; 0 = x itself), from one trajectory."""
    xa = x.detach()
    if 0 in want:
        yield 0, xa
    for t in range(1, max(want) + 1):
        g, _ = grad_sign(model, xa, y)
        xa = project(xa + alpha * g, x, eps)
        if t in want:
            yield t, xa


def pgd_curve(model, x, y, *, eps: float, alpha: float, steps: list[int], batch_size: int = 500) -> dict:
    """{k: (mean CE, accuracy)} of PGD-k (step alpha, no random start, eval mode) for every k in
    `steps` (0 = clean)."""
    want = sorted(set(int(k) for k in steps))
    losses: dict[int, list] = {k: [] for k in want}
    correct: dict[int, list] = {k: [] for k in want}
    with model_mode(model, False):
        for s in batches(len(x), batch_size):
            for k, xa in _iterates(model, x[s], y[s], eps=eps, alpha=alpha, want=want):
                lk, ck = per_sample(model, xa, y[s], batch_size=len(xa))
                losses[k].append(lk)
                correct[k].append(ck)
    if len(x) == 0:
        return {k: (float("nan"), float("nan")) for k in want}
    sums = torch.stack(
        [torch.stack([torch.cat(losses[k]).sum(), torch.cat(correct[k]).sum().double()]) for k in want]
    ) / len(x)
    return {k: (loss, acc) for k, (loss, acc) in zip(want, sums.tolist())}


def records(ctx: Context, pts: list[dict], done: set) -> Iterator[dict]:
    """One PGD curve per split, for the points of the split not done yet."""
    cfg, data, eps = ctx.cfg, ctx.data, ctx.eps
    for split in cfg.experiment.params.splits:
        todo = [p for p in pts if p["split"] == split and p["index"] not in done]
        if not todo:
            continue
        t0 = time.perf_counter()
        xs, ys = first_n(
            data.train_x if split == "train" else data.test_x,
            data.train_y if split == "train" else data.test_y,
            cfg.experiment.samples,
        )
        curve = pgd_curve(
            ctx.model,
            xs,
            ys,
            eps=eps,
            alpha=eps / 4,
            steps=[0] + [p["steps"] for p in todo],
            batch_size=cfg.eval.batch_size,
        )
        dt = (time.perf_counter() - t0) / len(todo)
        for p in todo:
            loss, acc = curve[p["steps"]]
            yield {
                "kind": "a1",
                **p,
                "adv_loss": loss,
                "adv_acc": acc,
                "clean_loss": curve[0][0],
                "n": len(xs),
                "time_s": dt,
            }
