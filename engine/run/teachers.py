"""The teachers of a distillation run (KDSA, Chen et al. 2021), loaded frozen for training.

The teacher runs were chosen when the run was planned (engine.launch.plan) and are named in
its config.json, `run.teachers.<role>` = {"preset", "run", "checkpoint", "which"}. `load`
rebuilds each from its own run's config.json, loads that checkpoint, freezes it and puts it in
eval mode; the trainer hands them to the method as `StepContext.extras["teachers"]`.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from engine.config.schema import from_json
from engine.errors import UserError
from engine.nn.methods import get_method
from engine.nn.models import build_model
from engine.run.checkpoints import load
from engine.store.index import Store
from engine.store.records import ConfigRecord
from engine.store.rundir import RunDir


def load_teachers(conf: ConfigRecord, cfg, data, device, store: Store | None) -> dict[str, nn.Module]:
    """The frozen, eval-mode teachers named in config.json's run.teachers ({} if the method needs none)."""
    roles = get_method(cfg.method.name).teachers
    spec = conf.run.teachers
    if not roles:
        return {}
    lacking = [r for r in roles if r not in spec]
    if lacking:
        raise UserError(
            f"method '{cfg.method.name}' needs teacher runs ({', '.join(lacking)}) but this run's "
            f"config.json names none; create it from its preset (`advlc run PRESET`)"
        )
    out = {}
    for role in roles:
        t = spec[role]
        path = Path(t.checkpoint) if t.checkpoint else (store.run_dir(t.run).ckpt(t.which) if store else Path(t.which))
        if not path.exists() and store is not None:  # the store was moved: find the run by id
            path = store.run_dir(t.run).ckpt(path.stem)
        trd = RunDir(path.parent.parent)
        state = trd.status().state if trd.exists() else None
        if state != "finished":
            what = f"is {state}" if state else "does not exist"
            raise UserError(
                f"teacher run {t.run} ({role}, preset '{t.preset}') {what}, not finished; "
                f"finish it first (advlc run {t.preset})"
            )
        tcfg = from_json(trd.config_json())
        if tcfg.data.dataset != cfg.data.dataset:
            raise UserError(
                f"teacher run {t.run} ({role}) was trained on {tcfg.data.dataset}, "
                f"this run trains on {cfg.data.dataset}"
            )
        if not path.exists():
            raise UserError(f"teacher run {t.run} ({role}): checkpoint {path} is missing")
        model = build_model(
            tcfg.model, num_classes=data.num_classes, in_channels=data.in_channels, image_size=data.image_size
        )
        model.load_state_dict(load(path)["model"])
        model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        out[role] = model
    return out
