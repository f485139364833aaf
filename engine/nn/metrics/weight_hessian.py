"""The weight-space Hessian through pyhessian 0.1: its top eigenvalue(s) and trace.

pyhessian is imported where it is used (an optional heavy dependency of the `whess_*` metrics).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
import torch.nn as nn

from engine.nn.attacks import model_mode


@contextmanager
def _default_dtype(dtype):
    old = torch.get_default_dtype()
    if dtype in (torch.float32, torch.float64):
        torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def weight_hessian(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    top_n: int = 1,
    trace: bool = True,
    trace_iters: int = 50,
    max_iter: int = 100,
    tol: float = 1e-3,
    trace_tol: float = 1e-3,
    seed: int = 0,
) -> dict:
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
    from pyhessian import (
        hessian as PyHessian,  # optional, heavy: only the whess_* metrics need it
    )

    params = list(model.parameters())
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    pdtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)
    devices = [x.device] if x.is_cuda else []
    comp = None
    try:
        with (
            model_mode(model, False),
            torch.random.fork_rng(devices=devices),
            _default_dtype(pdtype),
            warnings.catch_warnings(),
        ):
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
