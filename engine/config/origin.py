"""How a run was made: the overrides it was given, what they resolved to, and how its config
differs from its preset's own resolution.

A run's `origin` (config.json's `run.origin`, written once at creation) is

    {"overrides": ["attack.eps=8/255", "train.epochs=3"],  # as the user gave them (--set, the app's field)
     "resolved":  {"attack.eps": 0.0314, "train.epochs": 3}, # the keys they name, with the values the run got
     "changed":   {"attack.eps": 0.0314, "attack.alpha": ...},  # every result-bearing key that differs
                                                            # from the preset's resolution (seed and point aside)
     "command":   "advlc run quick/digits-fgsm_n --set …" | "app" | "…",
     "preset_sha256": "…",                                  # of the preset's merged tables (extends included)
     "derived":   false}                                    # true: reconstructed for a run made before origins

`config_key` is what two runs must share to be seeds of one configuration: their resolved config
without the keys that do not change results (`NON_RESULT_KEYS`).
"""

from __future__ import annotations

import json
from typing import Any

from engine.config import schema as C
from engine.config.presets import PlannedRun, load_preset, preset_hash, read_preset
from engine.errors import UserError

SECTIONS = ("data", "model", "attack", "method", "train", "eval", "swa", "experiment")
"""The config sections that decide a run's results (`preset` is description only)."""

NON_RESULT_KEYS = frozenset({"train.seed", "train.device", "train.threads"})
"""Keys that tell seeds and machines apart, not configurations: the seed, the device (a CUDA
index or cpu/cuda: the numbers differ only by rounding) and the CPU thread count."""

DERIVED = frozenset({"attack.alpha", "attack.noise", "attack.name", "eval.eps", "eval.pgd_alpha"})
"""Keys that `resolve` fills in from others: an override of attack.eps moves them too."""


def fmt_value(v) -> str:
    """A value as `--set` reads it back (TOML-ish): true/false, [a,b], repr of floats."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(fmt_value(x) for x in v) + "]"
    return str(v) if not isinstance(v, float) else repr(v)


def flat(config: dict) -> dict[str, Any]:
    """{"section.key": value} over the result sections of a config.json (or RunConfig.to_dict()),
    a method's or an experiment kind's own parameters as "method.<name>.key" / "experiment.<kind>.key";
    a config stored before they had their own tables is read in today's shape first (schema.upgrade)."""
    out = {}
    config = C.upgrade(config)
    for section in SECTIONS:
        table = config.get(section)
        if isinstance(table, dict):
            for key, value in table.items():
                if section in C.TABLED and isinstance(value, dict):
                    out.update({f"{section}.{key}.{k}": v for k, v in value.items()})
                else:
                    out[f"{section}.{key}"] = value
    return out


def _canon(v):
    return json.dumps(v, sort_keys=True, default=str)


ADDED_KEYS = {
    "data.val_size": 0,
    "train.select_on": "test",
    "train.stop_on_overfit": False,
    "train.overfit_patience": 5,
}
"""Result-bearing keys added after runs were first stored, with the value a run made before them
behaved as: an older run without them is a seed of the same configuration as a new run with these
values."""


def config_key(config: dict) -> str:
    """What runs that are seeds of one configuration share: the resolved result-bearing config
    (the seed, device and threads aside), as one canonical string."""
    f = {k: v for k, v in {**ADDED_KEYS, **flat(config)}.items() if k not in NON_RESULT_KEYS}
    return _canon(f)


def differing(config: dict, reference: dict, *, skip=()) -> dict[str, Any]:
    """The result-bearing keys whose value in `config` differs from `reference` -> {key: config's value}."""
    mine, ref = flat(config), flat(reference)
    return {
        k: v
        for k, v in mine.items()
        if k not in NON_RESULT_KEYS and k not in skip and k in ref and _canon(ref[k]) != _canon(v)
    }


def override_keys(overrides: list[str], owners: dict[str, str] | None = None) -> list[str]:
    """The "section.key" each override names, in order, once each; an old flat key of a method's or
    an experiment kind's parameter (`method.top_n`) as the parameter of the run's own (`owners`:
    {"method": its name, "experiment": its kind}) it sets (`method.advlc.top_n`)."""
    out = []
    for text in overrides or []:
        section, key, _ = C.parse_override(text)
        path = f"{section}.{key}"
        if section in C.TABLED and key in C.legacy_keys(section):
            mine = (owners or {}).get(section)
            path = next((f"{section}.{m}.{k}" for m, k in C.legacy_keys(section)[key] if m == mine), path)
        if path not in out:
            out.append(path)
    return out


def make(p: PlannedRun) -> dict:
    """The origin of a new run from its plan (engine.config.presets.plan)."""
    cfg = p.cfg.to_dict()
    mine = flat(cfg)
    resolved = {
        k: mine[k]
        for k in override_keys(p.overrides, {"method": p.cfg.method.name, "experiment": p.cfg.experiment.kind})
        if k in mine and k not in NON_RESULT_KEYS
    }
    return {
        "overrides": list(p.overrides),
        "resolved": resolved,
        "text": describe({"resolved": resolved}),
        "changed": differing(cfg, p.reference or cfg, skip=set(p.point or {})),
        "command": p.command,
        "preset_sha256": p.preset_sha256 or None,
        "derived": False,
    }


def derive(config: dict, home=None) -> dict | None:
    """The origin of a run made before origins were recorded: the `--set` list that turns its
    preset into its stored config (seed and sweep point aside), marked `derived`; None when the
    preset can no longer be loaded. Derived keys (attack step, eval eps, ...) are kept only where
    re-resolving the other overrides does not give them."""
    run: dict = config["run"] if isinstance(config.get("run"), dict) else {}
    preset = run.get("preset")
    if not isinstance(preset, str) or not preset:
        return None
    point: dict = run["point"] if isinstance(run.get("point"), dict) else {}
    base = [f"{k}={fmt_value(v)}" for k, v in point.items()]
    sets: dict[str, str] = {}
    ref: dict = {}
    for it in range(4):
        try:
            _, cfg, _ = load_preset(preset, base + [f"{k}={v}" for k, v in sets.items()], home)
        except (UserError, RecursionError):
            return None
        if not ref:
            ref = cfg.to_dict()
        diff = {k: fmt_value(v) for k, v in differing(config, cfg.to_dict(), skip=set(point)).items() if v is not None}
        if not diff:
            break
        if it == 0:
            diff = {k: v for k, v in diff.items() if k not in DERIVED} or diff
        sets.update(diff)
    try:
        _, _, raw = read_preset(preset, home)
    except (UserError, RecursionError):
        return None
    overrides = [f"{k}={v}" for k, v in sets.items()]
    mine = flat(config)
    resolved = {k: mine[k] for k in sets if k in mine and k not in NON_RESULT_KEYS}
    return {
        "overrides": overrides,
        "resolved": resolved,
        "text": describe({"resolved": resolved}),
        "changed": differing(config, ref, skip=set(point)),
        "command": None,
        "preset_sha256": preset_hash(raw),
        "derived": True,
    }


def describe(origin: dict | None, *, limit: int | None = None) -> str:
    """The overrides of an origin as one short text: "attack.eps=0.05, train.epochs=1" ('' for none)."""
    if not origin:
        return ""
    resolved = origin.get("resolved") or {}
    parts = [f"{k}={_short(v)}" for k, v in sorted(resolved.items())]
    text = ", ".join(parts)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return fmt_value(v)
