"""A run's checkpoints: written atomically, loaded with `weights_only=True`, and the model of one.

    last.pt       {"epoch": epochs done, "model", "optimizer", "rng_cpu", "rng_cuda", "rng_data",
                   "best_robust_acc", "swa": {"model", "n", "best_robust_acc"} | None}   (resume)
    best.pt       {"model", "epoch", "robust_acc", "clean_acc"}   highest per-epoch PGD robust accuracy
    swa_best.pt,  {"model", "epoch", "n", "robust_acc", "clean_acc"}   the SWA model's best and latest
    swa_end.pt

A checkpoint is named by what it holds: `best`, `end` (last.pt's model), `swa_best`, `swa_end`.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from engine.config.schema import FINAL_CKPTS, from_json
from engine.errors import CorruptFile, UserError
from engine.nn.datasets import load_dataset
from engine.nn.models import build_model
from engine.store.rundir import RunDir

CKPTS = FINAL_CKPTS
CKPT_FILES = {"best": ("best",), "end": ("last",), "swa_best": ("swa_best",), "swa_end": ("swa_end", "swa_last")}
"""checkpoint name -> file stems tried in order."""


def save(obj, path: Path) -> None:
    """torch.save through a temporary file (0600) and os.replace: a kill leaves the old or the new file."""
    tmp = path.with_suffix(".pt.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(path: Path, device="cpu", hint: str = "use another checkpoint") -> dict:
    """A checkpoint's dict, tensors on `device` (weights only: no code runs); a one-line
    CorruptFile naming the file and `hint` when it cannot be read."""
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CorruptFile(path, "does not exist", hint) from None
    except (
        RuntimeError,
        EOFError,
        ValueError,
        KeyError,
        AttributeError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise CorruptFile(path, f"is not a readable checkpoint ({first})", hint) from None
    if not isinstance(obj, dict):
        raise CorruptFile(path, "holds no model weights", hint)
    return obj


def checkpoint_path(rd: RunDir, ckpt: str) -> Path:
    """The file of checkpoint `ckpt` of run `rd`, or a one-line UserError."""
    if ckpt not in CKPTS:
        raise UserError(f"--ckpt {ckpt}: must be one of {', '.join(CKPTS)}")
    for stem in CKPT_FILES[ckpt]:
        p = rd.ckpt(stem)
        if p.exists():
            return p
    have = rd.checkpoints()
    hint = f" (it has: {', '.join(have)})" if have else " (it has no checkpoints yet)"
    raise UserError(f"run {rd.id} has no '{ckpt}' checkpoint ({CKPT_FILES[ckpt][0]}.pt){hint}")


def model_state(obj) -> dict:
    """The model state_dict inside a checkpoint (a bare state_dict, or {"model": ...})."""
    sd = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(sd, dict):
        raise UserError("checkpoint holds no model state_dict")
    if any(k.startswith("module.") for k in sd):  # torch.optim.swa_utils.AveragedModel
        sd = {k[len("module.") :]: v for k, v in sd.items() if k.startswith("module.")}
    return sd


def load_run_model(rd: RunDir, ckpt: str = "end", device="cpu", *, data=None):
    """(model in eval mode on `device`, the run's RunConfig, info) for checkpoint `ckpt`.

    `data` (an engine.nn.datasets.Dataset) gives the class/channel/size numbers without a reload.
    info: {"ckpt", "path", "epoch"} with epoch the 0-based epoch of the checkpoint when known.
    """
    cfg = from_json(rd.config_json())
    path = checkpoint_path(rd, ckpt)
    if data is None:
        data = load_dataset(cfg.data, "cpu")
    model = build_model(
        cfg.model, num_classes=data.num_classes, in_channels=data.in_channels, image_size=data.image_size
    )
    ck = load(path, hint=f"evaluate another checkpoint of run {rd.id} (it has: {', '.join(rd.checkpoints())})")
    try:
        model.load_state_dict(model_state(ck))
    except RuntimeError as exc:  # weights of another architecture
        raise CorruptFile(
            path,
            f"does not fit the run's {cfg.model.arch} ({str(exc).splitlines()[0][:100]})",
            "the checkpoint belongs to another run",
        ) from None
    epoch = ck.get("epoch") if isinstance(ck, dict) else None
    if epoch is not None and ckpt == "end" and "optimizer" in ck:
        epoch = int(epoch) - 1  # last.pt stores the number of epochs done
    model.to(device).eval()
    return model, cfg, {"ckpt": ckpt, "path": str(path), "epoch": epoch}
