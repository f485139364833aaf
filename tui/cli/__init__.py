"""The `advlc` command line (typer). `root` holds the app and `main`; each other module is one
group of commands, defined at module level and registered on import below."""

from tui.cli import (  # noqa: F401 - registers the commands
    annotate,
    bench,
    diff,
    evaluate,
    experiments,
    export,
    pack,
    presets,
    repair,
    report,
    runs,
    supervise,
)
from tui.cli.root import app, main

__all__ = ["app", "main"]
