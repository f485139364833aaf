"""RunConfig: everything one training run needs, typed, documented and validated.

A preset is a TOML file whose tables mirror the sections below (`[data]`, `[model]`,
`[attack]`, `[method]`, `[train]`, `[eval]`, `[swa]`, plus `[preset]` for its description).
A method's own parameters are the table `[method.<name>]` (declared by the method's module,
engine/nn/methods/) and `--set method.<name>.key=value`. `--set section.key=value` overrides any
field after the file is read. Derived fields
(e.g. an attack step left out) are filled in by `resolve`, so the config a run stores
is complete and explicit.

Every field declares its meaning, unit and allowed values in its metadata; the same
metadata drives validation, the error messages and `docs/PRESETS.md`.

Perturbation sizes are in [0, 1] pixel units and may be written as fractions: `eps = "8/255"`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import typing
from pathlib import Path
from typing import Any, Mapping

from engine.errors import UserError
from engine.nn.methods import Method, get_method, methods
from engine.sections import (  # noqa: F401 - the sections are this module's vocabulary; importers use C.X
    ARCHS,
    ATTACKS,
    DATASETS,
    DEVICES_RE,
    EXPERIMENT_KINDS,
    EXPERIMENT_PARAMS,
    EXTRA_METRICS,
    FINAL_ATTACKS,
    FINAL_CKPTS,
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_IMAGES,
    POINT_KEYS,
    SEED_MAX,
    AttackConfig,
    DataConfig,
    EachOf,
    EvalConfig,
    ExperimentConfig,
    MethodConfig,
    ModelConfig,
    PresetInfo,
    RunConfig,
    SWAConfig,
    TrainConfig,
    opt,
    option_fields,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib


def label(cfg: RunConfig) -> str:
    """Short human name of a config's training scheme, e.g. 'fgsm_n+advlc' or 'pgd'."""
    m = get_method(cfg.method.name)
    if m.fixed_attack is not None:
        return cfg.method.name
    return f"{cfg.attack.name}+{cfg.method.name}"


def section_classes() -> dict[str, type]:
    hints = typing.get_type_hints(RunConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(RunConfig)}


def field_hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# ---------------------------------------------------------------------------------------
# value coercion: TOML / override text -> field type
# ---------------------------------------------------------------------------------------

_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _describe(args[0])
    if origin is list:
        return "a list of " + _describe(typing.get_args(tp)[0]) + "s"
    return {int: "an integer", float: 'a number (e.g. 0.03 or "8/255")', bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


def coerce(value: Any, tp) -> Any:
    """Convert `value` to type `tp`; raise ValueError with what was expected."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0])
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                text = text[1:-1] if text.endswith("]") else text
            value = [v for v in (p.strip() for p in text.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ValueError(_describe(tp))
        return [coerce(v, inner) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
            return False
        raise ValueError(_describe(tp))
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(_describe(tp))
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(_describe(tp))
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(_describe(tp))
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            m = _FRACTION.match(value)
            try:
                out = float(m.group(1)) / float(m.group(2)) if m else float(value)
            except (ValueError, ZeroDivisionError):
                raise ValueError(_describe(tp)) from None
        else:
            raise ValueError(_describe(tp))
        if not math.isfinite(out):
            raise ValueError("a finite number")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(_describe(tp))
    raise ValueError(f"unsupported type {tp}")


def _allowed(meta: Mapping) -> str | None:
    if meta.get("choices"):
        return (
            "one of "
            + ", ".join(repr(c) for c in meta["choices"] if c != "")
            + (" (or empty)" if "" in meta["choices"] else "")
        )
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        return f"between {_num(lo)} and {_num(hi)}"
    if lo is not None:
        return f">= {_num(lo)}"
    if hi is not None:
        return f"<= {_num(hi)}"
    return None


def _num(v) -> str:
    """A bound as `allowed` says it: an integer in full (4294967295), a float in %g."""
    return str(v) if isinstance(v, int) else f"{v:g}"


def _check_range(value, meta) -> str | None:
    """Return what is allowed when `value` violates the field's metadata, else None."""
    if value is None:
        return None
    choices = meta.get("choices")
    if choices and value not in choices:
        return _allowed(meta)
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if meta.get("min") is not None and v < meta["min"]:
                return _allowed(meta)
            if meta.get("max") is not None and v > meta["max"]:
                return _allowed(meta)
    return None


def _fmt(value) -> str:
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


# ---------------------------------------------------------------------------------------
# building a RunConfig from a dict (TOML) and overrides
# ---------------------------------------------------------------------------------------

# Top-level TOML tables that are not RunConfig sections but are understood by the
# preset layer (sweeps, experiment definitions, dependencies).
EXTRA_TABLES = ("sweep", "teachers", "slurm")


def _set_field(section_obj, section: str, key: str, raw, where: str):
    hints = field_hints(type(section_obj))
    fields = {f.name: f for f in option_fields(type(section_obj))}
    if key not in fields:
        allowed = ", ".join(fields)
        more = {
            "method": " and a table [method.<name>] of a method's own parameters",
            "experiment": " and a table [experiment.<kind>] of the kind's own parameters",
        }.get(section, "")
        raise UserError(f"{where}: unknown key '{section}.{key}' (keys of [{section}]: {allowed}{more})")
    meta = fields[key].metadata
    try:
        value = coerce(raw, hints[key])
    except ValueError as exc:
        raise UserError(f"{where}: {section}.{key} = {_fmt(raw)}: must be {exc}") from None
    bad = _check_range(value, meta)
    if bad:
        raise UserError(f"{where}: {section}.{key} = {_fmt(value)}: must be {bad}")
    setattr(section_obj, key, value)


def with_params() -> dict[str, Method]:
    """The registered methods that have parameters of their own, by name."""
    return {n: m for n, m in sorted(methods().items()) if m.params is not None}


TABLED = {"method": "name", "experiment": "kind"}
"""The sections that hold per-name tables of parameters, and the option that picks the run's own:
`[method.<name>]` (declared by each method, engine.nn.methods) and `[experiment.<kind>]`
(engine.sections.EXPERIMENT_PARAMS)."""


def param_classes(section: str) -> dict[str, type]:
    """{name: its parameters class} of a tabled section."""
    if section == "method":
        return {n: m.params for n, m in with_params().items()}  # type: ignore[misc]
    return dict(EXPERIMENT_PARAMS)


def _table(cfg: RunConfig, section: str, name: str, where: str):
    """The `[section.<name>]` table of `cfg` (made with its defaults when first named)."""
    classes = param_classes(section)
    if name not in classes:
        known = ", ".join(f"{section}.{n}" for n in classes)
        if section == "method":
            what = f"method '{name}' has no parameters of its own" if name in methods() else "no such method"
        else:
            what = "no such experiment kind"
        raise UserError(f"{where}: unknown table [{section}.{name}]: {what} (tables: {known})")
    tables = getattr(cfg, section).tables
    if name not in tables:
        tables[name] = classes[name]()
    return tables[name]


def set_key(cfg: RunConfig, key: str, raw, where: str) -> None:
    """Set one option by its key: "section.key", or "method.<name>.key" / "experiment.<kind>.key"
    for a method's or an experiment kind's own parameter."""
    section, _, rest = key.partition(".")
    if section in TABLED and "." in rest:
        name, _, pkey = rest.partition(".")
        _set_field(_table(cfg, section, name, where), f"{section}.{name}", pkey, raw, where)
    elif section in TABLED and rest in legacy_keys(section):
        for name, pkey in legacy_keys(section)[rest]:  # every owner of an old flat key takes it
            _set_field(_table(cfg, section, name, where), f"{section}.{name}", pkey, raw, f"{where} ({key})")
    else:
        _set_field(getattr(cfg, section), section, rest, raw, where)


def get_key(cfg: RunConfig, key: str):
    """The value of one option by its key (see `set_key`)."""
    section, _, rest = key.partition(".")
    if section in TABLED and "." in rest:
        name, _, pkey = rest.partition(".")
        return getattr(getattr(cfg, section).tables[name], pkey)
    return getattr(getattr(cfg, section), rest)


def legacy_keys(section: str = "method") -> dict[str, list[tuple[str, str]]]:
    """The flat keys of a tabled section's parameters before each owner had its own table:
    {old key: [(owner, its parameter), ...]}, from the parameters classes' FLAT_KEYS."""
    out: dict[str, list[tuple[str, str]]] = {}
    for name, cls in param_classes(section).items():
        for old, new in getattr(cls, "FLAT_KEYS", {}).items():
            out.setdefault(old, []).append((name, new))
    return out


def from_dict(data: dict, where: str) -> RunConfig:
    """Build a RunConfig from a preset's tables; `where` names the file in errors."""
    cfg = RunConfig()
    classes = section_classes()
    for section, table in data.items():
        if section in EXTRA_TABLES:
            continue
        if section not in classes:
            allowed = ", ".join(f"[{s}]" for s in list(classes) + list(EXTRA_TABLES))
            raise UserError(f"{where}: unknown table [{section}] (allowed: {allowed})")
        if not isinstance(table, dict):
            raise UserError(f"{where}: '{section}' must be a table [{section}]")
        options = {f.name for f in option_fields(classes[section])}
        for key, raw in table.items():
            if section in TABLED and isinstance(raw, dict) and key not in options:
                for pkey, value in raw.items():
                    set_key(cfg, f"{section}.{key}.{pkey}", value, where)
            else:
                set_key(cfg, f"{section}.{key}", raw, where)
    return cfg


def parse_override(text: str) -> tuple[str, str, Any]:
    """'attack.eps=8/255' -> ('attack', 'eps', value-as-parsed-by-TOML-or-string);
    'method.kdsa.temperature=3' -> ('method', 'kdsa.temperature', 3.0)."""
    if "=" not in text:
        raise UserError(f"--set {text}: expected section.key=value (e.g. --set train.epochs=5)")
    path, _, raw = text.partition("=")
    path = path.strip()
    section = path.partition(".")[0]
    if not (path.count(".") == 1 or (section in TABLED and path.count(".") == 2)) or "" in path.split("."):
        raise UserError(
            f"--set {text}: key must be section.key (e.g. attack.eps), method.<name>.key "
            f"(e.g. method.kdsa.temperature) or experiment.<kind>.key, got '{path}'"
        )
    key = path.partition(".")[2]
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except (RecursionError, MemoryError, ValueError, TypeError):  # e.g. [[[[... thousands deep
        raise UserError(f"--set {path}=…: the value cannot be read (nested too deeply or too large)") from None
    if _too_deep(value, MAX_TOML_DEPTH):
        raise UserError(f"--set {path}=…: the value is nested more than {MAX_TOML_DEPTH} deep")
    return section, key, value


def key_type(key: str):
    """The type of option `key` ("section.key", "method.<name>.key", "experiment.<kind>.key"),
    or None if unknown."""
    section, _, rest = key.partition(".")
    if section in TABLED and rest in legacy_keys(section):  # an old flat key: its first owner's parameter
        name, pkey = legacy_keys(section)[rest][0]
        key = f"{section}.{name}.{pkey}"
    return config_keys().get(key)


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    classes = section_classes()
    for text in overrides or []:
        section, key, value = parse_override(text)
        if section not in classes:
            raise UserError(f"--set {text}: unknown section '{section}' (sections: {', '.join(classes)})")
        if key_type(f"{section}.{key}") is str and not isinstance(value, str):
            value = text.partition("=")[2].strip()  # a string field takes the text as written (run id 1234)
        set_key(cfg, f"{section}.{key}", value, f"--set {text}")
    return cfg


def resolve(cfg: RunConfig, where: str) -> RunConfig:
    """Fill in derived values and check cross-field rules; errors name `where`."""
    if cfg.method.name not in methods():
        raise UserError(f"{where}: method.name = {cfg.method.name!r}: must be one of {', '.join(sorted(methods()))}")
    method = get_method(cfg.method.name)
    a = cfg.attack
    if method.fixed_attack is not None:
        if a.name not in ("", method.fixed_attack):
            raise UserError(
                f"{where}: attack.name = {a.name!r}: method '{cfg.method.name}' trains with "
                f"'{method.fixed_attack}' (leave attack.name empty, or pick a regularised method)"
            )
        a.name = method.fixed_attack
    else:
        if a.name == "":
            allowed = ", ".join(repr(x) for x in method.attacks)
            raise UserError(
                f"{where}: attack.name is empty: method '{cfg.method.name}' needs a training attack, one of {allowed}"
            )
        if a.name not in method.attacks:
            allowed = ", ".join(repr(x) for x in method.attacks)
            raise UserError(f"{where}: attack.name = {a.name!r}: method '{cfg.method.name}' combines with {allowed}")
    if a.alpha is None:
        a.alpha = a.eps / 4 if a.name == "pgd" else a.eps
    if a.noise is None:
        a.noise = a.eps
    e = cfg.eval
    if e.eps is None:
        e.eps = a.eps  # the threat model: standard training is evaluated at the same eps
    if e.pgd_alpha is None:
        e.pgd_alpha = e.eps / 4
    if cfg.train.select_on == "val" and cfg.data.val_size == 0:
        raise UserError(
            f'{where}: train.select_on = "val" needs a validation split: set data.val_size '
            f"(images held out of the training set, e.g. data.val_size=200)"
        )
    ms = cfg.train.lr_milestones
    if any(m < 0 for m in ms) or ms != sorted(ms):
        raise UserError(f"{where}: train.lr_milestones = {ms}: must be increasing epochs >= 0")
    if not DEVICES_RE.match(cfg.train.device):
        raise UserError(f"{where}: train.device = {cfg.train.device!r}: must be auto, cpu, cuda or cuda:N")
    method.validate(cfg, where)
    for section, option in TABLED.items():
        name = getattr(getattr(cfg, section), option)
        if name in param_classes(section):
            params = _table(cfg, section, name, where)
            problem = params.problem() if hasattr(params, "problem") else None
            if problem:
                raise UserError(f"{where}: {problem}")
    return cfg


def check_table_overrides(overrides: list[str], cfgs: list[RunConfig], where: str) -> None:
    """A `--set method.<name>.key` for a method none of the planned runs `cfgs` trains with (or an
    `experiment.<kind>.key` for a kind none of them is) is an error: it would change nothing."""
    for text in overrides or []:
        section, key, _ = parse_override(text)
        if section not in TABLED or "." not in key:
            continue
        option = TABLED[section]
        names = {getattr(getattr(c, section), option) for c in cfgs}
        name = key.partition(".")[0]
        if name not in names:
            what = "trains with method" if section == "method" else "is an experiment of kind"
            shown = ", ".join(repr(n) if n else "none" for n in sorted(names))
            raise UserError(
                f"--set {text}: no run of {where} {what} '{name}' ({section}.{option}: {shown}); "
                f"[{section}.{name}] would change nothing"
            )


def build(data: dict, where: str, overrides: list[str] | None = None) -> RunConfig:
    cfg = from_dict(data, where)
    apply_overrides(cfg, overrides or [])
    resolve(cfg, where if not overrides else f"{where} (with --set)")
    check_table_overrides(overrides or [], [cfg], where)
    return cfg


def upgrade(d: dict) -> dict:
    """A stored config.json's sections in today's shape: the old flat keys of a method's or an
    experiment kind's parameters (`top_n`, `kd_temperature`, `values`, ...) moved into the run's own
    table (`method.<name>`, `experiment.<kind>`), the other owners' dropped, the table completed
    with defaults for parameters added since. A new run with the same values gives the same dict
    (so the two are seeds of one configuration)."""
    out = dict(d)
    for section, option in TABLED.items():
        table = d.get(section)
        if isinstance(table, dict):
            out[section] = _upgrade_table(section, table, table.get(option))
    return out


def _upgrade_table(section: str, table: dict, name) -> dict:
    old = legacy_keys(section)
    owner = param_classes(section).get(name) if isinstance(name, str) else None
    out = {k: v for k, v in table.items() if k not in old}
    if owner is not None:
        params = dict(out[name]) if isinstance(out.get(name), dict) else {}
        for key, pkey in getattr(owner, "FLAT_KEYS", {}).items():
            if key in table and pkey not in params:
                params[pkey] = table[key]
        out[name] = {**dataclasses.asdict(owner()), **params}
    return out


def known_tables(d: dict) -> dict[str, dict]:
    """A stored config.json's sections in today's shape (`upgrade`) with only the keys this advlc
    knows: each section's options and the run's own `[method.<name>]` / `[experiment.<kind>]`
    table. What `from_json` rebuilds and what an unpacked run is validated as (a key it does not
    know is read from nowhere)."""
    d = upgrade(d)
    out: dict[str, dict] = {}
    for section, cls in section_classes().items():
        table = d.get(section)
        if not isinstance(table, dict):
            continue
        options = {f.name for f in option_fields(cls)}
        out[section] = {k: v for k, v in table.items() if k in options}
        name = table.get(TABLED[section]) if section in TABLED else None
        owner = param_classes(section).get(name) if isinstance(name, str) else None
        if owner is not None and isinstance(table.get(name), dict):
            fields = {f.name for f in dataclasses.fields(owner)}
            out[section][name] = {k: v for k, v in table[name].items() if k in fields}
    return out


def from_json(d: dict) -> RunConfig:
    """Rebuild a stored (already resolved) config, e.g. from a run's config.json (older layouts
    upgraded first, see `upgrade`)."""
    cfg = RunConfig()
    for section, table in known_tables(d).items():
        obj = getattr(cfg, section)
        own = table.get(TABLED[section]) if section in TABLED else None
        for key, value in table.items():
            if key == own and isinstance(value, dict):
                obj.tables[key] = param_classes(section)[key](**value)
            else:
                setattr(obj, key, value)
    return cfg


MAX_TOML_BYTES = 1 << 20
"""The largest preset file (1 MiB; the built-in ones are under 2 KiB)."""
MAX_TOML_DEPTH = 16
"""How deeply a preset's tables, arrays and inline tables may nest (the built-in ones: 3)."""


def _too_deep(value, limit: int) -> bool:
    """Whether lists and dicts nest more than `limit` deep in `value` (a scalar: 0), without recursion."""
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, (list, tuple)):
            if d + 1 > limit:
                return True
            stack.extend((x, d + 1) for x in v)
    return False


def load_toml(path: Path) -> dict:
    """A preset file's tables; every way it can fail to be read or parsed is one UserError line
    naming the file (the parser's own RecursionError on [[[[... included)."""
    try:
        size = Path(path).stat().st_size
    except FileNotFoundError:
        raise UserError(f"{path}: no such preset file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if size > MAX_TOML_BYTES:
        raise UserError(f"{path}: {size} bytes, larger than the {MAX_TOML_BYTES} a preset file may have")
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such preset file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); presets are TOML files in UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise UserError(
            f"{path}: invalid TOML: arrays or tables nested too deeply for the parser (at most {MAX_TOML_DEPTH} levels)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any other parser failure is still one line naming the file
        raise UserError(
            f"{path}: cannot be parsed as TOML ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
        ) from None
    if _too_deep(data, MAX_TOML_DEPTH + 1):  # + 1: the file's own top-level table
        raise UserError(f"{path}: values nested more than {MAX_TOML_DEPTH} deep (tables, arrays, inline tables)")
    return data


def schema() -> list[dict]:
    """Every option of every section, then every method's own parameters, for docs and the app."""
    out = []
    defaults = RunConfig()
    for section, cls in section_classes().items():
        out += _rows(section, cls, getattr(defaults, section))
        if section in TABLED:
            for name, owner in param_classes(section).items():
                out += _rows(f"{section}.{name}", owner, owner())
    return out


def _rows(section: str, cls, default_obj) -> list[dict]:
    hints = field_hints(cls)
    return [
        {
            "key": f"{section}.{f.name}",
            "type": _describe(hints[f.name]),
            "default": getattr(default_obj, f.name),
            "unit": f.metadata.get("unit", ""),
            "allowed": _allowed(f.metadata) or "",
            "doc": f.metadata.get("doc", ""),
            "section_doc": (cls.__doc__ or "").strip(),
        }
        for f in option_fields(cls)
    ]


def config_keys() -> dict[str, Any]:
    """Every option's key ("section.key", "method.<name>.key") with its type: what --columns,
    --where and sweeps may name."""
    out = {
        f"{s}.{f.name}": field_hints(cls)[f.name] for s, cls in section_classes().items() for f in option_fields(cls)
    }
    for section in TABLED:
        for name, owner in param_classes(section).items():
            fields = {f.name for f in dataclasses.fields(owner)}
            out.update({f"{section}.{name}.{k}": tp for k, tp in field_hints(owner).items() if k in fields})
    return out
