"""The sections of docs/BENCHMARKS.md that `advlc bench --write-docs` writes from a result."""

from __future__ import annotations

import re
from pathlib import Path

SECTION_STEPS = "Method step cost (advlc bench)"
SECTION_EPOCH = "Epoch time: fast path vs reference loop (advlc bench --epoch)"
SECTION_HS = "Input-Hessian spectrum (advlc bench --hs)"
SECTION_CONCURRENCY = "Concurrent CPU runs: thread budget (advlc bench --concurrency)"


def _f(v, fmt="{:.3g}") -> str:
    return "—" if v is None else fmt.format(v)


def _header(r: dict, command: str) -> list[str]:
    dirty = " (with uncommitted changes)" if r.get("dirty") else ""
    return [f"Measured {r['date']} by `{command}` on **{r['device_name']}**, torch {r['torch']}"
            + (f", CUDA {r['cuda']}" if r.get("cuda") and r["device"].startswith("cuda") else "")
            + f", commit {str(r.get('commit'))[:10]}{dirty}.", ""]


def markdown_steps(r: dict, command: str = "advlc bench") -> str:
    lines = _header(r, command)
    lines += [f"Model {r['model']}, synthetic {r['image'][0]}x{r['image'][1]}x{r['image'][2]} batches of "
              f"{r['batch']}; precision {'bf16' if r['amp'] == 'bf16' else 'fp32'}"
              f"{', channels_last' if r['channels_last'] else ''}{', compiled' if r['compile'] else ''}; "
              f"{r['warmup']} warm-up step{'' if r['warmup'] == 1 else 's'}, then {r['rounds']} rounds of {r['steps_per_round']} "
              f"step(s) per method, each method timed right after (or, every other round, right before) "
              f"its base; seconds are medians over rounds, ratios the median of those per-round "
              f"ratios.", "",
              "| method | base | s/batch | ratio to base | paper s/batch (V100) | paper ratio |",
              "|---|---|---:|---:|---:|---:|"]
    for row in r["results"]:
        lines.append(f"| {row['label']}{'' if row['finite'] else ' (loss not finite)'} | {row['base'] or '—'} | "
                     f"{_f(row['s_per_batch'], '{:.4f}')} | {_f(row['ratio'], '{:.3f}')} | "
                     f"{_f(row['paper_s_per_batch'])} | {_f(row['paper_ratio'], '{:.3f}')} |")
    if r["advlc_vs_paper"]:
        lines += [""]
        for lab, a in r["advlc_vs_paper"].items():
            lines.append(f"- **{lab}**: +{a['overhead_pct']:.1f} % over its base (paper: "
                         f"+{a['paper_overhead_pct']:.1f} %) — {'within' if a['within_paper'] else 'above'} "
                         f"the paper's overhead.")
    if r["skipped"]:
        lines += ["", "Not timed: " + "; ".join(f"{k} ({v})" for k, v in r["skipped"].items()) + "."]
    return "\n".join(lines) + "\n"


def markdown_epoch(r: dict, command: str = "advlc bench --epoch") -> str:
    lines = _header(r, command)
    ext = (f"**Extrapolated**: {r['measured_batches']} batches measured per variant, × "
           f"{r['batches_per_epoch'] / r['measured_batches']:.0f} to {r['batches_per_epoch']} batches "
           f"({r['n_train']:,} images)." if r["extrapolated"] else
           f"{r['measured_batches']} batches ({r['n_train']:,} images) measured per variant.")
    model = r["model"] + (" (a reduced model standing in for PreActResNet18)" if r["reduced_model"] else "")
    lines += [f"Model {model}, batch {r['batch']}, synthetic CIFAR-shaped data. {ext} "
              f"{r['warmup']} warm-up batch{'' if r['warmup'] == 1 else 'es'}, then {r['rounds']} rounds, each scheme's "
              f"variants back to back; "
              f"medians; speed-up = median of the per-round reference/fast ratios. "
              f"Fast path: uint8 data on the device, on-device crop+flip, "
              f"{'channels_last, ' if r['channels_last'] else ''}{'torch.compile, ' if r['compile'] else ''}"
              f"no host sync in the loop. Reference: torchvision DataLoader ({r['workers']} workers) + "
              f"per-image PIL RandomHorizontalFlip/RandomCrop(padding 4)/ToTensor, fp32, `loss.item()` per batch.",
              ""]
    amps = r["amps"]
    head = "| scheme | reference s/epoch |" + "".join(
        f" fast {'bf16' if a == 'bf16' else 'fp32'} s/epoch | speed-up |" for a in amps)
    lines += [head, "|---|---:|" + "---:|---:|" * len(amps)]
    for row in r["results"]:
        cells = f"| {row['scheme']} | {_f(row['reference_s_per_epoch'], '{:.1f}')} |"
        for a in amps:
            f = row["fast"].get(a)
            cells += (f" {_f(f['s_per_epoch'], '{:.1f}')} | {_f(f['speedup'], '{:.2f}')}× |" if f else " — | — |")
        lines.append(cells)
    c = r["costs"]
    if c:
        lines += [""]
        for a in amps:
            e = c.get(f"eval_{a}")
            if e:
                lines.append(f"- Per-epoch evaluation (clean + PGD-10 + IG, batch 500) "
                             f"{'bf16' if a == 'bf16' else 'fp32'}: {e['s_per_10k']:.1f} s per 10,000 test images"
                             + (f" (extrapolated from {e['images']})" if e["extrapolated"] else "") + ".")
        if c.get("hs"):
            h = c["hs"]
            lines.append(f"- HS ({h['method']}, batch 100): {h['s_per_2000']:.1f} s per 2000 samples"
                         + (f" (extrapolated from {h['samples']})" if h["extrapolated"] else "") + ".")
    if r["skipped"]:
        lines += ["", "Not timed: " + "; ".join(f"{k} ({v})" for k, v in r["skipped"].items()) + "."]
    return "\n".join(lines) + "\n"


def markdown_hs(r: dict, command: str = "advlc bench --hs") -> str:
    lines = _header(r, command)
    s = r["sec_per_batch"]
    v = r["validation"]
    lines += [f"Model: {r['model']['source']}. {r['n_samples']} samples ({r['distinct_samples']} distinct) in "
              f"batches of {r['batch']}, top-{r['k']} eigenvalues"
              + ("." if r["power_samples"] == r["n_samples"] else
                 f"; power iteration timed on the first {r['power_samples']} samples against exact on the same "
                 f"samples.") + " The dense-Hessian checks use one batch of 2 samples (a 128 x 128 Hessian).", "",
              "| method | s/batch | exact is faster by | HS |", "|---|---:|---:|---:|",
              f"| exact | {_f(s['exact'], '{:.4f}')} | — | {_f(r['hs'].get('exact'), '{:.4g}')} |",
              f"| Lanczos | {_f(s['lanczos'], '{:.3f}')} | {_f(r['speedup_exact_vs_lanczos'], '{:.0f}')}× | "
              f"{_f(r['hs'].get('lanczos'), '{:.4g}')} |",
              f"| power iteration (authors') | {_f(s['power'], '{:.2f}')} | {_f(r['speedup_exact_vs_power'], '{:.0f}')}× | "
              f"{_f(r['hs'].get('power'), '{:.4g}')}"
              + ("" if r["power_samples"] == r["n_samples"] else
                 f" (on {r['power_samples']} samples; exact there: {_f(r['hs'].get('exact_on_power_samples'), '{:.4g}')})")
              + " |", "",
              "Validation of the top-20 eigenvalues: max relative error of any eigenvalue (eigenvalues "
              "below 1e-6 of the largest left out) / max error relative to the largest eigenvalue:", ""]
    for k, e in v.items():
        if isinstance(e, dict):
            lines.append(f"- {k.replace('_', ' ')}: {e['max_rel']:.2e} / {e['max_abs_scaled']:.2e}"
                         + (f" (per-batch max relative error, mean over batches {e['mean_max_rel']:.2e})"
                            if "mean_max_rel" in e else ""))
    hs = r["hs"]
    ref = hs.get("exact_on_power_samples") or hs.get("exact")
    if hs.get("power") is not None and ref:
        lines.append(f"- HS itself (mean |λ| of the top 20), power iteration vs exact: "
                     f"{abs(hs['power'] - ref) / abs(ref):.2e} relative; Lanczos vs exact: "
                     + (f"{abs(hs['lanczos'] - hs['exact']) / abs(hs['exact']):.2e}" if hs.get("lanczos") is not None
                        and hs.get("exact") else "—") + " relative.")
    g = r["goals"]
    lines += ["", "Goals: exact ≥ 100× faster than power iteration: "
              f"{_yes(g['exact_100x_faster_than_power'])}; exact = dense Hessian to 1e-3: "
              f"{_yes(g['exact_vs_dense_within_1e-3'])}; power iteration within 1e-3 of exact: "
              f"{_yes(g['power_vs_exact_within_1e-3'])}."]
    return "\n".join(lines) + "\n"


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
        section = "\n".join(lines[start + 1:end])
        if BEGIN in section and END in section:
            pre, _, rest = section.partition(BEGIN)
            _, _, post = rest.partition(END)
            section = pre + block + post
        else:
            section = "\n\n" + block + "\n" + section.strip("\n") + ("\n" if section.strip() else "")
        body_lines = section.strip("\n").splitlines()
        new_lines = lines[:start + 1] + [""] + body_lines + ([""] if end < len(lines) else []) + lines[end:]
        new = "\n".join(new_lines) + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(new)
    tmp.replace(path)


def markdown_concurrency(r: dict, command: str = "advlc bench --concurrency") -> str:
    dirty = " (with uncommitted changes)" if r.get("dirty") else ""
    lines = [f"Measured {r['date']} by `{command}` on **{r['device_name']}**, torch {r['torch']}, commit "
             f"{str(r.get('commit'))[:10]}{dirty}.", "",
             f"The {r['runs']} runs of `{r['preset']}`"
             + (f" (with {', '.join(f'`{o}`' for o in r['overrides'])})" if r.get("overrides") else "")
             + ", as real run processes in a temporary store, three ways: one after another with every core; "
             f"all started together with the launcher's budget ({r['cores']} cores / {r['runs']} runs = "
             f"{r['budget_threads']} thread(s) each); all together at torch's default thread count (what every "
             "detached run did before the budget). Wall time from the first start to the last end, process "
             "start-up included; s/epoch is the mean the runs recorded themselves.", "",
             "| schedule | threads per run | wall s | s/epoch |", "|---|---:|---:|---:|"]
    for name, sc in r["schedules"].items():
        lines.append(f"| {name} | {sc['threads']} | {sc['wall_s']:.1f} | {sc['epoch_s']:.2f} |")
    lines.append("")
    if r.get("budget_vs_sequential") is not None:
        lines.append(f"- Together with the budget: **{r['budget_vs_sequential']:.2f}×** the wall time of one after another.")
    if r.get("default_vs_budget") is not None:
        lines.append(f"- Together at torch's default: **{r['default_vs_budget']:.2f}×** the wall time with the budget.")
    return "\n".join(lines) + "\n"
