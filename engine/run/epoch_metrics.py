"""Extra per-epoch metrics for the analysis figures (Fig. 1, Fig. 3, Fig. A.2), chosen by `eval.extra`.

    rec.update(extra_epoch_metrics(model, data, cfg, epoch))     # in engine.run.trainer

Every metric runs on a fixed, deterministic subset (the first N images of the split, no
augmentation) with the global RNG forked and seeded with train.seed, so records repeat
exactly, the same noise is drawn every epoch, and the training's own random stream is the
same whether or not extra metrics are recorded. eps is eval.eps; PGD steps are eps/4 with no
random start (engine.nn.attacks); the losses are the per-sample cross-entropy in eval mode.

Names (see engine.config.schema.EXTRA_METRICS):

  train_ig                IG (engine.nn.metrics.gradients.input_gradient_norm) on the first eval.extra_samples
                          training images.
  train_hs                HS (hs_metric, exact for ReLU nets, Lanczos otherwise) on the first
                          eval.hs_samples training images, Hessians over batches of eval.hs_batch,
                          reduced as eval.hs_reduce (mean |lambda|, or the paper's sum).
  train_clean_loss, train_adv_loss, train_av, train_clean_acc, train_adv_acc
                          adversarial_vulnerability with PGD-20 on the first eval.extra_samples
                          training images (Fig. 1 "Train").
  test_adv_loss20, test_av20, test_adv_acc20
                          the same on the evaluated test images (the first eval.n; Fig. 1 "Val").
  eff_fgsm, eff_fgsm_n, eff_pgd10
                          effectiveness (Eq. 7) against PGD-50 on the first eval.effect_samples
                          training images of FGSM (step eps), FGSM-N (noise eps, step eps, not
                          projected) and PGD-10 (step eps/4); generated in eval mode unless
                          eval.effect_train_mode. Same as
                          torch.manual_seed(train.seed); engine.nn.metrics.effectiveness.training_attack_effectiveness(...).
  eff_train               the same for the run's own training attack with its [attack] settings
                          and attack.train_mode (None for standard training).
  ga                      gradient alignment (A.5) on the first eval.extra_samples training images,
                          eta from a CPU generator seeded with train.seed.
  whess_top, whess_trace  top eigenvalue and trace of the weight Hessian (pyhessian) on one batch
                          of the first eval.whess_samples training images.

`extra_time_s` (seconds spent here) is added whenever something was computed. On epochs that
are not due (eval.extra_every) the requested names are present with value None.
"""

from __future__ import annotations

import time

import torch

from engine.config.schema import EXTRA_METRICS
from engine.nn.datasets import as_float
from engine.nn.metrics.effectiveness import attack_all, effectiveness
from engine.nn.metrics.evaluation import adversarial_vulnerability
from engine.nn.metrics.gradients import gradient_alignment, input_gradient_norm
from engine.nn.metrics.hessian import hs_metric
from engine.nn.metrics.weight_hessian import weight_hessian

_AV_TRAIN = {
    "train_clean_loss": "clean_loss",
    "train_adv_loss": "adv_loss",
    "train_av": "av",
    "train_clean_acc": "clean_acc",
    "train_adv_acc": "adv_acc",
}
_AV_TEST = {"test_adv_loss20": "adv_loss", "test_av20": "av", "test_adv_acc20": "adv_acc"}
_EFF = ("eff_fgsm", "eff_fgsm_n", "eff_pgd10", "eff_train")


def is_due(cfg, epoch: int) -> bool:
    e = cfg.eval
    return bool(e.extra) and ((epoch + 1) % e.extra_every == 0 or epoch + 1 == cfg.train.epochs)


def first_n(x, y, n: int):
    """The first n samples (all for n = 0) as float inputs in [0, 1]."""
    m = len(x) if n == 0 else min(n, len(x))
    return as_float(x[:m]), y[:m]


def eff_attack_settings(cfg, name: str) -> dict | None:
    """The training_attack_effectiveness keyword arguments of one eff_* metric."""
    eps = cfg.eval.eps
    tm = cfg.eval.effect_train_mode
    if name == "eff_fgsm":
        return dict(attack_name="fgsm", eps=eps, alpha=eps, steps=1, train_mode=tm)
    if name == "eff_fgsm_n":
        return dict(attack_name="fgsm_n", eps=eps, alpha=eps, steps=1, noise=eps, train_mode=tm)
    if name == "eff_pgd10":
        return dict(attack_name="pgd", eps=eps, alpha=eps / 4, steps=10, train_mode=tm)
    if name == "eff_train":
        a = cfg.attack
        if a.name in ("", "none"):
            return None
        return dict(
            attack_name=a.name,
            eps=a.eps,
            alpha=a.alpha,
            steps=a.steps,
            noise=a.noise,
            random_start=a.random_start,
            train_mode=a.train_mode,
        )
    raise ValueError(name)


def extra_epoch_metrics(model, data, cfg, epoch: int) -> dict:
    """The metrics named in cfg.eval.extra for this epoch (see the module doc); {} when none
    are configured, the names with None when this epoch is not due."""
    e = cfg.eval
    names = [n for n in EXTRA_METRICS if n in (e.extra or [])]
    if not names:
        return {}
    if not is_due(cfg, epoch):
        return dict.fromkeys(names)
    t0 = time.perf_counter()
    out: dict = {}
    eps = e.eps
    bs = e.batch_size
    seed = cfg.train.seed
    dev = next(model.parameters()).device
    devices = [dev] if dev.type == "cuda" else []
    want = set(names)
    with torch.random.fork_rng(devices=devices):
        xs, ys = first_n(data.train_x, data.train_y, e.extra_samples)
        if "train_ig" in want:
            out["train_ig"] = input_gradient_norm(model, xs, ys, batch_size=bs)
        if "train_hs" in want:
            xh, yh = first_n(data.train_x, data.train_y, e.hs_samples)
            out["train_hs"], _ = hs_metric(
                model, xh, yh, n=e.hs_samples, batch=e.hs_batch, seed=seed, reduce=e.hs_reduce
            )
        if want & set(_AV_TRAIN):
            av = adversarial_vulnerability(model, xs, ys, eps=eps, steps=20, batch_size=bs)
            out.update({k: av[v] for k, v in _AV_TRAIN.items() if k in want})
        if want & set(_AV_TEST):
            xt, yt = first_n(data.test_x, data.test_y, e.n)
            av = adversarial_vulnerability(model, xt, yt, eps=eps, steps=20, batch_size=bs)
            out.update({k: av[v] for k, v in _AV_TEST.items() if k in want})
        effs = [n for n in _EFF if n in want]
        if effs:
            xe, ye = first_n(data.train_x, data.train_y, e.effect_samples)
            advs = {}
            for n in effs:
                s = eff_attack_settings(cfg, n)
                if s is None:
                    out[n] = None
                    continue
                torch.manual_seed(seed)
                if dev.type == "cuda":
                    torch.cuda.manual_seed(seed)
                advs[n] = attack_all(model, xe, ye, batch_size=bs, **s)
            if advs:
                out.update(effectiveness(model, xe, ye, advs, eps=eps, batch_size=bs))
        if "ga" in want:
            out["ga"] = gradient_alignment(
                model, xs, ys, eps=eps, batch_size=bs, generator=torch.Generator().manual_seed(seed)
            )
        if want & {"whess_top", "whess_trace"}:
            xw, yw = first_n(data.train_x, data.train_y, e.whess_samples)
            wh = weight_hessian(model, xw, yw, top_n=1, trace="whess_trace" in want, seed=seed)
            if "whess_top" in want:
                out["whess_top"] = wh["eigenvalues"][0]
            if "whess_trace" in want:
                out["whess_trace"] = wh["trace"]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    rec = {n: out.get(n) for n in names}
    rec["extra_time_s"] = time.perf_counter() - t0
    return rec


__all__ = ["extra_epoch_metrics", "eff_attack_settings", "first_n", "is_due"]
