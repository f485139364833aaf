"""`advlc report`: one folder with the paper's tables, figures and the provenance of every run.

OUT/report.md (+ report.html, report.pdf)   the comparison tables (per-epoch PGD, and one per
                                            final-evaluation attack the runs have), missing
                                            runs with the commands that fill them, provenance
OUT/tables/   md / tex / csv / json         OUT/figures/  png / pdf / csv (engine.report.figures)
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import CorruptFile, UserError
from engine.printable import printable
from engine.report import figures as F
from engine.report.columns import parse_columns
from engine.report.model import CompareTable
from engine.report.render import export, md_escape, render
from engine.report.resolver import Resolver
from engine.report.rows import group_rows, infer_points, point_text
from engine.report.runs import RunData, load_run, select_runs
from engine.report.tables import table_from_specs
from engine.store.records import Meta
from engine.store.rundir import RunDir
from engine.store.alerts import robust_key
from engine.store.summary import best_and_end


@dataclass
class ReportResult:
    out_dir: Path
    files: list[Path]  # report.md / .html / .pdf
    tables: list[CompareTable]
    figures: list  # engine.report.figures.FigureResult
    runs: list[str]

    @property
    def complete(self) -> bool:
        return all(t.complete for t in self.tables)


def resolve_refs(store, refs: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Sort `advlc report` arguments into (run ids, presets or preset folders, group ids)."""
    docs = store.index()
    run_ids, presets, groups = [], [], []
    for ref in refs:
        ref = ref.strip().rstrip("/")
        if not ref:
            raise UserError("empty preset, group or run id")
        if any(d.get("group") == ref for d in docs):
            groups.append(ref)
        elif any(d.get("preset") == ref or (d.get("preset") or "").startswith(ref + "/") for d in docs):
            presets.append(ref)
        else:
            try:
                run_ids.append(store.get(ref).id)
            except UserError:
                raise UserError(
                    f"'{ref}' is no run id, preset or group id in {store.home} (see `advlc runs`)"
                ) from None
    return run_ids, presets, groups


def select_many(store, run_ids=(), presets=(), groups=(), where: str | None = None) -> list[RunDir]:
    """The runs of ids, presets and groups together, of those the ones `where` selects (with only
    `where`: every run it selects), each once, in creation order."""
    chosen: dict[str, RunDir] = {}
    if run_ids or (where and not (presets or groups)):
        for rd in select_runs(store, run_ids=list(run_ids) or None, where=where):
            chosen[rd.id] = rd
    for p in presets:
        for rd in select_runs(store, preset=p, where=where):
            chosen[rd.id] = rd
    for g in groups:
        for rd in select_runs(store, group=g, where=where):
            chosen[rd.id] = rd
    if not chosen:
        raise UserError("nothing to report: give run ids, presets, group ids or --where")
    return sorted(chosen.values(), key=lambda rd: (rd.config().run.created or 0, rd.id))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "report"


def _meta(r: RunData) -> Meta:
    """What people said about a run (title, tags, note); empty when meta.json is missing or damaged."""
    try:
        return r.rd.meta()
    except (CorruptFile, OSError):
        return Meta()


def _named(r: RunData) -> str:
    """`title #tag #tag`, or — when the run has neither."""
    meta = _meta(r)
    return " ".join(([meta.title] if meta.title else []) + [f"#{t}" for t in meta.tags]) or "—"


def _notes(runs: list[RunData]) -> list[str]:
    """The notes of the runs that have one, as markdown list items."""
    out = []
    for r in runs:
        note = (_meta(r).note or "").strip()
        if note:
            out.append(f"- **{r.rd.id}**: " + md_escape(note, multiline=True).replace("\n", "  \n  "))
    return out


def _provenance_rows(runs: list[RunData]) -> list[list[str]]:
    rows = []
    for r in runs:
        prov = r.config.provenance.to_json() if r.config.provenance is not None else {}
        run = r.run
        commit = prov.get("commit")
        dirty = f" (dirty {prov.get('diff_sha256') or ''})" if prov.get("dirty") else ""
        commit = str(commit)[:10] + dirty if commit else "—"
        best, _ = best_and_end(r.epochs, robust_key(r.select_on))
        overrides = (run.origin.text or "") if run.origin else ""
        rows.append(
            [
                r.rd.id,
                _named(r),
                str(run.preset),
                str(run.label),
                point_text(r.point) or "—",
                overrides or "—",
                str(run.seed),
                r.state,
                f"{len(r.epochs)}/{r.config.value('train.epochs')}",
                "—" if best is None else str(best["epoch"]),
                commit,
                str(prov.get("device_name") or "—"),
                str(prov.get("host") or "—"),
                str(prov.get("torch") or "—"),
                str(run.group or "—"),
            ]
        )
    return rows


PROV_HEAD = [
    "run",
    "title / tags",
    "preset",
    "label",
    "point",
    "overrides",
    "seed",
    "state",
    "epochs",
    "best epoch",
    "commit",
    "device",
    "host",
    "torch",
    "group",
]


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


HTML_STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border-bottom:1px solid #ccc;padding:.25em .6em;text-align:right}th:first-child,td:first-child{text-align:left}
thead th{border-bottom:2px solid #444}img{max-width:100%}code{background:#f3f3f3;padding:0 .2em}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto}blockquote{border-left:4px solid #d62728;margin:0;padding:.2em 1em;background:#fff5f5}
@media (prefers-color-scheme: dark){body{background:#161616;color:#ddd}code,pre{background:#262626}th,td{border-color:#444}
blockquote{background:#2a1616}}"""


def _figures(specs, out_dir: Path, pdf_text: str | None) -> list:
    """The figures under OUT/figures/, and with `pdf_text` report.pdf: its pages, then every figure."""
    pages = None
    if pdf_text is not None:
        F._plt()
        from matplotlib.backends.backend_pdf import (
            PdfPages,  # optional, heavy: only for --format pdf
        )

        pages = PdfPages(out_dir / "report.pdf")
    try:
        if pages is not None:
            _pdf_text_pages(pages, pdf_text)
        return F.make_figures(specs, out_dir / "figures", pdf_pages=pages)
    finally:
        if pages is not None:
            pages.close()


def _markdown(
    name: str, store, runs: list[RunData], by: str, include_unfinished: bool, tables, table_files, figs
) -> str:
    """report.md: the tables, the runs still missing with their commands, the figures, the provenance."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    n_fin = sum(r.state == "finished" for r in runs)
    md = [
        f"# advlc report: {name}",
        "",
        f"Generated {now} from the run store `{store.home}`: {len(runs)} runs ({n_fin} finished), "
        f"rows by {by}{'' if include_unfinished else '; only finished runs are counted'}.",
        "",
    ]
    incomplete = [(t, r) for _, _, t in tables[:1] for r in t.rows if r.missing]
    if incomplete:
        md += [
            "> **Incomplete.** "
            + "; ".join(f"{r.name}: {', '.join(r.missing)}" for _, r in incomplete)
            + ". Commands to fill the holes are under *Missing runs*.",
            "",
        ]
    md += ["## Tables", ""]
    for stem, atk, t in tables:
        md.append(f"### {'Per-epoch PGD' if atk is None else 'Final evaluation: ' + atk}")
        md.append("")
        md.append(render(t, "md"))
        md.append("Files: " + " · ".join(f"[{p.name}](tables/{p.name})" for p in table_files[stem]))
        md.append("")
    fills = [(r.name, c) for _, _, t in tables for r in t.rows for c in r.fill]
    if incomplete or fills:
        md += ["## Missing runs", ""]
        for _, _, t in tables:
            for r in t.rows:
                if r.missing:
                    md.append(f"- **{md_escape(r.name)}**: {', '.join(r.missing)}")
        if fills:
            md += ["", "To fill them:", "", "```"] + list(dict.fromkeys(c for _, c in fills)) + ["```"]
        md.append("")
    md += ["## Figures", ""]
    for f in figs:
        if f.skipped:
            continue
        png = next(p for p in f.files if p.suffix == ".png")
        md += [
            f"### {f.title}",
            "",
            f"![{f.title}](figures/{png.name})",
            "",
            f.caption,
            "",
            "Files: " + " · ".join(f"[{p.name}](figures/{p.name})" for p in f.files + [f.csv]),
            "",
        ]
    skipped = [f for f in figs if f.skipped]
    if skipped:
        md += ["Not produced:", ""] + [f"- {f.title}: {f.skipped}." for f in skipped] + [""]
    md += [
        "## Provenance",
        "",
        "Every run of the report (counted or not): preset, training scheme, sweep point, the `--set` "
        "overrides it was made with, seed, state, "
        "code commit (dirty = uncommitted changes, with the hash of the diff), device and host "
        "of its latest start (runtime.json; config.json for a run that never started).",
        "",
        _md_table(PROV_HEAD, _provenance_rows(runs)),
        "",
    ]
    notes = _notes(runs)
    if notes:
        md += ["### Notes", ""] + notes + [""]
    return "\n".join(md)


def build_report(
    store,
    refs: list[str] | None = None,
    out_dir=None,
    *,
    run_ids=(),
    presets=(),
    groups=(),
    formats=("md", "html"),
    by: str = "label",
    include_unfinished: bool = False,
    where: str | None = None,
    columns=None,
) -> ReportResult:
    """Write OUT_DIR/report.md (+ report.html, report.pdf) with the comparison tables (per-epoch
    PGD, and one per final-evaluation attack the runs have) in md/tex/csv/json under tables/,
    the figures (png/pdf/csv) under figures/, missing runs with the commands that fill them,
    and the provenance of every run; `columns`: config keys shown as columns of every table."""
    formats = tuple(dict.fromkeys(formats))
    keys = parse_columns(columns)
    bad = [f for f in formats if f not in ("md", "html", "pdf")]
    if bad:
        raise UserError(f"--format {bad[0]}: must be md, html or pdf")
    if refs:
        r_ids, r_pre, r_grp = resolve_refs(store, refs)
        run_ids, presets, groups = list(run_ids) + r_ids, list(presets) + r_pre, list(groups) + r_grp
    rds = select_many(store, run_ids, presets, groups, where)
    runs = [load_run(rd) for rd in rds]
    resolver = Resolver(store.home)
    infer_points(runs, resolver=resolver)
    specs = group_rows(runs, by, include_unfinished, resolver=resolver)
    grid = bool(presets or groups)
    name = ", ".join(list(presets) + list(groups) + list(run_ids)) or "runs"
    out_dir = Path(out_dir) if out_dir else Path.cwd() / f"report-{_slug(name)}"
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)

    common = dict(home=store.home, grid=grid, by=by, resolver=resolver, columns=keys)
    tables = [("pgd", None, table_from_specs(specs, **common))]
    attacks = sorted(
        {
            str(e.get("attack"))
            for r in runs
            for e in r.evals
            if e.get("attack") and e.get("ckpt") in ("best", "end", "swa_best", "swa_end")
        }
    )
    for atk in attacks:
        tables.append((_slug(atk), atk, table_from_specs(specs, ckpt_eval=atk, **common)))
    table_files = {}
    for stem, _, t in tables:
        table_files[stem] = export(t, out_dir / "tables", ("md", "latex", "csv", "json"), stem=f"table-{stem}")

    figs = _figures(specs, out_dir, _plain_report(name, tables, runs) if "pdf" in formats else None)

    text = _markdown(name, store, runs, by, include_unfinished, tables, table_files, figs)
    files = []
    text = printable(text, multiline=True)  # titles, notes and names come from the store
    p = out_dir / "report.md"
    p.write_text(text)
    files.append(p)
    if "html" in formats:
        from markdown_it import (
            MarkdownIt,  # a dependency of rich; only for the html report
        )

        body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)  # raw HTML shown as text
        html = (
            f"<!doctype html>\n<html><head><meta charset='utf-8'><title>advlc report: {_html_escape(name)}"
            f"</title><style>{HTML_STYLE}</style></head><body>\n{body}</body></html>\n"
        )
        p = out_dir / "report.html"
        p.write_text(html)
        files.append(p)
    if "pdf" in formats:
        files.append(out_dir / "report.pdf")
    return ReportResult(out_dir, files, [t for _, _, t in tables], figs, [r.rd.id for r in runs])


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain_report(name, tables, runs) -> str:
    parts = [f"advlc report: {name}", ""]
    for _, _, t in tables:
        parts.append(render(t, "table"))
    rows = _provenance_rows(runs)
    widths = [max(len(x[i]) for x in [PROV_HEAD] + rows) for i in range(len(PROV_HEAD))]
    parts.append("Provenance")
    for row in [PROV_HEAD] + rows:
        parts.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(parts)


def _pdf_text_pages(pdf, text: str, lines_per_page: int = 80) -> None:
    import matplotlib.pyplot as plt

    lines = text.splitlines()
    for i in range(0, max(1, len(lines)), lines_per_page):
        fig = plt.figure(figsize=(11.69, 8.27))
        fig.text(
            0.02, 0.98, "\n".join(lines[i : i + lines_per_page]), family="monospace", fontsize=5.5, va="top", ha="left"
        )
        pdf.savefig(fig)
        plt.close(fig)
