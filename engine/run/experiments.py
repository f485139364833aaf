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

Kinds, their own parameters (the table `[experiment.<kind>]`, engine.sections.EXPERIMENT_PARAMS)
and the keys of their `points` records (every record also has kind, index, time_s):

fig4a  (Fig. 4a, "randomly modified models"; [experiment.fig4a]): for each s in values (+ random_values
       draws s ~ U(0, value_max); the paper: s ~ U(0, 1)), a copy of the checkpoint whose every
       parameter gets noise U(-s, s) (noise = "absolute", the paper's wording) or is multiplied by
       1 + U(-s, s) ("relative"); buffers untouched. Keys: s, hs, hs_method, eff_fgsm, eff_pgd10,
       clean_loss, clean_acc (train subset). s = 0 is the checkpoint itself.
fig4b  (Fig. 4b, "perturbation size decays"; [experiment.fig4b]): for each multiplier p in values, start
       from the checkpoint and train ONE epoch (the source's batch size, augmentation, momentum
       and weight decay; lr = its lr or the source's lr at the checkpoint's epoch) on
       x + p * delta, delta from PGD-`pgd_steps` (paper: 20; in attack.train_mode as in
       the source's training). Every point sees the same batches. Keys: p, lr, train_loss,
       train_adv_eff (mean over every train_eff_every-th batch of the effectiveness of
       the modified examples w.r.t. PGD-50 on the current model: the paper's "Train Adv. Eff."),
       hs, hs_method, eff_fgsm, eff_pgd10, clean_loss, clean_acc (train subset, after the epoch),
       test_clean_acc, test_robust_acc (PGD eval.pgd_steps on the first eval.n test images).
       p = 1 is ordinary PGD-20 AT for one epoch; p = 0 is standard training.
fig4c  (Fig. 4c, "sign of the perturbation flips"; [experiment.fig4c]): as fig4b, but delta's sign is reversed for a
       random fraction p (flip_unit = "sample": whole perturbations of ~p of the examples, the
       paper's "reversed examples"; "element": ~p of all entries), x - delta clipped to [0, 1].
       The random draws are nested (a larger p flips a superset) and p = 0 equals fig4b's p = 1.
a1     (Fig. A1, PGD convergence; [experiment.a1]): for split in splits and k in steps, the
       mean CE (adv_loss) and accuracy (adv_acc) of PGD-k on the first experiment.samples images
       of the split; one PGD trajectory of max(steps) steps per batch gives every k (PGD-k is the
       k-th iterate). Keys: split, steps, adv_loss, adv_acc, clean_loss.

Each kind is one module of engine.run.analyses (registered in its ANALYSES); this module is the
runner: it opens the source, builds the context, walks the grid and stores the records. Fig. 4b/c
train their epoch with the training loop (engine.run.loop.train), their modified perturbation
being the objective it is given.

The paper's text and its Fig. 4 caption disagree on the panel letters; the kinds follow the
caption (a = parameter noise, b = scaling, c = sign flips).
"""

from __future__ import annotations

import json
import time
from typing import Callable

import torch

from engine.config.schema import EXPERIMENT_KINDS, POINT_KEYS, from_json
from engine.errors import UserError
from engine.nn.datasets import load_dataset
from engine.run import provenance
from engine.run.analyses import ANALYSES
from engine.run.analyses.common import Context
from engine.run.checkpoints import load_run_model
from engine.run.device import pick_device
from engine.run.epoch_metrics import first_n
from engine.store.index import Store
from engine.store.rundir import RunDir

__all__ = ["POINT_KEYS", "format_point", "grid", "is_experiment", "resolve_source", "run_experiment", "validate"]

# ---------------------------------------------------------------------------- config helpers


def is_experiment(obj) -> bool:
    """Whether a RunDir / RunConfig / config dict describes an experiment run."""
    if isinstance(obj, RunDir):
        return obj.config().is_experiment
    if isinstance(obj, dict):
        return bool((obj.get("experiment") or {}).get("kind"))
    return bool(getattr(getattr(obj, "experiment", None), "kind", ""))


def _analysis(kind: str):
    if kind not in ANALYSES:
        raise UserError(f"experiment.kind = {kind!r}: must be one of {', '.join(EXPERIMENT_KINDS)}")
    return ANALYSES[kind]


def validate(cfg, where: str = "[experiment]") -> None:
    """Cross-field checks of an experiment config (one-line UserError)."""
    x = cfg.experiment
    if x.kind not in EXPERIMENT_KINDS:
        raise UserError(f"{where}: experiment.kind = {x.kind!r}: must be one of {', '.join(EXPERIMENT_KINDS)}")
    if not x.source:
        raise UserError(f"{where}: experiment.source is empty: name the trained run (its id) or its preset")
    _analysis(x.kind).check(cfg, where)


def grid(cfg) -> list[dict]:
    """The grid points of an experiment: [{"index": i, <param>: value}, ...]."""
    return _analysis(cfg.experiment.kind).grid(cfg)


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
    rows = [
        r
        for r in store.runs(preset=ref, archived=None)
        if r.get("preset") == ref and r.get("state") == "finished" and r.get("id") != exclude
    ]
    rows = [r for r in rows if not is_experiment(store.run_dir(r["id"]))]
    if not rows:
        raise UserError(
            f"experiment.source = {ref!r}: no run with that id and no finished run of preset "
            f"'{ref}' in {store.runs_dir} (train it first: advlc run {ref})"
        )
    return store.run_dir(rows[-1]["id"])


# ---------------------------------------------------------------------------- the process


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_point(rec: dict, n_points: int | None = None) -> str:
    kind = rec.get("kind", "")
    keys = [k for k in POINT_KEYS.get(kind, ()) if k in rec and k != "hs_method"]
    head = f"point {rec.get('index', 0) + 1}" + (f"/{n_points}" if n_points else "")
    return f"{kind} {head}  " + "  ".join(f"{k} {_fmt(rec[k])}" for k in keys) + f"  {rec.get('time_s', 0):.2f}s"


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
        source={
            "run": src.id,
            "preset": srun.preset,
            "label": srun.label,
            "ckpt": x.ckpt,
            "epoch": info["epoch"],
            "path": info["path"],
        },
        source_sections={s: sconf.sections[s] for s in ("data", "model", "attack", "method") if s in sconf.sections},
        label=f"{x.kind}:{srun.label}",
    )
    store.sync(rd)
    log(
        f"advlc experiment {rd.id}: {x.kind} of run {src.id} ({srun.preset}, {x.ckpt} checkpoint, "
        f"epoch {info['epoch']}) on {device}"
    )
    log("experiment: " + json.dumps(cfg.to_dict()["experiment"]))
    return model, scfg, info


def _context(rd: RunDir, cfg, scfg, model, info, device) -> Context:
    """What every point of the experiment reads: the data, eps, the checkpoint's epoch, a heartbeat."""
    torch.manual_seed(cfg.train.seed)
    data = load_dataset(scfg.data, device)
    last_beat = [0.0]

    def heartbeat():
        now = time.time()
        if now - last_beat[0] > 5.0:
            rd.update_status(heartbeat=now)
            last_beat[0] = now

    return Context(
        cfg=cfg,
        scfg=scfg,
        model=model,
        data=data,
        device=device,
        eps=scfg.eval.eps,
        ckpt_epoch=info["epoch"],
        train_subset=first_n(data.train_x, data.train_y, cfg.experiment.samples),
        heartbeat=heartbeat,
    )


def run_experiment(rd: RunDir, store: Store, emit: Callable[[str, dict], None], log: Callable[[str], None]) -> None:
    """Execute the experiment of run `rd` (the analogue of engine.run.trainer.train_run): see the module doc."""
    cfg = from_json(rd.config_json())
    validate(cfg, f"run {rd.id}")
    device = pick_device(cfg.train.device)
    model, scfg, info = _open_source(rd, store, cfg, device, log)
    ctx = _context(rd, cfg, scfg, model, info, device)
    points = rd.metrics_table("points")
    done = {r.get("index") for r in points.all()}
    pts = grid(cfg)
    emit(
        "start",
        {
            "epochs": 1,
            "start_epoch": 0,
            "batches": len(pts),
            "device": str(device),
            "points": len(pts),
            "done": len(done),
        },
    )
    rd.update_status(heartbeat=time.time(), point=len(done), points=len(pts))
    for rec in _analysis(cfg.experiment.kind).records(ctx, pts, done):
        points.insert(rec)  # the record first, then the progress that counts it
        done.add(rec["index"])
        rd.update_status(heartbeat=time.time(), point=len(done), points=len(pts))
        store.sync(rd)
        log(format_point(rec, len(pts)))
        emit("batch", {"epoch": 0, "batch": len(done), "batches": len(pts)})
        emit("point", rec)
