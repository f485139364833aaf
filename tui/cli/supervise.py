"""Commands that start, stop and watch detached runs: stop, resume, logs, delete, queue.

`advlc run --detach` / `--gpus` / `--executor slurm` go through `launch_detached` here.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Optional

import typer
from rich.table import Table

from engine import facade
from engine.errors import UserError
from engine.facade import (
    delete,
    follow,
    launch,
    prepare_resume,
    queue_info,
    resume,
    stop,
    tail,
)
from engine.printable import printable
from tui.cli.common import Progress, err, out, print_summary, print_table, run_or_latest, runs_of, store_of
from tui.cli.root import app


def _where(st) -> str:
    """Where a launched run is, in a few words (its launch record says: pid, GPU, Slurm job)."""
    return st.launch.describe(st) if st.launch is not None else st.state


def launch_detached(store, planned, req) -> None:
    """`advlc run … --detach`: create and start (or queue, or submit) the runs; print their ids."""
    rds = launch(
        store, planned, gpus=req.gpus, slots_per_gpu=req.slots_per_gpu, executor=req.executor, slurm_params=req.slurm
    )
    for rd, p in zip(rds, planned):
        st = rd.status()
        point = " ".join(f"{k}={v}" for k, v in p.point.items())
        out.print(
            f"{rd.id}  {st.state}  {p.preset}  seed {p.seed}  {point}  {_where(st)}  → {rd.path}", highlight=False
        )
    ids = " ".join(rd.id for rd in rds)
    out.print(f"[dim]watch: advlc logs {rds[0].id} -f   stop: advlc stop {ids}[/]")


@app.command("stop")
def stop_cmd(
    ctx: typer.Context,
    runs: Annotated[list[str], typer.Argument(help="Run ids (or unique prefixes).")],
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="Seconds to wait for a clean stop before SIGKILL.")
    ] = 10.0,
):
    """Stop runs (SIGTERM, grace period, SIGKILL); they keep last.pt and can be resumed."""
    store, rds = runs_of(ctx, runs)
    refused = stop(store, rds, grace_s=grace)
    for rd in rds:
        st = rd.status()
        out.print(f"{rd.id}  {st.state}  (epoch {st.epoch})", highlight=False)
    _refused(refused)


def _refused(refused: dict[str, str]) -> None:
    """One line on stderr for each run whose recorded process was not its own (nothing was
    signalled), and exit code 1 when there is any."""
    for line in refused.values():
        err.print(f"advlc: {printable(' '.join(line.split()))}", markup=False, highlight=False, soft_wrap=True)
    if refused:
        raise typer.Exit(1)


@app.command("resume")
def resume_cmd(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Train in this terminal with a progress bar instead of detached.")
    ] = False,
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="last (last.pt: exact), best (the best epoch's model, "
            "fresh optimiser) or scratch (epoch 0; old checkpoints kept aside).",
        ),
    ] = "last",
    partition: Annotated[
        Optional[str], typer.Option("--partition", help="Slurm runs: another partition for the new job.")
    ] = None,
    time_limit: Annotated[
        Optional[str],
        typer.Option(
            "--time",
            help="Slurm runs: another time limit, read as Slurm reads --time (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]).",
        ),
    ] = None,
    account: Annotated[Optional[str], typer.Option("--account", help="Slurm runs: another account.")] = None,
    slurm_gpus: Annotated[
        Optional[int], typer.Option("--slurm-gpus", min=0, help="Slurm runs: GPUs per job (a CUDA run's; 0 = none).")
    ] = None,
):
    """Continue a stopped, lost or failed run from its last checkpoint (last.pt); a Slurm run
    as a new job, with --partition/--time/--account/--slurm-gpus changed if given."""
    store, [rd] = runs_of(ctx, [run])
    slurm = {"partition": partition, "time": time_limit, "account": account, "gpus": slurm_gpus}
    if not foreground:
        resume(store, rd, source=source, slurm_params=slurm)
        st = rd.status()
        out.print(
            f"{rd.id}  {st.state}  resuming from epoch {st.resume_epoch or 0}  {_where(st)}  → {rd.log_path}",
            highlight=False,
        )
        return
    if any(v is not None for v in slurm.values()):
        raise UserError("--partition/--time/--account/--slurm-gpus are for a Slurm run's new job; drop --foreground")
    prepare_resume(store, rd, foreground=True, source=source)
    out.print(f"resume [bold]{rd.id}[/] from epoch {rd.status().resume_epoch or 0}")
    with Progress(rd.id) as progress:
        try:
            state = facade.train_foreground(rd, store, on_event=progress.event, log=lambda line: None)
        except KeyboardInterrupt:
            state = "stopped"
    print_summary([rd])
    if state == "failed":
        last = ((rd.status().error or "").strip().splitlines() or ["see its log"])[-1]
        err.print(f"advlc: run {rd.id} failed: {last}", markup=False, highlight=False)
        raise typer.Exit(1)


@app.command("logs")
def logs_cmd(
    ctx: typer.Context,
    run: Annotated[
        Optional[str],
        typer.Argument(help="Run id (or unique prefix); default: the most recent run.", show_default=False),
    ] = None,
    follow_: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing new lines until the run ends (Ctrl-C to leave; the run goes on)."
        ),
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines from the end to show first.")] = 40,
):
    """Show a run's log.txt (its process output); the most recent run's when no id is given."""
    _, rd = run_or_latest(ctx, run, "logs")
    if not follow_:
        for line in tail(rd, lines):
            print(printable(line))
        return
    try:
        for line in follow(rd, lines=lines):
            print(printable(line), flush=True)
    except KeyboardInterrupt:
        pass
    print(f"-- {rd.id}: {rd.status().state}", file=sys.stderr)


@app.command("delete")
def delete_cmd(
    ctx: typer.Context,
    runs: Annotated[list[str], typer.Argument(help="Run ids (or unique prefixes).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Stop running or queued runs first.")] = False,
):
    """Delete runs: their directories (checkpoints, metrics, logs) and index entries."""
    store, rds = runs_of(ctx, runs)
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(f"delete {' '.join(rd.id for rd in rds)}: add --yes to confirm (no terminal to ask)")
        if not typer.confirm(f"delete {len(rds)} run(s) {' '.join(rd.id for rd in rds)} and all their files?"):
            raise typer.Exit(1)
    refused = delete(store, rds, force=force)
    out.print(f"deleted {' '.join(rd.id for rd in rds)}", highlight=False)
    _refused(refused)


@app.command("queue")
def queue_cmd(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False):
    """GPU leases of this host, the runs waiting for a GPU, the scheduler, and Slurm runs with their jobs."""
    info = queue_info(store_of(ctx))
    if as_json:
        print(json.dumps(info, indent=1))
        return
    sched = info["scheduler_pid"]
    out.print(f"host {info['host']}  scheduler: {f'pid {sched}' if sched else 'not running'}", highlight=False)
    if info["leases"]:
        t = Table(box=None, pad_edge=False)
        for c in ("gpu", "slot", "run", "pid", "since", "holder"):
            t.add_column(c)
        for le in info["leases"]:
            since = time.strftime("%H:%M:%S", time.localtime(le["since"])) if le.get("since") else "—"
            t.add_row(
                str(le.get("gpu")),
                str(le.get("slot")),
                str(le.get("run")),
                str(le.get("pid")),
                since,
                "alive" if le["live"] else "gone (stale)",
            )
        print_table(t)
    else:
        out.print("no GPU leases")
    if info["queued"]:
        out.print(f"{len(info['queued'])} queued:")
        for i, q in enumerate(info["queued"], 1):
            out.print(f"  {i}. {q['id']}  GPUs {','.join(map(str, q['gpus']))}  x{q['slots_per_gpu']}", highlight=False)
    else:
        out.print("no runs waiting")
    if info.get("slurm"):
        out.print(f"{len(info['slurm'])} Slurm run(s):")
        t = Table(box=None, pad_edge=False)
        for c in ("run", "state", "job", "Slurm state", "reason / node", "partition", "time"):
            t.add_column(c)
        for r in info["slurm"]:
            slurm_state = r["slurm_state"] or ("? (squeue did not answer)" if r["squeue"] else f"({r['cluster']})")
            where = r["nodes"] if r["slurm_state"] == "RUNNING" else r["reason"]
            t.add_row(
                r["id"],
                r["state"],
                str(r["job_id"] or "—"),
                slurm_state,
                where if where and where != "None" else "—",
                r["partition"] or "—",
                f"{r['time']} min" if r.get("time") else "—",
            )
        print_table(t)
