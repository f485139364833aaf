"""Post-hoc analyses of a trained run (Fig. 4a/b/c and A.1), executed as runs of their own.

    advlc experiment PRESET       (or `advlc run PRESET`: the run process dispatches experiment runs here)

An experiment run is a run whose config has an `[experiment]` table with `kind` set. Its process
loads `experiment.source`'s checkpoint `experiment.ckpt` (a run id or prefix; a preset name means
that preset's most recent finished run) and writes one record per grid point into the `points`
table of its own metrics.json, with status/state handled exactly like a training run (`runs`,
`show`, stop and resume work the same; a resumed experiment skips the points already recorded).
At start it copies the source's [data]/[model]/[attack]/[method] tables into its config.json
(the analysed model is the source's) and records `source` = {run, preset, label, ckpt, epoch}.

eps is the source's eval.eps; PGD steps are eps/4 without random start; HS is hs_metric over
batches of eval.hs_batch, reduced as eval.hs_reduce (mean |lambda| or the paper's sum);
effectiveness is Eq. 7 against PGD-50 (engine.nn.metrics.effectiveness), with the FGSM / PGD-10
perturbations generated in eval mode unless eval.effect_train_mode. "Train subset"
= the first experiment.samples training images (no augmentation). All randomness is seeded from
the experiment's train.seed, so a point repeats exactly.

Kinds and the keys of their `points` records (every record also has kind, index, time_s):

fig4a  (Fig. 4a, "randomly modified models"): for each s in experiment.values (+ random_values
       draws s ~ U(0, value_max); the paper: s ~ U(0, 1)), a copy of the checkpoint whose every
       parameter gets noise U(-s, s) (noise = "absolute", the paper's wording) or is multiplied by
       1 + U(-s, s) ("relative"); buffers untouched. Keys: s, hs, hs_method, eff_fgsm, eff_pgd10,
       clean_loss, clean_acc (train subset). s = 0 is the checkpoint itself.
fig4b  (Fig. 4b, "perturbation size decays"): for each multiplier p in experiment.values, start
       from the checkpoint and train ONE epoch (the source's batch size, augmentation, momentum
       and weight decay; lr = experiment.lr or the source's lr at the checkpoint's epoch) on
       x + p * delta, delta from PGD-`experiment.pgd_steps` (paper: 20; in attack.train_mode as in
       the source's training). Every point sees the same batches. Keys: p, lr, train_loss,
       train_adv_eff (mean over every experiment.train_eff_every-th batch of the effectiveness of
       the modified examples w.r.t. PGD-50 on the current model: the paper's "Train Adv. Eff."),
       hs, hs_method, eff_fgsm, eff_pgd10, clean_loss, clean_acc (train subset, after the epoch),
       test_clean_acc, test_robust_acc (PGD eval.pgd_steps on the first eval.n test images).
       p = 1 is ordinary PGD-20 AT for one epoch; p = 0 is standard training.
fig4c  (Fig. 4c, "sign of the perturbation flips"): as fig4b, but delta's sign is reversed for a
       random fraction p (flip_unit = "sample": whole perturbations of ~p of the examples, the
       paper's "reversed examples"; "element": ~p of all entries), x - delta clipped to [0, 1].
       The random draws are nested (a larger p flips a superset) and p = 0 equals fig4b's p = 1.
a1     (Fig. A1, PGD convergence): for split in experiment.splits and k in experiment.steps, the
       mean CE (adv_loss) and accuracy (adv_acc) of PGD-k on the first experiment.samples images
       of the split; one PGD trajectory of max(steps) steps per batch gives every k (PGD-k is the
       k-th iterate). Keys: split, steps, adv_loss, adv_acc, clean_loss.

The paper's text and its Fig. 4 caption disagree on the panel letters; the kinds follow the
caption (a = parameter noise, b = scaling, c = sign flips).
"""

from __future__ import annotations

import copy
import json
import math
import time
from typing import Callable

import torch
import torch.nn.functional as F

from engine.config.schema import EXPERIMENT_KINDS, POINT_KEYS, from_json
from engine.errors import UserError
from engine.nn.attacks import grad_sign, model_mode, project, run_attack
from engine.nn.datasets import as_float, augment, epoch_batches, load_dataset
from engine.nn.metrics.effectiveness import (
    attack_all,
    attack_effectiveness,
    effectiveness,
)
from engine.nn.metrics.evaluation import clean_and_robust, clean_loss_and_accuracy
from engine.nn.metrics.hessian import hs_metric
from engine.run import provenance
from engine.run.checkpoints import load_run_model
from engine.run.device import pick_device
from engine.run.epoch_metrics import first_n
from engine.run.loop import lr_at
from engine.store.index import Store
from engine.store.rundir import RunDir

# ---------------------------------------------------------------------------- config helpers

def is_experiment(obj) -> bool:
    """Whether a RunDir / RunConfig / config dict describes an experiment run."""
    if isinstance(obj, RunDir):
        return obj.config().is_experiment
    if isinstance(obj, dict):
        return bool((obj.get("experiment") or {}).get("kind"))
    return bool(getattr(getattr(obj, "experiment", None), "kind", ""))


def validate(cfg, where: str = "[experiment]") -> None:
    """Cross-field checks of an experiment config (one-line UserError)."""
    x = cfg.experiment
    if x.kind not in EXPERIMENT_KINDS:
        raise UserError(f"{where}: experiment.kind = {x.kind!r}: must be one of {', '.join(EXPERIMENT_KINDS)}")
    if not x.source:
        raise UserError(f"{where}: experiment.source is empty: name the trained run (its id) or its preset")
    if x.kind in ("fig4a", "fig4b", "fig4c") and not x.values and not (x.kind == "fig4a" and x.random_values):
        raise UserError(f"{where}: experiment.values is empty: give the grid of "
                        f"{'s' if x.kind == 'fig4a' else 'p'} values")
    if x.kind == "fig4c" and any(v > 1 for v in x.values):
        raise UserError(f"{where}: experiment.values = {x.values}: flipped fractions must be in [0, 1]")
    if x.kind == "a1" and (not x.steps or not x.splits):
        raise UserError(f"{where}: experiment.steps and experiment.splits must not be empty for a1")


def grid(cfg) -> list[dict]:
    """The grid points of an experiment: [{"index": i, <param>: value}, ...]."""
    x = cfg.experiment
    if x.kind == "fig4a":
        vals = [float(v) for v in x.values]
        if x.random_values:
            g = torch.Generator().manual_seed(cfg.train.seed)
            vals += (torch.rand(x.random_values, generator=g, dtype=torch.float64) * x.value_max).tolist()
        return [{"index": i, "s": v} for i, v in enumerate(vals)]
    if x.kind in ("fig4b", "fig4c"):
        return [{"index": i, "p": float(v)} for i, v in enumerate(x.values)]
    if x.kind == "a1":
        steps = sorted(set(int(k) for k in x.steps))
        return [{"index": i * len(steps) + j, "split": sp, "steps": k}
                for i, sp in enumerate(x.splits) for j, k in enumerate(steps)]
    raise UserError(f"experiment.kind = {x.kind!r}: must be one of {', '.join(EXPERIMENT_KINDS)}")


def resolve_source(store, ref: str, *, exclude: str | None = None) -> RunDir:
    """The run analysed: a run id (or unique prefix), or a preset name -> its latest finished run."""
    if not ref:
        raise UserError("experiment.source is empty: name the trained run (its id) or its preset")
    if "/" not in ref and not ref.endswith(".toml"):
        try:
            rd = store.get(ref)
            if rd.id != exclude:
                return rd
        except UserError:
            pass
    rows = [r for r in store.runs(preset=ref, archived=None) if r.get("preset") == ref and r.get("state") == "finished"
            and r.get("id") != exclude]
    rows = [r for r in rows if not is_experiment(store.run_dir(r["id"]))]
    if not rows:
        raise UserError(f"experiment.source = {ref!r}: no run with that id and no finished run of preset "
                        f"'{ref}' in {store.runs_dir} (train it first: advlc run {ref})")
    return store.run_dir(rows[-1]["id"])


# ---------------------------------------------------------------------------- measurements

def landscape_point(model, x, y, *, eps: float, hs_batch: int, seed: int, batch_size: int,
                    effect_train_mode: bool = False, hs_reduce: str = "mean") -> dict:
    """HS (reduced as `hs_reduce`: mean or sum |lambda|), FGSM / PGD-10 effectiveness and clean
    loss/accuracy of `model` on (x, y)."""
    dev = x.device
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        hs, method = hs_metric(model, x, y, n=len(x), batch=hs_batch, seed=seed, reduce=hs_reduce)
        advs = {}
        for name, s in (("eff_fgsm", dict(attack_name="fgsm", eps=eps, alpha=eps, steps=1)),
                        ("eff_pgd10", dict(attack_name="pgd", eps=eps, alpha=eps / 4, steps=10))):
            torch.manual_seed(seed)
            advs[name] = attack_all(model, x, y, train_mode=effect_train_mode, batch_size=batch_size, **s)
        out = effectiveness(model, x, y, advs, eps=eps, batch_size=batch_size)
        cl, ca = clean_loss_and_accuracy(model, x, y, batch_size=batch_size)
    return {"hs": hs, "hs_method": method, **out, "clean_loss": cl, "clean_acc": ca}


def add_parameter_noise(model, s: float, *, mode: str = "absolute", seed: int = 0):
    """A copy of `model` with every parameter perturbed by U(-s, s) noise (mode "absolute") or
    multiplied by 1 + U(-s, s) ("relative"); noise drawn on the CPU from `seed` (device-independent)."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            u = torch.rand(p.shape, generator=g, dtype=torch.float64)
            noise = ((2 * u - 1) * s).to(device=p.device, dtype=p.dtype)
            if mode == "absolute":
                p.add_(noise)
            elif mode == "relative":
                p.mul_(1 + noise)
            else:
                raise ValueError(f"noise mode {mode!r}")
    return m


def modify_perturbation(delta: torch.Tensor, kind: str, p: float, u: torch.Tensor | None) -> torch.Tensor:
    """fig4b: p * delta; fig4c: delta with the sign reversed where u < p (u per sample or per entry)."""
    if kind == "fig4b":
        return delta * p
    if kind == "fig4c":
        flip = (u < p).to(delta.dtype)
        while flip.dim() < delta.dim():
            flip = flip.unsqueeze(-1)
        return delta * (1 - 2 * flip)
    raise ValueError(kind)


def pgd_curve(model, x, y, *, eps: float, alpha: float, steps: list[int], batch_size: int = 500) -> dict:
    """{k: (mean CE, accuracy)} of PGD-k (step alpha, no random start, eval mode) for every k in
    `steps` (0 = clean), from one trajectory per batch: PGD-k is its k-th iterate."""
    want = sorted(set(int(k) for k in steps))
    K = max(want)
    dev = x.device
    sums = {k: torch.zeros(2, device=dev, dtype=torch.float64) for k in want}

    def record(k, xa, yb):
        with torch.no_grad():
            o = model(xa)
            sums[k] += torch.stack([F.cross_entropy(o, yb, reduction="sum").double(),
                                    (o.argmax(1) == yb).sum().double()])

    with model_mode(model, False):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            xa = xb.detach()
            if 0 in sums:
                record(0, xa, yb)
            for t in range(1, K + 1):
                g, _ = grad_sign(model, xa, yb)
                xa = project(xa + alpha * g, xb, eps)
                if t in sums:
                    record(t, xa, yb)
    n = len(x)
    return {k: tuple((v / n).tolist()) for k, v in sums.items()}


# ---------------------------------------------------------------------------- the kinds

def _run_fig4a(ctx, pt) -> dict:
    cfg, x = ctx["cfg"], ctx["cfg"].experiment
    m = add_parameter_noise(ctx["model"], pt["s"], mode=x.noise, seed=cfg.train.seed * 1_000_003 + pt["index"])
    m.eval()
    xs, ys = ctx["train_subset"]
    return landscape_point(m, xs, ys, eps=ctx["eps"], hs_batch=cfg.eval.hs_batch, seed=cfg.train.seed,
                           batch_size=cfg.eval.batch_size, effect_train_mode=cfg.eval.effect_train_mode,
                           hs_reduce=cfg.eval.hs_reduce)


def _run_fig4bc(ctx, pt) -> dict:
    cfg, scfg, data, dev = ctx["cfg"], ctx["scfg"], ctx["data"], ctx["device"]
    x, kind, p, eps = cfg.experiment, cfg.experiment.kind, pt["p"], ctx["eps"]
    seed = cfg.train.seed
    m = copy.deepcopy(ctx["model"])
    lr = ctx["lr"]
    st = scfg.train
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=st.momentum, weight_decay=st.weight_decay,
                          nesterov=st.nesterov)
    n_train = len(data.train_x) if not x.train_images else min(x.train_images, len(data.train_x))
    bs = min(st.batch_size, n_train)
    gen = torch.Generator(device=dev).manual_seed(seed + 1)      # batches + augmentation: same for every p
    flip_gen = torch.Generator().manual_seed(seed + 2)           # nested flip masks across p
    a = scfg.attack
    loss_sum, seen, effs = 0.0, 0, []
    losses = torch.zeros((), device=dev, dtype=torch.float64)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        for i, idx in enumerate(epoch_batches(n_train, bs, gen, dev)):
            xb = as_float(augment(data.train_x[idx], padding=scfg.data.crop_padding, flip=scfg.data.flip,
                                  generator=gen))
            yb = data.train_y[idx]
            xa = run_attack(m, xb, yb, name="pgd", eps=eps, alpha=eps / 4, steps=x.pgd_steps,
                            random_start=False, train_mode=a.train_mode).x_adv
            delta = xa - xb
            u = None
            if kind == "fig4c":
                shape = (len(xb),) if x.flip_unit == "sample" else tuple(xb.shape)
                u = torch.rand(shape, generator=flip_gen, dtype=torch.float64).to(dev)
            xm = (xb + modify_perturbation(delta, kind, p, u)).clamp(0.0, 1.0).detach()
            if x.train_eff_every and i % x.train_eff_every == 0:
                e = attack_effectiveness(m, xb, yb, xm, eps=eps, batch_size=cfg.eval.batch_size)
                if math.isfinite(e):
                    effs.append(e)
            m.train()
            loss = F.cross_entropy(m(xm), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses += loss.detach().double() * len(yb)
            seen += len(yb)
            ctx["heartbeat"]()
        loss_sum = float(losses)
    m.eval()
    xs, ys = ctx["train_subset"]
    rec = {"lr": lr, "train_loss": loss_sum / max(seen, 1),
           "train_adv_eff": sum(effs) / len(effs) if effs else None}
    rec.update(landscape_point(m, xs, ys, eps=eps, hs_batch=cfg.eval.hs_batch, seed=seed,
                               batch_size=cfg.eval.batch_size, effect_train_mode=cfg.eval.effect_train_mode,
                               hs_reduce=cfg.eval.hs_reduce))
    xt, yt = first_n(data.test_x, data.test_y, cfg.eval.n)
    ev = clean_and_robust(m, xt, yt, eps=eps, alpha=eps / 4, steps=scfg.eval.pgd_steps,
                          batch_size=cfg.eval.batch_size)
    rec.update(test_clean_acc=ev["clean_acc"], test_robust_acc=ev["robust_acc"])
    return rec


# ---------------------------------------------------------------------------- the process

def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_point(rec: dict, n_points: int | None = None) -> str:
    kind = rec.get("kind", "")
    keys = [k for k in POINT_KEYS.get(kind, ()) if k in rec and k != "hs_method"]
    head = f"point {rec.get('index', 0) + 1}" + (f"/{n_points}" if n_points else "")
    return f"{kind} {head}  " + "  ".join(f"{k} {_fmt(rec[k])}" for k in keys) + \
        f"  {rec.get('time_s', 0):.2f}s"


def _open_source(rd: RunDir, store: Store, cfg, device, log):
    """Load the analysed checkpoint and record where it came from (runtime.json, the index, the log)."""
    x, where = cfg.experiment, f"run {rd.id}"
    src = resolve_source(store, x.source, exclude=rd.id)
    if is_experiment(src):
        raise UserError(f"{where}: experiment.source = {x.source!r} is itself an experiment run")
    sconf = src.config()
    model, scfg, info = load_run_model(src, x.ckpt, device)
    srun = sconf.run
    rd.add_start(provenance.collect(device))
    rd.update_runtime(
        source={"run": src.id, "preset": srun.preset, "label": srun.label, "ckpt": x.ckpt,
                "epoch": info["epoch"], "path": info["path"]},
        source_sections={s: sconf.sections[s] for s in ("data", "model", "attack", "method") if s in sconf.sections},
        label=f"{x.kind}:{srun.label}")
    store.sync(rd)
    log(f"advlc experiment {rd.id}: {x.kind} of run {src.id} ({srun.preset}, {x.ckpt} checkpoint, "
        f"epoch {info['epoch']}) on {device}")
    log("experiment: " + json.dumps(cfg.to_dict()["experiment"]))
    return model, scfg, info


def _context(rd: RunDir, cfg, scfg, model, info, device) -> dict:
    """What every point of the experiment reads: the data, eps, the lr of Figs 4b/c, a heartbeat."""
    x = cfg.experiment
    torch.manual_seed(cfg.train.seed)
    data = load_dataset(scfg.data, device)
    if x.lr is not None:
        lr = x.lr
    else:
        ep = info["epoch"] if info["epoch"] is not None else scfg.train.epochs - 1
        lr = lr_at(scfg.train, int(ep))
    last_beat = [0.0]

    def heartbeat():
        now = time.time()
        if now - last_beat[0] > 5.0:
            rd.update_status(heartbeat=now)
            last_beat[0] = now

    return {"cfg": cfg, "scfg": scfg, "model": model, "data": data, "device": device, "eps": scfg.eval.eps,
            "lr": lr, "train_subset": first_n(data.train_x, data.train_y, x.samples), "heartbeat": heartbeat}


def _a1_records(ctx, pts: list[dict], done: set):
    """Fig. A.1's points, one PGD curve per split: (record, ...) for each point not done yet."""
    cfg, data, eps = ctx["cfg"], ctx["data"], ctx["eps"]
    for split in cfg.experiment.splits:
        todo = [p for p in pts if p["split"] == split and p["index"] not in done]
        if not todo:
            continue
        t0 = time.perf_counter()
        xs, ys = first_n(data.train_x if split == "train" else data.test_x,
                         data.train_y if split == "train" else data.test_y, cfg.experiment.samples)
        curve = pgd_curve(ctx["model"], xs, ys, eps=eps, alpha=eps / 4, steps=[0] + [p["steps"] for p in todo],
                          batch_size=cfg.eval.batch_size)
        dt = (time.perf_counter() - t0) / len(todo)
        for p in todo:
            loss, acc = curve[p["steps"]]
            yield {"kind": "a1", **p, "adv_loss": loss, "adv_acc": acc, "clean_loss": curve[0][0], "n": len(xs),
                   "time_s": dt}


def _point_records(ctx, pts: list[dict], done: set):
    """Fig. 4a/b/c's points, one at a time: their records, for each point not done yet."""
    kind, device = ctx["cfg"].experiment.kind, ctx["device"]
    fn = _run_fig4a if kind == "fig4a" else _run_fig4bc
    for p in pts:
        if p["index"] in done:
            continue
        t0 = time.perf_counter()
        rec = {"kind": kind, **p, **fn(ctx, p)}
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rec["n"] = len(ctx["train_subset"][0])
        rec["time_s"] = time.perf_counter() - t0
        yield rec


def run_experiment(rd: RunDir, store: Store, emit: Callable[[str, dict], None],
                   log: Callable[[str], None]) -> None:
    """Execute the experiment of run `rd` (the analogue of engine.run.trainer.train_run): see the module doc."""
    cfg = from_json(rd.config_json())
    validate(cfg, f"run {rd.id}")
    device = pick_device(cfg.train.device)
    model, scfg, info = _open_source(rd, store, cfg, device, log)
    ctx = _context(rd, cfg, scfg, model, info, device)
    points = rd.metrics_table("points")
    done = {r.get("index") for r in points.all()}
    pts = grid(cfg)
    emit("start", {"epochs": 1, "start_epoch": 0, "batches": len(pts), "device": str(device),
                   "points": len(pts), "done": len(done)})
    rd.update_status(heartbeat=time.time(), point=len(done), points=len(pts))
    records = _a1_records if cfg.experiment.kind == "a1" else _point_records
    for rec in records(ctx, pts, done):
        points.insert(rec)              # the record first, then the progress that counts it
        done.add(rec["index"])
        rd.update_status(heartbeat=time.time(), point=len(done), points=len(pts))
        store.sync(rd)
        log(format_point(rec, len(pts)))
        emit("batch", {"epoch": 0, "batch": len(done), "batches": len(pts)})
        emit("point", rec)
