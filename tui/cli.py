"""The `advlc` command line. Each command parses its arguments and calls one engine function.

Bad input of any kind ends in one line `advlc: <what is wrong>` and exit code 2; the
engine raises `UserError` for those and `main()` prints them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.errors import UserError

try:  # typer >= 0.20 vendors click; older versions use the click package
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="advlc: adversarial-training experiments around AdvLC (Li & Spratling 2023).")
preset_app = typer.Typer(help="Inspect one preset.")
app.add_typer(preset_app, name="preset")

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)


def _store(ctx: typer.Context):
    from engine.store.index import Store

    return Store(ctx.obj["home"]).ensure()


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def _num(v, fmt="{:.4g}") -> str:
    return "—" if v is None else fmt.format(v)


@app.callback(invoke_without_command=True)
def root(ctx: typer.Context,
         home: Annotated[Optional[Path], typer.Option("--home", envvar="ADVLC_HOME",
                                                      help="Run store directory (default ~/.advlc).")] = None):
    """With no command, open the app."""
    ctx.obj = {"home": home}
    __import__("tui.cli_supervisor").cli_supervisor.reconcile_home(home)  # truthful states first
    if ctx.invoked_subcommand is None:
        from tui.app import make_app

        make_app(home).run()


# ---------------------------------------------------------------------------- presets
@app.command("presets")
def presets_cmd(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False):
    """List the presets (built-in and $ADVLC_HOME/presets)."""
    from engine.config.presets import list_presets

    entries = list_presets(ctx.obj["home"])
    if as_json:
        print(json.dumps([{"name": e.name, "group": e.group, "description": e.description,
                           "reference": e.reference, "path": str(e.path)} for e in entries], indent=1))
        return
    t = Table(box=None, pad_edge=False)
    for c in ("preset", "reproduces", "description"):
        t.add_column(c, overflow="fold")
    for e in entries:
        t.add_row(e.name, e.reference, e.description)
    out.print(t)


@preset_app.command("show")
def preset_show(ctx: typer.Context, name: str,
                set_: Annotated[list[str], typer.Option("--set", help="Override section.key=value.")] = [],
                as_json: Annotated[bool, typer.Option("--json")] = False):
    """Show a preset's fully resolved config."""
    from engine.config.presets import load_preset

    pname, cfg, _ = load_preset(name, set_, ctx.obj["home"])
    d = cfg.to_dict()
    if as_json:
        print(json.dumps({"name": pname, "label": cfg.label, "config": d}, indent=1))
        return
    out.print(f"[bold]{pname}[/]  ({cfg.label})")
    if cfg.preset.description:
        out.print(cfg.preset.description)
    if cfg.preset.reference:
        out.print(f"reproduces: {cfg.preset.reference}")
    for section, table in d.items():
        if section == "preset":
            continue
        out.print(f"[bold]\\[{section}][/]")
        for k, v in table.items():
            out.print(f"  {k} = {json.dumps(v)}")


# ---------------------------------------------------------------------------- run
@app.command("run")
def run_cmd(ctx: typer.Context,
            preset: Annotated[str, typer.Argument(help="Preset name (see `advlc presets`) or a TOML file.")],
            set_: Annotated[list[str], typer.Option("--set", help="Override section.key=value (repeatable).")] = [],
            seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="Number of seeds (seed, seed+1, ...); default: the preset's.")] = None,
            seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="First seed (default: the preset's).")] = None,
            device: Annotated[Optional[str], typer.Option("--device", help="cpu | cuda | cuda:N (default: preset).")] = None,
            detach: Annotated[bool, typer.Option("--detach", "-d", help="Start in the background and return at once (survives the terminal).")] = False,
            gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU queue: run on these GPUs, e.g. 0,1 (implies --detach; default: all visible when the preset uses CUDA).")] = None,
            slots_per_gpu: Annotated[int, typer.Option("--slots-per-gpu", min=1, help="Runs at once per GPU in the queue.")] = 1,
            executor: Annotated[str, typer.Option("--executor", help="local | slurm (slurm implies --detach; submits through submitit).")] = "local",
            partition: Annotated[Optional[str], typer.Option("--partition", help="Slurm partition (default: the preset's [slurm] table).")] = None,
            time_limit: Annotated[Optional[str], typer.Option("--time", help="Slurm time limit: minutes or HH:MM:SS.")] = None,
            account: Annotated[Optional[str], typer.Option("--account", help="Slurm account.")] = None,
            slurm_gpus: Annotated[Optional[int], typer.Option("--slurm-gpus", min=0, help="GPUs per Slurm job (default 1).")] = None,
            with_teachers: Annotated[bool, typer.Option("--with-teachers", help="KDSA: train missing teacher runs first (foreground).")] = False):
    """Train a preset: in the foreground with a progress bar, or detached (--detach, --gpus, --executor slurm)."""
    from engine.config.presets import plan_runs
    from engine.launch.supervisor import create_runs

    overrides = list(set_)
    if device:
        overrides.append(f"train.device={device}")
    if seed is not None:
        overrides.append(f"train.seed={seed}")
    store = _store(ctx)
    background = detach or gpus is not None or executor != "local"
    if with_teachers and background:
        raise UserError("--with-teachers trains the teachers before the student, so it runs in the foreground; "
                        "drop --detach/--gpus/--executor, or run the teacher presets detached first")
    planned = plan_runs(preset, overrides, seeds=seeds, home=ctx.obj["home"], with_teachers=with_teachers)
    if background:
        from tui.cli_supervisor import launch_detached

        launch_detached(store, planned, gpus=gpus, slots_per_gpu=slots_per_gpu, executor=executor,
                        slurm={"partition": partition, "time": time_limit, "account": account, "gpus": slurm_gpus})
        return
    from engine.run.process import run as train_run

    runs = create_runs(store, planned)
    states = {}
    for rd, p in zip(runs, planned):
        point = " ".join(f"{k}={v}" for k, v in p.point.items())
        out.print(f"run [bold]{rd.id}[/]  {p.preset}  seed {p.seed}  {point}  → {rd.path}")
        with _Progress(rd.id) as progress:
            try:
                states[rd.id] = train_run(rd, store, on_event=progress.event, log=lambda line: None)
            except KeyboardInterrupt:
                states[rd.id] = "stopped"
        if states[rd.id] == "stopped":
            out.print(f"[yellow]stopped[/] {rd.id} (resume with `advlc resume {rd.id}`)")
            break
        if states[rd.id] == "failed":
            last = ((rd.status().get("error") or "").strip().splitlines() or ["see its log"])[-1]
            err.print(f"advlc: run {rd.id} failed: {last}", markup=False, highlight=False)
            if rd.run_config().method.name == "kdsa" or any(p.role for p in planned):
                break  # a student needs its teachers
    _print_summary(store, [rd for rd in runs if rd.id in states])
    if any(s == "failed" for s in states.values()):
        raise typer.Exit(1)


class _Progress:
    """Rich progress for a foreground run: epochs, batches and the latest metrics."""

    def __init__(self, run_id: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=out,
                          transient=False)
        self.run_id = run_id
        self.ep = self.b = None

    def __enter__(self):
        self.p.__enter__()
        return self

    def __exit__(self, *exc):
        return self.p.__exit__(*exc)

    def event(self, kind: str, info: dict):
        from engine.run.process import format_epoch

        if kind == "start":
            self.ep = self.p.add_task("epoch", total=info["epochs"], completed=info["start_epoch"], info="")
            self.b = self.p.add_task("batch", total=info["batches"], info="")
        elif kind == "batch":
            self.p.update(self.b, completed=info["batch"])
        elif kind == "epoch":
            r = info
            text = (f"clean {_pct(r['clean_acc'])}  robust {_pct(r['robust_acc'])}  "
                    f"IG {_num(r['ig'])}  train {r['train_loss']:.3f}")
            self.p.console.print(f"[dim]{self.run_id}[/] " + format_epoch(r), highlight=False)
            self.p.update(self.ep, completed=r["epoch"] + 1, info=text)
            self.p.update(self.b, completed=0)


def _print_summary(store, runs):
    from engine.report.tables import run_summary

    t = Table(title="accuracy % at best (highest PGD robust accuracy) / end; diff = best - end",
              box=None, pad_edge=False)
    for c in ("run", "label", "seed", "clean best/end", "diff", "robust best/end", "diff", "IG"):
        t.add_column(c, justify="left" if c in ("run", "label") else "right", no_wrap=True)
    for rd in runs:
        s = run_summary(rd)
        label = s["label"] if s["state"] == "finished" else f"{s['label']} ({s['state']})"
        t.add_row(rd.id, label, str(s["seed"]),
                  f"{_pct(s['clean_best'])}/{_pct(s['clean_end'])}", _pct(s["clean_diff"]),
                  f"{_pct(s['robust_best'])}/{_pct(s['robust_end'])}", _pct(s["robust_diff"]), _num(s["ig"]))
    out.print(t)


# ---------------------------------------------------------------------------- runs / show
@app.command("runs")
def runs_cmd(ctx: typer.Context,
             as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
             status: Annotated[Optional[str], typer.Option("--status", help="Only runs in this state.")] = None,
             preset: Annotated[Optional[str], typer.Option("--preset", help="Only runs of this preset (or folder).")] = None,
             reindex: Annotated[bool, typer.Option("--reindex", help="Rebuild the index from the run directories.")] = False):
    """List runs."""
    from engine.store.rundir import STATES

    if status and status not in STATES:
        raise UserError(f"--status {status}: must be one of {', '.join(STATES)}")
    store = _store(ctx)
    if reindex:
        n = store.reindex()
        err.print(f"reindexed {n} runs")
    rows = store.runs(state=status, preset=preset)
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    if not rows:
        out.print(f"no runs in {store.home}")
        return
    t = Table(box=None, pad_edge=False)
    for c in ("id", "preset", "label", "seed", "state", "epoch", "robust best", "robust end", "clean end", "IG"):
        t.add_column(c, justify="right" if c in ("seed", "epoch", "robust best", "robust end", "clean end", "IG") else "left")
    for r in rows:
        t.add_row(r["id"], str(r.get("preset")), str(r.get("label")), str(r.get("seed")), r.get("state", "?"),
                  f"{r.get('epoch', 0)}/{r.get('epochs')}", _pct(r.get("best_robust_acc")),
                  _pct(r.get("end_robust_acc")), _pct(r.get("end_clean_acc")), _num(r.get("ig")))
    out.print(t)


@app.command("show")
def show_cmd(ctx: typer.Context, run: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
             as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False):
    """Config, status and per-epoch history of one run."""
    store = _store(ctx)
    rd = store.get(run)
    doc = {"id": rd.id, "config": rd.config(), "status": rd.status(), "epochs": rd.epochs(), "evals": rd.evals(),
           "swa": rd.records("swa"), "points": rd.records("points")}
    if as_json:
        print(json.dumps(doc, indent=1))
        return
    c = doc["config"]
    st = doc["status"]
    out.print(f"[bold]{rd.id}[/]  {c['run'].get('preset')}  ({c['run'].get('label')})  seed {c['run'].get('seed')}  "
              f"state {st.get('state')}  {rd.path}")
    prov = c.get("provenance", {})
    if prov:
        out.print(f"commit {str(prov.get('commit'))[:10]}{' (dirty)' if prov.get('dirty') else ''}  "
                  f"torch {prov.get('torch')}  {prov.get('device_name')}  host {prov.get('host')}")
    if st.get("error"):
        out.print("[red]error:[/] " + escape(st["error"].strip()))
    t = Table(box=None)
    cols = ("epoch", "lr", "train_loss", "train_acc", "clean_acc", "robust_acc", "av", "ig", "hs", "time_s")
    for col in cols:
        t.add_column(col, justify="right")
    for r in doc["epochs"]:
        t.add_row(*[_pct(r.get(k)) if k.endswith("_acc") else _num(r.get(k)) for k in cols])
    out.print(t)
    for ev in doc["evals"]:
        out.print(f"eval {ev.get('ckpt')} {ev.get('attack')}: clean {_pct(ev.get('clean_acc'))} "
                  f"robust {_pct(ev.get('robust_acc'))}  ({ev.get('implementation', '')})")
    if doc["points"]:
        from tui.cli_experiments import print_points

        print_points(rd)


# ---------------------------------------------------------------------------- command modules
# Command groups that live in their own modules register themselves here.
def _register_command_modules() -> None:
    import importlib

    for mod in ("tui.cli_supervisor", "tui.cli_eval", "tui.cli_bench", "tui.cli_report", "tui.cli_experiments"):
        try:
            importlib.import_module(mod).register(app)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


_register_command_modules()


# ---------------------------------------------------------------------------- entry point
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
    except ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(f"{exc.format_message()}{hint}")
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
