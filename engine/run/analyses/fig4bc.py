"""Fig. 4b/c: one epoch of training from the checkpoint on PGD perturbations scaled by p (4b) or
with the sign of a fraction p reversed (4c), then the landscape and test accuracy of the result.

The epoch is the training loop's (engine.run.loop.train): its batches, augmentation and SGD
step; what is the analysis' own is the objective, `ModifiedPgd`, passed to the loop as its method.
A diverged epoch (non-finite loss) fails the experiment, as it fails a training run, its one
line naming the experiment's learning rate.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from typing import Iterator

import torch
import torch.nn.functional as F

from engine.errors import UserError
from engine.nn.attacks import run_attack
from engine.nn.metrics.effectiveness import attack_effectiveness
from engine.nn.metrics.evaluation import clean_and_robust
from engine.run.analyses.common import Context, each_point, landscape
from engine.run.epoch_metrics import first_n
from engine.run.loop import Diverged, lr_at, train


def check(cfg, where: str) -> None:
    kind, x = cfg.experiment.kind, cfg.experiment.params
    if not x.values:
        raise UserError(f"{where}: experiment.{kind}.values is empty: give the grid of p values")
    if kind == "fig4c" and any(v > 1 for v in x.values):
        raise UserError(f"{where}: experiment.fig4c.values = {x.values}: flipped fractions must be in [0, 1]")


def grid(cfg) -> list[dict]:
    return [{"index": i, "p": float(v)} for i, v in enumerate(cfg.experiment.params.values)]


def modify_perturbation(delta: torch.Tensor, kind: str, p: float, u: torch.Tensor | None) -> torch.Tensor:
    """fig4b: p * delta; fig4c: delta with the sign reversed where u < p (u per sample or per entry)."""
    if kind == "fig4b":
        return delta * p
    if kind == "fig4c" and u is not None:
        flip = (u < p).to(delta.dtype)
        while flip.dim() < delta.dim():
            flip = flip.unsqueeze(-1)
        return delta * (1 - 2 * flip)
    raise ValueError(f"perturbation of kind {kind!r}: fig4b, or fig4c with its draws u")


class ModifiedPgd:
    """The training objective of one point: CE on clip(x + modify(delta)), delta from PGD-`steps`
    (step eps/4, no random start). Being the loop's method, it also keeps what the point records
    and the loop does not: the epoch's loss summed in float64 and, on every `eff_every`-th batch,
    the effectiveness of the modified examples on the model before its step ("Train Adv. Eff.")."""

    needs: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        kind: str,
        p: float,
        eps: float,
        steps: int,
        train_mode: bool,
        flip_unit: str,
        flip_gen: torch.Generator,
        eff_every: int,
        eff_batch_size: int,
    ):
        self.kind, self.p, self.eps, self.steps, self.train_mode = kind, p, eps, steps, train_mode
        self.flip_unit, self.flip_gen = flip_unit, flip_gen
        self.eff_every, self.eff_batch_size = eff_every, eff_batch_size
        self.batches, self.seen = 0, 0
        self.effs: list[float] = []
        self.loss_sum: torch.Tensor | None = None

    def loss(self, model, x, y, ctx):
        delta = (
            run_attack(
                model,
                x,
                y,
                name="pgd",
                eps=self.eps,
                alpha=self.eps / 4,
                steps=self.steps,
                random_start=False,
                train_mode=self.train_mode,
            ).x_adv
            - x
        )
        u = None
        if self.kind == "fig4c":  # nested across p: the same draws, a larger p flips a superset
            shape = (len(x),) if self.flip_unit == "sample" else tuple(x.shape)
            u = torch.rand(shape, generator=self.flip_gen, dtype=torch.float64).to(x.device)
        xm = (x + modify_perturbation(delta, self.kind, self.p, u)).clamp(0.0, 1.0).detach()
        if self.eff_every and self.batches % self.eff_every == 0:
            e = attack_effectiveness(model, x, y, xm, eps=self.eps, batch_size=self.eff_batch_size)
            if math.isfinite(e):
                self.effs.append(e)
        self.batches += 1
        logits = model(xm)
        loss = F.cross_entropy(logits, y)
        total = loss.detach().double() * len(y)
        self.loss_sum = total if self.loss_sum is None else self.loss_sum + total
        self.seen += len(y)
        return loss, {"logits": logits}

    def record(self) -> dict:
        """The epoch's mean loss and mean measured effectiveness (None when none was measured)."""
        return {
            "train_loss": float(self.loss_sum) / self.seen if self.loss_sum is not None else 0.0,
            "train_adv_eff": sum(self.effs) / len(self.effs) if self.effs else None,
        }


def _lr(ctx: Context) -> float:
    """[experiment.fig4b/c] lr, or the source's lr at the checkpoint's epoch (its last epoch when unknown)."""
    if ctx.cfg.experiment.params.lr is not None:
        return ctx.cfg.experiment.params.lr
    ep = ctx.ckpt_epoch if ctx.ckpt_epoch is not None else ctx.scfg.train.epochs - 1
    return lr_at(ctx.scfg.train, int(ep))


@contextlib.contextmanager
def _diverged_says(kind: str, p: float, lr: float) -> Iterator[None]:
    """A diverged epoch names the experiment's own learning rate, not the training run's knobs."""
    try:
        yield
    except Diverged:
        raise UserError(
            f"{kind} point p = {p:g}: the epoch diverged (non-finite training loss); lower "
            f"experiment.{kind}.lr (it is {lr:g})"
        ) from None


def point(ctx: Context, pt: dict) -> dict:
    cfg, scfg, dev = ctx.cfg, ctx.scfg, ctx.device
    kind, x, seed, lr = cfg.experiment.kind, cfg.experiment.params, cfg.train.seed, _lr(ctx)
    n_train = len(ctx.data.train_x) if not x.train_images else min(x.train_images, len(ctx.data.train_x))
    # one epoch at a constant lr, in fp32, on the first n_train images: the source's [train] otherwise
    one = dataclasses.replace(
        scfg,
        train=dataclasses.replace(
            scfg.train, epochs=1, lr=lr, lr_milestones=[], batch_size=min(scfg.train.batch_size, n_train), amp="off"
        ),
    )
    data = dataclasses.replace(ctx.data, train_x=ctx.data.train_x[:n_train], train_y=ctx.data.train_y[:n_train])
    m = copy.deepcopy(ctx.model)
    st = one.train
    opt = torch.optim.SGD(
        m.parameters(), lr=lr, momentum=st.momentum, weight_decay=st.weight_decay, nesterov=st.nesterov
    )
    objective = ModifiedPgd(
        kind=kind,
        p=pt["p"],
        eps=ctx.eps,
        steps=x.pgd_steps,
        train_mode=scfg.attack.train_mode,
        flip_unit=x.flip_unit,
        flip_gen=torch.Generator().manual_seed(seed + 2),
        eff_every=x.train_eff_every,
        eff_batch_size=cfg.eval.batch_size,
    )
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), _diverged_says(kind, pt["p"], lr):
        torch.manual_seed(seed)
        train(
            m,
            opt,
            objective,
            data,
            one,
            device=dev,
            generator=torch.Generator(device=dev).manual_seed(seed + 1),  # the same batches for every p
            on_batch=lambda *_: ctx.heartbeat(),
        )
    m.eval()
    rec = {"lr": lr, **objective.record(), **landscape(ctx, m)}
    xt, yt = first_n(ctx.data.test_x, ctx.data.test_y, cfg.eval.n)
    ev = clean_and_robust(
        m, xt, yt, eps=ctx.eps, alpha=ctx.eps / 4, steps=scfg.eval.pgd_steps, batch_size=cfg.eval.batch_size
    )
    rec.update(test_clean_acc=ev["clean_acc"], test_robust_acc=ev["robust_acc"])
    return rec


def records(ctx: Context, pts: list[dict], done: set) -> Iterator[dict]:
    return each_point(ctx, pts, done, point)
