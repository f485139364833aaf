"""`advlc eval RUN`: final evaluation of a run's checkpoints (engine.run.final_eval)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from engine import facade
from engine.errors import UserError
from engine.facade import DEVICES_RE
from tui.cli.common import fit_consoles, out, pct, store_of
from tui.cli.root import app

err = Console(stderr=True, highlight=False, soft_wrap=True)

PASSES_PER_IMAGE = {
    # forward-backward passes an attack may spend on one image that withstands it to the end
    "aa": 100 + 9 * 100 + 9 * 100 + 5000 / 3,  # APGD-CE, APGD-T x 9 targets, FAB-T x 9, Square 5000 queries
    "aa-torchattacks": 10 + 9 * 10 + 9 * 10 + 5000 / 3,
    "apgd50x5": 50 * 5,
    "pgd50": 50,
    "pgd20": 20,
}
"""The steps of each attack counted in forward-backward passes (Square's forward-only queries as a
third of one), for the estimate printed before AutoAttack on a CPU."""

WARN_ATTACKS = ("aa", "aa-torchattacks")


def duration(seconds: float) -> str:
    """A rough duration: 40 s, 12 min, 3.5 h."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def estimate_line(attack: str, correct: int, forward_s: float) -> str:
    """The one-line warning before AutoAttack on a CPU: how long it may take, said to be an estimate."""
    passes = PASSES_PER_IMAGE[attack]
    upper = correct * passes * 3 * forward_s  # a forward-backward pass costs about three forward passes
    return (
        f"advlc: warning: {attack} on a CPU may take up to about {duration(upper)} (an estimate: {correct} "
        f"correctly classified images x ~{passes:,.0f} forward-backward passes each, at "
        f"{1e3 * forward_s:.2g} ms per image per forward pass as measured just now; images broken early skip "
        f"the later sub-attacks, so often less; --n N evaluates fewer images)"
    )


class EvalProgress:
    """engine.run.final_eval's progress events: on stderr one line per attack and sub-attack (and,
    in a terminal, a bar for the batches of the one running), on stdout each result as it comes."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.bar = RichProgress(
            TextColumn("  {task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self.task = None
        self.device = "cpu"
        self.results: list[dict] = []

    def __enter__(self):
        if err.is_terminal:  # piped, a bar is never drawn: the lines alone
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc) if err.is_terminal else None

    def line(self, text: str) -> None:
        self.bar.console.print(text, markup=False, highlight=False)

    def __call__(self, ev: dict) -> None:
        kind = ev["event"]
        if kind == "start":
            self.device = ev["device"]
            self.line(
                f"eval {self.run_id} {ev['ckpt']} (epoch {ev['epoch']}): {ev['attack']} on {ev['n']} "
                f"test images, eps {ev['eps']:.4g}, {ev['device']}"
            )
        elif kind == "clean":
            self.line(f"  clean {100 * ev['correct'] / ev['n']:.2f} % ({ev['correct']} of {ev['n']} images)")
            if ev["attack"] in WARN_ATTACKS and self.device == "cpu" and ev["correct"]:
                self.line(estimate_line(ev["attack"], ev["correct"], ev["forward_s_per_image"]))
        elif kind == "sub_start":
            self._done()
            if ev["sub"] != ev["attack"]:
                self.line(f"  {ev['sub']} …")
            self.task = self.bar.add_task(ev["sub"], total=None)
        elif kind == "batch":
            if self.task is not None:
                self.bar.update(self.task, completed=ev["done"], total=ev["batches"])
            if not err.is_terminal and ev["batches"] > 1:
                self.line(f"  {ev['sub']} batch {ev['done']}/{ev['batches']}")
        elif kind == "sub_done":
            self._done()
            self.line(f"  {ev['sub']}: robust {100 * ev['robust_acc']:.2f} % (after {ev['time_s']:.1f} s)")
        elif kind == "note":
            self.line(f"  {ev['attack']}: {ev['text']}")
        elif kind == "result":
            self._done()
            self.results.append(ev)
            if err.is_terminal:  # the bar (on stderr) makes way for the line on stdout
                self.bar.stop()
            out.print(result_line(ev), markup=False, highlight=False, soft_wrap=True)
            if err.is_terminal:
                self.bar.start()

    def _done(self) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None


def result_line(r: dict) -> str:
    """One evaluation's result with the number of images it was measured on."""
    return (
        f"{r['ckpt']} (epoch {r['epoch']}) {r['attack']}: robust {pct(r['robust_acc'])} % on {r['n']} images, "
        f"clean {pct(r['clean_acc'])} %  ({r['time_s']:.1f} s)"
    )


@app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
    ckpt: Annotated[
        list[str], typer.Option("--ckpt", help="Checkpoint: best | end | swa_best | swa_end (repeatable).")
    ] = ["best"],
    attack: Annotated[
        list[str],
        typer.Option(
            "--attack",
            help="pgd20 | pgd50 | aa (original AutoAttack, pyautoattack: compare this with "
            "the paper) | aa-torchattacks (torchattacks 3.5.1's weaker 10-step AutoAttack, "
            "not the paper's 100 steps) | apgd50x5 (repeatable).",
        ),
    ] = ["aa"],
    n: Annotated[int, typer.Option("--n", min=0, help="First N test images (0 = all).")] = 0,
    batch_size: Annotated[
        Optional[int],
        typer.Option("--batch-size", min=1, help="Attack batch size (default: the run's eval.batch_size)."),
    ] = None,
    device: Annotated[
        Optional[str], typer.Option("--device", help="cpu | cuda | cuda:N (default: the run's train.device).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
):
    """Clean and robust accuracy of a finished run's checkpoint(s); stored in its `evals` table.
    Progress (each attack and AutoAttack's sub-attacks) goes to stderr, each result to stdout as it
    is done; on a CPU, AutoAttack starts with an estimate of how long it may take."""
    if device is not None and not DEVICES_RE.match(device):
        raise UserError(f"--device {device}: must be cpu, cuda or cuda:N")
    store = store_of(ctx)
    rd = store.get(run)
    facade.check_eval_choices(ckpt, attack)
    fit_consoles(err)
    with EvalProgress(rd.id) as progress:
        if as_json:
            out.quiet = True  # stdout is the JSON document's alone
        try:
            recs = facade.eval_run(
                rd,
                ckpts=ckpt,
                attacks=attack,
                n=n,
                batch_size=batch_size,
                device=device,
                store=store,
                log=lambda line: progress.line(line),
                progress=progress,
            )
        finally:
            out.quiet = False
    if as_json:
        print(json.dumps(recs, indent=1))
        return
    for a in dict.fromkeys(r["attack"] for r in recs):
        impl = next(r["implementation"] for r in recs if r["attack"] == a)
        out.print(f"{a}: {impl}", markup=False, soft_wrap=True)
