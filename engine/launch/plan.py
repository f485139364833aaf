"""Planning the runs of a launch: a preset's runs, with their teacher runs found in the store.

A distillation method (KDSA, Chen et al. 2021) names the teacher roles it needs
(`teachers=` in its registration); its preset names a preset for each role:

    [teachers]
    standard = "paper/table1/standard"        # standard-trained teacher
    adversarial = "paper/table1/pgd10"        # adversarially-trained teacher

`plan_runs` resolves each teacher preset to the newest *finished* run of exactly that preset in
the store with the student's dataset and architecture. If there is none, the user is told in
one line which teacher to run first, or (`with_teachers=True`) a run of the teacher preset is
planned before the student. `engine.launch.supervisor.create_runs` writes the teacher run ids
and checkpoint paths into the student's config.json, `run.teachers.<role>` =
`{"preset", "run", "checkpoint", "which"}`; the run process loads them (engine.run.teachers).

Checkpoint choice (`<role>_checkpoint` among the method's parameters, e.g. `[method.kdsa]
standard_checkpoint`): the original code loads the
standard teacher's best-*clean*-accuracy model and the adversarial teacher's best-*robust*-
accuracy (early-stopped) model. The store keeps `best.pt` (highest PGD robust accuracy, =
RA-best) and the end model (`last.pt`); for standard training the clean accuracy peaks at ~ the
end, while its robust-best model is an arbitrary early epoch, so the defaults are standard ->
'end', adversarial -> 'best'.

Overrides carried to teacher runs: `--set` values in [data] and [model], and train.device, so a
planned teacher trains on the same data, architecture and device as the student; nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.config.presets import PlannedRun, find_preset, plan
from engine.config.schema import parse_override
from engine.errors import UserError
from engine.nn.methods import get_method, methods
from engine.store.index import Store


@dataclass
class TeacherRef:
    """A teacher of a planned run: a finished run in the store, or a run planned before it."""

    role: str  # "standard" | "adversarial"
    preset: str  # the teacher's preset name
    which: str  # "best" | "end"
    run_id: str | None = None  # an existing finished run ...
    planned: Any = None  # ... or the PlannedRun of a teacher planned in the same batch


def ckpt_name(which: str) -> str:
    """'best' -> best.pt; 'end' -> last.pt (its "model" is the end-of-training model)."""
    return "best" if which == "best" else "last"


def which_for(cfg, role: str) -> str:
    """Which checkpoint of the `role` teacher: the method's `<role>_checkpoint` parameter ('end' without one)."""
    return getattr(cfg.method.params, f"{role}_checkpoint", "end")


def teacher_overrides(overrides: list[str] | None) -> list[str]:
    """The --set overrides that also apply to a teacher run: [data], [model], train.device."""
    out = []
    for text in overrides or []:
        section, key, _ = parse_override(text)
        if section in ("data", "model") or (section, key) == ("train", "device"):
            out.append(text)
    return out


def read_table(raw: dict, where: str, method: str, home=None) -> dict[str, str]:
    """Validate a preset's `[teachers]` table against the method -> {role: preset name}."""
    roles = get_method(method).teachers
    table = raw.get("teachers")
    if table is None:
        if roles:
            example = ", ".join(f'{r} = "<preset>"' for r in roles)
            raise UserError(
                f"{where}: method '{method}' needs a [teachers] table naming its teacher presets ({example})"
            )
        return {}
    if not isinstance(table, dict):
        raise UserError(f"{where}: 'teachers' must be a table [teachers]")
    if not roles:
        users = ", ".join(n for n, m in sorted(methods().items()) if m.teachers)
        raise UserError(
            f"{where}: [teachers]: method '{method}' uses no teachers (remove the table, or use one of: {users})"
        )
    for key in table:
        if key not in roles:
            raise UserError(f"{where}: [teachers] unknown key '{key}' (keys: {', '.join(roles)})")
    out = {}
    for role in roles:
        name = table.get(role)
        if name is None:
            raise UserError(
                f'{where}: [teachers] {role} is missing: name the {role} teacher\'s preset ({role} = "<preset>")'
            )
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"{where}: [teachers] {role} = {name!r}: must be a preset name (a string)")
        try:
            pname, _ = find_preset(name, home)
        except UserError as exc:
            raise UserError(f"{where}: [teachers] {role} = {name!r}: {exc}") from None
        out[role] = pname
    return out


def find_run(store: Store, preset: str, dataset: str, arch: str, which: str) -> str | None:
    """The newest finished run of `preset` on `dataset`/`arch` whose checkpoint exists."""
    rows = [
        r
        for r in store.runs(state="finished", archived=None)
        if r.get("preset") == preset and r.get("dataset") == dataset and r.get("arch") == arch
    ]
    for r in sorted(rows, key=lambda r: (r.get("created") or 0, r["id"]), reverse=True):
        if store.run_dir(r["id"]).ckpt(ckpt_name(which)).exists():
            return r["id"]
    return None


def missing_message(method: str, missing: list[tuple[str, str]], overrides: list[str] | None) -> str:
    """One line naming the teacher preset(s) to run first, with the command."""
    extra = "".join(f" --set {o}" for o in teacher_overrides(overrides))
    label = method.upper()
    if len(missing) == 1:
        role, preset = missing[0]
        return (
            f"{label} needs a finished run of teacher preset '{preset}' ({role}); "
            f"run it first: advlc run {preset}{extra} (or add --with-teachers)"
        )
    names = " and ".join(f"'{p}' ({r})" for r, p in missing)
    cmds = "; ".join(f"advlc run {p}{extra}" for _, p in missing)
    return f"{label} needs finished runs of teacher presets {names}; run them first: {cmds} (or add --with-teachers)"


def run_record(ref: TeacherRef, run_id: str, store: Store) -> dict:
    """What config.json's run.teachers.<role> holds."""
    return {
        "preset": ref.preset,
        "run": run_id,
        "which": ref.which,
        "checkpoint": str(store.run_dir(run_id).ckpt(ckpt_name(ref.which))),
    }


def plan_runs(
    ref: str,
    overrides: list[str] | None = None,
    *,
    seeds: int | None = None,
    home=None,
    with_teachers: bool = False,
    store: Store | None = None,
) -> list[PlannedRun]:
    """Every run a preset stands for (engine.config.presets.plan), each with its teachers: a
    finished run of each teacher preset in `store` (default Store(home)), or with `with_teachers`
    a run of that teacher preset planned and returned before the students."""
    p = plan(ref, overrides, seeds=seeds, home=home)
    return _plan_teachers(p.runs, p.raw, p.where, list(overrides or []), home, with_teachers, store) + p.runs


def _plan_teachers(
    runs: list[PlannedRun], raw: dict, where: str, overrides: list[str], home, with_teachers: bool, store
) -> list[PlannedRun]:
    """Attach TeacherRefs to `runs`; returns the teacher runs to plan first (with_teachers)."""
    tables = {}
    for r in runs:
        if r.cfg.method.name not in tables:
            tables[r.cfg.method.name] = read_table(raw, where, r.cfg.method.name, home)
    if not any(tables.values()):
        return []
    store = store or Store(home)
    found: dict[tuple, str | None] = {}
    planned: dict[tuple, PlannedRun] = {}
    first: list[PlannedRun] = []
    missing: list[tuple[str, str]] = []
    for r in runs:
        dataset, arch = r.cfg.data.dataset, r.cfg.model.arch
        for role, tpreset in tables[r.cfg.method.name].items():
            which = which_for(r.cfg, role)
            key = (tpreset, dataset, arch, which)
            if key not in found:
                found[key] = find_run(store, tpreset, dataset, arch, which)
            if found[key]:
                r.teachers[role] = TeacherRef(role, tpreset, which, run_id=found[key])
                continue
            if not with_teachers:
                if (role, tpreset) not in missing:
                    missing.append((role, tpreset))
                continue
            pkey = (tpreset, dataset, arch)
            if pkey not in planned:
                tplan = plan_runs(
                    tpreset, teacher_overrides(overrides), seeds=1, home=home, with_teachers=True, store=store
                )
                mains = [p for p in tplan if not p.role]
                if len(mains) != 1:
                    raise UserError(
                        f"{where}: [teachers] {role} = {tpreset!r}: a teacher preset must stand for "
                        f"one run (it has a [sweep] of {len(mains)})"
                    )
                t = mains[0]
                if (t.cfg.data.dataset, t.cfg.model.arch) != (dataset, arch):
                    raise UserError(
                        f"{where}: [teachers] {role} = {tpreset!r}: that preset trains "
                        f"{t.cfg.model.arch} on {t.cfg.data.dataset}, this one {arch} on {dataset}"
                    )
                t.role = f"teacher:{role}"
                planned[pkey] = t
                first.extend(tplan)
            r.teachers[role] = TeacherRef(role, tpreset, which, planned=planned[pkey])
    if missing:
        raise UserError(missing_message(runs[0].cfg.method.name, missing, overrides))
    return first
