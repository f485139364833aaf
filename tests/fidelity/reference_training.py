"""An independent AdvLC training run, written from the paper's Algorithm 1 and the authors' code
(TreeLLi/Combating-RO-AdvLC: src/utils/train.py `update`, src/utils/adversary.py, src/utils/swa.py,
src/utils/evaluate.py), for the differential tests of tests/fidelity/test_fidelity_run.py.

It shares no code with engine/ beyond the model constructor: its own data order and augmentation,
attacks, objective, SGD step, lr schedule, lambda ramp, SWA average and BN re-estimation, per-epoch
evaluation, IG and HS (a dense autograd Hessian), and the final PGD evaluation. The random
stream is the one advlc documents, drawn here by hand, so that the same seed gives the same run:

  model init     torch.manual_seed(seed), then the model is built
  data order     a CPU generator seeded seed + 1: per epoch randperm(n), full batches of B; per
                 batch crop offsets (rows, then columns, each randint(0, 2p + 1, (B, 1))), then
                 flips (rand((B, 1)) < 0.5)
  attack noise   the global RNG: FGSM-N's U(-k, k) as empty_like(x).uniform_(-k, k)
  SWA BN data    a generator seeded seed + 1 + 1_000_003 (epoch + 1): one epoch of the above

Everything runs on the CPU in float32; the networks are tiny, so the code is written for reading.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Setup:
    """One run's settings, written out by the test (not read from advlc's config)."""

    seed: int
    epochs: int
    batch_size: int
    lr: float
    milestones: tuple[int, ...]
    gamma: float
    momentum: float
    weight_decay: float
    padding: int
    flip: bool
    attack: str  # "fgsm_n" or "pgd"
    eps: float
    alpha: float
    steps: int  # PGD steps (1 for FGSM-N)
    noise: float  # FGSM-N noise size k
    train_mode: bool  # the attack's forward passes in train mode (authors' code)
    lam: float
    lam_linear: bool  # lam (e + 1) / E with a 0-based epoch
    top_n: int
    clean: str  # "start": f(x_start); "x": f(x)
    eval_eps: float
    eval_steps: int
    eval_n: int
    hs_every: int  # HS every N epochs and at the last (0 = never)
    hs_samples: int
    hs_batch: int
    swa_start: int | None = None  # 0-based epoch whose end first updates the average


# ------------------------------------------------------------------------------ data


def crop_flip(x: torch.Tensor, padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of the zero-padded image, then a horizontal flip with p = 0.5."""
    b, _, h, w = x.shape
    out = x.clone()
    if padding > 0:
        rows = torch.randint(0, 2 * padding + 1, (b, 1), generator=gen)
        cols = torch.randint(0, 2 * padding + 1, (b, 1), generator=gen)
        padded = F.pad(x, (padding,) * 4)
        for i in range(b):
            r, c = int(rows[i]), int(cols[i])
            out[i] = padded[i, :, r : r + h, c : c + w]
    if flip:
        flips = torch.rand((b, 1), generator=gen) < 0.5
        for i in range(b):
            if flips[i]:
                out[i] = out[i].flip(-1)
    return out


def epoch_batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """A shuffled epoch of index batches; the last partial batch dropped (drop_last=True)."""
    perm = torch.randperm(n, generator=gen)
    return [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


# ------------------------------------------------------------------------------ training


def lr_of(s: Setup, epoch: int) -> float:
    """The authors' adjust_learning_rate: lr * gamma ** (milestones passed)."""
    decays = 0
    for m in s.milestones:
        if epoch < m:
            break
        decays += 1
    return s.lr * s.gamma**decays


def lam_of(s: Setup, epoch: int) -> float:
    return s.lam * (epoch + 1) / s.epochs if s.lam_linear else s.lam


def signed_input_grad(model, x, y, keep: bool = False):
    """sign of d mean-CE / dx (the model's current mode), and f(x) with its graph when `keep`."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    (g,) = torch.autograd.grad(F.cross_entropy(logits, y), x, retain_graph=keep)
    return g.sign(), logits


def train_attack(s: Setup, model, x, y):
    """(x_start, f(x_start) from the attack's first pass, x_adv), in the configured mode."""
    model.train(s.train_mode)
    if s.attack == "fgsm_n":
        start = (x + torch.empty_like(x).uniform_(-s.noise, s.noise)).clamp(0, 1)
        g, logits_start = signed_input_grad(model, start, y, keep=True)
        x_adv = (start + s.alpha * g).clamp(0, 1)  # not projected (FGSM-N)
    elif s.attack == "pgd":
        start = x
        g, logits_start = signed_input_grad(model, start, y, keep=True)
        x_adv = start + s.alpha * g
        x_adv = torch.min(torch.max(x_adv, x - s.eps), x + s.eps).clamp(0, 1)
        for _ in range(s.steps - 1):
            g, _ = signed_input_grad(model, x_adv, y)
            x_adv = torch.min(torch.max(x_adv + s.alpha * g, x - s.eps), x + s.eps).clamp(0, 1)
    else:
        raise ValueError(s.attack)
    model.train()
    return start.detach(), logits_start, x_adv.detach()


def advlc_loss(s: Setup, model, x, y, lam: float):
    """Algorithm 1: (sum CE(f(x + delta)) + lam * sum of the top-N |f(x + delta) - f(x)|) / M."""
    start, logits_start, x_adv = train_attack(s, model, x, y)
    if s.clean == "start" and s.train_mode:
        logits_clean = logits_start  # the shared first forward pass
    else:
        logits_clean = model(start if s.clean == "start" else x)
    logits_adv = model(x_adv)
    diff = (logits_adv - logits_clean).abs().flatten()
    reg = diff.topk(min(s.top_n, diff.numel())).values.sum()
    loss = (F.cross_entropy(logits_adv, y, reduction="sum") + lam * reg) / len(y)
    return loss, logits_adv


class SGD:
    """torch.optim.SGD's update written out (the authors' optimiser): weight decay on every
    parameter, heavy-ball momentum without dampening, no Nesterov."""

    def __init__(self, params, momentum: float, weight_decay: float):
        self.params, self.momentum, self.wd = list(params), momentum, weight_decay
        self.buf: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self, grads, lr: float) -> None:
        for i, (p, g) in enumerate(zip(self.params, grads)):
            d = g.add(p, alpha=self.wd)
            if self.buf[i] is None:
                self.buf[i] = d.clone()
            else:
                self.buf[i].mul_(self.momentum).add_(d)
            p.add_(self.buf[i], alpha=-lr)


# ------------------------------------------------------------------------------ evaluation


def pgd_eval(model, x, y, eps: float, steps: int) -> torch.Tensor:
    """The authors' per-epoch PGD: from x, step eps / 4, projected, eval mode (caller's mode)."""
    x_adv = x.clone()
    for _ in range(steps):
        g, _ = signed_input_grad(model, x_adv, y)
        x_adv = torch.min(torch.max(x_adv + eps / 4 * g, x - eps), x + eps).clamp(0, 1).detach()
    return x_adv


def input_gradient_l1(model, x, y) -> float:
    """IG: mean over samples of ||d CE(f(x_i), y_i) / d x_i||_1, one sample at a time."""
    total = 0.0
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xi), y[i : i + 1]), xi)
        total += float(g.abs().sum())
    return total / len(x)


def hessian_score(model, x, y, samples: int, batch: int, k: int = 20) -> float:
    """HS (authors' code): mean |lambda| of the top-k eigenvalues (by magnitude) of the dense
    Hessian of the batch-mean CE w.r.t. the stacked batch, averaged over the full batches of the
    first `samples` images."""
    scores = []
    for i in range(0, samples - batch + 1, batch):
        xb, yb = x[i : i + batch], y[i : i + batch]
        h = torch.func.hessian(lambda z: F.cross_entropy(model(z), yb))(xb).detach()
        d = xb.numel()
        lam = torch.linalg.eigvalsh(h.reshape(d, d).double())
        scores.append(float(lam.abs().sort(descending=True).values[:k].mean()))
    return sum(scores) / len(scores)


def hs_due(s: Setup, epoch: int) -> bool:
    return bool(s.hs_every) and ((epoch + 1) % s.hs_every == 0 or epoch + 1 == s.epochs)


def evaluate(s: Setup, model, x_test, y_test, hs_due: bool) -> dict:
    """The per-epoch record of one model: eval mode, the first eval_n un-augmented test images."""
    was = model.training
    model.eval()
    x, y = x_test[: s.eval_n], y_test[: s.eval_n]
    with torch.no_grad():
        clean = model(x)
    x_adv = pgd_eval(model, x, y, s.eval_eps, s.eval_steps)
    with torch.no_grad():
        adv = model(x_adv)
    clean_loss = float(F.cross_entropy(clean, y))
    robust_loss = float(F.cross_entropy(adv, y))
    rec = {
        "clean_loss": clean_loss,
        "clean_acc": float((clean.argmax(1) == y).double().mean()),
        "robust_loss": robust_loss,
        "robust_acc": float((adv.argmax(1) == y).double().mean()),
        "av": robust_loss - clean_loss,
        "ig": input_gradient_l1(model, x, y),
        "hs": hessian_score(model, x, y, s.hs_samples, s.hs_batch) if hs_due else None,
    }
    model.train(was)
    return rec


def final_pgd(model, x, y, eps: float, steps: int) -> dict:
    """The final evaluation: a sample is robust when x and its PGD example are both correct."""
    model.eval()
    x_adv = pgd_eval(model, x, y, eps, steps)
    with torch.no_grad():
        ok_clean = model(x).argmax(1) == y
        ok_adv = model(x_adv).argmax(1) == y
    return {"clean_acc": float(ok_clean.double().mean()), "robust_acc": float((ok_clean & ok_adv).double().mean())}


# ------------------------------------------------------------------------------ SWA


def is_bn(m) -> bool:
    return isinstance(m, torch.nn.modules.batchnorm._BatchNorm)


@torch.no_grad()
def swa_update(avg, model, n: int) -> None:
    """The authors' moving_average(swa_model, model, 1 / (n + 1)) (parameters only)."""
    alpha = 1.0 / (n + 1)
    for pa, pm in zip(avg.parameters(), model.parameters()):
        pa.mul_(1.0 - alpha).add_(pm * alpha)


@torch.no_grad()
def bn_update(model, batches) -> None:
    """The authors' bn_update: reset the running statistics, then one train-mode pass with the
    cumulative momentum b / (n + b) per batch."""
    bns = [m for m in model.modules() if is_bn(m)]
    momenta = {m: m.momentum for m in bns}
    for m in bns:
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
    model.train()
    n = 0
    for x in batches:
        for m in bns:
            m.momentum = len(x) / (n + len(x))
        model(x)
        n += len(x)
    for m in bns:
        m.momentum = momenta[m]
    model.eval()


# ------------------------------------------------------------------------------ the run


def train_reference(s: Setup, build_model, train_x, train_y) -> dict:
    """Train from scratch; the numbers a run records about its training, and its models.

    Returns {"lr", "lam", "train_loss", "train_acc": one value per epoch; "weights": the
    state_dict after each epoch; "swa": {epoch: the averaged model's state_dict after that
    epoch's update and BN re-estimation}}. Evaluation is separate (`evaluate`), so that the test
    can apply it to the run's own checkpoints."""
    torch.manual_seed(s.seed)
    model = build_model()
    params = list(model.parameters())
    opt = SGD(params, s.momentum, s.weight_decay)
    gen = torch.Generator().manual_seed(s.seed + 1)
    avg, swa_n = None, 0
    out = {"lr": [], "lam": [], "train_loss": [], "train_acc": [], "weights": [], "swa": {}}
    for epoch in range(s.epochs):
        lr, lam = lr_of(s, epoch), lam_of(s, epoch)
        model.train()
        loss_sum = correct = seen = 0.0
        for idx in epoch_batches(len(train_x), s.batch_size, gen):
            x = crop_flip(train_x[idx], s.padding, s.flip, gen)
            y = train_y[idx]
            loss, logits_adv = advlc_loss(s, model, x, y, lam)
            opt.step(torch.autograd.grad(loss, params), lr)
            loss_sum += float(loss.detach()) * len(y)
            correct += float((logits_adv.argmax(1) == y).sum())
            seen += len(y)
        for key, value in (("lr", lr), ("lam", lam), ("train_loss", loss_sum / seen), ("train_acc", correct / seen)):
            out[key].append(value)
        out["weights"].append(copy.deepcopy(model.state_dict()))
        if s.swa_start is not None and epoch >= s.swa_start:
            if avg is None:
                avg = copy.deepcopy(model)
            swa_update(avg, model, swa_n)
            swa_n += 1
            bn_gen = torch.Generator().manual_seed(s.seed + 1 + 1_000_003 * (epoch + 1))
            bn_update(
                avg,
                [
                    crop_flip(train_x[idx], s.padding, s.flip, bn_gen)
                    for idx in epoch_batches(len(train_x), s.batch_size, bn_gen)
                ],
            )
            out["swa"][epoch] = copy.deepcopy(avg.state_dict())
    return out
