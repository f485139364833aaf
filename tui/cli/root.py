"""The `advlc` command line: one typer app, its `--home` option, and `main`, which turns every
user error into one line.

Bad input of any kind ends in one line `advlc: <what is wrong>` and exit code 2: the engine
raises `UserError` for those and `main()` prints them. The commands live in the other modules
of this package, one per group, each parsing its arguments and calling engine.facade.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Annotated, Optional

import typer

from engine.errors import UserError, os_error_line
from tui.cli.common import fit_consoles, reconcile_home

try:  # typer >= 0.20 vendors click; older versions use the click package
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="advlc: adversarial-training experiments around AdvLC (Li & Spratling 2023).",
)
preset_app = typer.Typer(help="Inspect one preset.")
app.add_typer(preset_app, name="preset")


def version() -> str:
    """advlc's version: the installed distribution's (a checkout installed with -e has one too)."""
    try:
        return dist_version("advlc")
    except PackageNotFoundError:  # pragma: no cover - sources on sys.path without installing
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        print(f"advlc {version()}")
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    home: Annotated[
        Optional[Path], typer.Option("--home", envvar="ADVLC_HOME", help="Run store directory (default ~/.advlc).")
    ] = None,
    _version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print advlc's version and exit.")
    ] = False,
):
    """With no command, open the app."""
    ctx.obj = {"home": home}
    fit_consoles()  # this terminal's width, $COLUMNS, or whole lines when piped
    reconcile_home(home)  # truthful states first
    if ctx.invoked_subcommand is None:
        from tui.app import make_app  # Textual loads only when the app opens

        make_app(home).run()


def _fail(message: str) -> None:
    """One line on stderr, never wrapped or marked up."""
    print("advlc: " + " ".join(message.split()), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors, never a traceback for bad input."""
    try:
        rv = app(args=argv, prog_name="advlc", standalone_mode=False)
    except UserError as exc:
        _fail(str(exc))
        sys.exit(exc.code)
    except OSError as exc:  # a full or read-only disk, a permission: one line, never a traceback
        _fail(os_error_line(exc))
        sys.exit(1)
    except ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(f"{exc.format_message()}{hint}")
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
