"""Presets: TOML files under `presets/` (shipped with the package) and `$ADVLC_HOME/presets/`.

A preset's name is its path below its root without `.toml`, e.g. `quick/digits-fgsm_n-advlc`
or `paper/table1/pgd10-advlc`; user presets appear as `user/<name>`. A path to any TOML
file also works wherever a preset name does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from engine import config as C
from engine.errors import UserError

DEFAULT_PRESET = "quick/digits-fgsm_n-advlc"


@dataclass
class PresetEntry:
    name: str
    path: Path
    description: str
    reference: str
    group: str           # folder part of the name, e.g. "paper/table1"


def builtin_root() -> Path:
    return Path(str(resources.files("presets")))


def user_root(home: Path | None = None) -> Path:
    from engine.store import default_home

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
            try:
                info = C.load_toml(path).get("preset", {})
            except UserError:
                info = {"description": "(invalid TOML)"}
            out.append(PresetEntry(name, path, str(info.get("description", "")),
                                   str(info.get("reference", "")), name.rpartition("/")[0]))
    return sorted(out, key=lambda e: (e.name.startswith("user/"), e.name))


def find_preset(ref: str, home=None) -> tuple[str, Path]:
    """A preset name (or a path to a TOML file) -> (name, path)."""
    p = Path(ref).expanduser()
    if ref.endswith(".toml") and p.is_file():
        return str(p), p
    name = ref.removesuffix(".toml")
    for prefix, root in _roots(home):
        if prefix and not name.startswith(prefix):
            continue
        cand = root / (name[len(prefix):] + ".toml")
        if cand.is_file():
            return name, cand
    names = [e.name for e in list_presets(home)]
    close = [n for n in names if name.split("/")[-1] in n][:3]
    hint = f" (did you mean {', '.join(close)}?)" if close else " (see `advlc presets`)"
    raise UserError(f"no preset '{ref}'{hint}")


def merge(base: dict, child: dict) -> dict:
    """Tables of `child` override those of `base`, key by key."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def read_preset(ref: str, home=None, _seen: tuple = ()) -> tuple[str, Path, dict]:
    """Read a preset's TOML with its `extends` chain merged -> (name, path, tables)."""
    name, path = find_preset(ref, home)
    raw = C.load_toml(path)
    parent = raw.get("preset", {}).get("extends", "")
    if parent:
        if parent in _seen:
            raise UserError(f"{path}: preset.extends = {parent!r}: circular (via {', '.join(_seen)})")
        _, _, base = read_preset(parent, home, _seen + (name,))
        base.get("preset", {}).pop("description", None)
        base.get("preset", {}).pop("reference", None)
        raw = merge(base, raw)
        raw["preset"].pop("extends", None)
    return name, path, raw


def load_preset(ref: str, overrides: list[str] | None = None, home=None) -> tuple[str, C.RunConfig, dict]:
    """Read, override, resolve and validate a preset -> (name, RunConfig, raw TOML dict)."""
    name, path, raw = read_preset(ref, home)
    where = os.path.relpath(path) if not str(path).startswith(str(builtin_root())) else f"presets/{name}.toml"
    cfg = C.build(raw, where, overrides)
    return name, cfg, raw


@dataclass
class PlannedRun:
    """One run a preset asks for: its config and, for sweeps, the grid point it stands for."""

    preset: str
    cfg: C.RunConfig
    point: dict            # e.g. {"method.lam": 0.3}; empty when the preset has no sweep
    seed: int


def plan_runs(ref: str, overrides: list[str] | None = None, *, seeds: int | None = None,
              home=None) -> list[PlannedRun]:
    """Every run a preset stands for: its sweep grid (if any) x its seeds.

    `seeds` (e.g. from --seeds) overrides the preset's own `[sweep] seeds`; seeds count up
    from train.seed.
    """
    name, cfg, raw = load_preset(ref, overrides, home)
    n = seeds if seeds else int(raw.get("sweep", {}).get("seeds", 1))
    return [PlannedRun(name, _with_seed(cfg, cfg.train.seed + i), {}, cfg.train.seed + i) for i in range(n)]


def _with_seed(cfg: C.RunConfig, seed: int) -> C.RunConfig:
    import dataclasses

    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
