"""The post-hoc analyses, one module per experiment.kind (what each measures: engine.run.experiments).

An analysis module gives `check(cfg, where)` (its cross-field rules, one UserError line),
`grid(cfg)` (its points: [{"index": i, <param>: value}, ...]) and `records(ctx, points, done)`
(the records of the points not in `done`, as they are computed). `ANALYSES` maps a kind to its
module, so the runner compares no kind names; adding a kind is one module and one entry here
(plus its keys in the config's POINT_KEYS).
"""

from __future__ import annotations

from types import ModuleType

from engine.run.analyses import a1, fig4a, fig4bc

ANALYSES: dict[str, ModuleType] = {"fig4a": fig4a, "fig4b": fig4bc, "fig4c": fig4bc, "a1": a1}
