"""Presets: TOML files under `presets/` (shipped with the package) and `$ADVLC_HOME/presets/`.

A preset's name is its path below its root without `.toml`, e.g. `quick/digits-fgsm_n-advlc`
or `paper/table1/pgd10-advlc`; user presets appear as `user/<name>`. A path to any TOML
file also works wherever a preset name does.

Bounds: an `extends` chain is at most `MAX_EXTENDS` files long and may not come back to a file
already in it (compared by resolved path); a plan is at most `max_runs()` runs (ADVLC_MAX_RUNS,
default `MAX_RUNS`), counted from the sweep's sizes and the seeds before any point is planned;
a run's seeds stay within `schema.SEED_MAX`. A preset file that cannot be read is listed as
broken by `list_presets`, never an error for the other presets.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import itertools
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from engine.config import schema as C
from engine.errors import UserError
from engine.paths import default_home

DEFAULT_PRESET = "quick/robust-overfitting"

MAX_RUNS = 1000
"""The most runs one plan may have (sweep points x seeds) unless ADVLC_MAX_RUNS allows more."""
MAX_RUNS_ENV = "ADVLC_MAX_RUNS"
MAX_EXTENDS = 32
"""The longest `extends` chain (a preset, its base, that one's base, ...)."""


def env_limit(name: str, default: int) -> int:
    """A limit from the environment variable `name` (an integer >= 1), else `default`."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 18 or int(text) < 1:
        raise UserError(
            f"environment variable {name}={text[:40]!r}: must be an integer between 1 and "
            f"999999999999999999 (default {default})"
        )
    return int(text)


def max_runs() -> int:
    """The most runs one plan may have: ADVLC_MAX_RUNS, else MAX_RUNS."""
    return env_limit(MAX_RUNS_ENV, MAX_RUNS)


@dataclass
class PresetEntry:
    name: str
    path: Path
    description: str
    reference: str
    group: str  # folder part of the name, e.g. "paper/table1"
    error: str = ""  # why the file cannot be read ("" when it can); the description says it too


def builtin_root() -> Path:
    return Path(str(resources.files("presets")))


def user_root(home: Path | None = None) -> Path:
    return (Path(home) if home else default_home()) / "presets"


def _roots(home=None):
    yield "", builtin_root()
    ur = user_root(home)
    if ur.is_dir():
        yield "user/", ur


def list_presets(home=None) -> list[PresetEntry]:
    out = []
    for prefix, root in _roots(home):
        for path in sorted(root.rglob("*.toml")):
            if path.name.startswith("_"):
                continue  # bases for `extends`, not runnable on their own
            name = prefix + path.relative_to(root).with_suffix("").as_posix()
            error = ""
            try:
                _read(name, home, (), hints=False)  # its extends chain too (first: a symlink out is never read)
                info = C.load_toml(path).get("preset", {})
            except UserError as exc:  # a broken file is listed as broken, never breaks the others
                error = str(exc).removeprefix(f"{_where(name, path)}: ").removeprefix(f"{path}: ")
                info = {"description": f"(broken: {error})"}
            out.append(
                PresetEntry(
                    name,
                    path,
                    str(info.get("description", "")),
                    str(info.get("reference", "")),
                    name.rpartition("/")[0],
                    error,
                )
            )
    return sorted(out, key=lambda e: (e.name.startswith("user/"), e.name))


def find_preset(ref: str, home=None, hints: bool = True) -> tuple[str, Path]:
    """A preset name (or a path to a TOML file) -> (name, path); `hints`: name similar presets
    when there is none (which lists them all, so list_presets itself passes False).

    A path to a `.toml` file is the user's own file, typed on their command line: read where it is.
    A preset NAME is looked up only in the shipped presets folder and the user's ($ADVLC_HOME/presets):
    a name that leads anywhere else (`user/../../x`, a symlink out of those folders) is refused in
    one line, before the file is read."""
    p = Path(ref).expanduser()
    if ref.endswith(".toml") and p.is_file():
        return str(p), p
    name = ref.removesuffix(".toml")
    for prefix, root in _roots(home):
        if prefix and not name.startswith(prefix):
            continue
        cand = root / (name[len(prefix) :] + ".toml")
        if cand.is_file():
            return name, _inside_preset_folders(ref, cand, home)
    if not hints:
        raise UserError(f"no preset {ref!r} (see `advlc presets`)")
    names = [e.name for e in list_presets(home)]
    close = [n for n in names if name.split("/")[-1] in n][:3]
    hint = f" (did you mean {', '.join(close)}?)" if close else " (see `advlc presets`)"
    raise UserError(f"no preset {ref!r}{hint}")


def _inside_preset_folders(ref: str, path: Path, home) -> Path:
    """`path` when it resolves (symlinks followed, `..` taken) inside the shipped presets folder or
    the user's presets folder; a one-line UserError naming both folders otherwise."""
    real = _resolved(path)
    folders = [_resolved(builtin_root()), _resolved(user_root(home))]
    if any(real == f or real.is_relative_to(f) for f in folders):
        return path
    where = f" (it leads to {real})" if real != path.absolute() else ""
    raise UserError(
        f"preset {ref!r}: {path}{where} is outside the preset folders ({folders[0]} and "
        f"{folders[1]}): presets are read only from there; copy the file into {folders[1]}"
    )


def merge(base: dict, child: dict) -> dict:
    """Tables of `child` override those of `base`, key by key."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def _check_tables(raw: dict, where: str) -> None:
    """Each known top-level name of a preset ([preset], the sections, [sweep], ...) is a table."""
    known = set(C.section_classes()) | set(C.EXTRA_TABLES)
    for key, value in raw.items():
        if key in known and not isinstance(value, dict):
            raise UserError(f"{where}: '{key}' must be a table [{key}], not {C._fmt(value)[:40]}")


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: the path as it is
        return path.absolute()


def read_preset(ref: str, home=None) -> tuple[str, Path, dict]:
    """Read a preset's TOML with its `extends` chain merged -> (name, path, tables)."""
    return _read(ref, home, ())


def _read(ref: str, home, chain: tuple, hints: bool = True) -> tuple[str, Path, dict]:
    """`read_preset`; `chain` holds (resolved path, where) of the presets extending this one."""
    name, path = find_preset(ref, home, hints)
    where = _where(name, path)
    raw = C.load_toml(path)
    _check_tables(raw, where)
    parent = raw.get("preset", {}).get("extends", "")
    if not isinstance(parent, str):
        raise UserError(f"{where}: preset.extends = {C._fmt(parent)[:40]}: must be a preset name (a string)")
    if parent:
        chain = chain + ((_resolved(path), where),)
        try:
            pname, ppath = find_preset(parent, home, hints)
        except UserError as exc:
            raise UserError(f"{where}: preset.extends = {parent!r}: {exc}") from None
        if _resolved(ppath) in {p for p, _ in chain}:
            names = " -> ".join(w for _, w in chain)
            raise UserError(f"{where}: preset.extends = {parent!r}: circular ({names} -> {_where(pname, ppath)})")
        if len(chain) >= MAX_EXTENDS:
            raise UserError(
                f"{where}: preset.extends = {parent!r}: the extends chain is longer than {MAX_EXTENDS} presets"
            )
        _, _, base = _read(parent, home, chain, hints)
        base.get("preset", {}).pop("description", None)
        base.get("preset", {}).pop("reference", None)
        raw = merge(base, raw)
        raw["preset"].pop("extends", None)
    return name, path, raw


def load_preset(ref: str, overrides: list[str] | None = None, home=None) -> tuple[str, C.RunConfig, dict]:
    """Read, override, resolve and validate a preset -> (name, RunConfig, raw TOML dict)."""
    name, path, raw = read_preset(ref, home)
    cfg = C.build(raw, _where(name, path), overrides)
    return name, cfg, raw


@dataclass
class PlannedRun:
    """One run a preset asks for: its config and, for sweeps, the grid point it stands for."""

    preset: str
    cfg: C.RunConfig
    point: dict  # e.g. {"method.lam": 0.3}; empty when the preset has no sweep
    seed: int
    teachers: dict = field(default_factory=dict)  # role -> engine.launch.plan.TeacherRef (KDSA)
    role: str = ""  # "teacher:<role>" for a teacher run planned before its student
    overrides: list = field(default_factory=list)  # the --set overrides as given
    reference: dict | None = None  # the preset's own resolution at this point (no overrides)
    preset_sha256: str = ""  # preset_hash of the preset's merged tables
    command: str | None = None  # the command line that asked for it, or "app" (set by the caller)


def _where(name: str, path: Path) -> str:
    """How errors name a preset file: presets/NAME.toml for a built-in one, else its path."""
    if str(path).startswith(str(builtin_root())):
        return f"presets/{name}.toml"
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)


def read_sweep(raw: dict, where: str) -> tuple[int | None, list[tuple[str, list]]]:
    """Validate a preset's `[sweep]` table -> (seeds or None, [("section.key", [values...]), ...]).

    Keys are `seeds = N` and `"section.key" = [v1, v2, ...]` (the quoted form; the unquoted
    dotted form `method.lam = [...]` is read the same), a method's parameter as
    `"method.<name>.key"`. Each problem is one UserError line naming the file and the key.
    """
    table = raw.get("sweep")
    if table is None:
        return None, []
    if not isinstance(table, dict):
        raise UserError(f"{where}: 'sweep' must be a table [sweep]")
    classes = C.section_classes()
    sections = [s for s in classes if s != "preset"]
    keys = C.config_keys()
    seeds, axes, seen = None, [], set()
    for key, val in table.items():
        if key == "seeds":
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise UserError(f"{where}: [sweep] seeds = {C._fmt(val)}: must be an integer >= 1")
            seeds = val
            continue
        items = _dotted(key, val) if isinstance(val, dict) and key in classes else [(key, val)]
        for path, values in items:
            section, _, fname = path.partition(".")
            if section not in sections or not fname:
                raise UserError(
                    f"{where}: [sweep] unknown key '{path}': must be seeds or \"section.key\" "
                    f"(sections: {', '.join(sections)})"
                )
            if path not in keys:
                names = [k.partition(".")[2] for k in keys if k.startswith(section + ".")]
                raise UserError(f"{where}: [sweep] unknown key '{path}' (keys of [{section}]: {', '.join(names)})")
            if path in seen:
                raise UserError(f"{where}: [sweep] '{path}' is given twice")
            if not isinstance(values, list):
                raise UserError(
                    f"{where}: [sweep] {path} = {C._fmt(values)}: must be a list of values "
                    f'(e.g. "{path}" = [{C._fmt(values)}])'
                )
            if not values:
                raise UserError(f"{where}: [sweep] {path} = []: empty list (give at least one value)")
            seen.add(path)
            axes.append((path, values))
    return seeds, axes


def _dotted(key: str, val: dict) -> list[tuple[str, Any]]:
    """An unquoted dotted sweep key (`method.lam = [...]`, `method.kdsa.temperature = [...]`) as
    TOML reads it, nested tables, back to ("method.lam", [...]) pairs."""
    out: list[tuple[str, Any]] = []
    for k, v in val.items():
        out += _dotted(f"{key}.{k}", v) if isinstance(v, dict) else [(f"{key}.{k}", v)]
    return out


def sweep_points(axes: list[tuple[str, list]]) -> list[dict]:
    """The Cartesian product of the axes, first axis slowest: [{"method.lam": 0.1, ...}, ...]."""
    keys = [k for k, _ in axes]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


@dataclass
class Plan:
    """What a preset asks for: its runs, and the preset's tables (for [teachers], [slurm])."""

    runs: list[PlannedRun]
    raw: dict
    where: str  # how errors name the preset file


def plan(
    ref: str, overrides: list[str] | None = None, *, seeds: int | None = None, home=None, limit: int | None = None
) -> Plan:
    """Every run a preset stands for: its sweep grid (if any) x its seeds.

    Precedence, lowest first: the preset's tables (with `extends`), then the `[sweep]` point,
    then `--set` overrides. A `--set` on a swept key pins it: that axis is dropped from the
    grid (rather than giving identical runs). `seeds` (e.g. from --seeds) replaces the
    preset's `[sweep] seeds`; the seeds of each point count up from its train.seed (--seed).
    Every point is validated; an invalid value is a UserError naming the file, key and value.
    More than `limit` runs (default `max_runs()`) is a UserError, said before any point is planned.
    Teacher runs (KDSA's [teachers]) are resolved against a store by engine.launch.plan.
    """
    overrides = list(overrides or [])
    name, path, raw = read_preset(ref, home)
    where = _where(name, path)
    sweep_seeds, axes = read_sweep(raw, where)
    pinned = {f"{s}.{k}" for s, k, _ in (C.parse_override(o) for o in overrides)}
    axes = [(k, v) for k, v in axes if k not in pinned]
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise UserError(f"--seeds {seeds}: must be an integer >= 1")
    n = seeds if seeds else (sweep_seeds or 1)
    check_size(where, axes, n, "--seeds" if seeds else "[sweep] seeds" if sweep_seeds else "", limit)
    digest = preset_hash(raw)
    runs: list[PlannedRun] = []
    for values in sweep_points(axes):
        cfg = C.from_dict(raw, where)
        point = {}
        for key, value in values.items():
            C.set_key(cfg, key, value, f"{where} [sweep]")
            point[key] = C.get_key(cfg, key)
        reference = C.resolve(copy.deepcopy(cfg), where).to_dict() if overrides else None
        C.apply_overrides(cfg, overrides)
        desc = where + (" [sweep] " + ", ".join(f"{k}={C._fmt(v)}" for k, v in point.items()) if point else "")
        C.resolve(cfg, f"{desc} (with --set)" if overrides else desc)
        if cfg.train.seed + n - 1 > C.SEED_MAX:
            raise UserError(
                f"{desc}: train.seed = {cfg.train.seed} with {n} seeds: the last seed would be "
                f"{cfg.train.seed + n - 1}, seeds must be <= {C.SEED_MAX} (2**32 - 1)"
            )
        for i in range(n):
            runs.append(
                PlannedRun(
                    name,
                    _with_seed(cfg, cfg.train.seed + i),
                    dict(point),
                    cfg.train.seed + i,
                    overrides=list(overrides),
                    reference=reference or cfg.to_dict(),
                    preset_sha256=digest,
                )
            )
    C.check_table_overrides(overrides, [p.cfg for p in runs], where)
    return Plan(runs, raw, where)


def check_size(where: str, axes: list[tuple[str, list]], seeds: int, seeds_from: str, limit: int | None = None) -> int:
    """The number of runs of a plan (points of the sweep x seeds); a UserError past `limit`
    (default `max_runs()`), computed from the sizes alone, before any point is planned."""
    limit = max_runs() if limit is None else limit
    total = math.prod(len(v) for _, v in axes) * seeds
    if total > limit:
        sizes = " x ".join(str(len(v)) for _, v in axes)
        what = (
            (f"[sweep] of {sizes} points" if axes else "1 point")
            + f" x {seeds} seed{'s' if seeds != 1 else ''}"
            + (f" ({seeds_from})" if seeds_from else "")
        )
        shown = str(total) if total < 10**15 else f"about 10^{len(str(total)) - 1}"
        raise UserError(
            f"{where}: {what} is {shown} runs, more than the {limit} one plan may have "
            f"(fewer sweep values or seeds, or {MAX_RUNS_ENV}=N to allow N)"
        )
    return total


def preset_runs(
    ref: str, overrides: list[str] | None = None, *, seeds: int | None = None, home=None, limit: int | None = None
) -> list[PlannedRun]:
    """`plan(...).runs`: the runs a preset stands for, without their teachers."""
    return plan(ref, overrides, seeds=seeds, home=home, limit=limit).runs


def preset_hash(raw: dict) -> str:
    """sha256 of a preset's merged tables (its `extends` chain included): changes when the preset does."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()


def _with_seed(cfg: C.RunConfig, seed: int) -> C.RunConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
