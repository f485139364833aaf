"""advlc's engine: everything that computes, in layers that import only downwards.

    nn       tensors in, numbers out: datasets, models, attacks, methods, metrics, SWA, fast path
    config   reading RunConfig from presets and overrides, generated docs (pure Python, no torch)
    store    the run directory format, the index, watching (files; no torch)
    run      the run process: loop, checkpoints, evaluation, teachers, analyses (experiments)
    launch   spawning, GPU queue, Slurm, supervisor  |  report  |  bench
    facade   what the command line calls (and the app, for what touches no run store)
    service  the app's one door into the run store

`errors`, `paths`, `printable`, `numbers` (percentages) and `sections` (the config's section
dataclasses) are shared by every layer. docs/ARCHITECTURE.md draws the layers; the import
contract in pyproject.toml enforces them.
"""
