"""Training one run directory: set-up, resume, and what happens after each epoch.

`train_run(rd, store, emit, log)` is called by the run process (engine.run.process) and does, in order:

  set-up    config, device, provenance, seed, data on the device, model (fast-path settings),
            SGD, the batch generator, teachers (KDSA) and SWA;
  resume    from last.pt when it exists (model, optimiser, RNG states, best so far, SWA), and
            drops the records past its epoch, so a resumed run repeats an uninterrupted one;
  the loop  engine.run.loop.train, with `on_epoch` doing the per-epoch evaluation (clean and
            PGD on the test data and on the validation split if any, IG, HS when due), the SWA
            update and its evaluation, the extra metrics of eval.extra, then the records,
            best.pt (selected on train.select_on's split) / swa_*.pt / last.pt, the status and
            the index, in that order; then early stopping (train.stop_on_overfit);
  the end   the final evaluations of eval.final (engine.run.final_eval).

Records of table `epochs` have the keys `EPOCH_KEYS` (+ `VAL_KEYS` with a validation split, + the
eval.extra names); the SWA model's records (table `swa`) have the same keys.
"""

from __future__ import annotations

import json
import time
from typing import Callable

import torch

from engine.config.schema import from_json
from engine.errors import UserError
from engine.nn import swa as swa_avg
from engine.nn.datasets import as_float, augment, epoch_batches, load_dataset
from engine.nn.fastpath import prepare_model
from engine.nn.methods import get_method
from engine.nn.metrics.evaluation import evaluate
from engine.nn.metrics.hessian import hs_metric
from engine.nn.models import build_model
from engine.run import checkpoints, provenance
from engine.run.device import pick_device
from engine.run.epoch_metrics import extra_epoch_metrics
from engine.run.final_eval import run_final_evals
from engine.run.loop import EpochResult, train
from engine.run.teachers import load_teachers
from engine.store.alerts import early_stop, robust_key
from engine.store.index import Store
from engine.store.records import EPOCH_KEYS, ConfigRecord, EarlyStop
from engine.store.rundir import RunDir
from engine.store.summary import format_epoch

VAL_KEYS = ("val_clean_loss", "val_clean_acc", "val_robust_loss", "val_robust_acc")
"""The validation split's records (data.val_size > 0): the test evaluation's clean and PGD numbers."""
STATUS_EVERY_S = 5.0
"""Seconds between two batch-progress writes of status.json."""

Emit = Callable[[str, dict], None]
Log = Callable[[str], None]


def record_provenance(rd: RunDir, device: torch.device) -> ConfigRecord:
    """Record this start's provenance in runtime.json (config.json is never rewritten); returns
    the run's config with it."""
    rd.add_start(provenance.collect(device))
    return rd.config()


class _Trainer:
    """One run's training: the set-up as attributes, `on_epoch` as the loop's callback."""

    def __init__(self, rd: RunDir, store: Store, emit: Emit, log: Log):
        self.rd, self.store, self.emit, self.log = rd, store, emit, log
        cfg = self.cfg = from_json(rd.config_json())
        t, e = cfg.train, cfg.eval
        self.device = device = pick_device(t.device)
        conf = record_provenance(rd, device)
        log(f"advlc run {rd.id}: {conf.run.preset} seed {t.seed} on {device}")
        log("config: " + json.dumps({s: v for s, v in cfg.to_dict().items() if s != "preset"}))

        torch.manual_seed(t.seed)
        self.data = data = load_dataset(cfg.data, device)
        model = build_model(
            cfg.model, num_classes=data.num_classes, in_channels=data.in_channels, image_size=data.image_size
        ).to(device)
        self.model = prepare_model(model, cfg, log=log)  # channels_last / torch.compile when configured
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.nesterov
        )
        self.gen = torch.Generator(device=device).manual_seed(t.seed + 1)
        self.method = get_method(cfg.method.name)
        n_eval = len(data.test_x) if e.n == 0 else min(e.n, len(data.test_x))
        self.x_test, self.y_test = as_float(data.test_x[:n_eval]), data.test_y[:n_eval]
        self.x_val = as_float(data.val_x) if data.val_x is not None else None
        self.select_key = robust_key(t.select_on)  # robust_acc, or val_robust_acc: what picks best.pt
        if len(data.train_x) < t.batch_size:
            raise UserError(f"train.batch_size = {t.batch_size}: larger than the {len(data.train_x)} training images")
        # teachers: built under a forked RNG so they do not shift the run's random stream
        with torch.random.fork_rng(devices=[]):
            teachers = load_teachers(conf, cfg, data, device, store)
        self.extras = {"teachers": teachers} if teachers else {}
        for role in teachers:
            t_ = conf.run.teachers[role]
            log(f"teacher {role}: run {t_.run} ({t_.which})")
        self.swa = _RunSWA(self) if cfg.swa.enabled else None
        self.best_acc = -1.0
        self.last_status = 0.0

    # ------------------------------------------------------------------ resume
    def resume(self) -> int:
        """Continue from last.pt when it exists (exactly: optimiser and random streams too), or
        from best.pt when the resume asked for it (`advlc resume RUN --from best`: the model of
        the best epoch, a fresh optimiser); returns the first epoch to train."""
        start = 0
        last = self.rd.ckpt("last")
        best = self.rd.ckpt("best")
        from_best = self.rd.status().resume_from == "best"
        self.rd.update_status(resume_from=None)
        if last.exists():
            ck = checkpoints.load(
                last,
                self.device,
                hint=f"resume from best.pt with `advlc resume {self.rd.id} "
                f"--from best`, or start over with `--from scratch`",
            )
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            torch.set_rng_state(ck["rng_cpu"])
            if self.device.type == "cuda" and ck.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(ck["rng_cuda"], self.device)
            self.gen.set_state(ck["rng_data"].to(self.gen.get_state().device))
            start, self.best_acc = ck["epoch"], ck["best_robust_acc"]
            if self.swa is not None and ck.get("swa") is not None:
                self.swa.load_state_dict(ck["swa"])
            self.log(f"resumed from {last} at epoch {start}")
        elif from_best and best.exists():
            ck = checkpoints.load(best, self.device, hint=f"start over with `advlc resume {self.rd.id} --from scratch`")
            self.model.load_state_dict(ck["model"])
            start, self.best_acc = int(ck["epoch"]) + 1, float(ck.get("score", ck["robust_acc"]))
            self.log(
                f"resumed from {best} (its epoch {start - 1}) at epoch {start}: fresh optimiser and "
                f"random streams, so not bit-identical to an uninterrupted run"
            )
        db = self.rd.metrics_db()
        self.epochs_table = db.table("epochs", cache_size=0)
        self.epochs_table.remove(lambda r: r["epoch"] >= start)  # records past the checkpoint
        self.swa_table = db.table("swa", cache_size=0)
        self.swa_table.remove(lambda r: r["epoch"] >= start)
        return start

    # ------------------------------------------------------------------ callbacks
    def on_batch(self, epoch: int, batch: int, batches: int) -> None:
        self.emit("batch", {"epoch": epoch, "batch": batch, "batches": batches})
        now = time.time()
        if now - self.last_status > STATUS_EVERY_S:
            self.rd.update_status(heartbeat=now, epoch=epoch, batch=batch, batches=batches)
            self.last_status = now

    def evaluate(self, model, epoch: int, force: bool = False) -> dict:
        """The per-epoch evaluation when due (or `force`): clean/PGD/AV/IG, and HS."""
        e, last = self.cfg.eval, epoch + 1 == self.cfg.train.epochs
        out = {}
        if (epoch + 1) % e.every == 0 or last or force:
            out.update(
                evaluate(
                    model,
                    self.x_test,
                    self.y_test,
                    eps=e.eps,
                    alpha=e.pgd_alpha,
                    steps=e.pgd_steps,
                    batch_size=e.batch_size,
                    ig=e.ig,
                )
            )
            if self.x_val is not None:  # the same attack on the held-out training images
                v = evaluate(
                    model,
                    self.x_val,
                    self.data.val_y,
                    eps=e.eps,
                    alpha=e.pgd_alpha,
                    steps=e.pgd_steps,
                    batch_size=e.batch_size,
                    ig=False,
                )
                out.update({f"val_{k}": v[k] for k in ("clean_loss", "clean_acc", "robust_loss", "robust_acc")})
        if e.hs_every and ((epoch + 1) % e.hs_every == 0 or last or force):
            out["hs"], _ = hs_metric(
                model, self.x_test, self.y_test, n=e.hs_samples, batch=e.hs_batch, reduce=e.hs_reduce
            )
        return out

    def on_epoch(self, r: EpochResult) -> bool:
        """Evaluate, record and checkpoint epoch `r.epoch`; True when the run stops early here."""
        epoch = r.epoch
        rec = dict.fromkeys(EPOCH_KEYS + (VAL_KEYS if self.x_val is not None else ()))
        rec.update(
            epoch=epoch,
            lr=r.lr,
            train_loss=r.train_loss,
            train_acc=r.train_acc,
            time_s=r.time_s,
            images_per_s=r.images / r.time_s if r.time_s > 0 else None,
        )
        t0 = time.perf_counter()
        rec.update(self.evaluate(self.model, epoch))
        swa_rec = self.swa.step(epoch, r.lr) if self.swa is not None else None
        rec.update(extra_epoch_metrics(self.model, self.data, self.cfg, epoch))  # eval.extra (Figs 1, 3, A.2)
        rec["eval_time_s"] = time.perf_counter() - t0  # what an epoch costs beyond training (for the ETA)
        self.save(epoch, rec, swa_rec)
        self.log(format_epoch(rec))
        self.emit("epoch", rec)
        if swa_rec is not None:
            self.log(self.swa.format(swa_rec))
            self.emit("swa", swa_rec)
        return self.stop_early(epoch)

    def stop_early(self, epoch: int) -> bool:
        """train.stop_on_overfit: stop after this epoch once robust overfitting on the selection split
        has held for train.overfit_patience evaluated epochs; the reason goes to status.json."""
        t = self.cfg.train
        if not t.stop_on_overfit or epoch + 1 >= t.epochs:
            return False
        found = early_stop(self.epochs_table.all(), t.overfit_patience, self.select_key)
        if found is None:
            return False
        stop = EarlyStop(epoch=epoch, onset=found["onset"], planned=t.epochs, split=t.select_on)
        self.rd.update_status(early_stop=stop)
        self.store.sync(self.rd)
        self.log(stop.text())
        self.emit("early_stop", {"epoch": epoch, "onset": stop.onset, "planned": t.epochs, "text": stop.text()})
        return True

    def save(self, epoch: int, rec: dict, swa_rec: dict | None) -> None:
        """Records first, then best.pt / swa_*.pt, then last.pt, then status and index."""
        self.epochs_table.insert(rec)
        score = rec[self.select_key]
        if score is not None and score >= self.best_acc:
            self.best_acc = score
            checkpoints.save(
                {
                    "model": self.model.state_dict(),
                    "epoch": epoch,
                    "robust_acc": rec["robust_acc"],
                    "clean_acc": rec["clean_acc"],
                    "selected_on": self.cfg.train.select_on,
                    "score": score,
                },
                self.rd.ckpt("best"),
            )
        if swa_rec is not None:
            self.swa_table.insert(swa_rec)
            self.swa.save(epoch, swa_rec)
        dev = self.device
        checkpoints.save(
            {
                "epoch": epoch + 1,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
                "rng_data": self.gen.get_state(),
                "best_robust_acc": self.best_acc,
                "swa": self.swa.state_dict() if self.swa is not None else None,
            },
            self.rd.ckpt("last"),
        )
        self.rd.update_status(
            heartbeat=time.time(), epoch=epoch + 1, batch=0, batches=len(self.data.train_x) // self.cfg.train.batch_size
        )
        self.store.sync(self.rd)


class _RunSWA:
    """SWA within a run: an equal-weight average updated at the end of epochs start,
    start + every, ...; BN statistics re-estimated on clean training batches after each
    update; evaluated like the main model; its own best/end checkpoints (engine.nn.swa)."""

    def __init__(self, tr: _Trainer):
        self.tr = tr
        self.sw, self.epochs = tr.cfg.swa, tr.cfg.train.epochs
        self.avg = swa_avg.SWA(tr.model)
        self.last_epoch = swa_avg.last_update_epoch(self.sw, self.epochs)
        self.best_acc = -1.0
        if self.last_epoch is None:
            tr.log(f"swa.start = {self.sw.start} >= train.epochs = {self.epochs}: the SWA model is never updated")

    def state_dict(self) -> dict:
        return dict(self.avg.state_dict(), best_robust_acc=self.best_acc)

    def load_state_dict(self, state: dict) -> None:
        self.avg.load_state_dict(state)
        self.best_acc = state["best_robust_acc"]

    def bn_batches(self, epoch: int):
        """Clean (non-adversarial) training batches, augmented as for training, for the BN pass.

        Their own generator (seeded by seed and epoch): SWA leaves the main run's random
        stream, hence its records, exactly as without SWA.
        """
        tr, t, d = self.tr, self.tr.cfg.train, self.tr.cfg.data
        g = torch.Generator(device=tr.device).manual_seed(t.seed + 1 + 1_000_003 * (epoch + 1))
        idxs = epoch_batches(len(tr.data.train_x), t.batch_size, g, tr.device)
        for idx in idxs[: self.sw.bn_batches] if self.sw.bn_batches else idxs:
            yield as_float(augment(tr.data.train_x[idx], padding=d.crop_padding, flip=d.flip, generator=g))

    def step(self, epoch: int, lr: float) -> dict | None:
        """Update, re-estimate BN and evaluate at an update epoch; its record (None otherwise)."""
        if not swa_avg.is_update_epoch(self.sw, epoch):
            return None
        ts = time.perf_counter()
        self.avg.update(self.tr.model)
        swa_avg.update_bn(self.avg.average, self.bn_batches(epoch))
        self.avg.average.eval()
        if self.tr.device.type == "cuda":
            torch.cuda.synchronize(self.tr.device)
        rec = dict.fromkeys(EPOCH_KEYS + (VAL_KEYS if self.tr.x_val is not None else ()))
        # time_s = seconds of the update + BN re-estimation
        rec.update(epoch=epoch, lr=lr, time_s=time.perf_counter() - ts)
        # evaluated when the main model is, and always after the last update
        rec.update(self.tr.evaluate(self.avg.average, epoch, force=epoch == self.last_epoch))
        return rec

    def save(self, epoch: int, rec: dict) -> None:
        score = rec[self.tr.select_key]
        ck = {
            "model": self.avg.average.state_dict(),
            "epoch": epoch,
            "n": self.avg.n,
            "robust_acc": rec["robust_acc"],
            "clean_acc": rec["clean_acc"],
            "selected_on": self.tr.cfg.train.select_on,
            "score": score,
        }
        if score is not None and score >= self.best_acc:
            self.best_acc = score
            checkpoints.save(ck, self.tr.rd.ckpt("swa_best"))
        checkpoints.save(ck, self.tr.rd.ckpt("swa_end"))

    def format(self, rec: dict) -> str:
        def f(key):
            return "—" if rec[key] is None else f"{rec[key]:.4g}"

        return (
            f"  swa {rec['epoch']:>3}  n {self.avg.n:<4} clean {f('clean_acc')}  robust {f('robust_acc')}  "
            f"IG {f('ig')}  HS {f('hs')}  {rec['time_s']:.2f}s"
        )


def train_run(rd: RunDir, store: Store, emit: Emit, log: Log) -> None:
    """Train (or resume) run `rd` to its last epoch, then run its final evaluations."""
    tr = _Trainer(rd, store, emit, log)
    start = tr.resume()
    emit(
        "start",
        {
            "epochs": tr.cfg.train.epochs,
            "start_epoch": start,
            "device": str(tr.device),
            "batches": len(tr.data.train_x) // tr.cfg.train.batch_size,
        },
    )
    train(
        tr.model,
        tr.optimizer,
        tr.method,
        tr.data,
        tr.cfg,
        device=tr.device,
        generator=tr.gen,
        start_epoch=start,
        extras=tr.extras,
        on_batch=tr.on_batch,
        on_epoch=tr.on_epoch,
    )
    run_final_evals(rd, data=tr.data, store=store, log=log)
