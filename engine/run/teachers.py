"""Teacher runs for distillation methods (KDSA, Chen et al. 2021).

A KDSA preset names its teachers by *preset* in a `[teachers]` table:

    [teachers]
    standard = "paper/table1/standard"        # standard-trained teacher
    adversarial = "paper/table1/pgd10"        # adversarially-trained teacher

Plan time (`engine.config.presets.plan_runs`): each teacher preset is resolved to the newest
*finished* run of exactly that preset in the store with the student's dataset and
architecture (`resolve`). If there is none, the user is told in one line which teacher to
run first, or (`with_teachers=True`) a run of the teacher preset is planned before the
student. Create time (`engine.launch.supervisor.create_runs`): the teacher run ids and checkpoint
paths go into the student's config.json, `run.teachers.<role>` =
`{"preset", "run", "checkpoint", "which"}`. Train time (`load`): the teachers are rebuilt
from their own run's config.json (`engine.nn.models.build_model`), loaded from that
checkpoint, frozen and put in eval mode, and handed to the method as
`StepContext.extras["teachers"] = {"standard": model, "adversarial": model}`.

Checkpoint choice (method.kd_std_checkpoint / kd_adv_checkpoint): the original code loads
the standard teacher's best-*clean*-accuracy model (`std_SA_best`) and the adversarial
teacher's best-*robust*-accuracy (early-stopped) model (`adv_RA_best`). The store keeps
`best.pt` (highest PGD robust accuracy, = RA-best) and the end model (`last.pt`); for
standard training the clean accuracy peaks at ~ the end, while its robust-best model is an
arbitrary early epoch, so the defaults are standard -> 'end', adversarial -> 'best'.

Overrides carried to teacher runs: `--set` values in [data] and [model], and train.device,
so a planned teacher trains on the same data and architecture and device as the student;
nothing else (a teacher trains as its own preset says).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from engine.errors import UserError

# The teacher roles each distillation method needs, in the order they are run/listed.
TEACHER_ROLES: dict[str, tuple[str, ...]] = {"kdsa": ("standard", "adversarial")}


@dataclass
class TeacherRef:
    """A teacher of a planned run: a finished run in the store, or a run planned before it."""

    role: str                 # "standard" | "adversarial"
    preset: str               # the teacher's preset name
    which: str                # "best" | "end"
    run_id: str | None = None  # an existing finished run ...
    planned: Any = None        # ... or the PlannedRun of a teacher planned in the same batch


def ckpt_name(which: str) -> str:
    """'best' -> best.pt; 'end' -> last.pt (its "model" is the end-of-training model)."""
    return "best" if which == "best" else "last"


def which_for(cfg, role: str) -> str:
    return cfg.method.kd_std_checkpoint if role == "standard" else cfg.method.kd_adv_checkpoint


def teacher_overrides(overrides: list[str] | None) -> list[str]:
    """The --set overrides that also apply to a teacher run: [data], [model], train.device."""
    from engine.config.schema import parse_override

    out = []
    for text in overrides or []:
        section, key, _ = parse_override(text)
        if section in ("data", "model") or (section, key) == ("train", "device"):
            out.append(text)
    return out


def read_table(raw: dict, where: str, method: str, home=None) -> dict[str, str]:
    """Validate a preset's `[teachers]` table against the method -> {role: preset name}."""
    from engine.config.presets import find_preset

    roles = TEACHER_ROLES.get(method)
    table = raw.get("teachers")
    if table is None:
        if roles:
            example = ", ".join(f'{r} = "<preset>"' for r in roles)
            raise UserError(f"{where}: method '{method}' needs a [teachers] table naming its teacher presets "
                            f"({example})")
        return {}
    if not isinstance(table, dict):
        raise UserError(f"{where}: 'teachers' must be a table [teachers]")
    if not roles:
        raise UserError(f"{where}: [teachers]: method '{method}' uses no teachers (remove the table, "
                        f"or use one of: {', '.join(TEACHER_ROLES)})")
    for key in table:
        if key not in roles:
            raise UserError(f"{where}: [teachers] unknown key '{key}' (keys: {', '.join(roles)})")
    out = {}
    for role in roles:
        name = table.get(role)
        if name is None:
            raise UserError(f"{where}: [teachers] {role} is missing: name the {role} teacher's preset "
                            f"({role} = \"<preset>\")")
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"{where}: [teachers] {role} = {name!r}: must be a preset name (a string)")
        try:
            pname, _ = find_preset(name, home)
        except UserError as exc:
            raise UserError(f"{where}: [teachers] {role} = {name!r}: {exc}") from None
        out[role] = pname
    return out


def find_run(store, preset: str, dataset: str, arch: str, which: str) -> str | None:
    """The newest finished run of `preset` on `dataset`/`arch` whose checkpoint exists."""
    rows = [r for r in store.runs(state="finished")
            if r.get("preset") == preset and r.get("dataset") == dataset and r.get("arch") == arch]
    for r in sorted(rows, key=lambda r: (r.get("created") or 0, r["id"]), reverse=True):
        if (store.runs_dir / r["id"] / "checkpoints" / f"{ckpt_name(which)}.pt").exists():
            return r["id"]
    return None


def missing_message(method: str, missing: list[tuple[str, str]], overrides: list[str] | None) -> str:
    """One line naming the teacher preset(s) to run first, with the command."""
    extra = "".join(f" --set {o}" for o in teacher_overrides(overrides))
    label = method.upper()
    if len(missing) == 1:
        role, preset = missing[0]
        return (f"{label} needs a finished run of teacher preset '{preset}' ({role}); "
                f"run it first: advlc run {preset}{extra} (or add --with-teachers)")
    names = " and ".join(f"'{p}' ({r})" for r, p in missing)
    cmds = "; ".join(f"advlc run {p}{extra}" for _, p in missing)
    return f"{label} needs finished runs of teacher presets {names}; run them first: {cmds} (or add --with-teachers)"


def run_record(ref: TeacherRef, run_id: str, runs_dir: Path) -> dict:
    """What config.json's run.teachers.<role> holds."""
    return {"preset": ref.preset, "run": run_id, "which": ref.which,
            "checkpoint": str(Path(runs_dir) / run_id / "checkpoints" / f"{ckpt_name(ref.which)}.pt")}


def load(conf: dict, cfg, data, device, store) -> dict[str, nn.Module]:
    """The frozen, eval-mode teachers named in config.json's run.teachers ({} if none needed)."""
    from engine.nn.models import build_model
    from engine.store.rundir import RunDir

    roles = TEACHER_ROLES.get(cfg.method.name, ())
    spec = (conf.get("run") or {}).get("teachers") or {}
    if not roles:
        return {}
    lacking = [r for r in roles if r not in spec]
    if lacking:
        raise UserError(f"method '{cfg.method.name}' needs teacher runs ({', '.join(lacking)}) but this run's "
                        f"config.json names none; create it from its preset (`advlc run PRESET`)")
    out = {}
    for role in roles:
        t = spec[role]
        path = Path(t["checkpoint"])
        if not path.exists() and store is not None:  # the store was moved: find the run by id
            path = store.runs_dir / t["run"] / "checkpoints" / path.name
        trd = RunDir(path.parent.parent)
        state = trd.status().get("state") if trd.exists() else None
        if state != "finished":
            what = f"is {state}" if state else "does not exist"
            raise UserError(f"teacher run {t['run']} ({role}, preset '{t['preset']}') {what}, not finished; "
                            f"finish it first (advlc run {t['preset']})")
        tcfg = trd.run_config()
        if tcfg.data.dataset != cfg.data.dataset:
            raise UserError(f"teacher run {t['run']} ({role}) was trained on {tcfg.data.dataset}, "
                            f"this run trains on {cfg.data.dataset}")
        if not path.exists():
            raise UserError(f"teacher run {t['run']} ({role}): checkpoint {path} is missing")
        model = build_model(tcfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                            image_size=data.image_size)
        ck = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        out[role] = model
    return out
