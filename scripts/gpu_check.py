"""The Python steps of scripts/gpu-check.sh (run with the project's .venv python, from the checkout).

    gpu_check.py env OUT [--smoke]                      device, driver, versions, commit -> OUT/env.json
    gpu_check.py make-cifar ROOT --train N --test M     a random CIFAR-10 folder in torchvision's on-disk
                                                        format (ROOT/cifar-10-batches-py/) -> OUT/data.json
    gpu_check.py train OUT --home H --preset P [--set k=v]...
                                                        `advlc run P --set ...` in this process (the run
                                                        goes through the store in H), then its epoch
                                                        records and the peak GPU memory -> OUT/train.json
    gpu_check.py pytest-summary XML OUT/pytest.json     counts and outcomes of a JUnit XML report
    gpu_check.py status OUT STEP STATUS RC SECONDS LIMIT EXPECTED COMMAND [NOTE]
                                                        one line of OUT/status.jsonl
    gpu_check.py report OUT                             summary.json, summary.md, one .md per result
                                                        and gpu-check.md (what `advlc bench fold OUT`
                                                        puts into docs/BENCHMARKS.md)

Nothing here downloads anything. Only `env` and `train` load torch.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import resource
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _write(path: Path, doc) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------ env


def _nvidia_smi() -> dict:
    q = "index,name,driver_version,memory.total,compute_cap,clocks.max.sm,power.limit"
    try:
        p = subprocess.run(
            ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip()[:500]}
    keys = q.split(",")
    return {
        "gpus": [
            dict(zip(keys, (v.strip() for v in line.split(",")))) for line in p.stdout.splitlines() if line.strip()
        ]
    }


def cmd_env(a) -> int:
    import torch

    from engine.run.provenance import code_version

    cuda = torch.cuda.is_available()
    devices = []
    for i in range(torch.cuda.device_count() if cuda else 0):
        pr = torch.cuda.get_device_properties(i)
        devices.append(
            {
                "index": i,
                "name": pr.name,
                "total_memory_bytes": pr.total_memory,
                "capability": f"{pr.major}.{pr.minor}",
                "multiprocessors": pr.multi_processor_count,
            }
        )
    code = code_version()
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "smoke": a.smoke,
        "host": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "devices": devices,
        "device_name": devices[0]["name"] if devices else f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "nvidia_smi": _nvidia_smi() if shutil.which("nvidia-smi") else {"error": "nvidia-smi not found"},
        "commit": code["commit"],
        "dirty": code["dirty"],
        "version": code["version"],
    }
    _write(Path(a.out) / "env.json", doc)
    print(json.dumps({k: doc[k] for k in ("device_name", "torch", "cuda", "cuda_available")}))
    if not cuda and not a.smoke:
        print("gpu-check: CUDA is not available here (use --smoke for the CPU dry run)", file=sys.stderr)
        return 3
    return 0


# ------------------------------------------------------------------------------ data

LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def make_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """ROOT/cifar-10-batches-py/ as the real archive has it: data_batch_1..5 and test_batch (python-2
    pickles with bytes keys; `data` uint8 rows of 3072 = 3 x 32 x 32 channel-major, `labels` ints) and
    batches.meta; images uniform random, labels uniform over the 10 classes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    sizes = [n_train // 5 + (1 if i < n_train % 5 else 0) for i in range(5)]

    def dump(name: str, n: int, label: bytes) -> None:
        doc = {
            b"batch_label": label,
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"filenames": [f"random_{i:05d}.png".encode() for i in range(n)],
        }
        with open(base / name, "wb") as f:
            pickle.dump(doc, f, protocol=2)

    for i, n in enumerate(sizes, 1):
        dump(f"data_batch_{i}", n, f"training batch {i} of 5".encode())
    dump("test_batch", n_test, b"testing batch 1 of 1")
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": LABEL_NAMES, b"num_cases_per_batch": max(sizes), b"num_vis": 3072}, f, protocol=2)
    return {
        "root": str(root),
        "folder": str(base),
        "n_train": n_train,
        "n_test": n_test,
        "seed": seed,
        "bytes": sum(p.stat().st_size for p in base.iterdir()),
    }


def cmd_make_cifar(a) -> int:
    t0 = time.perf_counter()
    doc = make_cifar10(Path(a.root), a.train, a.test, a.seed)
    doc["seconds"] = time.perf_counter() - t0
    if a.out:
        _write(Path(a.out) / "data.json", doc)
    print(json.dumps(doc))
    return 0


# ------------------------------------------------------------------------------ train


def _run_records(home: Path, rid: str) -> dict:
    from engine.store.index import Store

    rd = Store(home).get(rid)
    st = rd.status()
    cfg = rd.config_json()
    epochs = [dict(r) for r in rd.epochs()]
    starts = rd.runtime().starts
    prov = starts[-1] if starts else None
    return {
        "run": rd.id,
        "state": st.state,
        "error": st.error,
        "path": str(rd.path),
        "label": cfg.get("run", {}).get("label") if isinstance(cfg.get("run"), dict) else None,
        "model": cfg["model"]["arch"],
        "batch_size": cfg["train"]["batch_size"],
        "device": prov.device if prov else None,
        "device_name": prov.device_name if prov else None,
        "fast_path": {k: cfg["train"].get(k) for k in ("amp", "channels_last", "compile")},
        "epochs": epochs,
    }


def cmd_train(a) -> int:
    import torch

    from tui.cli import main

    home, out = Path(a.home), Path(a.out)
    argv = ["--home", str(home), "run", a.preset]
    for s in a.set:
        argv += ["--set", s]
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        main(argv)
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    wall = time.perf_counter() - t0
    doc: dict = {
        "command": "advlc " + " ".join(argv[2:]),
        "preset": a.preset,
        "overrides": a.set,
        "rc": rc,
        "wall_s": wall,
    }
    if cuda:
        doc["peak_gpu_memory_allocated_bytes"] = torch.cuda.max_memory_allocated()
        doc["peak_gpu_memory_reserved_bytes"] = torch.cuda.max_memory_reserved()
        doc["gpu_memory_total_bytes"] = torch.cuda.get_device_properties(0).total_memory
    else:
        doc["peak_gpu_memory_allocated_bytes"] = doc["peak_gpu_memory_reserved_bytes"] = None
    doc["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    from engine.store.index import Store

    rows = Store(home).runs() if home.exists() else []
    if rows:
        doc.update(_run_records(home, rows[-1]["id"]))
        keep = out / "train-run"
        keep.mkdir(exist_ok=True)
        for name in ("config.json", "runtime.json", "status.json", "metrics.json", "log.txt"):
            src = Path(doc["path"]) / name
            if src.exists():
                shutil.copy2(src, keep / name)
    recs = [r for r in doc.get("epochs", []) if r.get("time_s")]
    if recs:
        last = recs[-1]
        doc["summary"] = {
            "epochs": len(recs),
            "last_epoch_time_s": last["time_s"],
            "mean_epoch_time_s": sum(r["time_s"] for r in recs) / len(recs),
            "last_images_per_s": last.get("images_per_s"),
            "last_eval_time_s": last.get("eval_time_s"),
        }
    _write(out / "train.json", doc)
    print(json.dumps({k: doc.get(k) for k in ("run", "state", "rc", "summary", "peak_gpu_memory_allocated_bytes")}))
    return rc if rc else (0 if doc.get("state") == "finished" else 1)


# ------------------------------------------------------------------------------ pytest


def cmd_pytest_summary(a) -> int:
    doc: dict = {"junit": str(a.xml), "tests": []}
    try:
        root = ET.parse(a.xml).getroot()
    except (OSError, ET.ParseError) as exc:
        doc["error"] = f"{type(exc).__name__}: {exc}"
        _write(Path(a.out), doc)
        return 0
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for tc in root.iter("testcase"):
        outcome = "passed"
        msg = ""
        for child in tc:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                msg = " ".join((child.get("message") or "").split())[:300]
        counts[outcome] += 1
        doc["tests"].append(
            {
                "id": f"{tc.get('classname')}::{tc.get('name')}",
                "outcome": outcome,
                "seconds": float(tc.get("time") or 0),
                "message": msg,
            }
        )
    doc.update(counts, total=sum(counts.values()))
    _write(Path(a.out), doc)
    return 0


# ------------------------------------------------------------------------------ status, report


def cmd_status(a) -> int:
    line = {
        "step": a.step,
        "status": a.status,
        "rc": a.rc,
        "seconds": round(a.seconds, 1),
        "limit_s": a.limit,
        "expected_gpu_s": a.expected,
        "command": a.command,
        "note": a.note or None,
        "log": f"logs/{a.step}.log",
    }
    with open(Path(a.out) / "status.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    return 0


def cmd_report(a) -> int:
    from engine.bench import markdown as md

    out = Path(a.out)
    d = md.load_gpu_check(out)
    renders = {
        "epoch": md.markdown_epoch,
        "epoch_compile": md.markdown_epoch,
        "hs": md.markdown_hs,
        "step_cost": md.markdown_steps,
        "train": md.markdown_train,
    }
    for name, render in renders.items():
        r = d.get(name)
        if isinstance(r, dict) and "unreadable" not in r:
            try:
                (out / f"{name}.md").write_text(render(r, r.get("command", "")) if name != "train" else render(r))
            except (KeyError, TypeError, ValueError) as exc:  # a partial result: said, not fatal
                (out / f"{name}.md").write_text(f"cannot render {name}.json: {type(exc).__name__}: {exc}\n")
    body = md.markdown_gpu_check(d)
    (out / "gpu-check.md").write_text(body)
    (out / "summary.md").write_text(f"# GPU check, {out.name}\n\n{body}")
    _write(
        out / "summary.json",
        {
            "steps": d.get("status", []),
            "ok": all(s["status"] == "ok" for s in d.get("status", [])),
            "files": sorted(p.name for p in out.iterdir() if p.is_file()),
        },
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_check.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("env")
    p.add_argument("out")
    p.add_argument("--smoke", action="store_true")
    p.set_defaults(fn=cmd_env)
    p = sub.add_parser("make-cifar")
    p.add_argument("root")
    p.add_argument("--train", type=int, default=50_000)
    p.add_argument("--test", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    p.set_defaults(fn=cmd_make_cifar)
    p = sub.add_parser("train")
    p.add_argument("out")
    p.add_argument("--home", required=True)
    p.add_argument("--preset", required=True)
    p.add_argument("--set", action="append", default=[])
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("pytest-summary")
    p.add_argument("xml")
    p.add_argument("out")
    p.set_defaults(fn=cmd_pytest_summary)
    p = sub.add_parser("status")
    for k in ("out", "step", "status"):
        p.add_argument(k)
    p.add_argument("rc", type=int)
    p.add_argument("seconds", type=float)
    p.add_argument("limit", type=int)
    p.add_argument("expected", type=int)
    p.add_argument("command")
    p.add_argument("note", nargs="?", default="")
    p.set_defaults(fn=cmd_status)
    p = sub.add_parser("report")
    p.add_argument("out")
    p.set_defaults(fn=cmd_report)
    a = ap.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
