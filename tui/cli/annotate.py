"""Naming runs after the fact: `advlc label`, `tag`, `note`, `archive` and `restore`.

What people say about a run lives in its meta.json, which the run's own process never writes,
so a run can be labelled, tagged or archived while it trains without losing anything.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from typing import Annotated, Optional

import typer

from engine.errors import UserError
from tui.cli.common import out, runs_of
from tui.cli.root import app

TAG = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}$"


@app.command("label")
def label_cmd(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
    text: Annotated[str, typer.Argument(help='The title, e.g. "lambda sweep, best so far" ("" clears it).')],
):
    """Give a run a human title, shown in `advlc runs` (a title column), `advlc show`, the app and reports."""
    store, [rd] = runs_of(ctx, [run])
    if "\n" in text or len(text) > 200:
        raise UserError("label: one line of at most 200 characters")
    store.annotate(rd, title=text)
    out.print(f"{rd.id}  {text or '(no label)'}", markup=False, highlight=False)


@app.command("tag", context_settings={"ignore_unknown_options": True})  # -draft is a tag, not an option
def tag_cmd(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
    changes: Annotated[
        list[str], typer.Argument(help="+tag adds, -tag removes (a bare tag adds), e.g. +robust -draft.")
    ],
):
    """Add or remove tags of a run."""
    store, [rd] = runs_of(ctx, [run])
    add: list[str] = []
    remove: list[str] = []
    for c in changes:
        sign, name = (c[0], c[1:]) if c[:1] in "+-" else ("+", c)
        if not re.match(TAG, name):
            raise UserError(f"tag {c!r}: a tag is letters, digits and _ . : - (at most 40), after + or -")
        (add if sign == "+" else remove).append(name)
    meta = store.annotate(rd, add_tags=add, remove_tags=remove)
    out.print(f"{rd.id}  tags: {' '.join(meta.tags) or '(none)'}", markup=False, highlight=False)


@app.command("note")
def note_cmd(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
    text: Annotated[Optional[str], typer.Option("--text", help='The note ("" clears it).')] = None,
    edit: Annotated[
        bool, typer.Option("--edit", help="Edit the note in $VISUAL or $EDITOR (the default without --text).")
    ] = False,
):
    """Write a run's note (free text, several lines), shown by `advlc show`, the app and reports."""
    if text is not None and edit:
        raise UserError("note: give --text T or --edit, not both")
    store, [rd] = runs_of(ctx, [run])
    if text is None:
        text = _edit(rd.meta().note or "")
    store.annotate(rd, note=text)
    first = (text or "").strip().split("\n", 1)[0]
    out.print(f"{rd.id}  note: {first or '(empty)'}", markup=False, highlight=False)


def _edit(note: str) -> str:
    """The note after the user's editor ($VISUAL, else $EDITOR) has changed it in a temporary file."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        raise UserError("note --edit: set $EDITOR (e.g. export EDITOR=nano) or give --text")
    with tempfile.NamedTemporaryFile("w+", suffix=".md", delete=False) as f:
        f.write(note)
        path = f.name
    try:
        try:
            rc = subprocess.run(shlex.split(editor) + [path]).returncode
        except (OSError, ValueError) as exc:
            raise UserError(
                f"note --edit: cannot start the editor {editor!r} ({getattr(exc, 'strerror', None) or exc})"
            ) from None
        if rc != 0:
            raise UserError(f"note --edit: {editor} exited with status {rc}; the note is unchanged")
        with open(path) as f:
            return f.read()
    finally:
        os.unlink(path)


@app.command("archive")
def archive_cmd(ctx: typer.Context, runs: Annotated[list[str], typer.Argument(help="Run ids (or unique prefixes).")]):
    """Hide runs from the default views (runs, compare, reports, the app); kept on disk, `advlc restore` brings them back."""
    store, rds = runs_of(ctx, runs)
    for rd in rds:
        store.annotate(rd, archived=True)
    out.print(f"archived {' '.join(rd.id for rd in rds)} (list them: advlc runs --archived)", highlight=False)


@app.command("restore")
def restore_cmd(ctx: typer.Context, runs: Annotated[list[str], typer.Argument(help="Run ids (or unique prefixes).")]):
    """Bring archived runs back into the default views."""
    store, rds = runs_of(ctx, runs)
    for rd in rds:
        store.annotate(rd, archived=False)
    out.print(f"restored {' '.join(rd.id for rd in rds)}", highlight=False)
