"""`advlc bench hs`: the HS (input-Hessian spectrum) methods of engine.nn.metrics.hessian, timed and checked.

`benchmark_hs` times "exact", "power" and "lanczos" over the same batches in one process
and checks them: exact against a dense `torch.autograd.functional.hessian` on one small
batch, power/lanczos against exact. Returns plain JSON-able dicts; prints nothing.
"""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F

from engine.bench.common import (
    Progress,
    bench_model,
    environment,
    resolve_device,
    say,
    sync,
)
from engine.config.schema import RunConfig, from_json, label, resolve
from engine.errors import UserError
from engine.nn.attacks import model_mode
from engine.nn.datasets import as_float, load_dataset
from engine.nn.methods import get_method
from engine.nn.metrics.hessian import hessian_spectrum_with_method
from engine.nn.models import build_model
from engine.run.checkpoints import load
from engine.run.loop import train
from engine.store.index import Store

__all__ = ["bench_hs", "benchmark_hs", "topk_rel_err"]


def topk_rel_err(a: torch.Tensor, ref: torch.Tensor, floor: float = 1e-6) -> dict:
    """Errors of eigenvalues `a` against `ref` (same order, descending).

    max_rel: max_i |a_i - ref_i| / |ref_i| over the i with |ref_i| > floor * max|ref| (zero
    eigenvalues, e.g. past a small batch's rank, would make a relative error meaningless);
    max_abs_scaled: max_i |a_i - ref_i| / max|ref| over all i.
    """
    a = a.detach().double().cpu()
    ref = ref.detach().double().cpu()
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    diff = (a - ref).abs()
    if scale == 0.0:
        return {
            "max_rel": float(diff.max()) if diff.numel() else 0.0,
            "max_abs_scaled": float(diff.max()) if diff.numel() else 0.0,
        }
    keep = ref.abs() > floor * scale
    max_rel = float((diff[keep] / ref[keep].abs()).max()) if bool(keep.any()) else 0.0
    return {"max_rel": max_rel, "max_abs_scaled": float(diff.max()) / scale}


def _dense_topk(model, x, y, k: int) -> torch.Tensor:
    """Top-k eigenvalues of the dense Hessian of the batch-mean CE w.r.t. x (tiny x only)."""
    with model_mode(model, False):
        H = torch.autograd.functional.hessian(lambda z: F.cross_entropy(model(z), y), x.detach())
    d = x.numel()
    ev = torch.linalg.eigvalsh(H.reshape(d, d)).flip(0)
    top = ev[:k]
    if top.numel() < k:
        top = torch.cat([top, top.new_zeros(k - top.numel())])
    return top


def _dense_checks(model, xs, ys, k: int, methods, exact: bool, seed: int) -> dict:
    """Each method's top-k on a float64 copy (exact also in the model's dtype) against the dense Hessian of xs."""
    val = {}
    xs = xs.detach()
    m64 = copy.deepcopy(model).double()
    x64 = xs.double()
    dense = _dense_topk(m64, x64, ys, k)
    if exact:
        ex = hessian_spectrum_with_method(model, xs, ys, k, "exact")[0]
        val["exact_vs_dense"] = topk_rel_err(ex, dense)
        ex64 = hessian_spectrum_with_method(m64, x64, ys, k, "exact")[0]
        val["exact64_vs_dense"] = topk_rel_err(ex64, dense)
    for m in ("power", "lanczos"):
        if m in methods:
            v64 = hessian_spectrum_with_method(m64, x64, ys, k, m, seed=seed)[0]
            val[f"{m}_vs_dense"] = topk_rel_err(v64, dense)
    return val


def benchmark_hs(
    model,
    x,
    y,
    *,
    batch: int = 100,
    k: int = 20,
    methods=("exact", "power", "lanczos"),
    repeats: int = 1,
    dense_samples: int = 2,
    seed: int = 0,
) -> dict:
    """Time and cross-check the HS methods on the given samples (full batches of `batch`).

    Returns {
      "n_samples", "batch", "n_batches", "k", "device", "dtype", "repeats",
      "methods": {name: {"sec_per_batch", "hs", "error" (str, when the method failed)}},
      "speedup_exact_vs_power", "speedup_exact_vs_lanczos"   (time(other) / time(exact)),
      "validation": {
        "dense_samples", "dense_dim",
        "exact_vs_dense":        errors of exact (model's dtype) vs the dense Hessian,
        "exact64_vs_dense":      errors of exact on a float64 copy vs the dense Hessian,
        "<m>_vs_dense":          same for power / lanczos (float64 copy),
        "<m>_vs_exact":          worst errors over the benchmark batches of power / lanczos
                                 vs exact (model's dtype)
      }}
    The dense Hessian is computed on ONE batch of the first `dense_samples` samples, on a
    float64 copy of the model (0: no dense check; one CIFAR image is a 3072 x 3072 Hessian). Errors use `topk_rel_err`. Exact needs a piecewise-linear
    model; otherwise it is reported as failed and the comparisons use what is available.
    """
    n = len(x)
    if n == 0:
        raise ValueError("benchmark_hs: empty input")
    if n >= batch:
        slices = [slice(i, i + batch) for i in range(0, n - batch + 1, batch)]
    else:
        slices = [slice(0, n)]
    dev = x.device
    out: dict = {
        "n_samples": sum(s.stop - s.start for s in slices),
        "batch": batch,
        "n_batches": len(slices),
        "k": k,
        "device": str(dev),
        "dtype": str(x.dtype).replace("torch.", ""),
        "repeats": repeats,
        "methods": {},
    }
    spectra: dict[str, list[torch.Tensor]] = {}
    for m in methods:
        try:
            # warm-up on the first batch (allocator, kernels) outside the timing
            hessian_spectrum_with_method(model, x[slices[0]], y[slices[0]], k, m, seed=seed)
            sync(dev)
            vals = []
            t0 = time.perf_counter()
            for _ in range(repeats):
                gen = torch.Generator().manual_seed(seed)
                vals = [hessian_spectrum_with_method(model, x[s], y[s], k, m, generator=gen)[0] for s in slices]
            sync(dev)
            dt = (time.perf_counter() - t0) / (repeats * len(slices))
        except ValueError as e:
            out["methods"][m] = {"error": str(e)}
            continue
        spectra[m] = vals
        hs = float(torch.stack([v.abs().double().mean() for v in vals]).mean())
        out["methods"][m] = {"sec_per_batch": dt, "hs": hs}

    t_exact = out["methods"].get("exact", {}).get("sec_per_batch")
    for m in ("power", "lanczos"):
        t = out["methods"].get(m, {}).get("sec_per_batch")
        out[f"speedup_exact_vs_{m}"] = (t / t_exact) if (t and t_exact) else None

    # validation (dense_samples = 0: no dense Hessian)
    ns = min(dense_samples, n)
    val: dict = _dense_checks(model, x[:ns], y[:ns], k, methods, "exact" in spectra, seed) if ns > 0 else {}
    val["dense_samples"] = ns
    val["dense_dim"] = x[:ns].numel()
    for m in ("power", "lanczos"):
        if m in spectra and "exact" in spectra:
            errs = [topk_rel_err(a, b) for a, b in zip(spectra[m], spectra["exact"])]
            val[f"{m}_vs_exact"] = {
                "max_rel": max(e["max_rel"] for e in errs),
                "max_abs_scaled": max(e["max_abs_scaled"] for e in errs),
                "mean_max_rel": sum(e["max_rel"] for e in errs) / len(errs),
            }
    out["validation"] = val
    return out


def _train_digits_model(epochs: int, device: torch.device, seed: int):
    """cnn_small trained `epochs` epochs on digits by the training loop (standard CE, SGD 0.05,
    momentum 0.9, batch 50, no augmentation)."""
    cfg = RunConfig()
    cfg.data.crop_padding, cfg.data.flip = 0, False
    t = cfg.train
    t.epochs, t.batch_size, t.lr, t.lr_milestones, t.momentum, t.weight_decay = epochs, 50, 0.05, [], 0.9, 5e-4
    resolve(cfg, "bench hs")
    data = load_dataset(cfg.data, device)
    model = bench_model("cnn_small", device, seed, in_channels=1, image_size=8)
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    train(
        model,
        opt,
        get_method("standard"),
        data,
        cfg,
        device=device,
        generator=torch.Generator(device=device).manual_seed(seed),
    )
    model.eval()
    with torch.no_grad():
        acc = float((model(data.test_x).argmax(1) == data.test_y).float().mean())
    return model, data, {"source": f"digits cnn_small, {epochs} epochs of standard training", "test_acc": acc}


def _run_model(run: str, home, ckpt: str, device: torch.device):

    rd = Store(home).get(run)
    cfg = from_json(rd.config_json())
    name = {"end": "last", "last": "last"}.get(ckpt, ckpt)
    path = rd.ckpt(name)
    if not path.exists():
        raise UserError(f"run {rd.id}: no checkpoint {path.name} (use --ckpt best|last)")
    data = load_dataset(cfg.data, device)
    model = build_model(
        cfg.model, num_classes=data.num_classes, in_channels=data.in_channels, image_size=data.image_size
    ).to(device)
    model.load_state_dict(load(path, device)["model"])
    return model.eval(), data, {"source": f"run {rd.id} ({label(cfg)}), {path.name}"}


def bench_hs(
    *,
    run: str | None = None,
    home=None,
    ckpt: str = "best",
    device: str = "cpu",
    n: int = 2000,
    power_n: int | None = None,
    epochs: int = 5,
    seed: int = 0,
    dense_samples: int = 2,
    progress: Progress = None,
) -> dict:
    """HS by the exact formula vs power iteration vs Lanczos (`engine.bench.hs.benchmark_hs`)
    on `n` samples of batch 100, with the validation errors.

    The model: a run's checkpoint (`run`, `ckpt`) with its own data, or cnn_small trained
    `epochs` epochs on digits. Samples: test images then training images (digits has 1797
    in all; up to `n` are used, cycled when n is larger, which only affects timing).
    Power iteration is timed on the first `power_n` samples (default all n; it is the slow
    one: ~2 s per batch of 100 digits on one CPU thread) against exact on the same samples;
    exact and Lanczos on all n. The HS of every method is reported on the samples it ran on,
    with exact's on the power samples beside power's. `dense_samples`: the dense-Hessian check's
    batch (`benchmark_hs`; 0 = none).
    """
    dev = resolve_device(device)
    if run:
        say(progress, f"loading run {run}")
        model, data, source = _run_model(run, home, ckpt, dev)
    else:
        say(progress, f"training cnn_small on digits for {epochs} epochs")
        model, data, source = _train_digits_model(epochs, dev, seed)
    x = torch.cat([data.test_x, data.train_x])
    y = torch.cat([data.test_y, data.train_y])
    distinct = len(x)
    if n > len(x):
        reps = math.ceil(n / len(x))
        x, y = x.repeat(reps, 1, 1, 1), y.repeat(reps)
    x, y = as_float(x[:n]), y[:n]
    power_n = min(n, power_n or n)
    say(progress, f"exact and lanczos on {n} samples")
    a = benchmark_hs(model, x, y, batch=100, methods=("exact", "lanczos"), seed=seed, dense_samples=dense_samples)
    say(progress, f"exact and power on {power_n} samples")
    b = benchmark_hs(
        model, x[:power_n], y[:power_n], batch=100, methods=("exact", "power"), seed=seed, dense_samples=dense_samples
    )
    sec = {
        "exact": a["methods"].get("exact", {}).get("sec_per_batch"),
        "lanczos": a["methods"].get("lanczos", {}).get("sec_per_batch"),
        "power": b["methods"].get("power", {}).get("sec_per_batch"),
        "exact_on_power_samples": b["methods"].get("exact", {}).get("sec_per_batch"),
    }
    val = dict(a["validation"])
    for k in ("power_vs_dense", "power_vs_exact"):
        if k in b["validation"]:
            val[k] = b["validation"][k]
    sp_power = b.get("speedup_exact_vs_power")
    goals = {
        "exact_100x_faster_than_power": None if sp_power is None else sp_power >= 100,
        "exact_vs_dense_within_1e-3": (val.get("exact_vs_dense", {}).get("max_rel", math.inf) <= 1e-3)
        if "exact_vs_dense" in val
        else None,
        "power_vs_exact_within_1e-3": (val.get("power_vs_exact", {}).get("max_rel", math.inf) <= 1e-3)
        if "power_vs_exact" in val
        else None,
    }
    return {
        "kind": "hs",
        **environment(dev),
        "model": source,
        "n_samples": a["n_samples"],
        "distinct_samples": min(distinct, n),
        "power_samples": b["n_samples"],
        "batch": 100,
        "k": 20,
        "sec_per_batch": sec,
        "speedup_exact_vs_power": sp_power,
        "speedup_exact_vs_lanczos": a.get("speedup_exact_vs_lanczos"),
        "hs": {m: r.get("hs") for m, r in a["methods"].items()}
        | {
            "power": b["methods"].get("power", {}).get("hs"),
            "exact_on_power_samples": b["methods"].get("exact", {}).get("hs"),
        },
        "errors": {m: r2["error"] for res in (a, b) for m, r2 in res["methods"].items() if "error" in r2},
        "validation": val,
        "goals": goals,
    }
