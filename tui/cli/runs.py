"""`advlc run PRESET` (foreground or detached), `advlc runs` and `advlc show RUN`."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from engine import facade
from engine.errors import UserError
from engine.facade import STATES, create_runs, get_method, plan_runs
from tui.cli.common import Progress, err, num, out, pct, print_summary, store_of
from tui.cli.experiments import print_points
from tui.cli.root import app
from tui.cli.supervise import launch_detached


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
    overrides = list(set_)
    if device:
        overrides.append(f"train.device={device}")
    if seed is not None:
        overrides.append(f"train.seed={seed}")
    store = store_of(ctx)
    background = detach or gpus is not None or executor != "local"
    if with_teachers and background:
        raise UserError("--with-teachers trains the teachers before the student, so it runs in the foreground; "
                        "drop --detach/--gpus/--executor, or run the teacher presets detached first")
    planned = plan_runs(preset, overrides, seeds=seeds, home=ctx.obj["home"], with_teachers=with_teachers)
    if background:
        launch_detached(store, planned, gpus=gpus, slots_per_gpu=slots_per_gpu, executor=executor,
                        slurm={"partition": partition, "time": time_limit, "account": account, "gpus": slurm_gpus})
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
            last = ((rd.status().get("error") or "").strip().splitlines() or ["see its log"])[-1]
            err.print(f"advlc: run {rd.id} failed: {last}", markup=False, highlight=False)
            if get_method(p.cfg.method.name).teachers or any(q.role for q in planned):
                break  # a student needs its teachers
    print_summary([rd for rd in runs if rd.id in states])
    if any(s == "failed" for s in states.values()):
        raise typer.Exit(1)


@app.command("runs")
def runs_cmd(ctx: typer.Context,
             as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
             status: Annotated[Optional[str], typer.Option("--status", help="Only runs in this state.")] = None,
             preset: Annotated[Optional[str], typer.Option("--preset", help="Only runs of this preset (or folder).")] = None,
             reindex: Annotated[bool, typer.Option("--reindex", help="Rebuild the index from the run directories.")] = False):
    """List runs."""
    if status and status not in STATES:
        raise UserError(f"--status {status}: must be one of {', '.join(STATES)}")
    store = store_of(ctx)
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
                  f"{r.get('epoch', 0)}/{r.get('epochs')}", pct(r.get("best_robust_acc")),
                  pct(r.get("end_robust_acc")), pct(r.get("end_clean_acc")), num(r.get("ig")))
    out.print(t)


@app.command("show")
def show_cmd(ctx: typer.Context, run: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
             as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False):
    """Config, status and per-epoch history of one run."""
    rd = store_of(ctx).get(run)
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
        t.add_row(*[pct(r.get(k)) if k.endswith("_acc") else num(r.get(k)) for k in cols])
    out.print(t)
    for ev in doc["evals"]:
        out.print(f"eval {ev.get('ckpt')} {ev.get('attack')}: clean {pct(ev.get('clean_acc'))} "
                  f"robust {pct(ev.get('robust_acc'))}  ({ev.get('implementation', '')})")
    if doc["points"]:
        print_points(rd)
