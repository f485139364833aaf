"""What a comparison needs from the preset files, each looked up once per comparison.

A `Resolver` is made per `compare_runs` / `build_report` call and handed to every step that
needs a preset: the sweep plan of a preset (`plan`), a run's origin (`origin`: the one recorded
in config.json `run.origin`, else `engine.config.origin.derive`, computed once per
(preset, point, configuration) however many seeds share it), the `--set` list that recreates a
run (`fill_overrides`), and the hash of a preset as it is now (`preset_sha`). An unloadable
preset never breaks a comparison: those answers are None.
"""

from __future__ import annotations

import json

from engine.config import origin as O
from engine.config.presets import preset_runs, read_preset
from engine.store.records import ConfigRecord


def _canon(v) -> str:
    return json.dumps(v, sort_keys=True, default=str)


class Resolver:
    def __init__(self, home=None):
        self.home = home
        self._plans: dict = {}
        self._derived: dict = {}
        self._sha: dict = {}

    def plan(self, preset: str | None, overrides=()) -> list | None:
        """The runs the preset asks for (engine.config.presets.preset_runs), None if it cannot be read."""
        if not preset:
            return None
        key = (preset, tuple(overrides))
        if key not in self._plans:
            try:
                self._plans[key] = preset_runs(preset, list(overrides), home=self.home)
            except Exception:  # an unloadable preset (renamed, edited, invalid) must not break a comparison
                self._plans[key] = None
        return self._plans[key]

    def derived(self, config: ConfigRecord) -> dict | None:
        """`origin.derive(config)`, once per (preset, point, configuration)."""
        data = config.to_json()
        key = (config.run.preset, _canon(dict(config.run.point)), O.config_key(data))
        if key not in self._derived:
            try:
                self._derived[key] = O.derive(data, self.home)
            except Exception:  # a preset that no longer resolves this config: no origin
                self._derived[key] = None
        return self._derived[key]

    def origin(self, config: ConfigRecord) -> dict | None:
        """The run's origin as JSON: the one recorded at creation (config.json run.origin) or
        derived by `advlc` once for an old run (runtime.json), else derived here."""
        rec = config.run.origin
        return rec.to_json() if rec is not None else self.derived(config)

    def preset_sha(self, preset: str | None) -> str | None:
        if not preset:
            return None
        if preset not in self._sha:
            try:
                self._sha[preset] = O.preset_hash(read_preset(preset, self.home)[2])
            except Exception:  # unreadable preset
                self._sha[preset] = None
        return self._sha[preset]

    def fill_overrides(self, config: ConfigRecord) -> list[str] | None:
        """The `--set` list that makes a sibling of this run (its seed and sweep point aside): the
        recorded overrides while the preset is unchanged since the run was made, else the list
        derived against the preset as it is now; None when the preset cannot be loaded."""
        rec = config.run.origin
        if (
            rec is not None
            and not rec.derived
            and rec.preset_sha256
            and rec.preset_sha256 == self.preset_sha(config.run.preset)
        ):
            return [s for s in rec.overrides if not s.strip().startswith("train.seed=")]
        o = self.derived(config)
        return None if o is None else list(o.get("overrides") or [])


def overrides_of(origin: dict | None, point: dict | None = None) -> dict:
    """The overrides that made a configuration what it is, as {key: value}: the origin's resolved
    keys that changed something (no-op overrides and seed/device/threads left out), the sweep
    point's keys aside."""
    if not origin:
        return {}
    changed = origin.get("changed")
    point = point or {}
    return {
        k: v
        for k, v in (origin.get("resolved") or {}).items()
        if k not in point and k not in O.NON_RESULT_KEYS and (changed is None or k in changed)
    }
