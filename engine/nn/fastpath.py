"""The fast training path: the model and precision settings that make an epoch cheap on a GPU.

Three opt-in knobs of `[train]` (all off by default, so a default run computes exactly what
it computed before), plus what the training loop already does (data resident on the device
as uint8, crop + flip on the device in one gather per batch, no host read inside an epoch):

- `channels_last`: `prepare_model` puts the conv weights in NHWC memory format, which
  cuDNN's tensor-core kernels prefer. The *function* is unchanged: outputs agree with the
  NCHW model to fp32 rounding (tests/nn/test_fastpath.py). Input batches are deliberately left
  NCHW: the first conv converts them (a 3-channel image, negligible), and every random
  tensor an attack draws with `torch.empty_like(x).uniform_()` keeps NCHW order, so a seed
  gives the same noise, hence the same run, with and without channels_last.
- `amp = "bf16"`: `autocast(cfg, device)` runs the forward passes (the attacks' included)
  under bfloat16 autocast; parameters, gradients and the optimiser stay fp32 and no loss
  scaling is needed (bf16 has fp32's exponent range). Results change at the bf16 rounding
  level (relative ~1e-2 on a loss). On CUDA and on CPU alike: a user who asks for bf16 gets
  it on the device they run on. On a CPU with native bf16 (AVX512-BF16 / AMX) it is faster
  (measured on this project's AMD EPYC test machine: an FGSM-N step of cnn_small on a
  CIFAR-shaped batch of 100, 0.36 s vs 0.54 s fp32); on an older CPU it can be slower.
  Other device types (mps) run fp32 (the context is a no-op there).
  Caveat for AdvLC: its penalty is built from differences of logits; under autocast the last
  linear layer's outputs are rounded to bf16 (8 significant bits) before they are
  subtracted, so small logit differences are coarse. The CE itself runs in fp32 (autocast
  promotes it). Use bf16 for speed studies; paper reproductions keep fp32.
- `compile`: `prepare_model` compiles the model's forward in place (`nn.Module.compile`),
  so `state_dict()` keys, checkpoints and `load_state_dict` are unchanged, and a
  `copy.deepcopy` of the model (SWA) is a plain eager copy. Two consequences handled here:
  (1) AdvLC keeps the graph of the attack's first forward pass (`retain_graph=True`) and
  reuses it, which AOTAutograd's donated buffers forbid, so compiling turns
  `torch._functorch.config.donated_buffer` off (process-wide; it only saves memory);
  (2) torch.compile cannot differentiate twice, so for double-backprop methods (IGR, CURE,
  GradAlign, Eq. 10) compile is skipped with a log line rather than failing mid-epoch.
  Train/eval mode switches (attacks vs evaluation) and the evaluation batch size each cost
  one recompilation in the first epoch.

With any knob on and the model on CUDA, `prepare_model` also sets
`torch.backends.cudnn.benchmark = True` (fixed shapes: cuDNN picks its fastest kernels once).

The training loop (engine/run/loop.py) runs `epoch_stream` for its batches and `train_step`
for each SGD step, after `prepare_model`; the benchmark (engine/bench/) times the same two
functions against engine/bench/reference_loop.py, the plain loop the authors' code runs.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn as nn

from engine.nn.datasets import as_float, augment, epoch_batches
from engine.nn.methods import get_method
from engine.sections import RunConfig, TrainConfig

__all__ = [
    "needs_double_backprop",
    "prepare_model",
    "autocast",
    "amp_dtype",
    "train_step",
    "epoch_stream",
    "describe",
]


def _train_cfg(cfg: RunConfig | TrainConfig) -> TrainConfig:
    """A RunConfig's [train] section, or the TrainConfig itself."""
    return getattr(cfg, "train", cfg)


def needs_double_backprop(method_name: str | None) -> bool:
    """True when the method's loss is differentiated twice (so it cannot be compiled): the
    method declares it (`needs=("double_backprop",)` in its registration)."""
    return bool(method_name) and get_method(method_name).double_backprop


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def prepare_model(
    model: nn.Module, cfg: RunConfig | TrainConfig, *, log: Callable[[str], None] | None = None
) -> nn.Module:
    """Apply `cfg.train.channels_last` and `cfg.train.compile` to `model` (in place) and return it.

    Call after moving the model to its device and before building the optimiser (the
    parameters keep their identity either way). `cfg` is a RunConfig (its method decides
    whether compiling is possible) or a bare TrainConfig. `log` gets one line saying what
    was applied, when anything was.
    """
    t = _train_cfg(cfg)
    method = getattr(getattr(cfg, "method", None), "name", None)
    done = []
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
        done.append("channels_last")
    if t.compile:
        if needs_double_backprop(method):
            done.append(f"compile skipped ({method} differentiates twice, which torch.compile cannot)")
        else:
            import torch._functorch.config as functorch_config

            functorch_config.donated_buffer = False  # AdvLC reuses a retained graph
            model.compile()
            done.append("compile")
    if (t.channels_last or t.compile or t.amp != "off") and _model_device(model).type == "cuda":
        torch.backends.cudnn.benchmark = True
        done.append("cudnn.benchmark")
    if t.amp != "off":
        done.append(
            f"autocast {t.amp}"
            if _model_device(model).type in ("cuda", "cpu")
            else f"autocast {t.amp} not available on {_model_device(model).type}: fp32"
        )
    if log is not None and done:
        log("fast path: " + ", ".join(done))
    return model


def amp_dtype(cfg: RunConfig | TrainConfig) -> torch.dtype | None:
    """The autocast dtype `cfg.train.amp` asks for (None = fp32)."""
    amp = _train_cfg(cfg).amp
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    raise ValueError(f"train.amp = {amp!r}: must be 'off' or 'bf16'")


def autocast(cfg: RunConfig | TrainConfig, device) -> contextlib.AbstractContextManager:
    """A fresh context for one training step's forward passes: bf16 autocast on `device`
    when `cfg.train.amp == "bf16"` and the device is CUDA or CPU; a no-op otherwise (exact
    fp32: nothing is changed, not even the autocast state)."""
    dtype = amp_dtype(cfg)
    dev = torch.device(device)
    if dtype is None or dev.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=dtype)


def describe(cfg: RunConfig | TrainConfig) -> str:
    """A short label of the fast-path settings, e.g. 'fp32 channels_last' or 'bf16 compile'."""
    t = _train_cfg(cfg)
    parts = ["bf16" if t.amp == "bf16" else "fp32"]
    if t.channels_last:
        parts.append("channels_last")
    if t.compile:
        parts.append("compile")
    return " ".join(parts)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    method,
    ctx,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    amp: Callable[[], contextlib.AbstractContextManager] | None = None,
):
    """One SGD step of `method` on the batch (x, y), as the training loop does it.

    `amp` makes the autocast context (e.g. `lambda: autocast(cfg, device)`); None = fp32.
    Returns (loss, stats) as tensors on the device: nothing is read back to the host.
    """
    with amp() if amp is not None else contextlib.nullcontext():
        loss, stats = method.loss(model, x, y, ctx)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, stats


def epoch_stream(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    *,
    batch_size: int,
    padding: int,
    flip: bool,
    generator: torch.Generator | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of augmented float batches in the training loop's order: shuffled indices
    from `generator`, then crop + flip of each uint8 (or float) batch on its device, then
    float32 in [0, 1]. Yields (x, y, indices into train_x); nothing leaves the device."""
    for idx in epoch_batches(len(train_x), batch_size, generator, train_x.device):
        xb = as_float(augment(train_x[idx], padding=padding, flip=flip, generator=generator))
        yield xb, train_y[idx], idx
