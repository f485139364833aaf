"""Loss-landscape and attack metrics of Li & Spratling (2023), Sec. 3-4 and A.5.

Definitions follow the authors' code (see PAPER-NOTES "Metrics"):

- IG   `input_gradient_norm`: mean over samples of ||d CE(f(x_i), y_i) / d x_i||_1.
- HS   `hs_metric` / `hessian_spectrum`: the top-k (20) eigenvalues of the Hessian of the
       batch-MEAN CE w.r.t. the whole stacked input batch (batch 100); HS = mean |lambda|,
       averaged over batches. Three ways to get the eigenvalues:
         exact   - piecewise-linear nets only (ReLU, max-pool, BN in eval mode): the
                   Hessian is block-diagonal with per-sample blocks J_i^T A_i J_i / B,
                   A_i = diag p_i - p_i p_i^T, J_i = d logits_i / d x_i. With A = L L^T,
                   L = diag(sqrt p) - p sqrt(p)^T, the non-zero eigenvalues of a block are
                   those of the C x C matrix L^T J J^T L. Costs C backward passes.
         lanczos - Lanczos with full reorthogonalisation on Hessian-vector products.
         power   - the authors' method (pyhessian `eigenvalues(top_n=k)`): power iteration
                   with deflation, <= 100 iterations per eigenvalue, relative tol 1e-3.
- AV   `adversarial_vulnerability` (Eq. 2): PGD-20 loss minus clean loss.
- Eff. `attack_effectiveness` (Eq. 7): E[(L(x+delta) - L(x)) / (L(x+delta*) - L(x))].
- A.5  `gradient_alignment`: E[cos(grad L(x), grad L(x + eta))], eta ~ U(-eps, eps).
- `weight_hessian`: top eigenvalue(s) and trace of the parameter Hessian via pyhessian.

Every function runs the model in eval mode (except the training attack of
`training_attack_effectiveness` when asked) and restores the caller's mode; gradients come
from `torch.autograd.grad`, so no parameter `.grad` is left behind (`weight_hessian`, which
goes through pyhessian's `backward`, restores the parameters' previous `.grad`). Inputs are
x (N, C, H, W) in [0, 1] and y (N,) int64. Nothing here touches CUDA at import time.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.nn.attacks import model_mode, pgd, run_attack

__all__ = [
    "input_gradient_norm",
    "hessian_spectrum",
    "hessian_spectrum_with_method",
    "hs_metric",
    "is_piecewise_linear",
    "input_hvp",
    "lanczos_topk",
    "power_topk",
    "adversarial_vulnerability",
    "attack_effectiveness",
    "training_attack_effectiveness",
    "gradient_alignment",
    "weight_hessian",
    "HS_METHODS",
]

HS_METHODS = ("auto", "exact", "lanczos", "power")


# -- helpers ----------------------------------------------------------------------------

def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))


def _randn(shape, generator: torch.Generator | None, seed: int, device, dtype) -> torch.Tensor:
    """Standard normal drawn on the CPU (so a seed gives the same numbers on any device)."""
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    gen_device = generator.device
    return torch.randn(shape, generator=generator, device=gen_device,
                       dtype=torch.float64).to(device=device, dtype=dtype)


def _per_sample_losses(model, x, y, batch_size: int) -> torch.Tensor:
    """CE(f(x_i), y_i) for every sample, no graph (caller sets the mode)."""
    out = []
    with torch.no_grad():
        for s in _batches(len(x), batch_size):
            out.append(F.cross_entropy(model(x[s]), y[s], reduction="none"))
    return torch.cat(out) if out else x.new_zeros(0)


def _input_grads(model, x, y) -> torch.Tensor:
    """Per-sample d CE(f(x_i), y_i) / d x_i for one batch (sum-reduced CE, caller's mode)."""
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xr), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xr)
    return g


# -- IG ---------------------------------------------------------------------------------

def input_gradient_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """IG: mean over samples of the l1 norm of d CE(f(x_i), y_i) / d x_i, in eval mode.

    With sum-reduced CE per batch each sample's gradient is its own, so the l1 norm of the
    batch gradient is the sum of the per-sample norms; divided by N at the end. Per batch this
    equals the authors' ||d (batch-mean CE) / d X||_1 over the whole batch tensor (the 1/B of
    the mean turns the sum of per-sample norms into their mean). One host sync.
    """
    n = len(x)
    if n == 0:
        raise ValueError("input_gradient_norm: empty input")
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    with model_mode(model, False):
        for s in _batches(n, batch_size):
            g = _input_grads(model, x[s], y[s])
            total += g.abs().sum(dtype=torch.float64)
    return float(total / n)


# -- piecewise-linearity ----------------------------------------------------------------

# Modules that make the network's logits a smooth (not piecewise-linear) function of the
# input, or that couple features non-linearly (normalisations with per-sample statistics).
_SMOOTH_MODULES = tuple(getattr(nn, name) for name in (
    "Softplus", "GELU", "SiLU", "Tanh", "Sigmoid", "ELU", "CELU", "SELU", "Mish", "Hardswish",
    "LogSigmoid", "Softsign", "Tanhshrink", "Softmax", "LogSoftmax", "Softmin",
    "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
    "LocalResponseNorm", "MultiheadAttention", "RMSNorm",
) if hasattr(nn, name))

_SMOOTH_FUNCS = {id(f) for f in (
    F.softplus, F.gelu, F.silu, F.elu, F.celu, F.selu, F.mish, F.hardswish, F.logsigmoid,
    F.softsign, F.tanhshrink, F.tanh, F.sigmoid, torch.tanh, torch.sigmoid, torch.exp,
    F.softmax, F.log_softmax, F.layer_norm, F.group_norm,
)}

_SMOOTH_NAMES = {"softplus", "gelu", "silu", "swish", "elu", "celu", "selu", "mish", "tanh",
                 "sigmoid", "hardswish", "logsigmoid", "softsign"}


def _fallback_piecewise_linear(model: nn.Module) -> bool:
    """Module walk used when `engine.nn.models.is_piecewise_linear` does not exist.

    Rule: the model is treated as piecewise-linear unless one of its modules
      (a) is a smooth activation / per-sample normalisation module (Softplus, GELU, SiLU,
          Tanh, Sigmoid, ELU, CELU, SELU, Mish, Hardswish, LogSigmoid, Softsign, Softmax,
          LayerNorm, GroupNorm, InstanceNorm, LocalResponseNorm, MultiheadAttention), or
      (b) holds, as a plain attribute, a smooth functional (F.softplus, torch.tanh, ...), or a
          string naming one ("softplus", "gelu", ...) under an attribute whose name contains
          "act" (e.g. `self.act = F.softplus` or `self.activation = "softplus"`), or
      (c) has an attribute `piecewise_linear` / `smooth` set to a bool (honoured as is).
    Activations called directly inside `forward` (e.g. `return F.softplus(h)`) cannot be
    seen; such models must carry `piecewise_linear = False` or be given method="lanczos".
    """
    for m in model.modules():
        flag = getattr(m, "piecewise_linear", None)
        if isinstance(flag, bool):
            if not flag:
                return False
            continue
        flag = getattr(m, "smooth", None)
        if isinstance(flag, bool) and flag:
            return False
        if isinstance(m, _SMOOTH_MODULES):
            return False
        for name, val in vars(m).items():
            if name.startswith("_"):
                continue
            if callable(val) and id(val) in _SMOOTH_FUNCS:
                return False
            if isinstance(val, str) and "act" in name.lower() and val.lower() in _SMOOTH_NAMES:
                return False
    return True


def is_piecewise_linear(model: nn.Module) -> bool:
    """Whether the exact HS formula applies: `engine.nn.models.is_piecewise_linear` when it
    exists, else the module walk of `_fallback_piecewise_linear` (see its rule)."""
    try:
        from engine.nn import models as _models
        fn = getattr(_models, "is_piecewise_linear", None)
    except ImportError:  # pragma: no cover - package always present
        fn = None
    if fn is not None:
        return bool(fn(model))
    return _fallback_piecewise_linear(model)


# -- input Hessian: HVPs and eigen-solvers ----------------------------------------------

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


def lanczos_topk(hvp: Callable[[torch.Tensor], torch.Tensor], dim: int, k: int, *,
                 n_iter: int | None = None, max_iter: int | None = None, tol: float = 1e-4,
                 check_every: int = 10, which: str = "LA", generator: torch.Generator | None = None,
                 seed: int = 0, device=None, dtype=torch.float32) -> torch.Tensor:
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

    def select(theta: torch.Tensor) -> torch.Tensor:
        key = theta if which == "LA" else theta.abs()
        return torch.argsort(key, descending=True)[:k]

    m_min = min(dim, n_iter if n_iter is not None else max(3 * k, k + 40))
    m_max = min(dim, max(m_min, max_iter if max_iter is not None else 4 * m_min))
    fdt = torch.float64 if dtype == torch.float64 else torch.float32
    Q = torch.zeros(m_max, dim, device=device, dtype=fdt)
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []          # betas[j] couples vector j and j + 1
    breakdown = math.sqrt(torch.finfo(fdt).eps)
    scale = 0.0
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)

    def fresh(j: int) -> torch.Tensor | None:
        """A random unit vector orthogonal to Q[:j] (None if the space is exhausted)."""
        for _ in range(3):
            q = _randn((dim,), gen, seed, device, fdt)
            if j:
                B = Q[:j]
                q = q - B.T @ (B @ q)
                q = q - B.T @ (B @ q)
            nrm = float(q.norm())
            if nrm > 1e-6:
                return q / nrm
        return None

    def ritz(m: int):
        # the tridiagonal T is tiny: solve it on the CPU in float64
        a = torch.stack(alphas[:m]).to(device="cpu", dtype=torch.float64)
        T = torch.diag(a)
        if m > 1:
            b = torch.stack(betas[:m - 1]).to(device="cpu", dtype=torch.float64)
            T = T + torch.diag(b, 1) + torch.diag(b, -1)
        return torch.linalg.eigh(T)

    q = fresh(0)
    m = 0
    beta_prev = None
    block_start = 0      # first index of the current Krylov block (restarts after breakdowns)
    rest = None          # (eigenvalue, multiplicity) of the remaining orthogonal complement
    while m < m_max and q is not None:
        Q[m] = q
        w = hvp(q.to(dtype)).to(fdt)
        alpha = torch.dot(w, q)
        w = w - alpha * q
        if beta_prev is not None:
            w = w - beta_prev * Q[m - 1]
        B = Q[:m + 1]
        w = w - B.T @ (B @ w)
        w = w - B.T @ (B @ w)
        beta = w.norm()
        alphas.append(alpha)
        m += 1
        a_f, b_f = abs(float(alpha)), float(beta)   # one host sync per HVP
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
        if m >= m_min and (m - m_min) % check_every == 0 and beta_prev is not None:
            theta, S = ritz(m)
            top = select(theta)
            res = (float(betas[m - 1]) * S[m - 1, top]).abs()
            thr = tol * max(float(theta.abs().max()), 1e-30)
            if len(top) >= k and bool((res <= thr).all()):
                break
    theta, _ = ritz(m)
    if rest is not None and rest[1] > 0:
        theta = torch.cat([theta, rest[0].to(theta).expand(min(rest[1], k))])
    vals = torch.sort(theta[select(theta)], descending=True).values
    if len(vals) < k:
        vals = torch.cat([vals, vals.new_zeros(k - len(vals))])
    return vals.to(device=device, dtype=dtype)


def power_topk(hvp: Callable[[torch.Tensor], torch.Tensor], dim: int, k: int, *,
               max_iter: int = 100, tol: float = 1e-3, generator: torch.Generator | None = None,
               seed: int = 0, device=None, dtype=torch.float32) -> torch.Tensor:
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
    J = torch.stack(rows, dim=1)                                   # (B, C, D)
    M = torch.bmm(J, J.transpose(1, 2)).to(torch.float64)          # (B, C, C) = J J^T
    p = torch.softmax(logits.detach().to(torch.float64), dim=1)    # (B, C)
    s = p.sqrt()
    L = torch.diag_embed(s) - p.unsqueeze(2) * s.unsqueeze(1)      # A = diag p - p p^T = L L^T
    K = L.transpose(1, 2) @ M @ L
    K = 0.5 * (K + K.transpose(1, 2))
    ev = torch.linalg.eigvalsh(K).clamp_min(0.0).reshape(-1) / B   # PSD blocks, / B for the mean
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
            "smooth components (e.g. softplus); use method='lanczos' or 'power'.")
    return method


def hessian_spectrum_with_method(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int = 20,
                                 method: str = "auto", *, seed: int = 0,
                                 generator: torch.Generator | None = None,
                                 max_iter: int | None = None, tol: float | None = None,
                                 which: str = "LA") -> tuple[torch.Tensor, str]:
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
            vals = power_topk(hvp, dim, k, max_iter=100 if max_iter is None else max_iter,
                              tol=1e-3 if tol is None else tol, generator=generator, seed=seed,
                              device=x.device, dtype=x.dtype)
        else:
            kw = {} if tol is None else {"tol": tol}
            vals = lanczos_topk(hvp, dim, k, max_iter=max_iter, which=which, generator=generator,
                                seed=seed, device=x.device, dtype=x.dtype, **kw)
        return vals, used


def hessian_spectrum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int = 20,
                     method: str = "auto", **kw) -> torch.Tensor:
    """Top-k input-Hessian eigenvalues; see `hessian_spectrum_with_method`."""
    return hessian_spectrum_with_method(model, x, y, k, method, **kw)[0]


def hs_metric(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, n: int = 2000, batch: int = 100,
              k: int = 20, method: str = "auto", seed: int = 0,
              which: str = "LM") -> tuple[float, str]:
    """HS = mean |lambda| of the top-k eigenvalues per batch of `batch` samples, averaged
    over the batches covering the first n samples. Returns (hs, method_used).

    HS scales like 1/B by construction, so a trailing partial batch is dropped when at least
    one full batch exists; with fewer than `batch` samples, one batch of all of them is used.
    The method is resolved once ("auto": exact for piecewise-linear nets, else lanczos).
    Power iteration / Lanczos start vectors are seeded with `seed` (one generator across
    the batches). `which` defaults to "LM" (largest |lambda|) for lanczos, matching what the
    authors' power iteration estimates; for piecewise-linear nets the Hessian is PSD and "LM"
    and "LA" coincide. For smooth nets with sizeable negative curvature they differ.
    """
    n = min(n, len(x))
    if n == 0:
        raise ValueError("hs_metric: empty input")
    used = _resolve_method(model, method)
    if n >= batch:
        slices = [slice(i, i + batch) for i in range(0, n - batch + 1, batch)]
    else:
        slices = [slice(0, n)]
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    for s in slices:
        vals, _ = hessian_spectrum_with_method(model, x[s], y[s], k, used, generator=gen,
                                               which=which)
        total += vals.abs().to(torch.float64).mean()
    return float(total / len(slices)), used


# -- AV, effectiveness, alignment -------------------------------------------------------

def adversarial_vulnerability(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                              steps: int = 20, alpha: float | None = None,
                              batch_size: int = 500) -> dict:
    """AV (Eq. 2): mean CE on PGD-`steps` examples (step alpha = eps/4 by default, no random
    start, eval mode) minus mean clean CE. Returns plain floats: clean_loss, adv_loss, av,
    clean_acc, adv_acc (one host sync)."""
    alpha = eps / 4 if alpha is None else alpha
    n = len(x)
    if n == 0:
        raise ValueError("adversarial_vulnerability: empty input")
    sums = torch.zeros(4, device=x.device, dtype=torch.float64)
    with model_mode(model, False):
        for s in _batches(n, batch_size):
            xb, yb = x[s], y[s]
            xa = pgd(model, xb, yb, eps=eps, alpha=alpha, steps=steps, random_start=False)
            with torch.no_grad():
                oc, oa = model(xb), model(xa)
            sums += torch.stack([
                F.cross_entropy(oc, yb, reduction="sum").double(),
                F.cross_entropy(oa, yb, reduction="sum").double(),
                (oc.argmax(1) == yb).sum().double(),
                (oa.argmax(1) == yb).sum().double(),
            ])
    clean, adv, cacc, aacc = (sums / n).tolist()
    return {"clean_loss": clean, "adv_loss": adv, "av": adv - clean,
            "clean_acc": cacc, "adv_acc": aacc}


def attack_effectiveness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
                         eps: float, ref_steps: int = 50, alpha: float | None = None,
                         batch_size: int = 500) -> float:
    """Eq. 7: mean over samples of (L(x_adv) - L(x)) / (L(x + delta*) - L(x)).

    L is the per-sample CE in eval mode; delta* comes from PGD-`ref_steps` (step alpha =
    eps/4 by default, no random start). x_adv is used as given (FGSM-N's may leave the
    eps-ball). Samples whose denominator is <= 1e-12 (the reference attack could not raise
    the loss, e.g. a saturated or already-flat point) are excluded from the mean; if all are
    excluded the result is nan.
    """
    alpha = eps / 4 if alpha is None else alpha
    if len(x) == 0:
        raise ValueError("attack_effectiveness: empty input")
    with model_mode(model, False):
        ref = torch.cat([pgd(model, x[s], y[s], eps=eps, alpha=alpha, steps=ref_steps)
                         for s in _batches(len(x), batch_size)])
        l0 = _per_sample_losses(model, x, y, batch_size).double()
        la = _per_sample_losses(model, x_adv, y, batch_size).double()
        lr = _per_sample_losses(model, ref, y, batch_size).double()
    den = lr - l0
    keep = den > 1e-12
    ratio = torch.where(keep, (la - l0) / torch.where(keep, den, torch.ones_like(den)),
                        torch.zeros_like(den))
    cnt = keep.sum()
    return float(ratio.sum() / cnt) if int(cnt) > 0 else float("nan")


@contextmanager
def _frozen_buffers(model: nn.Module):
    """Restore all buffers (BN running stats) after the block."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


def training_attack_effectiveness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack_name: str, *,
                                  eps: float, alpha: float, steps: int = 1, noise: float | None = None,
                                  train_mode: bool = False, random_start: bool = False,
                                  batch_size: int = 500, ref_steps: int = 50) -> float:
    """Effectiveness (Eq. 7) of a training attack (fgsm, fgsm_rs, fgsm_n, pgd) from
    `engine.nn.attacks.run_attack`. With train_mode the attack runs in train mode as in
    training, but BN running statistics are restored afterwards. The perturbation is used as
    is (FGSM-N's may exceed the eps-ball). Random draws use the global torch RNG."""
    if attack_name not in ("fgsm", "fgsm_rs", "fgsm_n", "pgd"):
        raise ValueError(f"unknown training attack {attack_name!r}")
    with _frozen_buffers(model):
        x_adv = torch.cat([
            run_attack(model, x[s], y[s], name=attack_name, eps=eps, alpha=alpha, steps=steps,
                       noise=noise, train_mode=train_mode, random_start=random_start).x_adv
            for s in _batches(len(x), batch_size)])
    return attack_effectiveness(model, x, y, x_adv, eps=eps, ref_steps=ref_steps,
                                batch_size=batch_size)


def gradient_alignment(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                       batch_size: int = 500, generator: torch.Generator | None = None) -> float:
    """A.5: mean over samples of cos(grad_x L(x), grad_x L(x + eta)), eta ~ U(-eps, eps),
    x + eta clamped to [0, 1]; per-sample flattened gradients, eval mode. eta is drawn on
    the generator's device (global RNG on x's device when None). A sample with a zero
    gradient gets cosine 0 (torch's cosine_similarity)."""
    if len(x) == 0:
        raise ValueError("gradient_alignment: empty input")
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    with model_mode(model, False):
        for s in _batches(len(x), batch_size):
            xb, yb = x[s], y[s]
            dev = generator.device if generator is not None else xb.device
            u = torch.rand(xb.shape, generator=generator, device=dev, dtype=torch.float64)
            eta = ((2 * u - 1) * eps).to(device=xb.device, dtype=xb.dtype)
            g1 = _input_grads(model, xb, yb).flatten(1)
            g2 = _input_grads(model, (xb + eta).clamp(0.0, 1.0), yb).flatten(1)
            total += F.cosine_similarity(g1, g2, dim=1).double().sum()
    return float(total / len(x))


# -- weight Hessian (pyhessian) ---------------------------------------------------------

@contextmanager
def _default_dtype(dtype):
    old = torch.get_default_dtype()
    if dtype in (torch.float32, torch.float64):
        torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def weight_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, top_n: int = 1,
                   trace: bool = True, trace_iters: int = 50, max_iter: int = 100,
                   tol: float = 1e-3, trace_tol: float = 1e-3, seed: int = 0) -> dict:
    """Top-`top_n` eigenvalues and (Hutchinson) trace of the Hessian of the batch-mean CE
    w.r.t. the parameters, through pyhessian 0.1 (`pyhessian.hessian`), in eval mode.

    pyhessian's power iteration (`max_iter`, `tol`) is used as is; the trace is the mean of
    up to `trace_iters` Hutchinson samples, each from pyhessian's `trace(maxIter=1)`, stopped
    when the running mean changes by less than trace_tol * |previous mean| (pyhessian's own
    test misfires on a negative running mean); trace_tol=0 uses all `trace_iters` samples.
    Its density() (broken on torch 2) is never called. cuda is passed as
    x.is_cuda so CPU works. The torch RNG is forked and seeded with `seed` before
    pyhessian draws its random vectors (the caller's RNG state is untouched); pyhessian
    draws them in the default dtype, so it is set to the parameters' dtype for the call.
    pyhessian calls backward(create_graph=True): the parameters' previous `.grad` are
    restored afterwards (None if there was none). Returns
    {"eigenvalues": [float, ...], "trace": float | None}.
    """
    from pyhessian import hessian as PyHessian

    params = list(model.parameters())
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    pdtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)
    devices = [x.device] if x.is_cuda else []
    comp = None
    try:
        with model_mode(model, False), torch.random.fork_rng(devices=devices), \
                _default_dtype(pdtype), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*create_graph=True.*")
            torch.manual_seed(seed)
            if x.is_cuda:
                torch.cuda.manual_seed(seed)
            comp = PyHessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=x.is_cuda)
            eig, _ = comp.eigenvalues(maxIter=max_iter, tol=tol, top_n=top_n)
            tr = None
            if trace:
                # pyhessian's trace() stops as soon as its running mean is negative (its
                # relative-change test divides by the signed mean), so draw one Hutchinson
                # sample per call and apply the test with |mean| here.
                vals: list[float] = []
                prev = 0.0
                for _ in range(trace_iters):
                    vals.extend(comp.trace(maxIter=1))
                    mean = sum(vals) / len(vals)
                    if len(vals) > 1 and abs(mean - prev) / (abs(prev) + 1e-6) < trace_tol:
                        break
                    prev = mean
                tr = float(sum(vals) / len(vals))
    finally:
        if comp is not None:
            comp.gradsH = None
            comp.params = None
        del comp
        for p, g in zip(params, saved):
            p.grad = g
    return {"eigenvalues": [float(e) for e in eig], "trace": tr}
