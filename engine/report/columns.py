"""Config keys as table columns (`advlc compare --columns method.lam,attack.eps`).

Each key adds a column with the row's value of that key. The runs of a row share every
result-bearing key by construction (engine.report.rows); for the keys that may differ between
seeds (train.seed, train.device, train.threads) the column lists the distinct values.
"""

from __future__ import annotations

import typing

from engine.config import origin as O
from engine.config import schema as C
from engine.errors import UserError


def parse_columns(spec) -> list[str]:
    """'method.lam,attack.eps' (or a list of such strings) -> ["method.lam", "attack.eps"], checked
    against the config schema; an unknown key is one UserError naming it."""
    if not spec:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    keys = list(dict.fromkeys(k.strip() for item in items for k in str(item).split(",") if k.strip()))
    known = C.config_keys()
    for key in keys:
        section, dot, name = key.partition(".")
        if section not in O.SECTIONS or section not in C.section_classes():
            raise UserError(
                f"--columns {key}: unknown config key; give section.key with a section of "
                f"{', '.join(O.SECTIONS)} (e.g. method.lam)"
            )
        if key not in known:
            fields = [k.partition(".")[2] for k in known if k.startswith(section + ".")]
            raise UserError(f"--columns {key}: unknown config key (keys of [{section}]: {', '.join(fields)})")
    return keys


def column_values(configs: list[dict], keys: list[str]) -> dict:
    """{key: the value all configs share, or the list of their distinct values, or None}."""
    flats = [O.flat(c) for c in configs]
    out = {}
    for key in keys:
        vals = []
        for f in flats:
            v = f.get(key)
            if v is not None and v not in vals:
                vals.append(v)
        out[key] = None if not vals else vals[0] if len(vals) == 1 else vals
    return out


def fmt_value(key: str, value, *, full: bool = False) -> str:
    """A column value as text: floats with 4 significant digits (all of them with `full`), lists of
    distinct values joined by "/", "—" for none."""
    if value is None:
        return "" if full else "—"
    if isinstance(value, list) and _distinct(key, value):
        return "/".join(fmt_value(key, v, full=full) for v in value)
    if full or not isinstance(value, float):
        return O.fmt_value(value)
    return f"{value:.4g}"


def _distinct(key: str, value: list) -> bool:
    """Is this list the distinct values of several runs (rather than one list-valued config key)?"""
    tp = C.key_type(key)
    return not (typing.get_origin(tp) is list or tp is list)


def add_columns(table, keys, store=None):
    """Set `table.config_columns` to the checked `keys` and every row's `config_values` from the
    configs of its runs (read from `store`), or from its configuration (rows without runs)."""
    keys = parse_columns(keys)
    table.config_columns = keys
    for row in table.rows:
        configs = [store.run_dir(rid).config_json() for rid in row.runs] if store is not None and row.runs else []
        row.config_values = column_values(configs or [row.config], keys)
    return table
