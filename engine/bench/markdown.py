"""The sections of docs/BENCHMARKS.md that `advlc bench steps --write-docs` writes from a result, and the
block `advlc bench fold DIR` writes from the output folder of scripts/gpu-check.sh."""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.errors import UserError

SECTION_STEPS = "Method step cost (advlc bench steps)"
SECTION_EPOCH = "Epoch time: fast path vs reference loop (advlc bench epoch)"
SECTION_HS = "Input-Hessian spectrum (advlc bench hs)"
SECTION_CONCURRENCY = "Concurrent CPU runs: thread budget (advlc bench concurrency)"


def _f(v, fmt="{:.3g}") -> str:
    return "—" if v is None else fmt.format(v)


def _header(r: dict, command: str) -> list[str]:
    dirty = " (with uncommitted changes)" if r.get("dirty") else ""
    return [
        f"Measured {r['date']} by `{command}` on **{r['device_name']}**, torch {r['torch']}"
        + (f", CUDA {r['cuda']}" if r.get("cuda") and r["device"].startswith("cuda") else "")
        + f", commit {str(r.get('commit'))[:10]}{dirty}.",
        "",
    ]


def markdown_steps(r: dict, command: str = "advlc bench steps") -> str:
    lines = _header(r, command)
    lines += [
        f"Model {r['model']}, synthetic {r['image'][0]}x{r['image'][1]}x{r['image'][2]} batches of "
        f"{r['batch']}; precision {'bf16' if r['amp'] == 'bf16' else 'fp32'}"
        f"{', channels_last' if r['channels_last'] else ''}{', compiled' if r['compile'] else ''}; "
        f"{r['warmup']} warm-up step{'' if r['warmup'] == 1 else 's'}, then {r['rounds']} rounds of {r['steps_per_round']} "
        f"step(s) per method, each method timed right after (or, every other round, right before) "
        f"its base; seconds are medians over rounds, ratios the median of those per-round "
        f"ratios.",
        "",
        "| method | base | s/batch | ratio to base | paper s/batch (V100) | paper ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in r["results"]:
        lines.append(
            f"| {row['label']}{'' if row['finite'] else ' (loss not finite)'} | {row['base'] or '—'} | "
            f"{_f(row['s_per_batch'], '{:.4f}')} | {_f(row['ratio'], '{:.3f}')} | "
            f"{_f(row['paper_s_per_batch'])} | {_f(row['paper_ratio'], '{:.3f}')} |"
        )
    if r["advlc_vs_paper"]:
        lines += [""]
        for lab, a in r["advlc_vs_paper"].items():
            lines.append(
                f"- **{lab}**: +{a['overhead_pct']:.1f} % over its base (paper: "
                f"+{a['paper_overhead_pct']:.1f} %) — {'within' if a['within_paper'] else 'above'} "
                f"the paper's overhead."
            )
    if r["skipped"]:
        lines += ["", "Not timed: " + "; ".join(f"{k} ({v})" for k, v in r["skipped"].items()) + "."]
    return "\n".join(lines) + "\n"


def markdown_epoch(r: dict, command: str = "advlc bench epoch") -> str:
    lines = _header(r, command)
    ext = (
        f"**Extrapolated**: {r['measured_batches']} batches measured per variant, × "
        f"{r['batches_per_epoch'] / r['measured_batches']:.0f} to {r['batches_per_epoch']} batches "
        f"({r['n_train']:,} images)."
        if r["extrapolated"]
        else f"{r['measured_batches']} batches ({r['n_train']:,} images) measured per variant."
    )
    model = r["model"] + (" (a reduced model standing in for PreActResNet18)" if r["reduced_model"] else "")
    lines += [
        f"Model {model}, batch {r['batch']}, synthetic CIFAR-shaped data. {ext} "
        f"{r['warmup']} warm-up batch{'' if r['warmup'] == 1 else 'es'}, then {r['rounds']} rounds, each scheme's "
        f"variants back to back; "
        f"medians; speed-up = median of the per-round reference/fast ratios. "
        f"Fast path: uint8 data on the device, on-device crop+flip, "
        f"{'channels_last, ' if r['channels_last'] else ''}{'torch.compile, ' if r['compile'] else ''}"
        f"no host sync in the loop. Reference: torchvision DataLoader ({r['workers']} workers) + "
        f"per-image PIL RandomHorizontalFlip/RandomCrop(padding 4)/ToTensor, fp32, `loss.item()` per batch.",
        "",
    ]
    amps = r["amps"]
    names = r.get("amp_names") or {a: "bf16" if a == "bf16" else "fp32" for a in amps}
    head = "| scheme | reference s/epoch |" + "".join(f" fast {names[a]} s/epoch | speed-up |" for a in amps)
    lines += [head, "|---|---:|" + "---:|---:|" * len(amps)]
    for row in r["results"]:
        cells = f"| {row['scheme']} | {_f(row['reference_s_per_epoch'], '{:.1f}')} |"
        for a in amps:
            f = row["fast"].get(a)
            cells += f" {_f(f['s_per_epoch'], '{:.1f}')} | {_f(f['speedup'], '{:.2f}')}× |" if f else " — | — |"
        lines.append(cells)
    c = r["costs"]
    if c:
        lines += [""]
        for a in dict.fromkeys(a.partition("+")[0] for a in amps):  # one evaluation per precision
            e = c.get(f"eval_{a}")
            if e:
                lines.append(
                    f"- Per-epoch evaluation (clean + PGD-10 + IG, batch 500) "
                    f"{'bf16' if a == 'bf16' else 'fp32'}: {e['s_per_10k']:.1f} s per 10,000 test images"
                    + (f" (extrapolated from {e['images']})" if e["extrapolated"] else "")
                    + "."
                )
        if c.get("hs"):
            h = c["hs"]
            lines.append(
                f"- HS ({h['method']}, batch 100): {h['s_per_2000']:.1f} s per 2000 samples"
                + (f" (extrapolated from {h['samples']})" if h["extrapolated"] else "")
                + "."
            )
    skipped_compile = sorted(
        {
            row["scheme"]
            for row in r["results"]
            for f in row["fast"].values()
            if any("compile skipped" in n for n in f.get("notes") or [])
        }
    )
    if skipped_compile:
        lines += [
            "",
            f"torch.compile skipped for {', '.join(skipped_compile)} (double backprop, which "
            "torch.compile cannot differentiate): their compiled columns run eagerly.",
        ]
    if any(not f.get("finite", True) for row in r["results"] for f in row["fast"].values()):
        lines += [
            "",
            "**Loss not finite** in: "
            + ", ".join(
                f"{row['scheme']} ({names[a]})"
                for row in r["results"]
                for a, f in row["fast"].items()
                if not f.get("finite", True)
            )
            + ".",
        ]
    if r["skipped"]:
        lines += ["", "Not timed: " + "; ".join(f"{k} ({v})" for k, v in r["skipped"].items()) + "."]
    return "\n".join(lines) + "\n"


def markdown_hs(r: dict, command: str = "advlc bench hs") -> str:
    lines = _header(r, command)
    s = r["sec_per_batch"]
    v = r["validation"]
    lines += [
        f"Model: {r['model']['source']}. {r['n_samples']} samples ({r['distinct_samples']} distinct) in "
        f"batches of {r['batch']}, top-{r['k']} eigenvalues"
        + (
            "."
            if r["power_samples"] == r["n_samples"]
            else f"; power iteration timed on the first {r['power_samples']} samples against exact on the same samples."
        )
        + " "
        + _dense_note(v),
        "",
        "| method | s/batch | exact is faster by | HS |",
        "|---|---:|---:|---:|",
        f"| exact | {_f(s['exact'], '{:.4f}')} | — | {_f(r['hs'].get('exact'), '{:.4g}')} |",
        f"| Lanczos | {_f(s['lanczos'], '{:.3f}')} | {_f(r['speedup_exact_vs_lanczos'], '{:.0f}')}× | "
        f"{_f(r['hs'].get('lanczos'), '{:.4g}')} |",
        f"| power iteration (authors') | {_f(s['power'], '{:.2f}')} | {_f(r['speedup_exact_vs_power'], '{:.0f}')}× | "
        f"{_f(r['hs'].get('power'), '{:.4g}')}"
        + (
            ""
            if r["power_samples"] == r["n_samples"]
            else f" (on {r['power_samples']} samples; exact there: {_f(r['hs'].get('exact_on_power_samples'), '{:.4g}')})"
        )
        + " |",
        "",
        "Validation of the top-20 eigenvalues: max relative error of any eigenvalue (eigenvalues "
        "below 1e-6 of the largest left out) / max error relative to the largest eigenvalue:",
        "",
    ]
    for k, e in v.items():
        if isinstance(e, dict):
            lines.append(
                f"- {k.replace('_', ' ')}: {e['max_rel']:.2e} / {e['max_abs_scaled']:.2e}"
                + (
                    f" (per-batch max relative error, mean over batches {e['mean_max_rel']:.2e})"
                    if "mean_max_rel" in e
                    else ""
                )
            )
    hs = r["hs"]
    ref = hs.get("exact_on_power_samples") or hs.get("exact")
    if hs.get("power") is not None and ref:
        lines.append(
            f"- HS itself (mean |λ| of the top 20), power iteration vs exact: "
            f"{abs(hs['power'] - ref) / abs(ref):.2e} relative; Lanczos vs exact: "
            + (
                f"{abs(hs['lanczos'] - hs['exact']) / abs(hs['exact']):.2e}"
                if hs.get("lanczos") is not None and hs.get("exact")
                else "—"
            )
            + " relative."
        )
    g = r["goals"]
    lines += [
        "",
        "Goals: exact ≥ 100× faster than power iteration: "
        f"{_yes(g['exact_100x_faster_than_power'])}; exact = dense Hessian to 1e-3: "
        f"{_yes(g['exact_vs_dense_within_1e-3'])}; power iteration within 1e-3 of exact: "
        f"{_yes(g['power_vs_exact_within_1e-3'])}.",
    ]
    return "\n".join(lines) + "\n"


def _dense_note(v: dict) -> str:
    ns, dim = v.get("dense_samples", 2), v.get("dense_dim")
    if not ns:
        return "No dense-Hessian check (`--dense-samples 0`)."
    return f"The dense-Hessian checks use one batch of {ns} sample{'' if ns == 1 else 's'}" + (
        f" (a {dim} x {dim} Hessian)." if dim else "."
    )


def _yes(b) -> str:
    return "—" if b is None else ("yes" if b else "**no**")


BEGIN, END = "<!-- advlc bench: begin (generated; replaced by --write-docs) -->", "<!-- advlc bench: end -->"


def write_section(path: Path, heading: str, body: str, *, title: str = "# Benchmarks") -> None:
    """Put `body` under `## heading` in the markdown file `path`, between the generated-block
    markers; text of the section outside the markers, and every other section, is kept. A
    missing file or section is created (the section at the end)."""
    path = Path(path)
    text = path.read_text() if path.exists() else f"{title}\n"
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == f"## {heading}"), None)
    if start is None:
        new = text.rstrip("\n") + f"\n\n## {heading}\n\n{block}\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if re.match(r"^##? ", lines[i])), len(lines))
        section = "\n".join(lines[start + 1 : end])
        if BEGIN in section and END in section:
            pre, _, rest = section.partition(BEGIN)
            _, _, post = rest.partition(END)
            section = pre + block + post
        else:
            section = "\n\n" + block + "\n" + section.strip("\n") + ("\n" if section.strip() else "")
        body_lines = section.strip("\n").splitlines()
        new_lines = lines[: start + 1] + [""] + body_lines + ([""] if end < len(lines) else []) + lines[end:]
        new = "\n".join(new_lines) + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(new)
    tmp.replace(path)


def markdown_concurrency(r: dict, command: str = "advlc bench concurrency") -> str:
    dirty = " (with uncommitted changes)" if r.get("dirty") else ""
    lines = [
        f"Measured {r['date']} by `{command}` on **{r['device_name']}**, torch {r['torch']}, commit "
        f"{str(r.get('commit'))[:10]}{dirty}.",
        "",
        f"The {r['runs']} runs of `{r['preset']}`"
        + (f" (with {', '.join(f'`{o}`' for o in r['overrides'])})" if r.get("overrides") else "")
        + ", as real run processes in a temporary store, three ways: one after another with every core; "
        f"all started together with the launcher's budget ({r['cores']} cores / {r['runs']} runs = "
        f"{r['budget_threads']} thread(s) each); all together at torch's default thread count (what every "
        "detached run did before the budget). Wall time from the first start to the last end, process "
        "start-up included; s/epoch is the mean the runs recorded themselves.",
        "",
        "| schedule | threads per run | wall s | s/epoch |",
        "|---|---:|---:|---:|",
    ]
    for name, sc in r["schedules"].items():
        lines.append(f"| {name} | {sc['threads']} | {sc['wall_s']:.1f} | {sc['epoch_s']:.2f} |")
    lines.append("")
    if r.get("budget_vs_sequential") is not None:
        lines.append(
            f"- Together with the budget: **{r['budget_vs_sequential']:.2f}×** the wall time of one after another."
        )
    if r.get("default_vs_budget") is not None:
        lines.append(f"- Together at torch's default: **{r['default_vs_budget']:.2f}×** the wall time with the budget.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# scripts/gpu-check.sh: its output folder, rendered as one generated block (`advlc bench fold DIR`)
# ---------------------------------------------------------------------------------------

SECTION_GPU_CHECK = "GPU check (scripts/gpu-check.sh)"
GPU_CHECK_RESULTS = ("env", "data", "pytest", "train", "hs", "epoch", "epoch_compile", "step_cost")
"""The JSON files (`<name>.json`) a gpu-check folder may hold, besides status.jsonl (one line per step)."""


def load_gpu_check(folder: Path) -> dict:
    """The results of a gpu-check folder: {name: parsed JSON or {"unreadable": why}} for each file of
    GPU_CHECK_RESULTS that exists, and "status": the steps' lines of status.jsonl (the last line of
    a step wins). Refuses (UserError) a folder with neither env.json nor status.jsonl."""
    folder = Path(folder)
    if not (folder / "status.jsonl").is_file() and not (folder / "env.json").is_file():
        raise UserError(
            f"--fold {folder}: not the output folder of scripts/gpu-check.sh (no status.jsonl, no env.json)"
        )
    out: dict = {"folder": folder.name}
    for name in GPU_CHECK_RESULTS:
        p = folder / f"{name}.json"
        if p.is_file():
            try:
                out[name] = json.loads(p.read_text())
            except (OSError, ValueError) as exc:
                out[name] = {"unreadable": f"{p.name} does not parse: {exc}"}
    steps: dict[str, dict] = {}
    p = folder / "status.jsonl"
    for line in p.read_text().splitlines() if p.is_file() else []:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("step"), str):
            steps[doc["step"]] = doc
    out["status"] = list(steps.values())
    return out


def _gib(b) -> str:
    return "—" if b is None else f"{b / 2**30:.2f} GiB"


def markdown_train(t: dict) -> str:
    """The paper preset's short run (scripts/gpu_check.py train): its epochs and peak memory."""
    lines = [
        f"`{t.get('command', 'advlc run')}`: run {t.get('run', '—')} {t.get('state', '—')}"
        f" on {t.get('device_name') or t.get('device') or '—'}, model {t.get('model', '—')}, batch "
        f"{t.get('batch_size', '—')}, fast path {t.get('fast_path', {})}; wall {t.get('wall_s', 0):.1f} s "
        f"(process start, data, training, evaluation, checkpoints).",
        "",
        "| epoch | train s | images/s | eval s | train loss | clean acc | robust acc |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in t.get("epochs", []):
        lines.append(
            f"| {r.get('epoch')} | {_f(r.get('time_s'), '{:.2f}')} | {_f(r.get('images_per_s'), '{:.0f}')} | "
            f"{_f(r.get('eval_time_s'), '{:.2f}')} | {_f(r.get('train_loss'), '{:.4f}')} | "
            f"{_f(r.get('clean_acc'), '{:.4f}')} | {_f(r.get('robust_acc'), '{:.4f}')} |"
        )
    lines += [
        "",
        f"Peak GPU memory (torch.cuda.max_memory_allocated / max_memory_reserved over the whole run): "
        f"{_gib(t.get('peak_gpu_memory_allocated_bytes'))} / {_gib(t.get('peak_gpu_memory_reserved_bytes'))}"
        + (f" of {_gib(t['gpu_memory_total_bytes'])}" if t.get("gpu_memory_total_bytes") else "")
        + f"; peak host memory (max RSS) {_gib(t.get('max_rss_bytes'))}. The images are random: "
        "the accuracies mean nothing, the times and memory are those of CIFAR-10.",
    ]
    if t.get("error"):
        lines += ["", f"Error: {t['error']}"]
    return "\n".join(lines) + "\n"


def _env_line(e: dict, folder: str) -> list[str]:
    if not e or "unreadable" in e:
        return [f"GPU check `{folder}`: no env.json ({(e or {}).get('unreadable', 'missing')}).", ""]
    smi = (e.get("nvidia_smi") or {}).get("gpus") or [{}]
    dirty = " (with uncommitted changes)" if e.get("dirty") else ""
    lines = [
        f"Measured {e.get('date')} by `scripts/gpu-check.sh{' --smoke' if e.get('smoke') else ''}` on "
        f"**{e.get('device_name')}**"
        + (
            f" ({len(e.get('devices', []))} visible, driver {smi[0].get('driver_version', '—')})"
            if e.get("devices")
            else ""
        )
        + f", torch {e.get('torch')} (built with CUDA {e.get('cuda')}), cuDNN {e.get('cudnn') or '—'}, "
        f"Python {e.get('python')}, "
        f"commit {str(e.get('commit'))[:10]}{dirty}; output folder `{folder}`.",
        "",
    ]
    if e.get("smoke"):
        lines += [
            "**A smoke run (`--smoke`: a CPU, tiny sizes): it checks that every step works; its numbers "
            "are not measurements.**",
            "",
        ]
    return lines


def _result(d: dict, name: str, title: str, render, steps: dict) -> list[str]:
    r = d.get(name)
    st = steps.get(name, {})
    if not isinstance(r, dict) or "unreadable" in r:
        why = (r or {}).get("unreadable") if isinstance(r, dict) else None
        return [
            f"**{title}**: no result (step {st.get('status', 'not run')}"
            + (f" after {st['seconds']:.0f} s" if st.get("status") in ("cut", "failed") else "")
            + (f"; {why}" if why else "")
            + (f"; see logs/{name}.log" if st.get("status") in ("ok", "cut", "failed") else "")
            + ").",
            "",
        ]
    try:
        body = render(r, r["command"]) if "command" in r and render is not markdown_train else render(r)
    except (KeyError, TypeError, ValueError) as exc:
        return [f"**{title}**: {name}.json cannot be rendered ({type(exc).__name__}: {exc}).", ""]
    return [
        f"**{title}**" + ("" if st.get("status", "ok") == "ok" else f" (step {st['status']})") + ":",
        "",
        body.rstrip(),
        "",
    ]


def markdown_gpu_check(d: dict) -> str:
    """The generated block of SECTION_GPU_CHECK from `load_gpu_check`: environment, each step's
    status and time against its limit, pytest -m gpu, the paper preset's run, epoch time, HS, step cost."""
    steps = {s["step"]: s for s in d.get("status", [])}
    lines = _env_line(d.get("env") or {}, d.get("folder", "?"))
    lines += ["| step | status | seconds | limit s | expected on a GPU (s) | note |", "|---|---|---:|---:|---:|---|"]
    for s in d.get("status", []):
        lines.append(
            f"| {s['step']} | {s.get('status')} | {_f(s.get('seconds'), '{:.1f}')} | {s.get('limit_s', '—')} | "
            f"{s.get('expected_gpu_s', '—')} | {s.get('note') or ''} |"
        )
    lines.append("")
    p = d.get("pytest")
    if isinstance(p, dict) and "total" in p:
        bad = [t["id"] for t in p.get("tests", []) if t.get("outcome") in ("failed", "error")]
        lines += [
            f"**pytest -m gpu**: {p['passed']} passed, {p['failed']} failed, {p['error']} errors, "
            f"{p['skipped']} skipped" + (f" (failed: {', '.join(bad)})" if bad else "") + ".",
            "",
        ]
    else:
        lines += [f"**pytest -m gpu**: no result (step {steps.get('pytest', {}).get('status', 'not run')}).", ""]
    data = d.get("data") or {}
    title = "Paper preset, short run" + (
        f" on a generated random CIFAR-10 folder ({data['n_train']:,} + {data['n_test']:,} images)"
        if "n_train" in data
        else ""
    )
    lines += _result(d, "train", title, markdown_train, steps)
    lines += _result(d, "epoch", "Epoch time: fast path (fp32, bf16) vs reference loop", markdown_epoch, steps)
    lines += _result(
        d, "epoch_compile", "Epoch time: fast path bf16 + torch.compile vs reference loop", markdown_epoch, steps
    )
    lines += _result(d, "hs", "Input-Hessian spectrum at CIFAR size", markdown_hs, steps)
    lines += _result(d, "step_cost", "Method step cost", markdown_steps, steps)
    return "\n".join(lines).rstrip() + "\n"


def fold(folder: Path, docs: Path, *, allow_smoke: bool = False) -> str:
    """Write a gpu-check folder's results into `docs` (SECTION_GPU_CHECK's generated block);
    returns the section's heading. A --smoke folder is refused unless `allow_smoke`."""
    d = load_gpu_check(folder)
    if (d.get("env") or {}).get("smoke") and not allow_smoke:
        raise UserError(
            f"--fold {folder}: a --smoke run (a CPU, tiny sizes): its numbers are not measurements; "
            f"name another file with --docs to fold it anyway"
        )
    write_section(docs, SECTION_GPU_CHECK, markdown_gpu_check(d))
    return SECTION_GPU_CHECK
