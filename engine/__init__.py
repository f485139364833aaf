"""advlc's engine: everything that computes, in layers that import only downwards.

    nn       tensors in, numbers out: datasets, models, attacks, methods, metrics, SWA, fast path
    config   RunConfig, presets, generated docs (pure Python, no torch)
    store    the run directory format, the index, watching (files; no torch)
    run      the run process: loop, checkpoints, evaluation, teachers, experiments
    launch   spawning, GPU queue, Slurm, supervisor  |  report  |  bench
    facade   what the app and the command line call

`errors` and `paths` are shared by every layer. docs/ARCHITECTURE.md draws the layers; the
import contract in pyproject.toml enforces them.
"""
