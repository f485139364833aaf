"""`advlc bench`: method step cost, fast-path epoch time, HS cost, concurrent CPU runs (engine/bench/).

One subcommand per benchmark, each with its own options:

    advlc bench steps [--methods m1,m2] [--model cnn_small|preact_resnet18] [--device cpu|cuda]
                      [--batch 100] [--iters N] [--warmup N] [--json] [--write-docs]
    advlc bench epoch [--iters BATCHES] [--amp off,bf16] [--compile] [--workers N] [--n-train 50000] ...
    advlc bench hs [--run RUN] [--ckpt best|last] [--n 2000] ...
    advlc bench concurrency [--preset quick/robust-overfitting] [--set k=v]...
    advlc bench fold DIR [--docs FILE]     the results of scripts/gpu-check.sh into docs/BENCHMARKS.md

Progress goes to stderr; the table (or, with --json, the whole result) to stdout.
`--write-docs` replaces the matching section of docs/BENCHMARKS.md (`--docs` names another file;
an installed advlc has no docs/, so there `--docs` is required).
The benchmarks load torch, so they come from engine.facade on first use.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from engine import facade
from engine.errors import UserError
from engine.paths import CODE_ROOT
from tui.cli.common import err, out, print_table
from tui.cli.root import app

bench_app = typer.Typer(
    help="Benchmarks: step cost, epoch time, HS cost, concurrent CPU runs; fold "
    "scripts/gpu-check.sh results into docs/BENCHMARKS.md."
)
app.add_typer(bench_app, name="bench")


def _docs_default() -> Path:
    """docs/BENCHMARKS.md of a source checkout (an installed advlc has no docs/: --docs is required)."""
    return CODE_ROOT / "docs" / "BENCHMARKS.md"


def _f(v, fmt="{:.3g}") -> str:
    return "—" if v is None else fmt.format(v)


def _print_steps(r: dict) -> None:
    out.print(
        f"{r['device_name']}  torch {r['torch']}  model {r['model']}  batch {r['batch']}  "
        f"{'bf16' if r['amp'] == 'bf16' else 'fp32'}  {r['rounds']} rounds x {r['steps_per_round']} steps"
    )
    t = Table(box=None, pad_edge=False)
    for c in ("method", "base", "s/batch", "ratio", "paper ratio"):
        t.add_column(c, justify="left" if c in ("method", "base") else "right")
    for row in r["results"]:
        t.add_row(
            row["label"] + ("" if row["finite"] else " (NaN)"),
            row["base"] or "—",
            _f(row["s_per_batch"], "{:.4f}"),
            _f(row["ratio"], "{:.3f}"),
            _f(row["paper_ratio"], "{:.3f}"),
        )
    print_table(t)
    for lab, a in r["advlc_vs_paper"].items():
        out.print(
            f"{lab}: +{a['overhead_pct']:.1f} % over its base (paper +{a['paper_overhead_pct']:.1f} %): "
            f"{'within' if a['within_paper'] else 'above'} the paper's overhead"
        )
    for k, v in r["skipped"].items():
        out.print(f"not timed: {k}: {v}")


def _print_epoch(r: dict) -> None:
    ext = f"extrapolated from {r['measured_batches']} batches" if r["extrapolated"] else "measured"
    out.print(
        f"{r['device_name']}  torch {r['torch']}  model {r['model']}"
        f"{' (reduced)' if r['reduced_model'] else ''}  {r['n_train']} images/epoch ({ext})"
    )
    t = Table(box=None, pad_edge=False)
    t.add_column("scheme")
    t.add_column("reference s/epoch", justify="right")
    for a in r["amps"]:
        name = r.get("amp_names", {}).get(a) or ("bf16" if a == "bf16" else "fp32")
        t.add_column(f"fast {name} s/epoch", justify="right")
        t.add_column("speed-up", justify="right")
    for row in r["results"]:
        cells = [row["scheme"], _f(row["reference_s_per_epoch"], "{:.1f}")]
        for a in r["amps"]:
            f = row["fast"].get(a) or {}
            cells += [_f(f.get("s_per_epoch"), "{:.1f}"), _f(f.get("speedup"), "{:.2f}x")]
        t.add_row(*cells)
    print_table(t)
    for k, c in r["costs"].items():
        if k.startswith("eval_"):
            out.print(
                f"evaluation ({k[5:]}): {c['s_per_10k']:.1f} s per 10,000 images"
                + (f" (from {c['images']})" if c["extrapolated"] else "")
            )
        else:
            out.print(
                f"HS ({c['method']}): {c['s_per_2000']:.1f} s per 2000 samples"
                + (f" (from {c['samples']})" if c["extrapolated"] else "")
            )
    for k, v in r["skipped"].items():
        out.print(f"not timed: {k}: {v}")


def _print_hs(r: dict) -> None:
    s = r["sec_per_batch"]
    out.print(f"{r['device_name']}  torch {r['torch']}  {r['model']['source']}  {r['n_samples']} samples")
    out.print(
        f"s/batch: exact {_f(s['exact'], '{:.4f}')}  lanczos {_f(s['lanczos'], '{:.3f}')}  "
        f"power {_f(s['power'], '{:.2f}')} (on {r['power_samples']} samples)"
    )
    out.print(
        f"exact is {_f(r['speedup_exact_vs_power'], '{:.0f}')}x faster than power iteration, "
        f"{_f(r['speedup_exact_vs_lanczos'], '{:.0f}')}x faster than Lanczos"
    )
    for k, e in r["validation"].items():
        if isinstance(e, dict):
            out.print(f"{k}: max rel {e['max_rel']:.2e}")
    out.print(
        "goals: " + ", ".join(f"{k} {'—' if v is None else ('yes' if v else 'NO')}" for k, v in r["goals"].items())
    )


def _print_concurrency(r: dict) -> None:
    out.print(
        f"{r['device_name']}  torch {r['torch']}  {r['runs']} runs of {r['preset']}  "
        f"budget {r['budget_threads']} thread(s) each"
    )
    t = Table(box=None, pad_edge=False)
    for c in ("schedule", "threads per run", "wall s", "s/epoch"):
        t.add_column(c, justify="left" if c == "schedule" else "right")
    for name, sc in r["schedules"].items():
        t.add_row(name, str(sc["threads"]), f"{sc['wall_s']:.1f}", f"{sc['epoch_s']:.2f}")
    print_table(t)
    if r.get("budget_vs_sequential") is not None:
        out.print(f"together with the budget: {r['budget_vs_sequential']:.2f}x the time of one after another")
    if r.get("default_vs_budget") is not None:
        out.print(f"together at torch's default threads: {r['default_vs_budget']:.2f}x the time with the budget")


def _command_line(ctx: typer.Context) -> str:
    """`advlc bench KIND` with the options that were given (those that differ from their defaults)."""
    parts = ["advlc", "bench", ctx.info_name]
    for p in ctx.command.params:
        v = ctx.params.get(p.name)
        if p.name in ("as_json", "write_docs", "docs") or v == p.default or v is None or v == []:
            continue
        if isinstance(v, bool):
            if v:
                parts.append(p.opts[0])
            elif p.secondary_opts:
                parts.append(p.secondary_opts[0])
        elif isinstance(v, list):
            parts += [x for item in v for x in (p.opts[0], shlex.quote(str(item)))]
        else:
            parts += [p.opts[0], shlex.quote(str(v))]
    return " ".join(parts)


def _split(text: Optional[str]) -> list[str] | None:
    if text is None:
        return None
    items = [p.strip() for p in text.split(",") if p.strip()]
    return items or None


# options several benchmarks share
Methods = Annotated[
    Optional[str],
    typer.Option(
        "--methods",
        help="Comma-separated methods (or attack+method); default: all registered (epoch: FGSM-N, PGD10, each ± AdvLC, and FGSM-N with GradAlign and CURE).",
    ),
]
Model = Annotated[
    Optional[str],
    typer.Option("--model", help="cnn_small | preact_resnet18 (default: cnn_small on CPU, preact_resnet18 on CUDA)."),
]
Device = Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N | auto.")]
Batch = Annotated[int, typer.Option("--batch", min=1, help="Batch size.")]
Warmup = Annotated[Optional[int], typer.Option("--warmup", min=0, help="Warm-up steps per method.")]
Rounds = Annotated[Optional[int], typer.Option("--rounds", min=1, help="Alternating timing rounds.")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model (fast path).")]
Seed = Annotated[int, typer.Option("--seed", min=0, help="Seed of the data and models.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")]
WriteDocs = Annotated[bool, typer.Option("--write-docs", help="Write the result into docs/BENCHMARKS.md.")]
Docs = Annotated[Optional[Path], typer.Option("--docs", help="The markdown file --write-docs updates.")]


def _docs_path(flag: str, docs: Path | None) -> Path:
    """The markdown file to update: --docs, or the checkout's docs/BENCHMARKS.md (one line when there is none)."""
    if docs is None and not _docs_default().is_file():
        raise UserError(
            f"{flag}: {_docs_default()} does not exist (advlc is installed, not a source "
            f"checkout): name the markdown file to update with --docs FILE"
        )
    return docs or _docs_default()


def _progress(as_json: bool):
    if as_json:
        return lambda line: print(f"bench: {line}", file=sys.stderr, flush=True)
    return lambda line: err.print(f"[dim]bench:[/] {line}")


def _finish(
    ctx: typer.Context, r: dict, section: str, body, show, *, as_json: bool, write_docs: bool, docs: Path | None
) -> None:
    """Record the command, write the docs section when asked, print the result."""
    r["command"] = _command_line(ctx)
    if write_docs:
        path = _docs_path("--write-docs", docs)
        facade.bench_markdown.write_section(path, section, body(r, r["command"]))
        _progress(as_json)(f"wrote section '{section}' of {path}")
    if as_json:
        print(json.dumps(r, indent=1))
    else:
        show(r)


@bench_app.command("steps")
def steps_cmd(
    ctx: typer.Context,
    methods: Methods = None,
    model: Model = None,
    device: Device = "auto",
    batch: Batch = 100,
    iters: Annotated[Optional[int], typer.Option("--iters", min=1, help="Measured steps per method.")] = None,
    warmup: Warmup = None,
    rounds: Rounds = None,
    amp: Annotated[str, typer.Option("--amp", help="off | bf16.")] = "off",
    channels_last: Annotated[
        bool, typer.Option("--channels-last/--no-channels-last", help="channels_last model.")
    ] = False,
    compile_: Compile = False,
    seed: Seed = 0,
    as_json: AsJson = False,
    write_docs: WriteDocs = False,
    docs: Docs = None,
):
    """Time one training step per method, as a ratio to its base attack's step."""
    if write_docs:
        _docs_path("--write-docs", docs)
    if amp not in ("off", "bf16"):
        raise UserError(f"--amp {amp}: must be off or bf16")
    md = facade.bench_markdown
    r = facade.bench_steps(
        _split(methods),
        arch=model,
        device=device,
        batch=batch,
        iters=iters,
        warmup=warmup,
        rounds=rounds,
        channels_last=channels_last,
        amp=amp,
        compile=compile_,
        seed=seed,
        progress=_progress(as_json),
    )
    _finish(
        ctx, r, md.SECTION_STEPS, md.markdown_steps, _print_steps, as_json=as_json, write_docs=write_docs, docs=docs
    )


@bench_app.command("epoch")
def epoch_cmd(
    ctx: typer.Context,
    methods: Methods = None,
    model: Model = None,
    device: Device = "auto",
    batch: Batch = 100,
    iters: Annotated[Optional[int], typer.Option("--iters", min=1, help="Batches per variant.")] = None,
    warmup: Warmup = None,
    rounds: Rounds = None,
    amp: Annotated[
        Optional[str],
        typer.Option(
            "--amp",
            help="A list, e.g. off,bf16,bf16+compile; +compile compiles that fast variant only; default off on CPU, off,bf16 on CUDA.",
        ),
    ] = None,
    channels_last: Annotated[
        bool, typer.Option("--channels-last/--no-channels-last", help="channels_last model for the fast path.")
    ] = True,
    compile_: Compile = False,
    n_train: Annotated[int, typer.Option("--n-train", min=1, help="Images per epoch.")] = 50_000,
    workers: Annotated[
        Optional[int],
        typer.Option("--workers", min=0, help="Reference DataLoader workers (default 0 on CPU, 4 on CUDA)."),
    ] = None,
    eval_n: Annotated[
        Optional[int], typer.Option("--eval-n", min=0, help="Images the evaluation cost is measured on (0: none).")
    ] = None,
    hs_n: Annotated[
        Optional[int], typer.Option("--hs-n", min=0, help="Samples the HS cost is measured on (0: none).")
    ] = None,
    seed: Seed = 0,
    as_json: AsJson = False,
    write_docs: WriteDocs = False,
    docs: Docs = None,
):
    """Epoch time of the fast path against the reference loop (the authors' DataLoader loop)."""
    if write_docs:
        _docs_path("--write-docs", docs)
    md = facade.bench_markdown
    r = facade.bench_epoch(
        _split(methods),
        arch=model,
        device=device,
        batch=batch,
        n_train=n_train,
        batches=iters,
        warmup=warmup,
        rounds=rounds,
        amps=_split(amp),
        channels_last=channels_last,
        compile=compile_,
        workers=workers,
        eval_n=eval_n,
        hs_n=hs_n,
        seed=seed,
        progress=_progress(as_json),
    )
    _finish(
        ctx, r, md.SECTION_EPOCH, md.markdown_epoch, _print_epoch, as_json=as_json, write_docs=write_docs, docs=docs
    )


@bench_app.command("hs")
def hs_cmd(
    ctx: typer.Context,
    run: Annotated[Optional[str], typer.Option("--run", help="Use this run's checkpoint and data.")] = None,
    ckpt: Annotated[str, typer.Option("--ckpt", help="With --run: best | last.")] = "best",
    n: Annotated[int, typer.Option("--n", min=1, help="Samples.")] = 2000,
    power_n: Annotated[
        Optional[int], typer.Option("--power-n", min=1, help="Samples power iteration is timed on (default: all).")
    ] = None,
    epochs: Annotated[
        int, typer.Option("--epochs", min=0, help="Training epochs of the digits model (without --run).")
    ] = 5,
    dense_samples: Annotated[
        int,
        typer.Option(
            "--dense-samples",
            min=0,
            help="Samples of the dense-Hessian check (0: none; one CIFAR image is a 3072 x 3072 Hessian).",
        ),
    ] = 2,
    device: Device = "auto",
    seed: Seed = 0,
    as_json: AsJson = False,
    write_docs: WriteDocs = False,
    docs: Docs = None,
):
    """The HS methods: exact vs power iteration vs Lanczos, time and agreement."""
    if write_docs:
        _docs_path("--write-docs", docs)
    md = facade.bench_markdown
    r = facade.bench_hs(
        run=run,
        home=(ctx.obj or {}).get("home"),
        ckpt=ckpt,
        device=device,
        n=n,
        power_n=power_n,
        epochs=epochs,
        seed=seed,
        dense_samples=dense_samples,
        progress=_progress(as_json),
    )
    _finish(ctx, r, md.SECTION_HS, md.markdown_hs, _print_hs, as_json=as_json, write_docs=write_docs, docs=docs)


@bench_app.command("concurrency")
def concurrency_cmd(
    ctx: typer.Context,
    preset: Annotated[
        str, typer.Option("--preset", help="The preset whose runs are timed (several: a sweep or --set seeds).")
    ] = "quick/robust-overfitting",
    set_: Annotated[list[str], typer.Option("--set", help="Override section.key=value (repeatable).")] = [],
    as_json: AsJson = False,
    write_docs: WriteDocs = False,
    docs: Docs = None,
):
    """CPU runs started together with a thread budget, at torch's default threads, and one after another."""
    if write_docs:
        _docs_path("--write-docs", docs)
    md = facade.bench_markdown
    r = facade.bench_concurrency(preset, list(set_), progress=_progress(as_json))
    _finish(
        ctx,
        r,
        md.SECTION_CONCURRENCY,
        md.markdown_concurrency,
        _print_concurrency,
        as_json=as_json,
        write_docs=write_docs,
        docs=docs,
    )


@bench_app.command("fold")
def fold_cmd(
    folder: Annotated[Path, typer.Argument(help="An output folder of scripts/gpu-check.sh.")],
    docs: Annotated[
        Optional[Path], typer.Option("--docs", help="The markdown file to update (default: docs/BENCHMARKS.md).")
    ] = None,
):
    """Write the results of a scripts/gpu-check.sh output folder into docs/BENCHMARKS.md (runs nothing)."""
    path = _docs_path("fold", docs)
    section = facade.bench_markdown.fold(folder, path, allow_smoke=docs is not None)
    out.print(f"wrote section '{section}' of {path} from {folder}", markup=False, highlight=False)
