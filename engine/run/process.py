"""The run process: train one run directory from its config.json, end to end.

    python -m engine.run.process RUN_DIR [--home HOME]

Read top to bottom: setup (device, seed, data, model, optimiser), resume, the epoch loop
(on-device augmentation, the method's loss, SGD step), per-epoch evaluation, records and
checkpoints. The process writes only its own run directory; the index is updated through
the store. Stops cleanly on SIGTERM/Ctrl-C (state `stopped`, `last.pt` kept); any other
error marks the run `failed` with the error's last lines.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from engine.errors import UserError
from engine.store.rundir import RunDir, write_json

EPOCH_KEYS = ("epoch", "lr", "train_loss", "train_acc", "clean_loss", "clean_acc", "robust_loss",
              "robust_acc", "av", "ig", "hs", "time_s", "images_per_s")


class StopRequested(Exception):
    """Raised in the training loop when the run is asked to stop (SIGTERM)."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device = {name!r}: CUDA is not available on this machine (use cpu)")
    return dev


def lr_at(tcfg, epoch: int) -> float:
    """Piecewise-constant schedule: lr * gamma ** (number of milestones <= epoch)."""
    return tcfg.lr * tcfg.lr_gamma ** sum(1 for m in tcfg.lr_milestones if epoch >= m)


def _save(obj, path: Path) -> None:
    tmp = path.with_suffix(".pt.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _process_start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


# ------------------------------------------------------------------------ heartbeat
HEARTBEAT_S = 5.0   # seconds between heartbeats; $ADVLC_HEARTBEAT_S overrides


def heartbeat_interval() -> float:
    try:
        return max(0.05, float(os.environ.get("ADVLC_HEARTBEAT_S", HEARTBEAT_S)))
    except ValueError:
        return HEARTBEAT_S


class _RunProcessDir(RunDir):
    """The run directory as its own process sees it: status.json writes from the training
    loop and from the heartbeat thread are serialised (each is read-merge-replace)."""

    def __init__(self, path: Path):
        super().__init__(path)
        self._status_lock = threading.Lock()

    def write_status(self, **updates) -> dict:
        with self._status_lock:
            return super().write_status(**updates)


class _Heartbeat:
    """A daemon thread writing status.json `heartbeat` every `interval` seconds, so a run on
    another host (a Slurm node) is seen alive through setup, evaluation and checkpoints too.
    `training` is set while `_train` runs: only then does SIGTERM interrupt it (main())."""

    training = threading.Event()

    def __init__(self, rd: RunDir, interval: float):
        self.rd, self.interval = rd, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="advlc-heartbeat", daemon=True)

    def start(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.rd.write_status(heartbeat=time.time())
            except Exception:  # noqa: BLE001 - a full disk must not kill training from here
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)


def run(rd: RunDir, store=None, *, on_event: Callable[[str, dict], None] | None = None,
        log: Callable[[str], None] = print) -> str:
    """Train (or resume) the run in `rd`; returns the final state.

    `on_event(kind, info)` receives "start", "batch", "epoch" and "end" events (for a
    progress display); `log` receives the human-readable lines that go to log.txt.
    A heartbeat thread keeps status.json `heartbeat` fresh while it runs. An exit that is
    not an error (SystemExit, e.g. submitit requeueing the job) is recorded as `stopped`
    and re-raised.
    """
    from engine.store.index import Store

    store = store or Store(rd.path.parent.parent)
    rd = rd if isinstance(rd, _RunProcessDir) else _RunProcessDir(rd.path)
    emit = on_event or (lambda kind, info: None)
    pid = os.getpid()
    interval = heartbeat_interval()
    rd.write_status(state="running", pid=pid, pid_create_time=_process_start_time(pid),
                    host=os.uname().nodename, started=time.time(), heartbeat=time.time(),
                    heartbeat_s=interval, error=None, ended=None)
    store.sync(rd)
    beat = _Heartbeat(rd, interval).start()
    try:
        try:
            _Heartbeat.training.set()
            from engine.run.experiments import is_experiment, run_experiment

            (run_experiment if is_experiment(rd) else _train)(rd, store, emit, log)
            state, error = "finished", None
        except (KeyboardInterrupt, StopRequested):
            state, error = "stopped", None
        except UserError as exc:
            state, error = "failed", str(exc)
        except Exception:
            state, error = "failed", "".join(traceback.format_exc().splitlines(True)[-12:])
            log(error)
        finally:
            _Heartbeat.training.clear()
    except BaseException as exc:  # SystemExit and the like: not an error of the run
        beat.stop()
        rd.write_status(state="stopped", error=f"interrupted ({type(exc).__name__})", ended=time.time(),
                        heartbeat=time.time(), pid=None)
        store.sync(rd)
        raise
    beat.stop()
    rd.write_status(state=state, error=error, ended=time.time(), heartbeat=time.time(), pid=None)
    store.sync(rd)
    emit("end", {"state": state, "error": error})
    return state


def _train(rd: RunDir, store, emit, log) -> None:
    from engine.run import provenance
    from engine.nn.datasets import as_float, augment, epoch_batches, load_dataset
    from engine.nn import fastpath
    from engine.nn import swa as S
    from engine.run.epoch_metrics import extra_epoch_metrics
    from engine.nn.metrics.evaluation import evaluate
    from engine.run.final_eval import run_final_evals
    from engine.run import teachers as T
    from engine.nn.methods import StepContext, get_method, lam_at
    from engine.nn.models import build_model

    # ---------------------------------------------------------------- setup
    cfg = rd.run_config()
    t, e = cfg.train, cfg.eval
    device = pick_device(t.device)
    conf = rd.config()
    if "provenance" not in conf or conf["provenance"].get("device") != str(device):
        conf["provenance"] = provenance.collect(device)
        write_json(rd.config_path, conf)
    log(f"advlc run {rd.id}: {conf.get('run', {}).get('preset')} seed {t.seed} on {device}")
    log("config: " + json.dumps({s: v for s, v in cfg.to_dict().items() if s != "preset"}))

    torch.manual_seed(t.seed)
    data = load_dataset(cfg.data, device)
    model = build_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                        image_size=data.image_size).to(device)
    model = fastpath.prepare_model(model, cfg, log=log)  # channels_last / torch.compile when configured
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                                weight_decay=t.weight_decay, nesterov=t.nesterov)
    gen = torch.Generator(device=device).manual_seed(t.seed + 1)
    method = get_method(cfg.method.name)
    n_eval = len(data.test_x) if e.n == 0 else min(e.n, len(data.test_x))
    x_test, y_test = as_float(data.test_x[:n_eval]), data.test_y[:n_eval]
    n_train = len(data.train_x)
    if n_train < t.batch_size:
        raise UserError(f"train.batch_size = {t.batch_size}: larger than the {n_train} training images")
    # teachers (KDSA): frozen eval-mode models from the teacher runs named in config.json;
    # built under a forked RNG so they do not shift the run's random stream
    with torch.random.fork_rng(devices=[]):
        teachers = T.load(conf, cfg, data, device, store)
    extras = {"teachers": teachers} if teachers else {}
    # Consistency draws its second view from the un-augmented batch, as in Tack et al.'s code
    pass_raw_batch = cfg.method.name == "consistency"
    for role in teachers:
        log(f"teacher {role}: run {conf['run']['teachers'][role]['run']} ({conf['run']['teachers'][role]['which']})")
    # SWA: an equal-weight average of the weights at the end of epochs start, start+every, ...
    sw = cfg.swa
    swa = S.SWA(model) if sw.enabled else None
    swa_last_epoch = S.last_update_epoch(sw, t.epochs)
    swa_best_acc = -1.0
    if sw.enabled and swa_last_epoch is None:
        log(f"swa.start = {sw.start} >= train.epochs = {t.epochs}: the SWA model is never updated")

    def bn_batches(epoch: int):
        """Clean (non-adversarial) training batches, augmented as for training, for the BN pass.

        Their own generator (seeded by seed and epoch): SWA leaves the main run's random
        stream, hence its records, exactly as without SWA.
        """
        g = torch.Generator(device=device).manual_seed(t.seed + 1 + 1_000_003 * (epoch + 1))
        idxs = epoch_batches(n_train, t.batch_size, g, device)
        for idx in idxs[:sw.bn_batches] if sw.bn_batches else idxs:
            yield as_float(augment(data.train_x[idx], padding=cfg.data.crop_padding, flip=cfg.data.flip,
                                   generator=g))

    # ---------------------------------------------------------------- resume
    start_epoch, best_acc = 0, -1.0
    last = rd.ckpt("last")
    if last.exists():
        ck = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng_cpu"])
        if device.type == "cuda" and ck.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ck["rng_cuda"], device)
        gen.set_state(ck["rng_data"].to(gen.get_state().device))
        start_epoch, best_acc = ck["epoch"], ck["best_robust_acc"]
        if swa is not None and ck.get("swa") is not None:
            swa.load_state_dict(ck["swa"])
            swa_best_acc = ck["swa"]["best_robust_acc"]
        log(f"resumed from {last} at epoch {start_epoch}")
    db = rd.metrics_db()
    epochs_table = db.table("epochs", cache_size=0)
    epochs_table.remove(lambda r: r["epoch"] >= start_epoch)  # records past the checkpoint
    swa_table = db.table("swa", cache_size=0)
    swa_table.remove(lambda r: r["epoch"] >= start_epoch)

    n_batches = n_train // t.batch_size
    emit("start", {"epochs": t.epochs, "start_epoch": start_epoch, "batches": n_batches, "device": str(device)})
    last_status = 0.0

    # ---------------------------------------------------------------- epochs
    for epoch in range(start_epoch, t.epochs):
        lr = lr_at(t, epoch)
        for g in optimizer.param_groups:
            g["lr"] = lr
        ctx = StepContext(cfg=cfg, epoch=epoch, lam=lam_at(cfg, epoch), extras=extras)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        t0 = time.perf_counter()
        for i, idx in enumerate(epoch_batches(n_train, t.batch_size, gen, device)):
            xb = as_float(augment(data.train_x[idx], padding=cfg.data.crop_padding,
                                  flip=cfg.data.flip, generator=gen))
            yb = data.train_y[idx]
            if pass_raw_batch:
                extras["x_unaugmented"] = data.train_x[idx]
            with fastpath.autocast(cfg, device):  # bf16 when train.amp = "bf16"; evaluation stays fp32
                loss, stats = method.loss(model, xb, yb, ctx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(yb)
            correct += (stats["logits"].detach().argmax(1) == yb).sum()
            seen += len(yb)
            emit("batch", {"epoch": epoch, "batch": i + 1, "batches": n_batches})
            now = time.time()
            if now - last_status > 5.0:
                rd.write_status(heartbeat=now, epoch=epoch, batch=i + 1, batches=n_batches)
                last_status = now
        train_loss, train_correct = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        time_s = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise UserError(f"training diverged at epoch {epoch} (train loss {train_loss}); "
                            f"lower method.lam or train.lr")

        # ------------------------------------------------------------ evaluation
        rec = dict.fromkeys(EPOCH_KEYS)
        rec.update(epoch=epoch, lr=lr, train_loss=train_loss / seen, train_acc=train_correct / seen,
                   time_s=time_s, images_per_s=seen / time_s if time_s > 0 else None)
        if (epoch + 1) % e.every == 0 or epoch + 1 == t.epochs:
            rec.update(evaluate(model, x_test, y_test, eps=e.eps, alpha=e.pgd_alpha, steps=e.pgd_steps,
                                batch_size=e.batch_size, ig=e.ig))
        if e.hs_every and ((epoch + 1) % e.hs_every == 0 or epoch + 1 == t.epochs):
            from engine.nn.metrics.landscape import hs_metric

            rec["hs"], _ = hs_metric(model, x_test, y_test, n=e.hs_samples, batch=e.hs_batch)

        # ------------------------------------------------------------ SWA: update, BN pass, evaluation
        swa_rec = None
        if swa is not None and S.is_update_epoch(sw, epoch):
            ts = time.perf_counter()
            swa.update(model)
            S.update_bn(swa.average, bn_batches(epoch))
            swa.average.eval()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            # same keys as `epochs`; time_s = seconds of the update + BN re-estimation
            swa_rec = dict.fromkeys(EPOCH_KEYS)
            swa_rec.update(epoch=epoch, lr=lr, time_s=time.perf_counter() - ts)
            # evaluated when the main model is, and always after the last update
            if (epoch + 1) % e.every == 0 or epoch + 1 == t.epochs or epoch == swa_last_epoch:
                swa_rec.update(evaluate(swa.average, x_test, y_test, eps=e.eps, alpha=e.pgd_alpha,
                                        steps=e.pgd_steps, batch_size=e.batch_size, ig=e.ig))
            if e.hs_every and ((epoch + 1) % e.hs_every == 0 or epoch + 1 == t.epochs or epoch == swa_last_epoch):
                from engine.nn.metrics.landscape import hs_metric

                swa_rec["hs"], _ = hs_metric(swa.average, x_test, y_test, n=e.hs_samples, batch=e.hs_batch)

        rec.update(extra_epoch_metrics(model, data, cfg, epoch))  # eval.extra (Figs 1, 3, A.2)

        # ------------------------------------------------------------ records, checkpoints
        epochs_table.insert(rec)
        improved = rec["robust_acc"] is not None and rec["robust_acc"] >= best_acc
        if improved:
            best_acc = rec["robust_acc"]
            _save({"model": model.state_dict(), "epoch": epoch, "robust_acc": rec["robust_acc"],
                   "clean_acc": rec["clean_acc"]}, rd.ckpt("best"))
        if swa_rec is not None:
            swa_table.insert(swa_rec)
            swa_ck = {"model": swa.average.state_dict(), "epoch": epoch, "n": swa.n,
                      "robust_acc": swa_rec["robust_acc"], "clean_acc": swa_rec["clean_acc"]}
            if swa_rec["robust_acc"] is not None and swa_rec["robust_acc"] >= swa_best_acc:
                swa_best_acc = swa_rec["robust_acc"]
                _save(swa_ck, rd.ckpt("swa_best"))
            _save(swa_ck, rd.ckpt("swa_end"))
        state = {
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "rng_data": gen.get_state(),
            "best_robust_acc": best_acc,
            "swa": dict(swa.state_dict(), best_robust_acc=swa_best_acc) if swa is not None else None,
        }
        _save(state, rd.ckpt("last"))
        rd.write_status(heartbeat=time.time(), epoch=epoch + 1, batch=0, batches=n_batches)
        store.sync(rd)
        log(format_epoch(rec))
        emit("epoch", rec)
        if swa_rec is not None:
            def f(key):
                return "—" if swa_rec[key] is None else f"{swa_rec[key]:.4g}"

            log(f"  swa {epoch:>3}  n {swa.n:<4} clean {f('clean_acc')}  robust {f('robust_acc')}  "
                f"IG {f('ig')}  HS {f('hs')}  {swa_rec['time_s']:.2f}s")
            emit("swa", swa_rec)

    # ---------------------------------------------------------------- final evaluation (eval.final)
    run_final_evals(rd, data=data, store=store, log=log)


def format_epoch(rec: dict) -> str:
    """One log line per epoch."""
    def f(key, fmt):
        return "—" if rec.get(key) is None else fmt.format(rec[key])

    return (f"epoch {rec['epoch']:>3}  lr {rec['lr']:.4g}  train {rec['train_loss']:.4f}/{rec['train_acc']:.4f}  "
            f"clean {f('clean_acc', '{:.4f}')}  robust {f('robust_acc', '{:.4f}')}  IG {f('ig', '{:.4g}')}  "
            f"HS {f('hs', '{:.4g}')}  {rec['time_s']:.2f}s")


def main(argv: list[str] | None = None) -> int:
    """Entry point of a detached run process: `python -m engine.run.process RUN_DIR`.

    SIGTERM stops the run cleanly (state `stopped`, last.pt kept) while it trains; one that
    arrives as the run is already ending is ignored, so the final state is always written.
    On exit the process gives back its GPU lease ($ADVLC_LEASE, set by the GPU queue).
    """
    from engine.launch.gpuqueue import release_own_lease
    from engine.store.index import Store

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m engine.run.process RUN_DIR", file=sys.stderr)
        return 2
    rd = RunDir(Path(argv[0]).resolve())
    if not rd.exists():
        print(f"engine.run.process: {rd.path}: not a run directory (no config.json)", file=sys.stderr)
        return 2

    def on_sigterm(signum, frame):
        if _Heartbeat.training.is_set():
            _Heartbeat.training.clear()      # once: the stop itself must not be interrupted
            raise StopRequested()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        state = run(rd, Store(rd.path.parent.parent), log=lambda line: print(line, flush=True))
    finally:
        release_own_lease()
        import gc

        gc.freeze()   # the interpreter's final collection of torch's objects takes ~1.5 s otherwise
    return 0 if state in ("finished", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
