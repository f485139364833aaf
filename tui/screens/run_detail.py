"""Run detail: live plots of one run, its alerts, its log and its config + provenance.

A `RunFollower` (engine.store.watch) polls the run directory in a thread worker every
`REFRESH_S`; only new epoch records and new log lines come back, and the plots are redrawn
from the accumulated `RunHistory`. Plots: accuracy (clean and PGD robust on the test data,
training accuracy on the training attack's examples), losses and AV, IG, HS, learning
rate; a vertical mark at the best epoch (highest robust accuracy); SWA curves when the
run records them (`swa` table), shown dotted-thinner next to the plain model's.

The header shows the run's title and `#tags` (meta.json, written by the store: `e` edits them
here, `advlc label/tag/note` from a shell) and redraws when they change, like the config tab's
`meta` block. Its state, epoch and learning rate are never cut: when the line is too short, the
header takes two lines (who: id, preset, overrides, seed, title, tags; how far: state, epoch,
lr, then the rate, ETA, elapsed time and launch time of tui/widgets/pace.py, and the commit,
as many as fit).

An experiment run (`experiment.kind`: Fig. 4, A.1) has points, not epochs: the plots tab shows
its points table (one row per record of its `points` table, read in the poll worker when
metrics.json changed) and the header its points done / planned.
"""

from __future__ import annotations

import json
import os
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Log, Static, TabbedContent, TabPane

from engine.errors import UserError
from engine.facade import POINT_KEYS, RunFollower, RunHistory
from engine.printable import printable
from tui.messages import REFRESH_S, ActionDone, RunChanged
from tui.safe_text import SafeText, safe_lines
from tui.screens.annotate import AnnotateScreen, Annotation, describe
from tui.screens.compare import CompareScreen
from tui.screens.confirm import ConfirmScreen
from tui.widgets.alert_bar import AlertBar, detect_alerts
from tui.widgets.key_bar import KeyBar
from tui.widgets.metric_plot import MetricPlot
from tui.widgets.pace import clock, duration, history_pace
from tui.widgets.palette import palette
from tui.widgets.status_badge import badge

PLOTS = (
    # id, title, [(series name, record key, table, role, scale)]
    ("acc", "accuracy (%)", [("clean", "clean_acc", "epochs", "primary", 100),
                             ("robust", "robust_acc", "epochs", "accent", 100),
                             ("train", "train_acc", "epochs", "success", 100),
                             ("swa clean", "clean_acc", "swa", "muted", 100),
                             ("swa robust", "robust_acc", "swa", "error", 100)]),
    ("loss", "losses · AV", [("train", "train_loss", "epochs", "success", 1),
                             ("clean", "clean_loss", "epochs", "primary", 1),
                             ("robust", "robust_loss", "epochs", "accent", 1),
                             ("AV", "av", "epochs", "error", 1),
                             ("swa AV", "av", "swa", "muted", 1)]),
    ("ig", "IG (input gradient ‖·‖₁)", [("IG", "ig", "epochs", "primary", 1),
                                        ("swa IG", "ig", "swa", "accent", 1)]),
    ("hs", "HS (input Hessian, mean |λ| top-20)", [("HS", "hs", "epochs", "primary", 1),
                                                            ("swa HS", "hs", "swa", "accent", 1)]),
    ("lr", "learning rate", [("lr", "lr", "epochs", "primary", 1)]),
)
"""The plots of the detail screen and the series each holds."""


class PointsRead(Message):
    """The records of an experiment run's `points` table (all of them: a few dozen at most)."""

    def __init__(self, points: list):
        super().__init__()
        self.points = points


def fit(parts: list[tuple[str, str]], width: int, sep: str = "  ") -> list[tuple[str, str]]:
    """The (text, style) parts that fit in `width` cells, whole, in order (the first always)."""
    out, used = [], 0
    for text, style in parts:
        need = len(text) + (len(sep) if out else 0)
        if out and used + need > width:
            break
        out.append((text, style))
        used += need
    return out


class RunDetailScreen(Screen):
    """One run, live."""

    BINDINGS = [
        Binding("escape", "back", "Back", show=True),
        Binding("p", "tab('tab-plots')", "Plots", show=True),
        Binding("l", "tab('tab-log')", "Log", show=True),
        Binding("g", "tab('tab-config')", "Config", show=True),
        # priority: runs in the order keys were typed, so the keys typed after it reach the editor
        Binding("e", "edit", "Edit", show=True, priority=True),
        Binding("s", "stop", "Stop", show=True),
        Binding("f", "zoom", "Zoom plot", show=True),
        Binding("w", "toggle_swa", "SWA curves", show=False),
        Binding("r", "resume", "Resume", show=False),
        Binding("c", "compare_group", "Compare group", show=False),
    ]

    DEFAULT_CSS = """
    RunDetailScreen #detail-header { height: auto; max-height: 2; padding: 0 1; background: $panel; }
    RunDetailScreen #points-table { display: none; height: auto; max-height: 100%; }
    RunDetailScreen.-experiment #points-table { display: block; }
    RunDetailScreen.-experiment #plot-grid { display: none; }
    RunDetailScreen #plot-grid { grid-size: 2; grid-rows: 13; grid-gutter: 0 1; height: auto; }
    RunDetailScreen.-narrow #plot-grid { grid-size: 1; grid-rows: 12; }
    RunDetailScreen MetricPlot { height: 100%; }
    RunDetailScreen #detail-latest { height: auto; padding: 0 1; color: $foreground-muted; }
    RunDetailScreen TabbedContent { height: 1fr; }
    RunDetailScreen ContentSwitcher { height: 1fr; }
    RunDetailScreen TabPane { padding: 0; height: 1fr; }
    RunDetailScreen #plots-scroll { height: 1fr; }
    RunDetailScreen #log { height: 1fr; }
    RunDetailScreen #config-text { padding: 0 1; }
    """

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.history = RunHistory(run_id)
        self.follower: RunFollower | None = None
        self.show_swa = True
        self._polling = False
        self.plots: dict[str, MetricPlot] = {}
        self.kind = ""
        """The experiment kind of an experiment run ("" for a training run)."""
        self.points: list = []
        """An experiment run's `points` records."""
        self._points_sig = None

    def compose(self) -> ComposeResult:
        yield Static("", id="detail-header")
        yield AlertBar(id="alerts")
        with TabbedContent(initial="tab-plots"):
            with TabPane("plots", id="tab-plots"):
                with VerticalScroll(id="plots-scroll"):
                    yield DataTable(id="points-table", cursor_type="row", zebra_stripes=True)
                    with Grid(id="plot-grid"):
                        for pid, title, _series in PLOTS:
                            plot = MetricPlot(title, id=f"plot-{pid}")
                            self.plots[pid] = plot
                            yield plot
                    yield Static("", id="detail-latest")
            with TabPane("log", id="tab-log"):
                yield Log(id="log", max_lines=5000, auto_scroll=True)
            with TabPane("config", id="tab-config"):
                with VerticalScroll():
                    yield Static("", id="config-text")
        yield KeyBar(id="detail-keys")

    def on_mount(self) -> None:
        store = self.app.store
        self.follower = RunFollower(store.run_dir(self.run_id))
        self.set_interval(REFRESH_S, self.request_poll)
        self.request_poll(force=True)
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._draw_header())
        self.on_resize()

    def on_resize(self, event=None) -> None:
        self.set_class(self.size.width < 100, "-narrow")
        if self.history.config is not None:
            self._draw_header()

    def on_screen_resume(self) -> None:
        self.request_poll()

    # -- polling -------------------------------------------------------------------
    def request_poll(self, force: bool = False) -> None:
        if self._polling or (not force and not self.is_current) or self.follower is None:
            return
        self._polling = True
        self.app.work(self, self._poll, name="detail-poll")

    def _poll(self) -> None:
        try:
            d = self.follower.poll()
            if d.config is not None:
                self.kind = str(d.config.value("experiment.kind") or "")
            if not d.empty():
                self.post_message(RunChanged(d))
            if self.kind:
                self._read_points()
        finally:
            self._polling = False

    def _read_points(self) -> None:
        """(Thread worker.) An experiment run's points, when metrics.json changed."""
        rd = self.follower.rd
        try:
            st = os.stat(rd.metrics_path)
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            sig = None
        if sig == self._points_sig:
            return
        try:
            points = rd.records("points") if sig else []
        except (UserError, OSError):
            return  # half-visible or damaged: read again next time
        self._points_sig = sig
        self.post_message(PointsRead(points))

    def on_points_read(self, message: PointsRead) -> None:
        self.points = list(message.points)
        self._draw_points()
        self._draw_header()

    def on_run_changed(self, message: RunChanged) -> None:
        d = message.delta
        h = self.history
        h.apply(d)
        if d.reset or d.epochs or d.swa:
            self.redraw_plots()
        if d.log_reset:
            self.query_one("#log", Log).clear()
        if d.log_lines:
            self.query_one("#log", Log).write_lines(safe_lines(d.log_lines))
        if d.config is not None:
            self.set_class(bool(self.kind), "-experiment")
            if self.kind:
                self._draw_points()
        if d.status is not None or d.config is not None or d.meta is not None or d.epochs or d.reset:
            self._draw_header()
            self._draw_alerts()
        if d.config is not None or d.status is not None or d.evals is not None or d.meta is not None:
            self._draw_config()

    # -- drawing -------------------------------------------------------------------
    def best_epoch(self) -> dict | None:
        ev = [e for e in self.history.epochs if e.get("robust_acc") is not None]
        return max(ev, key=lambda e: (e["robust_acc"], e["epoch"])) if ev else None

    def redraw_plots(self) -> None:
        h = self.history
        tables = {"epochs": h.epochs, "swa": h.swa if self.show_swa else []}
        best = self.best_epoch()
        for pid, _title, series in PLOTS:
            plot = self.plots[pid]
            plot.clear_series()
            for name, key, table, role, scale in series:
                recs = tables[table]
                if not recs or all(r.get(key) is None for r in recs):
                    continue
                plot.set_series(name, [r["epoch"] for r in recs],
                                [None if r.get(key) is None else r[key] * scale for r in recs], role=role)
            if best is not None and plot.series:
                label = (f"best ▼ epoch {best['epoch']}: robust {100 * best['robust_acc']:.1f}%"
                         if pid == "acc" else "")
                plot.mark(best["epoch"], label)
            plot.replot()
        last = h.epochs[-1] if h.epochs else None
        if last:
            def f(k, pct=False):
                v = last.get(k)
                return "—" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.4g}")
            self.query_one("#detail-latest", Static).update(Text(
                f"epoch {last['epoch']}: train loss {f('train_loss')} acc {f('train_acc', True)} · clean "
                f"{f('clean_acc', True)} · robust {f('robust_acc', True)} · AV {f('av')} · IG {f('ig')} · "
                f"HS {f('hs')} · {f('time_s')} s", end=""))

    def _draw_header(self) -> None:
        """Who (line 1) and how far (line 2); one line when both fit (see the module docstring)."""
        c = palette(self.app)
        width = max(20, self.size.width - 2)
        who, words = self._who(c)
        how = self._how_far(c)
        one = sum(len(x) for x, _s in who + words) + 2 + sum(len(x) + 2 for x, _s in how)
        t = SafeText(end="")
        for text, style in who + words:
            t.append(text, style=style)
        if one <= width:
            for text, style in how:
                t.append("  ")
                t.append(text, style=style)
        else:
            t.truncate(width, overflow="ellipsis")
            t.append("\n")
            for i, (text, style) in enumerate(fit(how, width)):
                t.append(("  " if i else "") + text, style=style)
        t.no_wrap = True
        self.query_one("#detail-header", Static).update(t)

    def _who(self, c: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(id, preset, overrides, seed; title and #tags): the run's identity, then what people say of it."""
        h = self.history
        run = h.config.run if h.config else None
        who = [(self.run_id, f"bold {c.get('accent', '')}"),
               (f"  {(run.preset or run.label or '') if run else ''}", "")]
        if self.kind:
            who.append((f" [{run.label if run and (run.label or '').startswith(self.kind) else self.kind}]", ""))
        origin = (run.origin.text or "") if run and run.origin else ""
        if origin:
            who.append((f" ✎ {origin}", c.get("warning", "")))
        who.append((f"  seed {'?' if run is None or run.seed is None else run.seed}", ""))
        words = []
        meta = h.meta
        if meta.title:
            words.append((f" · {meta.title}", c.get("muted", "")))
        for tag in meta.tags:
            words.append((f" #{tag}", c.get("accent", "")))
        if meta.archived:
            words.append((" (archived)", c.get("warning", "")))
        return who, words

    def _how_far(self, c: dict) -> list[tuple[str, str]]:
        """State, epoch (or points), lr, then rate, ETA, elapsed, launch time and commit: most needed first."""
        h = self.history
        st = h.status
        total = h.config.value("train.epochs") if h.config else None
        b = badge(st.state, c, short=False)
        parts = [(b.plain, str(b.style))]
        if self.kind:
            parts.append((f"point {st.point or len(self.points)}/{st.points or '?'}", ""))
        else:
            batch = f" (batch {st.batch}/{st.batches})" if st.state == "running" and st.batch and st.batches else ""
            parts.append((f"epoch {len(h.epochs)}/{total or '?'}{batch}", ""))
            lr = h.epochs[-1].get("lr") if h.epochs else None
            parts.append((f"lr {'—' if lr is None else f'{lr:.3g}'}", ""))
        pace = history_pace(h.epochs, st, h.config.run.created if h.config else None, total)
        if pace.eta is not None:
            parts.append((f"ETA {duration(pace.eta)}", f"bold {c.get('primary', '')}"))
        if pace.elapsed is not None:
            parts.append((f"{duration(pace.elapsed)} since {clock(pace.launched)}", c.get("muted", "")))
        if pace.per_epoch and not self.kind:
            parts.append((f"{pace.per_epoch:.1f} s/epoch", ""))
        prov = h.config.provenance.to_json() if h.config and h.config.provenance else {}
        if prov.get("commit"):
            parts.append((f"commit {str(prov['commit'])[:7]}{' (dirty)' if prov.get('dirty') else ''}",
                          c.get("muted", "")))
        return parts

    def _draw_points(self) -> None:
        """The points table of an experiment run: one row per record, the kind's keys as columns."""
        table = self.query_one("#points-table", DataTable)
        keys = [k for k in POINT_KEYS.get(self.kind, ()) if k != "hs_method"]
        extra = sorted({k for p in self.points for k in p} - set(keys) - {"kind", "index", "hs_method", "time_s", "n"})
        cols = ["#", *keys, *extra, "time_s"]
        if [str(col.label) for col in table.columns.values()] != cols:
            table.clear(columns=True)
            table.add_columns(*cols)
        else:
            table.clear()
        for i, p in enumerate(sorted(self.points, key=lambda r: (r.get("index") is None, r.get("index") or 0))):
            idx = p.get("index")
            table.add_row(str((idx if isinstance(idx, int) else i) + 1), *(_cell(p.get(k)) for k in cols[1:]))
        src = self.history.config.source if self.history.config else None
        what = f"{self.kind}: {len(self.points)} point{'' if len(self.points) == 1 else 's'}"
        if src is not None:
            what += (f" of run {src.run} ({src.preset or src.label or ''}, {src.ckpt or 'end'} checkpoint"
                     f"{'' if src.epoch is None else f', epoch {src.epoch}'})")
        table.border_title = what
        self.query_one("#detail-latest", Static).update(SafeText(what, end=""))

    def _draw_alerts(self) -> None:
        st = self.history.status
        extra = []
        if st.state == "failed":
            err = (st.error or "").strip().splitlines()
            extra.append(f"run failed: {printable(err[-1]) if err else 'see the log (l)'}")
        elif st.state == "lost":
            extra.append("the run's process is gone without a final state; resume with r")
        self.query_one("#alerts", AlertBar).show_alerts(detect_alerts(self.history.epochs), extra)

    def _draw_config(self) -> None:
        h = self.history
        c = palette(self.app)
        t = SafeText(end="")
        cfg = h.config.to_json() if h.config else {}
        sections = [k for k in cfg if k not in ("run", "provenance", "source")]
        self._draw_meta(t, c)
        run = dict(cfg.get("run", {}))
        origin = run.pop("origin", None)
        t.append("run\n", style=f"bold {c.get('accent', '')}")
        for k, v in run.items():
            t.append(f"  {k} = {json.dumps(v)}\n")
        if origin:
            t.append("origin" + (" (derived from the preset)" if origin.get("derived") else "") + "\n",
                     style=f"bold {c.get('accent', '')}")
            t.append(f"  overrides = {' '.join(origin.get('overrides') or []) or '—'}\n")
            for k, v in (origin.get("changed") or {}).items():
                t.append(f"  {k} = {json.dumps(v)}  (preset differs)\n")
            if origin.get("command"):
                t.append(f"  command = {origin['command']}\n")
        for s in sections:
            if not isinstance(cfg[s], dict):
                continue
            t.append(f"[{s}]\n", style=f"bold {c.get('accent', '')}")
            for k, v in cfg[s].items():
                t.append(f"  {k} = {json.dumps(v)}\n")
        t.append("provenance\n", style=f"bold {c.get('accent', '')}")
        for k, v in cfg.get("provenance", {}).items():
            t.append(f"  {k} = {json.dumps(v) if not isinstance(v, str) else v}\n")
        t.append("status\n", style=f"bold {c.get('accent', '')}")
        for k, v in h.status.to_json().items():
            if k in ("heartbeat", "started", "ended", "created") and isinstance(v, (int, float)):
                v = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v))
            if k == "error" and v:
                t.append(f"  error:\n{v}\n", style=c.get("error", ""))
                continue
            t.append(f"  {k} = {v}\n")
        if h.evals:
            t.append("evaluations\n", style=f"bold {c.get('accent', '')}")
            for ev in h.evals:
                ca, ra = ev.get("clean_acc"), ev.get("robust_acc")
                t.append(f"  {ev.get('ckpt')} {ev.get('attack')}: clean "
                         f"{'—' if ca is None else f'{100 * ca:.2f}'} robust {'—' if ra is None else f'{100 * ra:.2f}'}"
                         f" {ev.get('implementation', '')}\n")
        self.query_one("#config-text", Static).update(t)

    def _draw_meta(self, t: Text, c: dict) -> None:
        """The `meta` block of the config tab: what people say about the run (meta.json)."""
        meta = self.history.meta
        t.append("meta", style=f"bold {c.get('accent', '')}")
        t.append("  (e edits)\n", style=c.get("muted", ""))
        t.append(f"  title = {meta.title or '—'}\n")
        t.append(f"  tags = {' '.join('#' + x for x in meta.tags) or '—'}\n")
        note = (meta.note or "").rstrip()
        if note:
            t.append("  note:\n")
            for line in note.split("\n"):
                t.append(f"    {line}\n")
        else:
            t.append("  note = —\n")
        t.append(f"  archived = {'yes' if meta.archived else 'no'}\n")

    # -- actions -------------------------------------------------------------------
    def action_back(self) -> None:
        if self.maximized is not None:
            self.minimize()
        else:
            self.app.pop_screen()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_zoom(self) -> None:
        if self.maximized is not None:
            self.minimize()
            return
        w = self.focused if isinstance(self.focused, MetricPlot) else self.plots["acc"]
        self.query_one(TabbedContent).active = "tab-plots"
        self.maximize(w, container=False)

    def action_toggle_swa(self) -> None:
        self.show_swa = not self.show_swa
        self.redraw_plots()
        self.notify("SWA curves " + ("shown" if self.show_swa else "hidden"))

    def action_stop(self) -> None:
        if self.history.status.state not in ("running", "queued"):
            self.notify("This run is not running.", severity="warning")
            return

        def done(ok: bool | None) -> None:
            if ok:
                self.app.supervise("stop", [self.run_id], on_screen=self)

        self.app.push_screen(ConfirmScreen(f"Stop run {self.run_id}? It keeps its last checkpoint; resume with r.",
                                           yes="Stop"), done)

    def action_resume(self) -> None:
        if self.history.status.state not in ("stopped", "failed", "lost"):
            self.notify("Only stopped, failed or lost runs can be resumed.", severity="warning")
            return
        self.app.supervise("resume", [self.run_id], on_screen=self)

    def action_compare_group(self) -> None:
        group = self.history.config.run.group if self.history.config else None

        if group:
            self.app.push_screen(CompareScreen(group=group, title=f"group {group}"))
        else:
            self.app.push_screen(CompareScreen(run_ids=[self.run_id], title=f"run {self.run_id}"))

    def action_edit(self) -> None:
        meta = self.history.meta
        preset = self.history.config.run.preset if self.history.config else None
        hold = getattr(self.app, "hold_keys", None)
        if hold is not None:
            hold()  # the keys typed after `e` wait for the editor's first field
        self.app.push_screen(AnnotateScreen([self.run_id], tags=list(meta.tags),
                                            title=meta.title or "", note=meta.note or "",
                                            heading=f"Edit run {self.run_id}  {preset or ''}"),
                             self._edited)

    def _edited(self, a: Annotation | None) -> None:
        if a is not None and not a.empty():
            self.notify(describe(a), title="edit")
            self.request_poll(force=True)

    def on_action_done(self, message: ActionDone) -> None:
        self.request_poll(force=True)


def _cell(v) -> SafeText:
    """A points-table cell: numbers to 4 significant digits, text shown safely."""
    if v is None:
        return SafeText("—")
    if isinstance(v, float):
        return SafeText(f"{v:.4g}", justify="right")
    if isinstance(v, int) and not isinstance(v, bool):
        return SafeText(str(v), justify="right")
    return SafeText(str(v))
