"""HS: the top eigenvalues of the input Hessian of the cross-entropy (Li & Spratling 2023, Sec. 3).

The Hessian is that of the batch-MEAN CE w.r.t. the whole stacked input batch (batch 100), as
in the authors' code; HS = mean |lambda| of the top-k (20) eigenvalues, averaged over batches
(`hs_metric`). `reduce="sum"` (config `eval.hs_reduce`) gives the paper's wording instead, "the
l1 norm of the top 20 eigenvalues" = sum |lambda|, k (20) times the mean; the authors' code
(and so, presumably, Table 1's values) takes the mean (docs/FIDELITY.md). Three ways to get the
eigenvalues:

  exact    piecewise-linear nets only (ReLU, max-pool, BN in eval mode): the Hessian is
           block-diagonal with per-sample blocks J_i^T A_i J_i / B, A_i = diag p_i - p_i p_i^T,
           J_i = d logits_i / d x_i. With A = L L^T, L = diag(sqrt p) - p sqrt(p)^T, the non-zero
           eigenvalues of a block are those of the C x C matrix L^T J J^T L. Costs C backward passes.
  lanczos  Lanczos with full reorthogonalisation on Hessian-vector products.
  power    the authors' method (pyhessian `eigenvalues(top_n=k)`): power iteration with
           deflation, <= 100 iterations per eigenvalue, relative tol 1e-3.

Every function runs the model in eval mode and restores the caller's mode; inputs are
x (N, C, H, W) in [0, 1] and y (N,) int64.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.nn.attacks import model_mode
from engine.nn.metrics.batches import batches
from engine.nn.models import is_piecewise_linear

HS_METHODS = ("auto", "exact", "lanczos", "power")
HS_REDUCE = ("mean", "sum")


def _randn(shape, generator: torch.Generator | None, seed: int, device, dtype) -> torch.Tensor:
    """Standard normal drawn on the CPU (so a seed gives the same numbers on any device)."""
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    gen_device = generator.device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float64).to(
        device=device, dtype=dtype
    )


def input_hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """(hvp, D): v (D,) -> H v for H the Hessian of the batch-mean CE w.r.t. the stacked x.

    Double backprop on a retained graph (the caller sets the model's mode and keeps it while
    hvp is in use). D = x.numel().
    """
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xr), y)
        (g,) = torch.autograd.grad(loss, xr, create_graph=True)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            (hv,) = torch.autograd.grad(g, xr, grad_outputs=v.view_as(xr), retain_graph=True)
        return hv.reshape(-1).detach()

    return hvp, xr.numel()


def _select(theta: torch.Tensor, k: int, which: str) -> torch.Tensor:
    """Indices of the k largest Ritz values (which="LA") or the k largest in magnitude ("LM")."""
    key = theta if which == "LA" else theta.abs()
    return torch.argsort(key, descending=True)[:k]


def _random_orthogonal(basis: torch.Tensor, gen, seed: int, device, dtype) -> torch.Tensor | None:
    """A random unit vector orthogonal to the rows of `basis` (None if the space is exhausted)."""
    for _ in range(3):
        q = _randn((basis.shape[1],), gen, seed, device, dtype)
        if len(basis):
            q = q - basis.T @ (basis @ q)
            q = q - basis.T @ (basis @ q)
        nrm = float(q.norm())
        if nrm > 1e-6:
            return q / nrm
    return None


def _ritz(alphas: list[torch.Tensor], betas: list[torch.Tensor], m: int):
    """Eigen-decomposition of the m x m Lanczos tridiagonal (tiny: on the CPU in float64)."""
    a = torch.stack(alphas[:m]).to(device="cpu", dtype=torch.float64)
    T = torch.diag(a)
    if m > 1:
        b = torch.stack(betas[: m - 1]).to(device="cpu", dtype=torch.float64)
        T = T + torch.diag(b, 1) + torch.diag(b, -1)
    return torch.linalg.eigh(T)


def lanczos_topk(
    hvp: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    k: int,
    *,
    n_iter: int | None = None,
    max_iter: int | None = None,
    tol: float = 1e-4,
    check_every: int = 10,
    which: str = "LA",
    generator: torch.Generator | None = None,
    seed: int = 0,
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """Top-k eigenvalues of a symmetric operator by Lanczos: the k largest algebraic
    (which="LA", default) or the k largest in magnitude (which="LM", what power iteration
    finds).

    Full reorthogonalisation (classical Gram-Schmidt, twice) against all Lanczos vectors.
    Runs at least `n_iter` = min(D, max(3k, k + 40)) iterations, then every `check_every`
    iterations checks the Ritz residual bounds |beta_m s_mi| of the top k; stops once all
    are <= tol * |theta_max| or at `max_iter` (default min(D, 4 n_iter)). A breakdown
    (invariant Krylov subspace, beta ~ 0) restarts from a random vector orthogonal to the
    basis, so repeated eigenvalues (e.g. the zero eigenspace) keep their multiplicity; when a
    restart vector is itself an eigenvector the rest of the space is taken as that one
    eigenspace and the iteration stops.
    Returns a (k,) tensor in descending order of value; if fewer than k Ritz values exist
    (D < k) it is padded with zeros.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if which not in ("LA", "LM"):
        raise ValueError(f"which must be 'LA' or 'LM', not {which!r}")
    m_min = min(dim, n_iter if n_iter is not None else max(3 * k, k + 40))
    m_max = min(dim, max(m_min, max_iter if max_iter is not None else 4 * m_min))
    fdt = torch.float64 if dtype == torch.float64 else torch.float32
    Q = torch.zeros(m_max, dim, device=device, dtype=fdt)
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []  # betas[j] couples vector j and j + 1
    breakdown = math.sqrt(torch.finfo(fdt).eps)
    scale = 0.0
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)

    def fresh(j: int) -> torch.Tensor | None:
        return _random_orthogonal(Q[:j], gen, seed, device, fdt)

    q = fresh(0)
    m = 0
    beta_prev = None
    block_start = 0  # first index of the current Krylov block (restarts after breakdowns)
    rest = None  # (eigenvalue, multiplicity) of the remaining orthogonal complement
    while m < m_max and q is not None:
        Q[m] = q
        w = hvp(q.to(dtype)).to(fdt)
        alpha = torch.dot(w, q)
        w = w - alpha * q
        if beta_prev is not None:
            w = w - beta_prev * Q[m - 1]
        B = Q[: m + 1]
        w = w - B.T @ (B @ w)
        w = w - B.T @ (B @ w)
        beta = w.norm()
        alphas.append(alpha)
        m += 1
        a_f, b_f = abs(float(alpha)), float(beta)  # one host sync per HVP
        scale = max(scale, a_f, b_f)
        if m >= m_max:
            betas.append(beta)
            break
        if b_f <= breakdown * max(scale, 1e-30):
            betas.append(torch.zeros_like(beta))
            beta_prev = None
            if m - block_start == 1:
                # a random vector orthogonal to the basis is an eigenvector: (almost surely)
                # the whole complement is one eigenspace, e.g. the null space of a low-rank
                # Hessian. Its eigenvalue alpha has multiplicity dim - m + 1 (this one included).
                rest = (alpha, dim - m)
                break
            block_start = m
            q = fresh(m)
        else:
            betas.append(beta)
            beta_prev = beta
            q = w / beta
        # convergence check (not right after a breakdown: multiplicities may be missing)
        if (
            m >= m_min
            and (m - m_min) % check_every == 0
            and beta_prev is not None
            and _converged(alphas, betas, m, k, which, tol)
        ):
            break
    return _top_values(alphas, betas, m, rest, k, which).to(device=device, dtype=dtype)


def _converged(alphas: list, betas: list, m: int, k: int, which: str, tol: float) -> bool:
    """Are the Ritz residual bounds |beta_m s_mi| of the top k all <= tol * |theta_max|?"""
    theta, S = _ritz(alphas, betas, m)
    top = _select(theta, k, which)
    res = (float(betas[m - 1]) * S[m - 1, top]).abs()
    thr = tol * max(float(theta.abs().max()), 1e-30)
    return len(top) >= k and bool((res <= thr).all())


def _top_values(alphas: list, betas: list, m: int, rest, k: int, which: str) -> torch.Tensor:
    """The top k Ritz values in descending order, with the remaining eigenspace's value (`rest`:
    (eigenvalue, multiplicity)) counted, zero-padded to k."""
    theta, _ = _ritz(alphas, betas, m)
    if rest is not None and rest[1] > 0:
        theta = torch.cat([theta, rest[0].to(theta).expand(min(rest[1], k))])
    vals = torch.sort(theta[_select(theta, k, which)], descending=True).values
    if len(vals) < k:
        vals = torch.cat([vals, vals.new_zeros(k - len(vals))])
    return vals


def power_topk(
    hvp: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    k: int,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
    seed: int = 0,
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """Top-k eigenvalues by power iteration with deflation, as pyhessian's `eigenvalues`.

    For each eigenvalue: a random unit start vector; each iteration orthogonalises v against
    the eigenvectors found so far, takes the Rayleigh quotient v^T H v, sets v = Hv / ||Hv||,
    and stops when the quotient changes by less than tol * (|previous| + 1e-6), or after
    `max_iter` iterations. The stored eigenvector is the last v (made orthonormal to the
    earlier ones). Power iteration finds the eigenvalues of largest magnitude; they are
    returned sorted descending by value. Seeded: the start vectors come from `generator`
    (or a fresh CPU generator seeded with `seed`).
    """
    if k < 1 or max_iter < 1:
        raise ValueError("k and max_iter must be >= 1")
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    vecs: list[torch.Tensor] = []
    vals: list[float] = []
    for _ in range(min(k, dim)):
        v = _randn((dim,), gen, seed, device, dtype)
        v = v / (v.norm() + 1e-6)
        eig = None
        V = torch.stack(vecs) if vecs else None
        for _ in range(max_iter):
            if V is not None:
                v = v - V.T @ (V @ v)
                v = v / (v.norm() + 1e-6)
            hv = hvp(v)
            tmp = float(torch.dot(hv, v))
            v = hv / (hv.norm() + 1e-6)
            if eig is None:
                eig = tmp
            elif abs(eig - tmp) / (abs(eig) + 1e-6) < tol:
                eig = tmp
                break
            else:
                eig = tmp
        if V is not None:
            v = v - V.T @ (V @ v)
        v = v / (v.norm() + 1e-12)
        vecs.append(v)
        vals.append(eig)
    out = torch.tensor(vals, dtype=torch.float64).sort(descending=True).values
    if len(out) < k:
        out = torch.cat([out, out.new_zeros(k - len(out))])
    return out.to(device=device, dtype=dtype)


def _exact_spectrum(model, x, y, k: int) -> torch.Tensor:
    """Pooled eigenvalues of the per-sample Gauss-Newton blocks, top k (piecewise-linear)."""
    B = x.shape[0]
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xr)
        C = logits.shape[1]
        rows = []
        for j in range(C):
            (gj,) = torch.autograd.grad(logits[:, j].sum(), xr, retain_graph=j < C - 1)
            rows.append(gj.reshape(B, -1))
    J = torch.stack(rows, dim=1)  # (B, C, D)
    M = torch.bmm(J, J.transpose(1, 2)).to(torch.float64)  # (B, C, C) = J J^T
    p = torch.softmax(logits.detach().to(torch.float64), dim=1)  # (B, C)
    s = p.sqrt()
    L = torch.diag_embed(s) - p.unsqueeze(2) * s.unsqueeze(1)  # A = diag p - p p^T = L L^T
    K = L.transpose(1, 2) @ M @ L
    K = 0.5 * (K + K.transpose(1, 2))
    ev = torch.linalg.eigvalsh(K).clamp_min(0.0).reshape(-1) / B  # PSD blocks, / B for the mean
    kk = min(k, ev.numel())
    top = torch.topk(ev, kk).values
    if kk < k:
        top = torch.cat([top, top.new_zeros(k - kk)])
    return top.to(dtype=x.dtype)


def _resolve_method(model, method: str) -> str:
    if method not in HS_METHODS:
        raise ValueError(f"unknown HS method {method!r}; choose one of {HS_METHODS}")
    if method == "auto":
        return "exact" if is_piecewise_linear(model) else "lanczos"
    if method == "exact" and not is_piecewise_linear(model):
        raise ValueError(
            "method='exact' needs a piecewise-linear network (ReLU / max-pool / BN in eval "
            "mode): it drops the second-derivative term sum_c dL/dz_c * d2 z_c / dx2, which "
            "vanishes only when the logits are piecewise linear in the input. This model has "
            "smooth components (e.g. softplus); use method='lanczos' or 'power'."
        )
    return method


def hessian_spectrum_with_method(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    k: int = 20,
    method: str = "auto",
    *,
    seed: int = 0,
    generator: torch.Generator | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    which: str = "LA",
) -> tuple[torch.Tensor, str]:
    """Top-k eigenvalues (descending by value) of the Hessian of the batch-MEAN CE w.r.t.
    the whole stacked batch x, in eval mode, and the method used.

    method: "exact" (piecewise-linear nets; ValueError otherwise), "lanczos", "power"
    (the authors' pyhessian procedure; max_iter default 100, tol 1e-3) or "auto" (exact
    when `is_piecewise_linear(model)`, else lanczos). `max_iter`/`tol` go to the iterative
    solvers (lanczos defaults: see `lanczos_topk`). `which` picks, for lanczos, the k
    largest algebraic ("LA", default) or largest-magnitude ("LM") eigenvalues; "exact" gives
    a PSD spectrum (both coincide) and "power" always finds largest-magnitude ones. The
    result is on x's device and dtype, sorted descending by value.
    """
    used = _resolve_method(model, method)
    with model_mode(model, False):
        if used == "exact":
            return _exact_spectrum(model, x, y, k), used
        hvp, dim = input_hvp(model, x, y)
        if used == "power":
            vals = power_topk(
                hvp,
                dim,
                k,
                max_iter=100 if max_iter is None else max_iter,
                tol=1e-3 if tol is None else tol,
                generator=generator,
                seed=seed,
                device=x.device,
                dtype=x.dtype,
            )
        else:
            kw = {} if tol is None else {"tol": tol}
            vals = lanczos_topk(
                hvp,
                dim,
                k,
                max_iter=max_iter,
                which=which,
                generator=generator,
                seed=seed,
                device=x.device,
                dtype=x.dtype,
                **kw,
            )
        return vals, used


def hessian_spectrum(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int = 20, method: str = "auto", **kw
) -> torch.Tensor:
    """Top-k input-Hessian eigenvalues; see `hessian_spectrum_with_method`."""
    return hessian_spectrum_with_method(model, x, y, k, method, **kw)[0]


def hs_metric(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n: int = 2000,
    batch: int = 100,
    k: int = 20,
    method: str = "auto",
    seed: int = 0,
    which: str = "LM",
    reduce: str = "mean",
) -> tuple[float, str]:
    """HS = mean |lambda| (reduce="mean", the authors' code) or sum |lambda| (reduce="sum",
    the paper's "l1 norm of the top 20 eigenvalues", k times larger) of the top-k eigenvalues
    per batch of `batch` samples, averaged over the batches covering the first n samples.
    Returns (hs, method_used).

    HS scales like 1/B by construction, so a trailing partial batch is dropped when at least
    one full batch exists; with fewer than `batch` samples, one batch of all of them is used.
    The method is resolved once ("auto": exact for piecewise-linear nets, else lanczos).
    Power iteration / Lanczos start vectors are seeded with `seed` (one generator across
    the batches). `which` defaults to "LM" (largest |lambda|) for lanczos, matching what the
    authors' power iteration estimates; for piecewise-linear nets the Hessian is PSD and "LM"
    and "LA" coincide. For smooth nets with sizeable negative curvature they differ.
    """
    if reduce not in HS_REDUCE:
        raise ValueError(f"unknown HS reduce {reduce!r}; choose one of {HS_REDUCE}")
    n = min(n, len(x))
    if n == 0:
        raise ValueError("hs_metric: empty input")
    used = _resolve_method(model, method)
    slices = [s for s in batches(n, batch) if s.stop - s.start == batch] or [slice(0, n)]
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    for s in slices:
        vals, _ = hessian_spectrum_with_method(model, x[s], y[s], k, used, generator=gen, which=which)
        a = vals.abs().to(torch.float64)
        total += a.sum() if reduce == "sum" else a.mean()
    return float(total / len(slices)), used
