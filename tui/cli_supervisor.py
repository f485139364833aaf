"""Commands that start, stop and watch detached runs: stop, resume, logs, delete, queue.

Registered by tui/cli.py (`register(app)`); `advlc run --detach` / `--gpus` / `--executor
slurm` go through `launch_detached` here. Each command calls one engine.launch.supervisor function.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from engine.errors import UserError


def reconcile_home(home) -> None:
    """Called at every CLI start: make run states truthful (dead `running` runs -> `lost`)."""
    try:
        from engine.store.index import Store
        from engine.launch.supervisor import reconcile

        store = Store(home)
        if store.runs_dir.exists():
            reconcile(store)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - never block a command on this; say so in one line
        print(f"advlc: warning: could not check run states: {type(exc).__name__}: {exc}", file=sys.stderr)


def _parse_gpus(text: str | None) -> list[int] | None:
    if text is None or text.strip() in ("", "all"):
        return None
    try:
        gpus = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--gpus {text}: give GPU ids separated by commas, e.g. 0,1") from None
    return gpus or None


def launch_detached(store, planned, *, gpus: str | None, slots_per_gpu: int, executor: str, slurm: dict) -> None:
    """`advlc run … --detach`: create and start (or queue, or submit) the runs; print their ids."""
    from tui.cli import out

    from engine.launch.supervisor import launch

    rds = launch(store, planned, gpus=_parse_gpus(gpus), slots_per_gpu=slots_per_gpu, executor=executor,
                 slurm=slurm if executor == "slurm" else None)
    for rd, p in zip(rds, planned):
        st = rd.status()
        la = st.get("launch") or {}
        where = (f"Slurm job {la.get('job_id')}" if la.get("executor") == "slurm"
                 else f"pid {st.get('pid')}" + (f" GPU {st.get('gpu')}" if st.get("gpu") is not None else "")
                 if st.get("state") == "running" else f"waiting for a GPU of {la.get('gpus')}")
        point = " ".join(f"{k}={v}" for k, v in p.point.items())
        out.print(f"{rd.id}  {st.get('state')}  {p.preset}  seed {p.seed}  {point}  {where}  → {rd.path}",
                  highlight=False)
    ids = " ".join(rd.id for rd in rds)
    out.print(f"[dim]watch: advlc logs {rds[0].id} -f   stop: advlc stop {ids}[/]")


def _runs(ctx, refs: list[str]):
    from tui.cli import _store

    store = _store(ctx)
    seen, rds = set(), []
    for ref in refs:
        rd = store.get(ref)
        if rd.id not in seen:
            seen.add(rd.id)
            rds.append(rd)
    return store, rds


def register(app: typer.Typer) -> None:
    @app.command("stop")
    def stop_cmd(ctx: typer.Context,
                 runs: Annotated[list[str], typer.Argument(help="Run ids (or unique prefixes).")],
                 grace: Annotated[float, typer.Option("--grace", min=0, help="Seconds to wait for a clean stop before SIGKILL.")] = 10.0):
        """Stop runs (SIGTERM, grace period, SIGKILL); they keep last.pt and can be resumed."""
        from tui.cli import out

        from engine.launch.supervisor import stop

        store, rds = _runs(ctx, runs)
        stop(store, rds, grace_s=grace)
        for rd in rds:
            st = rd.status()
            out.print(f"{rd.id}  {st.get('state')}  (epoch {st.get('epoch', 0)})", highlight=False)

    @app.command("resume")
    def resume_cmd(ctx: typer.Context,
                   run: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
                   foreground: Annotated[bool, typer.Option("--foreground", help="Train in this terminal with a progress bar instead of detached.")] = False):
        """Continue a stopped, lost or failed run from its last checkpoint (last.pt)."""
        from tui.cli import _print_summary, _Progress, out

        from engine.launch.supervisor import check_resumable, resume
        from engine.run.process import run as train_run

        store, [rd] = _runs(ctx, [run])
        if not foreground:
            resume(store, rd, detach=True)
            st = rd.status()
            out.print(f"{rd.id}  {st.get('state')}  resuming from epoch {_ckpt_epoch(rd)}  → {rd.log_path}",
                      highlight=False)
            return
        check_resumable(store, rd)
        rd.write_status(state="queued", error=None, ended=None, launch={"executor": "local"})
        out.print(f"resume [bold]{rd.id}[/] from epoch {_ckpt_epoch(rd)}")
        with _Progress(rd.id) as progress:
            try:
                state = train_run(rd, store, on_event=progress.event, log=lambda line: None)
            except KeyboardInterrupt:
                state = "stopped"
        _print_summary(store, [rd])
        if state == "failed":
            raise typer.Exit(1)

    @app.command("logs")
    def logs_cmd(ctx: typer.Context,
                 run: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
                 follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the run ends (Ctrl-C to leave; the run goes on).")] = False,
                 lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines from the end to show first.")] = 40):
        """Show a run's log.txt (its process output)."""
        from engine.launch.supervisor import follow as follow_log
        from engine.launch.supervisor import tail

        _, [rd] = _runs(ctx, [run])
        if not follow:
            for line in tail(rd, lines):
                print(line)
            return
        try:
            for line in follow_log(rd, lines=lines):
                print(line, flush=True)
        except KeyboardInterrupt:
            pass
        print(f"-- {rd.id}: {rd.status().get('state')}", file=sys.stderr)

    @app.command("delete")
    def delete_cmd(ctx: typer.Context,
                   runs: Annotated[list[str], typer.Argument(help="Run ids (or unique prefixes).")],
                   yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
                   force: Annotated[bool, typer.Option("--force", help="Stop running or queued runs first.")] = False):
        """Delete runs: their directories (checkpoints, metrics, logs) and index entries."""
        from tui.cli import out

        from engine.launch.supervisor import delete

        store, rds = _runs(ctx, runs)
        if not yes:
            if not sys.stdin.isatty():
                raise UserError(f"delete {' '.join(rd.id for rd in rds)}: add --yes to confirm (no terminal to ask)")
            if not typer.confirm(f"delete {len(rds)} run(s) {' '.join(rd.id for rd in rds)} and all their files?"):
                raise typer.Exit(1)
        delete(store, rds, force=force)
        out.print(f"deleted {' '.join(rd.id for rd in rds)}", highlight=False)

    @app.command("queue")
    def queue_cmd(ctx: typer.Context,
                  as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False):
        """GPU leases of this host, the runs waiting for a GPU, and the scheduler."""
        from rich.table import Table

        from tui.cli import _store, out

        from engine.launch.supervisor import queue_info

        info = queue_info(_store(ctx))
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
                t.add_row(str(le.get("gpu")), str(le.get("slot")), str(le.get("run")), str(le.get("pid")), since,
                          "alive" if le["live"] else "gone (stale)")
            out.print(t)
        else:
            out.print("no GPU leases")
        if info["queued"]:
            out.print(f"{len(info['queued'])} queued:")
            for i, q in enumerate(info["queued"], 1):
                out.print(f"  {i}. {q['id']}  GPUs {','.join(map(str, q['gpus']))}  x{q['slots_per_gpu']}", highlight=False)
        else:
            out.print("no runs waiting")


def _ckpt_epoch(rd) -> int:
    """The epoch a resume starts from (without loading the checkpoint): the records kept."""
    st = rd.status()
    return int(st.get("epoch") or 0) if rd.ckpt("last").exists() else 0
