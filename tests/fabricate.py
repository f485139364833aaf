"""Synthetic runs: run directories in exactly the format a training process writes, without training.

For tests and for the app benchmark (tests/app_bench.py), never shipped in the wheel: `fabricate_run` writes one run
(config.json, status.json in any state, metrics.json as TinyDB tables, log.txt) and
`build_store` a whole store of them plus its index. The records follow a plausible robust
overfitting curve (`synthetic_epoch`). Statuses are written whole, as they would be found on
disk, rather than through state transitions.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

from engine.store.files import write_json
from engine.store.index import INDEX_TABLE, Store
from engine.store.rundir import RunDir
from engine.store.summary import summarize

PRESETS = (
    "paper/table1/fgsm_n",
    "paper/table1/fgsm_n-advlc",
    "paper/table1/pgd10",
    "paper/table1/pgd10-advlc",
    "quick/digits-fgsm_n",
    "quick/digits-fgsm_n-advlc",
)


def synthetic_epoch(epoch: int, total: int, rng: random.Random, *, advlc: bool, hs_every: int = 10) -> dict:
    """A plausible epoch record: robust accuracy peaks at the first lr decay, then (without AdvLC) falls."""
    d1, d2 = int(total * 0.5), int(total * 0.75)
    lr = 0.1 * (0.1 ** ((epoch >= d1) + (epoch >= d2)))
    prog = 1 - math.exp(-4 * (epoch + 1) / total)
    clean = 0.35 + 0.45 * prog + (0.05 if epoch >= d1 else 0) + rng.gauss(0, 0.005)
    robust = 0.20 + 0.22 * prog + (0.06 if epoch >= d1 else 0)
    if epoch > d1 and not advlc:
        robust -= 0.08 * (epoch - d1) / (total - d1)
    robust += rng.gauss(0, 0.004)
    train = min(0.99, 0.3 + 0.5 * prog + (0.25 * (epoch - d1) / (total - d1) if epoch > d1 and not advlc else 0))
    clean_loss = 2.3 * (1 - clean)
    robust_loss = 2.3 * (1 - robust) + 0.2
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": 2.3 * (1 - train),
        "train_acc": train,
        "clean_loss": clean_loss,
        "clean_acc": clean,
        "robust_loss": robust_loss,
        "robust_acc": robust,
        "av": robust_loss - clean_loss,
        "ig": (20 if advlc else 48) * (1 + rng.gauss(0, 0.02)),
        "hs": (0.05 if advlc else 0.23) if (epoch + 1) % hs_every == 0 else None,
        "time_s": 20.0 + rng.gauss(0, 0.2),
        "images_per_s": 2500.0,
    }


def fabricate_run(
    store: Store,
    rid: str,
    *,
    preset: str,
    seed: int,
    group: str | None,
    total: int,
    done: int,
    state: str,
    created: float,
    advlc: bool | None = None,
    swa: bool = False,
    epochs_override: list[dict] | None = None,
) -> RunDir:
    """One run directory in the training process's format (no training)."""
    advlc = ("advlc" in preset) if advlc is None else advlc
    method = "advlc" if advlc else preset.rsplit("/", 1)[-1].split("-")[-1].replace("digits", "fgsm_n")
    attack = "pgd" if "pgd" in preset else "fgsm_n"
    label = f"{attack}+advlc" if advlc else attack
    rd = store.run_dir(rid)
    rd.ckpt_dir.mkdir(parents=True, exist_ok=True)
    cfg = {
        "data": {"dataset": "cifar10" if preset.startswith("paper") else "digits"},
        "model": {"arch": "preact_resnet18"},
        "attack": {"name": attack, "eps": 8 / 255},
        "method": {"name": method, "lam": 0.3 if advlc else 0.0},
        "train": {"epochs": total, "batch_size": 100, "seed": seed, "device": "cpu"},
        "eval": {"every": 1},
        "swa": {"enabled": swa},
        "run": {
            "preset": preset,
            "label": label,
            "seed": seed,
            "group": group,
            "point": {},
            "created": created,
            "id": rid,
        },
        "provenance": {"commit": "3e1c9a2f00", "dirty": False, "torch": "2.x", "device": "cpu", "host": "bench"},
    }
    write_json(rd.config_path, cfg)
    rng = random.Random(hash((rid, seed)) & 0xFFFF)
    recs = (
        epochs_override
        if epochs_override is not None
        else [synthetic_epoch(e, total, rng, advlc=advlc) for e in range(done)]
    )
    tables = {"epochs": {str(i + 1): r for i, r in enumerate(recs)}}
    if swa:
        tables["swa"] = {
            str(i + 1): dict(r, robust_acc=r["robust_acc"] + 0.01, clean_acc=r["clean_acc"] - 0.01)
            for i, r in enumerate(recs)
            if r["epoch"] >= total // 4
        }
    write_json(rd.metrics_path, tables)
    st = {"state": state, "created": created, "heartbeat": created + 20 * done, "epoch": len(recs)}
    if state == "running":  # "on another host" with a fresh heartbeat, so reconcile keeps it running
        st.update(pid=None, host="bench-node", heartbeat=time.time(), heartbeat_s=3600, batch=100, batches=500)
    write_json(rd.status_path, st)
    rd.log_path.write_text("".join(f"epoch {r['epoch']:>3}  robust {r['robust_acc']:.4f}\n" for r in recs))
    return rd


def build_store(home: Path, *, n_runs: int = 1000, n_epochs: int = 200, n_running: int = 8, seeds: int = 5) -> Store:
    """A store of `n_runs` runs of `n_epochs` epochs (the last `n_running` half-way and running)."""
    store = Store(home).ensure()
    t0 = time.time() - n_runs * 60
    docs = []
    for i in range(n_runs):
        running = i >= n_runs - n_running
        preset = PRESETS[(i // seeds) % len(PRESETS)]
        rd = fabricate_run(
            store,
            f"{i:08x}",
            preset=preset,
            seed=i % seeds,
            group=f"g{i // seeds:05d}",
            total=n_epochs,
            done=n_epochs // 2 if running else n_epochs,
            state="running" if running else "finished",
            created=t0 + 60 * i,
        )
        docs.append(summarize(rd))
    write_json(store.index_path, {INDEX_TABLE: {str(i + 1): d.to_json() for i, d in enumerate(docs)}})
    return store
