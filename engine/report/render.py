"""A CompareTable as text: plain (`table`, best marked *), Markdown, LaTeX (booktabs, the paper's
two-level header), CSV (full precision) and JSON; `export` writes several formats at once.

Config columns (`CompareTable.config_columns`) come right after the row name in every format:
4 significant digits in the text formats, the full value in CSV and JSON. The plain format
fits a `width` where it can: long row names wrap, and the number columns split into blocks.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import textwrap
from dataclasses import asdict
from pathlib import Path

from engine.errors import UserError
from engine.printable import printable
from engine.report.model import COLUMN_INFO, Cell, CompareRow, CompareTable

SIG_DIGITS = {"ig": 4, "hs": 3, "time": 3}  # like the paper: IG 48.00 / 276.0, HS 0.230, time 0.047
EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv", "json": "json", "table": "txt"}


def _decimals(col: str, v: float) -> int:
    """Decimals shown: 2 for percentages; otherwise SIG_DIGITS significant digits of the mean."""
    if COLUMN_INFO[col][2] == "%":
        return 2
    if v == 0 or not math.isfinite(v):
        return 3
    return max(0, SIG_DIGITS.get(col, 4) - 1 - int(math.floor(math.log10(abs(v)))))


def fmt_cell(col: str, c: Cell, pm: str = " ± ") -> str:
    if c.mean is None:
        return "—"
    d = _decimals(col, c.mean)
    text = f"{c.mean:.{d}f}"
    if c.std is not None:
        text += f"{pm}{c.std:.{d}f}"
    return text


def _cell_texts(table: CompareTable, row: CompareRow, pm: str = " ± ") -> list[str]:
    out = []
    for col in table.columns:
        c = row.cells[col]
        text = fmt_cell(col, c, pm)
        if c.mean is not None and c.n < len(row.runs):
            text += f" (n={c.n})"
        out.append(text)
    return out


def _key_texts(table: CompareTable, row: CompareRow, full: bool = False) -> list[str]:
    return table.config_texts(row, full=full)


def _latex_escape(s: str) -> str:
    rep = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "±": r"$\pm$",
        "−": "-",
        "…": "...",
        "·": r"$\cdot$",
    }
    return "".join(rep.get(ch, ch) for ch in s)


MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def md_escape(s, *, multiline: bool = False) -> str:
    """Text from the store inside Markdown: control characters shown (engine.printable), and every
    character that could start markup (emphasis, a link, raw HTML, a table cell's end) escaped."""
    return MD_SPECIAL.sub(r"\\\1", printable(s, multiline=multiline))


def render(table: CompareTable, fmt: str, *, width: int | None = None) -> str:
    """The table as text: "table" (plain, best marked *; fitted to `width` columns where it can),
    "md", "latex", "csv" or "json"."""
    fmt = {"markdown": "md", "tex": "latex", "text": "table"}.get(fmt, fmt)
    if fmt == "json":  # JSON escapes control characters itself
        return json.dumps(to_json(table), indent=1, default=str)
    text = _render_text(table, fmt, width)
    return printable(text, multiline=True)  # names and notes hold strings from the store


def _render_text(table: CompareTable, fmt: str, width: int | None) -> str:
    if fmt == "csv":
        return _render_csv(table)
    if fmt == "md":
        return _render_md(table)
    if fmt == "latex":
        return _render_latex(table)
    if fmt == "table":
        return _render_plain(table, width)
    raise UserError(f"--format {fmt}: must be one of table, md, latex, csv, json")


def to_json(table: CompareTable) -> dict:
    d = asdict(table)
    for r in d["rows"]:
        r.pop("config", None)
    d["headers"] = table.headers()
    d["units"] = {k: (table.time_unit if k == "time" else COLUMN_INFO[k][2]) for k in table.columns}
    d["complete"] = table.complete
    return d


def _render_csv(table: CompareTable) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["row", "n_runs", "seeds", "runs"] + list(table.config_columns)
    for col in table.columns:
        name = col if col != "time" else f"time_{table.time_unit.replace('s/', 's_per_')}"
        head += [name, f"{name}_std", f"{name}_n"]
    head += ["best_in", "missing"]
    w.writerow(head)
    for r in table.rows:
        line = [r.name, len(r.runs), " ".join(map(str, r.seeds)), " ".join(r.runs)] + _key_texts(table, r, True)
        for col in table.columns:
            c = r.cells[col]
            line += ["" if c.mean is None else repr(c.mean), "" if c.std is None else repr(c.std), c.n]
        line += [" ".join(col for col in table.columns if table.best.get(col) == r.name), "; ".join(r.missing)]
        w.writerow(line)
    return buf.getvalue()


def _render_md(table: CompareTable) -> str:
    heads = table.headers()
    keys = table.config_columns
    lines = [f"**{table.title}**", ""]
    lines.append(
        "| " + " | ".join(["Training"] + [md_escape(k) for k in keys] + [heads[c] for c in table.columns]) + " |"
    )
    lines.append("|---|" + "---|" * len(keys) + "---:|" * len(table.columns))
    for r in table.rows:
        texts = _cell_texts(table, r)
        cells = [f"**{t}**" if table.best.get(c) == r.name else t for c, t in zip(table.columns, texts)]
        name = md_escape(r.name) + (" †" if r.missing else "")
        lines.append("| " + " | ".join([name] + [md_escape(v) for v in _key_texts(table, r)] + cells) + " |")
    lines.append("")
    for n in table.notes:
        lines.append(f"- {n}")
    if any(r.missing for r in table.rows):
        lines.append("- † incomplete row (see above).")
    return "\n".join(lines) + "\n"


def _render_latex(table: CompareTable) -> str:
    cols, keys = table.columns, table.config_columns
    acc = [c for c in cols if c.startswith("clean_")]
    rob = [c for c in cols if c.startswith("robust_")]
    rest = [c for c in cols if c not in acc and c not in rob]
    sub = {
        "clean_best": "best",
        "clean_end": "end",
        "clean_diff": "diff.",
        "robust_best": "best",
        "robust_end": "end",
        "robust_diff": "diff.",
    }
    heads = {"ig": "IG", "hs": "HS", "time": f"Time ({table.time_unit})"}
    out = [
        "% requires \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{_latex_escape(table.title)}}}",
        "\\begin{tabular}{l" + "c" * (len(keys) + len(cols)) + "}",
        "\\toprule",
    ]
    top = ["Training"] + [_latex_escape(k) for k in keys]
    if acc:
        top.append(f"\\multicolumn{{{len(acc)}}}{{c}}{{Accuracy (\\%)}}")
    if rob:
        top.append(f"\\multicolumn{{{len(rob)}}}{{c}}{{Robustness (\\%)}}")
    top += [heads.get(c, _latex_escape(c)) for c in rest]
    out.append(" & ".join(top) + " \\\\")
    rules, start = [], 2 + len(keys)
    for group in (acc, rob):
        if group:
            rules.append(f"\\cmidrule(lr){{{start}-{start + len(group) - 1}}}")
            start += len(group)
    out.append(" ".join(rules))
    out.append(" & ".join([""] * (1 + len(keys)) + [sub[c] for c in acc + rob] + [""] * len(rest)) + " \\\\")
    out.append("\\midrule")
    for r in table.rows:
        texts = []
        for c in cols:
            cl = r.cells[c]
            t = fmt_cell(c, cl, " $\\pm$ ") if cl.mean is not None else "--"
            if cl.mean is not None and cl.n < len(r.runs):
                t += f" ($n{{=}}{cl.n}$)"
            if table.best.get(c) == r.name:
                t = f"\\textbf{{{t}}}"
            texts.append(t)
        name = _latex_escape(r.name) + ("$^\\dagger$" if r.missing else "")
        out.append(" & ".join([name] + [_latex_escape(v) for v in _key_texts(table, r)] + texts) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    out.append("% " + "\n% ".join(table.notes))
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


def _blocks(name_w: int, key_ws: list[int], col_ws: list[int], width: int | None) -> tuple[int, list[list[int]]]:
    """(name column width, groups of number columns): one group when it fits in `width` (or no
    width); else the name wraps (at least 24 wide) and the number columns split into blocks."""
    fixed = sum(w + 2 for w in key_ws)
    everything = list(range(len(col_ws)))
    if not width or name_w + fixed + sum(w + 2 for w in col_ws) <= width:
        return name_w, [everything]
    name_w = max(len("Training"), min(name_w, max(24, width - fixed - sum(w + 2 for w in col_ws))))
    blocks, cur, used = [], [], name_w + fixed
    for i, w in enumerate(col_ws):
        if cur and used + w + 2 > width:
            blocks.append(cur)
            cur, used = [], name_w + fixed
        cur.append(i)
        used += w + 2
    return name_w, blocks + [cur]


def _render_plain(table: CompareTable, width: int | None = None) -> str:
    heads = table.headers()
    head = [heads[c] for c in table.columns]
    names = [r.name + (" †" if r.missing else "") for r in table.rows]
    keys = [_key_texts(table, r) for r in table.rows]
    cells = [
        [t + ("*" if table.best.get(c) == r.name else "") for c, t in zip(table.columns, _cell_texts(table, r))]
        for r in table.rows
    ]
    key_ws = [max([len(k)] + [len(v[i]) for v in keys]) for i, k in enumerate(table.config_columns)]
    col_ws = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(head)]
    name_w, blocks = _blocks(max([len("Training")] + [len(n) for n in names]), key_ws, col_ws, width)

    def line(parts, widths):
        return "  ".join(s.ljust(widths[i]) if i == 0 else s.rjust(widths[i]) for i, s in enumerate(parts)).rstrip()

    def wrap(s, w, ind="  "):
        return textwrap.wrap(s, w, subsequent_indent=ind, break_on_hyphens=False) or [""]

    lines = wrap(table.title, width, "") if width else [table.title]
    for cols in blocks:
        widths = [name_w] + key_ws + [col_ws[i] for i in cols]
        lines += [
            "",
            line(["Training"] + table.config_columns + [head[i] for i in cols], widths),
            "  ".join("-" * w for w in widths),
        ]
        for name, kv, cs in zip(names, keys, cells):
            wrapped = wrap(name, name_w) if width else [name]
            lines.append(line([wrapped[0]] + kv + [cs[i] for i in cols], widths))
            lines += [w.rstrip() for w in wrapped[1:]]
    lines.append("")
    for n in table.notes:
        lines += textwrap.wrap(n, width, initial_indent="  ", subsequent_indent="    ") if width else [f"  {n}"]
    for r in table.rows:
        for cmd in r.fill:
            lines.append(f"  fill: {cmd}")
    return "\n".join(lines) + "\n"


def export(table: CompareTable, out_dir, formats=("md", "latex", "csv"), stem: str = "table") -> list[Path]:
    """Write the table in each format as OUT_DIR/STEM.{md,tex,csv,json,txt}; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        fmt = {"markdown": "md", "tex": "latex"}.get(fmt, fmt)
        if fmt not in EXTENSIONS:
            raise UserError(f"export format {fmt!r}: must be one of {', '.join(EXTENSIONS)}")
        p = out_dir / f"{stem}.{EXTENSIONS[fmt]}"
        p.write_text(render(table, fmt))
        paths.append(p)
    return paths
