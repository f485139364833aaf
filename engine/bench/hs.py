"""Benchmark and validation of the HS (input-Hessian spectrum) methods of engine.nn.metrics.landscape.

`benchmark_hs` times "exact", "power" and "lanczos" over the same batches in one process
and checks them: exact against a dense `torch.autograd.functional.hessian` on one small
batch, power/lanczos against exact. Returns plain JSON-able dicts; prints nothing.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F

from engine.nn.attacks import model_mode
from engine.nn.metrics.landscape import hessian_spectrum_with_method

__all__ = ["benchmark_hs", "topk_rel_err"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        return {"max_rel": float(diff.max()) if diff.numel() else 0.0,
                "max_abs_scaled": float(diff.max()) if diff.numel() else 0.0}
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


def benchmark_hs(model, x, y, *, batch: int = 100, k: int = 20,
                 methods=("exact", "power", "lanczos"), repeats: int = 1,
                 dense_samples: int = 2, seed: int = 0) -> dict:
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
    float64 copy of the model. Errors use `topk_rel_err`. Exact needs a piecewise-linear
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
    out: dict = {"n_samples": sum(s.stop - s.start for s in slices), "batch": batch,
                 "n_batches": len(slices), "k": k, "device": str(dev),
                 "dtype": str(x.dtype).replace("torch.", ""), "repeats": repeats, "methods": {}}
    spectra: dict[str, list[torch.Tensor]] = {}
    for m in methods:
        try:
            # warm-up on the first batch (allocator, kernels) outside the timing
            hessian_spectrum_with_method(model, x[slices[0]], y[slices[0]], k, m, seed=seed)
            _sync(dev)
            vals = []
            t0 = time.perf_counter()
            for r in range(repeats):
                gen = torch.Generator().manual_seed(seed)
                vals = [hessian_spectrum_with_method(model, x[s], y[s], k, m, generator=gen)[0]
                        for s in slices]
            _sync(dev)
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

    # validation
    val: dict = {}
    ns = min(dense_samples, n)
    xs, ys = x[:ns].detach(), y[:ns]
    m64 = copy.deepcopy(model).double()
    x64 = xs.double()
    dense = _dense_topk(m64, x64, ys, k)
    val["dense_samples"] = ns
    val["dense_dim"] = xs.numel()
    if "exact" in spectra:
        ex = hessian_spectrum_with_method(model, xs, ys, k, "exact")[0]
        val["exact_vs_dense"] = topk_rel_err(ex, dense)
        ex64 = hessian_spectrum_with_method(m64, x64, ys, k, "exact")[0]
        val["exact64_vs_dense"] = topk_rel_err(ex64, dense)
    for m in ("power", "lanczos"):
        if m in methods:
            v64 = hessian_spectrum_with_method(m64, x64, ys, k, m, seed=seed)[0]
            val[f"{m}_vs_dense"] = topk_rel_err(v64, dense)
        if m in spectra and "exact" in spectra:
            errs = [topk_rel_err(a, b) for a, b in zip(spectra[m], spectra["exact"])]
            val[f"{m}_vs_exact"] = {
                "max_rel": max(e["max_rel"] for e in errs),
                "max_abs_scaled": max(e["max_abs_scaled"] for e in errs),
                "mean_max_rel": sum(e["max_rel"] for e in errs) / len(errs),
            }
    out["validation"] = val
    return out
