"""Final evaluation of a run's checkpoints: clean accuracy and robust accuracy under a strong attack.

    advlc eval RUN [--ckpt best|end|swa_best|swa_end] [--attack pgd20|pgd50|aa|aa-torchattacks|apgd50x5]

Attacks (l-inf, eps = the run's eval.eps, model in eval mode):

- pgd20, pgd50       engine.nn.attacks.pgd: step eps/4, no random start (the paper's Sec. 4 uses PGD-50).
- aa                 the original AutoAttack (Croce & Hein 2020) from `pyautoattack` (import name
                     `pyautoattack`), version 'standard' (APGD-CE, APGD-T, FAB-T: 100 iterations; Square:
                     5000 queries), seed 0.
- aa-torchattacks    torchattacks' `AutoAttack(version='standard')` of the installed torchattacks
                     (the Makefile pins 3.5.1). This is NOT what the paper used: since 3.3.0 its
                     APGD, APGD-T and FAB-T run 10 steps (the original: 100), a weaker attack;
                     the torchattacks of the paper's time (<= 3.2.x) ran 100 steps. Results are
                     labelled with the version and "weaker". Compare `aa` with the paper's
                     AutoAttack numbers (docs/FIDELITY.md).
- apgd50x5           APGD-CE, 50 iterations x 5 restarts, from pyautoattack's `APGDAttack` (the
                     original implementation), seed 0 (Table 2's TinyImageNet protocol).

A sample counts as robust when the model classifies both x and x_adv correctly (AutoAttack's own
count; for PGD it differs from "x_adv correct" only on the rare misclassified x that the attack
makes correct). Every perturbation is checked to lie in the eps-ball and in [0, 1].

Results go into the run's metrics.json table `evals`, one record per (ckpt, attack, n, eps)
(a repeat replaces the older record):
    ckpt, attack, implementation, eps, n, clean_acc, robust_acc, epoch, device, time_s, created
metrics.json has one writer, the run's process: `eval_run` refuses a run whose state is
`running`; `run_final_evals` is what the run's own process calls when training ends.

Progress: `eval_run(..., progress=callback)` calls `callback(event)` with a dict whose "event" is
    start       {ckpt, epoch, attack, n, eps, device}: one checkpoint x attack begins
    clean       {attack, n, correct, forward_s_per_image}: the clean pass is done (its speed, measured)
    sub_start   {attack, sub}: a sub-attack begins (AutoAttack: apgd-ce, apgd-t, fab-t, square;
                the attack itself for the others)
    batch       {attack, sub, done, batches}: a batch of it is done
    sub_done    {attack, sub, robust_acc, time_s}: AutoAttack's robust accuracy after a sub-attack
    note        {attack, text}: a warning of the attack library (e.g. its checks of the model)
    result      the record just stored
AutoAttack's steps are read from pyautoattack's own log records (logger "auto-attack"), so the
attack runs exactly as without a callback.
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from importlib import metadata
from typing import Callable

import torch
import torch.nn as nn
from tinydb import Query

from engine.config.schema import FINAL_ATTACKS, from_json
from engine.errors import UserError
from engine.nn.attacks import model_mode
from engine.nn.datasets import as_float, load_dataset
from engine.nn.metrics.batches import batches
from engine.nn.metrics.evaluation import per_sample, pgd_perturb
from engine.run.checkpoints import CKPTS, checkpoint_path, load_run_model
from engine.run.device import pick_device
from engine.store.checkpoint_files import inspect as inspect_checkpoint
from engine.store.rundir import RunDir

ATTACKS = FINAL_ATTACKS

TORCHATTACKS_NOTE = (
    "note: aa-torchattacks is torchattacks' AutoAttack(version='standard'), whose APGD, "
    "APGD-T and FAB-T run 10 steps instead of the original 100 (torchattacks >= 3.3): a "
    "weaker attack than AutoAttack, and not what the paper used (the torchattacks of its "
    "time ran 100 steps); compare --attack aa, the original, with the paper. Its results "
    "are labelled so."
)


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "?"


def implementation(attack: str, *, eps: float | None = None) -> str:
    """The label stored with a result: which code ran which attack."""
    if attack in ("pgd20", "pgd50"):
        return f"advlc PGD-{attack[3:]} (step eps/4, no random start, eval mode)"
    if attack == "aa":
        return f"pyautoattack {_version('pyautoattack')} AutoAttack standard (seed 0)"
    if attack == "aa-torchattacks":
        return f"torchattacks {_version('torchattacks')} AutoAttack standard (10-step sub-attacks; weaker)"
    if attack == "apgd50x5":
        return f"pyautoattack {_version('pyautoattack')} APGD-CE 50 steps x 5 restarts (seed 0)"
    raise UserError(f"--attack {attack}: must be one of {', '.join(ATTACKS)}")


def check_choices(ckpts: list[str], attacks: list[str]) -> None:
    for c in ckpts:
        if c not in CKPTS:
            raise UserError(f"--ckpt {c}: must be one of {', '.join(CKPTS)}")
    for a in attacks:
        if a not in ATTACKS:
            raise UserError(f"--attack {a}: must be one of {', '.join(ATTACKS)}")


# ---------------------------------------------------------------------------- attacks

Progress = Callable[[dict], None]


def _batched(perturb, x, y, batch_size: int, attack: str, progress: Progress | None):
    """perturb(x_b, y_b) over the batches of x, concatenated; a `batch` event after each."""
    parts, spans = [], list(batches(len(x), batch_size))
    if progress:
        progress({"event": "sub_start", "attack": attack, "sub": attack})
    for i, s in enumerate(spans):
        parts.append(perturb(x[s], y[s]))
        if progress:
            progress({"event": "batch", "attack": attack, "sub": attack, "done": i + 1, "batches": len(spans)})
    return torch.cat(parts)


_AA_RUNNING = re.compile(r"^running (?P<sub>[\w-]+)$")
_AA_BATCH = re.compile(r"^(?P<sub>[\w-]+) - (?P<done>\d+)/(?P<batches>\d+) - ")
_AA_AFTER = re.compile(r"^robust accuracy after (?P<sub>[\w-]+): (?P<acc>[\d.]+)% \(total time (?P<s>[\d.]+) s\)")


class _AutoAttackSteps(logging.Handler):
    """pyautoattack's log records ("running apgd-t", "apgd-t - 1/2 - …", "robust accuracy after
    APGD-T: 43.00% (total time 80.1 s)") as progress events; its warnings as `note` events (this
    handler is the logger's while it runs, so they are passed on rather than lost)."""

    def __init__(self, attack: str, progress: Progress):
        super().__init__(logging.DEBUG)
        self.attack, self.progress = attack, progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                self.progress({"event": "note", "attack": self.attack, "text": " ".join(text.split())})
            elif m := _AA_RUNNING.match(text):
                self.progress({"event": "sub_start", "attack": self.attack, "sub": m["sub"]})
            elif m := _AA_BATCH.match(text):
                self.progress(
                    {
                        "event": "batch",
                        "attack": self.attack,
                        "sub": m["sub"],
                        "done": int(m["done"]),
                        "batches": int(m["batches"]),
                    }
                )
            elif m := _AA_AFTER.match(text):
                self.progress(
                    {
                        "event": "sub_done",
                        "attack": self.attack,
                        "sub": m["sub"].lower(),
                        "robust_acc": float(m["acc"]) / 100,
                        "time_s": float(m["s"]),
                    }
                )
            elif text.startswith("no robust datapoints left"):
                self.progress(
                    {
                        "event": "note",
                        "attack": self.attack,
                        "text": "every image is broken: the remaining sub-attacks are skipped",
                    }
                )
        except Exception:  # noqa: BLE001, S110 - progress must never stop (or print over) an evaluation
            pass


@contextmanager
def _autoattack_progress(attack: str, progress: Progress | None):
    """While pyautoattack runs: its logger at DEBUG with `_AutoAttackSteps` (when there is a callback)."""
    if progress is None:
        yield
        return
    logger = logging.getLogger("auto-attack")
    handler, level = _AutoAttackSteps(attack, progress), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _adv_batches(
    model, x, y, *, attack: str, eps: float, batch_size: int, num_classes: int, progress: Progress | None = None
):
    """Adversarial examples for all of x (model in eval mode). The attack libraries are imported
    where they are used: optional, heavy, and needed only by the attack that is asked for."""
    if attack in ("pgd20", "pgd50"):
        perturb = pgd_perturb(model, eps=eps, alpha=eps / 4, steps=int(attack[3:]))
        return _batched(perturb, x, y, batch_size, attack, progress)
    if attack == "aa":
        from pyautoattack import AutoAttack

        aa = AutoAttack(model, eps=eps, norm="Linf", version="standard", device=x.device, seed=0)
        with _autoattack_progress(attack, progress):
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=batch_size)
        return x_adv
    if attack == "aa-torchattacks":
        import torchattacks

        atk = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=num_classes, seed=0)
        return _batched(atk, x, y, batch_size, attack, progress)
    if attack == "apgd50x5":
        from pyautoattack.autopgd_base import APGDAttack

        apgd = APGDAttack(model, n_iter=50, n_restarts=5, norm="Linf", eps=eps, seed=0, loss="ce", device=x.device)
        return _batched(apgd.perturb, x, y, batch_size, attack, progress)
    raise UserError(f"--attack {attack}: must be one of {', '.join(ATTACKS)}")


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attack: str,
    eps: float,
    batch_size: int = 500,
    num_classes: int = 10,
    progress: Progress | None = None,
) -> dict:
    """Clean and robust accuracy (fractions) of `model` on (x, y) under `attack` (see the module doc).

    Runs in eval mode (the caller's mode is restored) with the global RNG forked and seeded 0,
    so the caller's random state is untouched and results repeat. Returns
    {"clean_acc", "robust_acc", "n", "implementation", "time_s"}. `progress`: see the module doc.
    """
    impl = implementation(attack)
    n = len(x)
    if n == 0:
        raise UserError("final evaluation: no test images")
    devices = [x.device] if x.is_cuda else []
    t0 = time.perf_counter()
    with model_mode(model, False), torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        _, clean = per_sample(model, x, y, batch_size=batch_size)
        if progress:
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            progress(
                {
                    "event": "clean",
                    "attack": attack,
                    "n": n,
                    "correct": int(clean.sum()),
                    "forward_s_per_image": (time.perf_counter() - t0) / n,
                }
            )
        x_adv = _adv_batches(
            model, x, y, attack=attack, eps=eps, batch_size=batch_size, num_classes=num_classes, progress=progress
        ).detach()
        dist = (x_adv - x).abs().flatten(1).amax(1) if n else x.new_zeros(0)
        bad = (
            (dist > eps * (1 + 1e-5) + 1e-6)
            | (x_adv.flatten(1).amin(1) < -1e-6)
            | (x_adv.flatten(1).amax(1) > 1 + 1e-6)
        )
        if bool(bad.any()):
            raise RuntimeError(
                f"{impl}: {int(bad.sum())} adversarial examples leave the eps-ball or [0, 1] "
                f"(max l-inf distance {float(dist.max()):.6g} > eps {eps:.6g})"
            )
        _, adv = per_sample(model, x_adv, y, batch_size=batch_size)
        clean_acc, robust_acc = torch.stack([clean.double().mean(), (clean & adv).double().mean()]).tolist()
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return {
        "clean_acc": clean_acc,
        "robust_acc": robust_acc,
        "n": n,
        "implementation": impl,
        "time_s": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------- runs


def _test_set(data, n: int):
    m = len(data.test_x) if n == 0 else min(n, len(data.test_x))
    return as_float(data.test_x[:m]), data.test_y[:m]


def _save_record(rd: RunDir, rec: dict) -> None:
    q = Query()
    t = rd.metrics_table("evals")
    t.upsert(rec, (q.ckpt == rec["ckpt"]) & (q.attack == rec["attack"]) & (q.n == rec["n"]) & (q.eps == rec["eps"]))


def _has_record(rd: RunDir, ckpt: str, attack: str, n: int, eps: float) -> bool:
    return any(
        r.get("ckpt") == ckpt and r.get("attack") == attack and r.get("n") == n and r.get("eps") == eps
        for r in rd.evals()
    )


def _preflight(rd: RunDir, ckpts, skip_missing_swa: bool) -> None:
    """Before any work: the results can be stored (metrics.json readable, the folder writable) and
    every checkpoint asked for is intact, so a damaged file is named now, not after the attacks."""
    rd.records("evals")
    rd.check_writable()
    for ckpt in ckpts:
        try:
            path = checkpoint_path(rd, ckpt)
        except UserError:
            if skip_missing_swa and ckpt.startswith("swa_"):
                continue
            raise
        inspect_checkpoint(path, f"evaluate another checkpoint (it has: {', '.join(rd.checkpoints())})")


def eval_run(
    rd: RunDir,
    *,
    ckpts: list[str] | tuple = ("best",),
    attacks: list[str] | tuple = ("aa",),
    n: int = 0,
    batch_size: int | None = None,
    device: str | None = None,
    store=None,
    log: Callable[[str], None] = print,
    from_run_process: bool = False,
    data=None,
    skip_existing: bool = False,
    skip_missing_swa: bool = False,
    progress: Progress | None = None,
) -> list[dict]:
    """Evaluate checkpoints `ckpts` of run `rd` under `attacks` on its first `n` test images
    (0 = all); store one `evals` record each and return them.

    Refuses (UserError) a run whose state is `running` unless `from_run_process` (the run's
    own process, the single writer of its metrics.json, at the end of training).
    `device` defaults to the run's train.device; `batch_size` to its eval.batch_size.
    `progress` is called with the events of the module doc as the work goes on.
    """
    check_choices(list(ckpts), list(attacks))
    st = rd.status()
    if not from_run_process and st.state == "running":
        raise UserError(
            f"run {rd.id} is running: its own process writes metrics.json; evaluate it when it "
            f"has finished or stopped (`advlc stop {rd.id}`)"
        )
    cfg = from_json(rd.config_json())
    if cfg.experiment.kind:
        raise UserError(f"run {rd.id} is a {cfg.experiment.kind} experiment, not a trained model")
    dev = pick_device(device or cfg.train.device)
    bs = batch_size or cfg.eval.batch_size
    _preflight(rd, ckpts, skip_missing_swa)
    if data is None:
        data = load_dataset(cfg.data, dev)
    else:
        data = data.to(dev)
    x, y = _test_set(data, n)
    eps = cfg.eval.eps
    out = []
    for ckpt in ckpts:
        if skip_missing_swa and ckpt.startswith("swa_"):
            try:
                checkpoint_path(rd, ckpt)
            except UserError:
                log(f"final eval: run {rd.id} has no {ckpt} checkpoint; skipped")
                continue
        model, _, info = load_run_model(rd, ckpt, dev, data=data)
        for attack in attacks:
            if skip_existing and _has_record(rd, ckpt, attack, len(x), eps):
                continue
            if attack == "aa-torchattacks":
                log(TORCHATTACKS_NOTE)
            if progress:  # the caller shows it (and the result) its own way
                progress(
                    {
                        "event": "start",
                        "ckpt": ckpt,
                        "epoch": info["epoch"],
                        "attack": attack,
                        "n": len(x),
                        "eps": eps,
                        "device": str(dev),
                    }
                )
            else:
                log(f"eval {rd.id} {ckpt} (epoch {info['epoch']}) {attack} on {len(x)} test images, eps {eps:.6g} ...")
            r = robust_accuracy(
                model, x, y, attack=attack, eps=eps, batch_size=bs, num_classes=data.num_classes, progress=progress
            )
            rec = {
                "ckpt": ckpt,
                "attack": attack,
                "implementation": r["implementation"],
                "eps": eps,
                "n": r["n"],
                "clean_acc": r["clean_acc"],
                "robust_acc": r["robust_acc"],
                "epoch": info["epoch"],
                "device": str(dev),
                "time_s": r["time_s"],
                "created": time.time(),
            }
            _save_record(rd, rec)
            if progress:
                progress({"event": "result", **rec})
            else:
                log(
                    f"eval {rd.id} {ckpt} {attack}: clean {100 * rec['clean_acc']:.2f}  robust "
                    f"{100 * rec['robust_acc']:.2f}  ({rec['implementation']}; {rec['time_s']:.1f}s)"
                )
            out.append(rec)
    if store is not None:
        store.sync(rd)
    return out


def run_final_evals(rd: RunDir, *, data=None, store=None, log: Callable[[str], None] = print) -> list[dict]:
    """The final evaluations a run's config asks for (eval.final x eval.final_ckpts on the first
    eval.final_n test images); called by the run's own process when training has ended.
    Does nothing when eval.final is empty; evaluations already recorded are not repeated (a
    resumed run only completes the missing ones); missing SWA checkpoints are skipped."""
    e = from_json(rd.config_json()).eval
    if not e.final:
        return []
    return eval_run(
        rd,
        ckpts=list(e.final_ckpts),
        attacks=list(e.final),
        n=e.final_n,
        store=store,
        log=log,
        from_run_process=True,
        data=data,
        skip_existing=True,
        skip_missing_swa=True,
    )
