"""The run process: train one run directory from its config.json, end to end.

    python -m engine.train RUN_DIR [--home HOME]

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
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from engine.errors import UserError
from engine.rundir import RunDir, write_json

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


def run(rd: RunDir, store=None, *, on_event: Callable[[str, dict], None] | None = None,
        log: Callable[[str], None] = print) -> str:
    """Train (or resume) the run in `rd`; returns the final state.

    `on_event(kind, info)` receives "start", "batch", "epoch" and "end" events (for a
    progress display); `log` receives the human-readable lines that go to log.txt.
    """
    from engine.store import Store

    store = store or Store(rd.path.parent.parent)
    emit = on_event or (lambda kind, info: None)
    pid = os.getpid()
    rd.write_status(state="running", pid=pid, pid_create_time=_process_start_time(pid),
                    host=os.uname().nodename, started=time.time(), heartbeat=time.time(),
                    error=None, ended=None)
    store.sync(rd)
    try:
        _train(rd, store, emit, log)
        state, error = "finished", None
    except (KeyboardInterrupt, StopRequested):
        state, error = "stopped", None
    except UserError as exc:
        state, error = "failed", str(exc)
    except Exception:
        state, error = "failed", "".join(traceback.format_exc().splitlines(True)[-12:])
        log(error)
    rd.write_status(state=state, error=error, ended=time.time(), heartbeat=time.time(), pid=None)
    store.sync(rd)
    emit("end", {"state": state, "error": error})
    return state


def _train(rd: RunDir, store, emit, log) -> None:
    from engine import provenance
    from engine.data import as_float, augment, epoch_batches, load_dataset
    from engine.evaluate import evaluate
    from engine.methods import StepContext, get_method, lam_at
    from engine.models import build_model

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
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                                weight_decay=t.weight_decay, nesterov=t.nesterov)
    gen = torch.Generator(device=device).manual_seed(t.seed + 1)
    method = get_method(cfg.method.name)
    n_eval = len(data.test_x) if e.n == 0 else min(e.n, len(data.test_x))
    x_test, y_test = as_float(data.test_x[:n_eval]), data.test_y[:n_eval]
    n_train = len(data.train_x)
    if n_train < t.batch_size:
        raise UserError(f"train.batch_size = {t.batch_size}: larger than the {n_train} training images")

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
        log(f"resumed from {last} at epoch {start_epoch}")
    db = rd.metrics_db()
    epochs_table = db.table("epochs", cache_size=0)
    epochs_table.remove(lambda r: r["epoch"] >= start_epoch)  # records past the checkpoint

    n_batches = n_train // t.batch_size
    emit("start", {"epochs": t.epochs, "start_epoch": start_epoch, "batches": n_batches, "device": str(device)})
    last_status = 0.0

    # ---------------------------------------------------------------- epochs
    for epoch in range(start_epoch, t.epochs):
        lr = lr_at(t, epoch)
        for g in optimizer.param_groups:
            g["lr"] = lr
        ctx = StepContext(cfg=cfg, epoch=epoch, lam=lam_at(cfg, epoch))
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        t0 = time.perf_counter()
        for i, idx in enumerate(epoch_batches(n_train, t.batch_size, gen, device)):
            xb = as_float(augment(data.train_x[idx], padding=cfg.data.crop_padding,
                                  flip=cfg.data.flip, generator=gen))
            yb = data.train_y[idx]
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
            from engine.landscape import hs_metric

            rec["hs"], _ = hs_metric(model, x_test, y_test, n=e.hs_samples, batch=e.hs_batch)

        # ------------------------------------------------------------ records, checkpoints
        epochs_table.insert(rec)
        improved = rec["robust_acc"] is not None and rec["robust_acc"] >= best_acc
        if improved:
            best_acc = rec["robust_acc"]
            _save({"model": model.state_dict(), "epoch": epoch, "robust_acc": rec["robust_acc"],
                   "clean_acc": rec["clean_acc"]}, rd.ckpt("best"))
        state = {
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "rng_data": gen.get_state(),
            "best_robust_acc": best_acc,
        }
        _save(state, rd.ckpt("last"))
        rd.write_status(heartbeat=time.time(), epoch=epoch + 1, batch=0, batches=n_batches)
        store.sync(rd)
        log(format_epoch(rec))
        emit("epoch", rec)


def format_epoch(rec: dict) -> str:
    """One log line per epoch."""
    def f(key, fmt):
        return "—" if rec.get(key) is None else fmt.format(rec[key])

    return (f"epoch {rec['epoch']:>3}  lr {rec['lr']:.4g}  train {rec['train_loss']:.4f}/{rec['train_acc']:.4f}  "
            f"clean {f('clean_acc', '{:.4f}')}  robust {f('robust_acc', '{:.4f}')}  IG {f('ig', '{:.4g}')}  "
            f"HS {f('hs', '{:.4g}')}  {rec['time_s']:.2f}s")


def _on_sigterm(signum, frame):
    raise StopRequested()


def main(argv: list[str] | None = None) -> int:
    """Entry point of a detached run process: `python -m engine.train RUN_DIR`."""
    from engine.store import Store

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m engine.train RUN_DIR", file=sys.stderr)
        return 2
    rd = RunDir(Path(argv[0]).resolve())
    if not rd.exists():
        print(f"engine.train: {rd.path}: not a run directory (no config.json)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    state = run(rd, Store(rd.path.parent.parent), log=lambda line: print(line, flush=True))
    return 0 if state in ("finished", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
