"""`advlc eval RUN`: final evaluation of a run's checkpoints (engine.run.final_eval)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from engine import facade
from engine.errors import UserError
from engine.facade import DEVICES_RE
from tui.cli.common import out, pct, store_of
from tui.cli.root import app

err = Console(stderr=True, highlight=False, soft_wrap=True)


@app.command("eval")
def eval_cmd(ctx: typer.Context,
             run: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
             ckpt: Annotated[list[str], typer.Option(
                 "--ckpt", help="Checkpoint: best | end | swa_best | swa_end (repeatable).")] = ["best"],
             attack: Annotated[list[str], typer.Option(
                 "--attack", help="pgd20 | pgd50 | aa (original AutoAttack, pyautoattack: compare this with "
                                  "the paper) | aa-torchattacks (torchattacks 3.5.1's weaker 10-step AutoAttack, "
                                  "not the paper's 100 steps) | apgd50x5 (repeatable).")] = ["aa"],
             n: Annotated[int, typer.Option("--n", min=0, help="First N test images (0 = all).")] = 0,
             batch_size: Annotated[Optional[int], typer.Option(
                 "--batch-size", min=1, help="Attack batch size (default: the run's eval.batch_size).")] = None,
             device: Annotated[Optional[str], typer.Option(
                 "--device", help="cpu | cuda | cuda:N (default: the run's train.device).")] = None,
             as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False):
    """Clean and robust accuracy of a finished run's checkpoint(s); stored in its `evals` table."""
    if device is not None and not DEVICES_RE.match(device):
        raise UserError(f"--device {device}: must be cpu, cuda or cuda:N")
    store = store_of(ctx)
    rd = store.get(run)
    facade.check_eval_choices(ckpt, attack)
    recs = facade.eval_run(rd, ckpts=ckpt, attacks=attack, n=n, batch_size=batch_size, device=device, store=store,
                           log=lambda line: err.print(line, markup=False))
    if as_json:
        print(json.dumps(recs, indent=1))
        return
    t = Table(box=None, pad_edge=False)
    for c in ("run", "ckpt", "epoch", "attack", "n", "eps", "clean %", "robust %", "s"):
        t.add_column(c, justify="right" if c in ("epoch", "n", "eps", "clean %", "robust %", "s") else "left",
                     no_wrap=True)
    for r in recs:
        t.add_row(rd.id, r["ckpt"], str(r["epoch"]), r["attack"], str(r["n"]), f"{r['eps']:.4g}",
                  pct(r["clean_acc"]), pct(r["robust_acc"]), f"{r['time_s']:.1f}")
    out.print(t)
    for a in dict.fromkeys(r["attack"] for r in recs):
        impl = next(r["implementation"] for r in recs if r["attack"] == a)
        out.print(f"{a}: {impl}", markup=False)
