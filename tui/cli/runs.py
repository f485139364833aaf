"""`advlc run PRESET` (foreground or detached), `advlc runs` and `advlc show RUN`."""

from __future__ import annotations

import json
import shlex
import sys
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from engine import facade
from engine.errors import UserError
from engine.facade import MAX_SLOTS_PER_GPU, SEED_MAX, STATES, create_runs, get_method
from engine.printable import printable
from tui.cli.common import (
    FULL_WIDTH,
    Progress,
    compact,
    err,
    num,
    out,
    pct,
    percent_hint,
    print_summary,
    print_table,
    run_or_latest,
    safe,
    store_of,
    term_width,
)
from tui.cli.experiments import print_points
from tui.cli.root import app
from tui.cli.supervise import launch_detached
from tui.widgets.pace import duration


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    preset: Annotated[str, typer.Argument(help="Preset name (see `advlc presets`) or a TOML file.")],
    set_: Annotated[list[str], typer.Option("--set", help="Override section.key=value (repeatable).")] = [],
    seeds: Annotated[
        Optional[int],
        typer.Option(
            "--seeds",
            min=1,
            help="Number of seeds (seed, seed+1, ...); default: the preset's. A plan has at most 1000 runs (sweep points x seeds) unless ADVLC_MAX_RUNS allows more.",
        ),
    ] = None,
    seed: Annotated[
        Optional[int],
        typer.Option("--seed", min=0, max=SEED_MAX, help="First seed, 0 ... 2**32-1 (default: the preset's)."),
    ] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu | cuda | cuda:N (default: preset).")] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Start in the background and return at once (survives the terminal).")
    ] = False,
    gpus: Annotated[
        Optional[str],
        typer.Option(
            "--gpus",
            help="GPU queue: run on these GPUs, e.g. 0,1 (implies --detach; default: all visible when the preset uses CUDA).",
        ),
    ] = None,
    slots_per_gpu: Annotated[
        int,
        typer.Option(
            "--slots-per-gpu", min=1, max=MAX_SLOTS_PER_GPU, help="Runs at once per GPU in the queue (at most 64)."
        ),
    ] = 1,
    executor: Annotated[
        str, typer.Option("--executor", help="local | slurm (slurm implies --detach; submits through submitit).")
    ] = "local",
    partition: Annotated[
        Optional[str], typer.Option("--partition", help="Slurm partition (default: the preset's [slurm] table).")
    ] = None,
    time_limit: Annotated[
        Optional[str],
        typer.Option(
            "--time",
            help="Slurm time limit, read as Slurm reads --time: minutes, MM:SS, HH:MM:SS or D-HH[:MM[:SS]] (1:30 is 1 min 30 s; default: the partition's limit).",
        ),
    ] = None,
    account: Annotated[Optional[str], typer.Option("--account", help="Slurm account.")] = None,
    slurm_gpus: Annotated[
        Optional[int],
        typer.Option(
            "--slurm-gpus", min=0, help="GPUs of a CUDA run's Slurm job (default 1; a CPU run asks for none)."
        ),
    ] = None,
    with_teachers: Annotated[
        bool, typer.Option("--with-teachers", help="KDSA: train missing teacher runs first (foreground).")
    ] = False,
):
    """Train a preset: in the foreground with a progress bar, or detached (--detach, --gpus, --executor slurm)."""
    req = facade.LaunchRequest(
        preset,
        list(set_),
        seeds=seeds,
        seed=seed,
        device=device,
        gpu_queue=gpus is not None,
        gpus=facade.parse_gpus(gpus),
        slots_per_gpu=slots_per_gpu,
        executor=executor,
        detach=detach,
        with_teachers=with_teachers,
        command="advlc " + shlex.join(sys.argv[1:]),
        slurm={"partition": partition, "time": time_limit, "account": account, "gpus": slurm_gpus},
    )
    store = store_of(ctx)
    planned = req.plan(home=ctx.obj["home"], store=store)
    for line in dict.fromkeys(c for p in planned for c in facade.caveats(p.cfg)):
        err.print(f"advlc: warning: {line}", markup=False, highlight=False, soft_wrap=True)
    if req.background:
        launch_detached(store, planned, req)
        return
    runs = create_runs(store, planned)
    states = {}
    for rd, p in zip(runs, planned):
        point = " ".join(f"{k}={v}" for k, v in p.point.items())
        out.print(f"run [bold]{rd.id}[/]  {p.preset}  seed {p.seed}  {point}  → {rd.path}")
        with Progress(rd.id) as progress:
            try:
                states[rd.id] = facade.train_foreground(rd, store, on_event=progress.event, log=lambda line: None)
            except KeyboardInterrupt:
                states[rd.id] = "stopped"
        if states[rd.id] == "stopped":
            out.print(f"[yellow]stopped[/] {rd.id} (resume with `advlc resume {rd.id}`)")
            break
        if states[rd.id] == "failed":
            last = ((rd.status().error or "").strip().splitlines() or ["see its log"])[-1]
            err.print(f"advlc: run {rd.id} failed: {last}", markup=False, highlight=False)
            if get_method(p.cfg.method.name).teachers or any(q.role for q in planned):
                break  # a student needs its teachers
    print_summary([rd for rd in runs if rd.id in states])
    if any(s == "failed" for s in states.values()):
        raise typer.Exit(1)


@app.command("runs")
def runs_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
    status: Annotated[Optional[str], typer.Option("--status", help="Only runs in this state.")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Only runs of this preset (or folder).")] = None,
    where: Annotated[
        Optional[str],
        typer.Option(
            "--where",
            help="Only runs this expression selects, e.g. 'method.lam > 0.2 and \"robust\" in tags' (docs/APP.md).",
        ),
    ] = None,
    archived: Annotated[
        bool, typer.Option("--archived", help="List the archived runs instead (`advlc archive`).")
    ] = False,
    reindex: Annotated[bool, typer.Option("--reindex", help="Rebuild the index from the run directories.")] = False,
):
    """List runs (archived ones only with --archived)."""
    if status and status not in STATES:
        raise UserError(f"--status {status}: must be one of {', '.join(STATES)}")
    query = facade.parse_query(where) if where else None
    store = store_of(ctx)
    if reindex:
        n = store.reindex()
        err.print(f"reindexed {n} runs")
    rows = store.runs(state=status, preset=preset, archived=archived)
    rows = facade.select_runs_where(rows, query, lambda rid: store.run_dir(rid).config_json())
    hint = percent_hint(query)
    if as_json:
        print(json.dumps([dict(r) for r in rows], indent=1))
    elif rows:
        print_table(runs_table(rows, term_width()))
    else:
        everything = len(store.runs(archived=archived))
        filters = (
            [f"--status {status}"] * bool(status)
            + [f"--preset {preset}"] * bool(preset)
            + [f"--where {where!r}"] * bool(where)
        )
        what = "archived runs" if archived else "runs"
        if not filters or not everything:
            out.print(f"no {what} in {store.home}", markup=False, highlight=False)
        else:
            out.print(
                f"no runs match {' '.join(filters)} ({everything} {what} in the store)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            if hint:
                out.print(f"hint: {hint}", markup=False, highlight=False, soft_wrap=True)
            return
    if hint:
        err.print(f"advlc: note: {hint}", markup=False, highlight=False, soft_wrap=True)


RUNS_COLUMNS = (
    # key, header, right-justified, drop order when the terminal is narrow (0: never dropped)
    ("id", "id", False, 0),
    ("preset", "preset", False, 0),
    ("label", "label", False, 2),
    ("seed", "seed", True, 0),
    ("state", "state", False, 0),
    ("epoch", "epoch", True, 0),
    ("best", "robust\nbest", True, 0),
    ("end", "robust\nend", True, 0),
    ("clean", "clean\nend", True, 1),
    ("ig", "IG", True, 3),
)
"""`advlc runs`, left to right. When the table does not fit, clean end, then label (the preset
names the scheme too), then IG are hidden until the preset column has room for its distinctive
part (`advlc show` and `--json` have them all); the label stays when it tells runs of one preset
apart."""

LABEL_LAST = 9
"""The label's drop order when one preset's runs have different labels (a sweep of method.name):
then it is what tells them apart, and goes last."""

PRESET_ROOM = 20
"""Characters the preset column gets before columns are hidden to make room."""

SETS_ROOM = 12
"""The least room the `--set` column (a run's overrides, "attack.eps=0.05, …") is shown in; with
less, a run with overrides has `*` after its seed."""

TITLE_ROOM = 14
"""The room a title (`advlc label`) gets before columns are hidden to make it: when any run has
one, the title column follows the preset and is cut with "…" only past this."""


def shorten(name: str, width: int) -> str:
    """`name` in `width` characters, keeping its distinctive end: `…digits-fgsm_n-advlc`."""
    if len(name) <= width:
        return name
    return "…" + name[len(name) - (width - 1) :] if width > 1 else "…"


def _shorten_middle(name: str, width: int) -> str:
    if len(name) <= width or width < 5:
        return shorten(name, width)
    head = (width - 1) // 3
    return name[:head] + "…" + name[len(name) - (width - 1 - head) :]


def _around_difference(names: set[str], width: int) -> dict[str, str]:
    """Each name cut to a window around where it first differs from the most similar other name."""

    def common(a: str, b: str) -> int:
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    out = {}
    for n in names:
        if len(n) <= width:
            out[n] = n
            continue
        d = max((common(n, m) for m in names if m != n), default=0)
        start = max(0, min(d - (width - 2) // 2, len(n) - (width - 1)))
        text = ("…" if start else "") + n[start:]
        out[n] = text if len(text) <= width else text[: width - 1] + "…"
    return out


def shorten_all(names: list[str], width: int) -> dict[str, str]:
    """Each name shortened to `width`: from the start (keeping the tail) unless that makes two
    different names look alike; then from the middle (keeping both ends); then around the
    place where the names differ (`paper/table1/…` and `paper/table3/…`: `…table1/fgs…`)."""
    distinct = set(names)
    for cut in (
        lambda d: {n: shorten(n, width) for n in d},
        lambda d: {n: _shorten_middle(n, width) for n in d},
        lambda d: _around_difference(d, width),
    ):
        short = cut(distinct)
        if len(set(short.values())) == len(distinct):
            return short
    return {n: shorten(n, width) for n in distinct}


def _runs_cells(rows: list[dict]) -> list[dict]:
    """The text of each run's cells in `advlc runs` (store strings made printable)."""
    return [
        {
            "id": r["id"],
            "preset": printable(r.get("preset")),
            "label": printable(r.get("label")),
            "seed": printable(r.get("seed")),
            "state": printable(r.get("state", "?")),
            "epoch": f"{r.get('epoch', 0)}/{r.get('epochs')}" + ("⏹" if r.get("stopped_early_at") is not None else ""),
            "best": pct(r.get("best_robust_acc")),
            "end": pct(r.get("end_robust_acc")),
            "clean": pct(r.get("end_clean_acc")),
            "ig": num(r.get("end_ig")),
        }
        for r in rows
    ]


def runs_table(rows: list[dict], width: int | None) -> Table:
    """The `advlc runs` table for a terminal `width` columns wide (None: piped, every column
    whole): one line per run, with its title (`advlc label`) when any run has one."""
    width = FULL_WIDTH if width is None else width
    cells = _runs_cells(rows)
    widths = {
        key: max([len(line) for line in head.split("\n")] + [len(c[key]) for c in cells])
        for key, head, _right, _drop in RUNS_COLUMNS
    }
    shown = list(RUNS_COLUMNS)
    labels_of: dict[str, set] = {}
    for c in cells:
        labels_of.setdefault(c["preset"], set()).add(c["label"])
    # the label names the scheme; it may go only where the preset already does (one label a preset)
    label_needed = any(len(v) > 1 for v in labels_of.values())
    order = {c[0]: (LABEL_LAST if label_needed and c[0] == "label" else c[3]) for c in RUNS_COLUMNS}

    def room() -> int:  # what the preset column gets: the width minus the others and one space between columns
        return width - sum(widths[c[0]] for c in shown if c[0] != "preset") - (len(shown) - 1)

    titles = {r["id"]: printable(r.get("title") or "") for r in rows}
    title_max = max(len(v) for v in titles.values()) if any(titles.values()) else 0
    title_need = min(title_max, TITLE_ROOM) + 1 if title_max else 0  # its width and one space
    for col in sorted((c for c in RUNS_COLUMNS if c[3]), key=lambda c: order[c[0]]):
        if room() >= min(widths["preset"], PRESET_ROOM) + title_need:
            break
        shown.remove(col)
    preset_w = max(8, min(widths["preset"], room() - title_need))
    short = shorten_all([c["preset"] for c in cells], preset_w)
    left = room() - preset_w  # for the title and the overrides, each after a space
    title_w = max(0, min(title_max, left - 1)) if title_max else 0
    if title_w:
        shown.insert([c[0] for c in shown].index("preset") + 1, ("title", "title", False, 0))
        left -= title_w + 1
    sets = {r["id"]: printable(r.get("overrides_text") or "") for r in rows}
    sets_w = min(max(len(v) for v in sets.values()), left - 1) if any(sets.values()) else 0
    if sets_w >= SETS_ROOM:  # the overrides get what the other columns leave
        shown.append(("sets", "--set", False, 0))
    elif sets_w or any(sets.values()):  # no room: a mark on the seed, `advlc show` has them
        for c in cells:
            c["seed"] += "*" if sets[c["id"]] else ""
    t = Table(
        box=None,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        collapse_padding=True,
        caption_justify="left",
        caption="* made with --set overrides (`advlc show RUN` lists them)"
        if any(c["seed"].endswith("*") for c in cells)
        else None,
    )
    for key, head, right, _drop in shown:
        w = {"preset": preset_w, "sets": sets_w, "title": title_w}.get(key)
        t.add_column(
            head, justify="right" if right else "left", no_wrap=True, overflow="ellipsis", min_width=w, max_width=w
        )
    for c in cells:
        text = {**c, "preset": short[c["preset"]], "sets": sets[c["id"]], "title": titles[c["id"]]}
        t.add_row(*[Text(text[key]) for key, *_rest in shown])  # Text: never read as console markup
    return t


SHOW_LAST = 10
"""Epochs `advlc show` lists unless --last says otherwise (0: all)."""

SHOW_COLUMNS = (
    # record key, header (two lines), format
    ("epoch", "\nepoch", "int"),
    ("lr", "\nlr", "num"),
    ("train_loss", "train\nloss", "num"),
    ("train_acc", "train\nacc %", "pct"),
    ("clean_acc", "clean\nacc %", "pct"),
    ("robust_acc", "robust\nacc %", "pct"),
    ("av", "\nAV", "num"),
    ("ig", "\nIG", "num"),
    ("hs", "\nHS", "num"),
    ("time_s", "\ns", "time"),
)
"""The epoch table of `advlc show`: short two-line headers and numbers in at most 8 characters
(engine names in `--json`), so the ten columns fit 80 without cutting a value."""
VAL_SHOW_COLUMN = ("val_robust_acc", "val rob\nacc %", "pct")
"""Shown in place of AV when the run has a validation split (data.val_size)."""


def _show_cell(kind: str, v) -> str:
    if v is None:
        return "—"
    if kind == "int":
        return str(v)
    if kind == "pct":
        return pct(v)
    if kind == "time":
        return f"{v:.1f}"
    return compact(v)


def epochs_table(epochs) -> Table:
    """The per-epoch records as `advlc show` prints them (with a validation split, its robust
    accuracy in place of AV, so the columns still fit 80)."""
    cols: tuple[tuple[str, str, str], ...] = SHOW_COLUMNS
    if any(r.get("val_robust_acc") is not None for r in epochs):
        cols = tuple(VAL_SHOW_COLUMN if c[0] == "av" else c for c in cols)
    t = Table(box=None, pad_edge=False, padding=(0, 0, 0, 2), collapse_padding=True)
    for _key, head, _kind in cols:
        t.add_column(head, justify="right", no_wrap=True)
    for r in epochs:
        t.add_row(*[_show_cell(kind, r.get(key)) for key, _head, kind in cols])
    return t


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    run: Annotated[
        Optional[str],
        typer.Argument(help="Run id (or unique prefix); default: the most recent run.", show_default=False),
    ] = None,
    last: Annotated[
        int, typer.Option("--last", min=0, help=f"Show the last N epochs (0: all; default {SHOW_LAST}).")
    ] = SHOW_LAST,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable (every epoch).")] = False,
):
    """Config, status and per-epoch history of one run (the most recent when no id is given)."""
    _, rd = run_or_latest(ctx, run, "show")
    c, st, meta = rd.config(), rd.status(), rd.meta()
    epochs, evals, points = rd.epochs(), rd.evals(), rd.records("points")
    if as_json:
        doc = {
            "id": rd.id,
            "config": c.to_json(),
            "status": st.to_json(),
            "meta": meta.to_json(),
            "epochs": [r.to_json() for r in epochs],
            "evals": [r.to_json() for r in evals],
            "swa": [r.to_json() for r in rd.records("swa")],
            "points": [r.to_json() for r in points],
        }
        print(json.dumps(doc, indent=1))
        return
    out.print(
        f"[bold]{rd.id}[/]  {safe(str(c.run.preset))}  ({safe(str(c.run.label))})  seed {c.run.seed}  "
        f"state {st.state}{'  [dim](archived)[/]' if meta.archived else ''}"
    )
    out.print(f"[dim]folder:[/] {safe(str(rd.path))}")
    origin = c.run.origin
    if origin is not None:
        how = "derived from the preset" if origin.derived else "as given"
        out.print(
            f"[dim]overrides ({how}):[/] "
            + (safe(" ".join(f"--set {o}" for o in origin.overrides)) or "none (the preset as it is)")
        )
        if origin.command:
            out.print("[dim]command:[/] " + safe(origin.command))
    if meta.title or meta.tags:
        out.print(f"[bold]{safe(meta.title or '')}[/]" + "".join(f"  [cyan]#{safe(t)}[/]" for t in meta.tags))
    if meta.note:
        out.print("[dim]note:[/] " + safe(meta.note, multiline=True).replace("\n", "\n      "))
    prov = c.provenance
    if prov is not None:
        out.print(
            f"commit {safe(str(prov.commit)[:10])}{' (dirty)' if prov.dirty else ''}  "
            f"torch {safe(prov.torch)}  {safe(prov.device_name or prov.device)}  host {safe(prov.host)}"
        )
    if st.error:
        out.print("[red]error:[/] " + safe(st.error.strip(), multiline=True))
    s = facade.summary_from(c, st, epochs)  # the records read above, not read again
    if s["select_on"] == "val" and s["best_epoch"] is not None:
        out.print(
            f"best: epoch {s['best_epoch']}, chosen on the validation split (val robust "
            f"{pct(s['val_robust_best'])} %, test robust {pct(s['robust_best'])} %); the test-chosen best: "
            f"epoch {s['best_epoch_test']}, {pct(s['robust_best_test'])} % (optimistic)",
            highlight=False,
        )
    if s["stopped_early"] is not None:
        saved = f" (about {duration(s['seconds_saved'])} saved)" if s["seconds_saved"] is not None else ""
        out.print(f"[yellow]{safe(s['stopped_early'])}{saved}[/]")
    shown = epochs[-last:] if last else epochs
    if epochs:
        print_table(epochs_table(shown))
    if len(shown) < len(epochs):
        out.print(f"[dim]{len(epochs) - len(shown)} earlier epochs left out (--last 0 shows all {len(epochs)})[/]")
    for ev in evals:
        out.print(
            f"eval {safe(ev.get('ckpt'))} {safe(ev.get('attack'))}: clean {pct(ev.get('clean_acc'))} %  "
            f"robust {pct(ev.get('robust_acc'))} % on {safe(ev.get('n'))} images  "
            f"[dim]({safe(ev.get('implementation', ''))})[/]"
        )
    if points:
        print_points(rd)
