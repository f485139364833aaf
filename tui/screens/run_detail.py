"""Run detail: live plots of one run, its alerts, its log and its config + provenance.

A `RunFollower` (engine.store.watch) polls the run directory in a thread worker every
`REFRESH_S`; only new epoch records and new log lines come back, and the plots are redrawn
from the accumulated `RunHistory`. Plots: accuracy (clean and PGD robust on the test data,
training accuracy on the training attack's examples), losses and AV, IG, HS, learning
rate; a vertical mark at the best epoch (highest robust accuracy); SWA curves when the
run records them (`swa` table), shown dotted-thinner next to the plain model's.

The header shows the run's title and `#tags` (meta.json, written by the store: `e` edits them
here, `advlc label/tag/note` from a shell) and redraws when they change, like the config tab's
`meta` block.
"""

from __future__ import annotations

import json
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Log, Static, TabbedContent, TabPane

from engine.facade import RunFollower, RunHistory
from engine.printable import printable
from tui.messages import REFRESH_S, ActionDone, RunChanged
from tui.safe_text import SafeText, safe_lines
from tui.screens.annotate import AnnotateScreen, Annotation, describe
from tui.screens.compare import CompareScreen
from tui.screens.confirm import ConfirmScreen
from tui.widgets.alert_bar import AlertBar, detect_alerts
from tui.widgets.metric_plot import MetricPlot
from tui.widgets.palette import palette
from tui.widgets.progress_cell import duration
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


class RunDetailScreen(Screen):
    """One run, live."""

    BINDINGS = [
        Binding("escape", "back", "Back", show=True),
        Binding("p", "tab('tab-plots')", "Plots", show=True),
        Binding("l", "tab('tab-log')", "Log", show=True),
        Binding("g", "tab('tab-config')", "Config", show=True),
        Binding("f", "zoom", "Zoom plot", show=True),
        Binding("w", "toggle_swa", "SWA curves", show=False),
        Binding("s", "stop", "Stop", show=True),
        Binding("r", "resume", "Resume", show=False),
        Binding("c", "compare_group", "Compare group", show=False),
        Binding("e", "edit", "Edit", show=True),
    ]

    DEFAULT_CSS = """
    RunDetailScreen #detail-header { height: 1; padding: 0 1; background: $panel; }
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

    def compose(self) -> ComposeResult:
        yield Static("", id="detail-header")
        yield AlertBar(id="alerts")
        with TabbedContent(initial="tab-plots"):
            with TabPane("plots", id="tab-plots"):
                with VerticalScroll(id="plots-scroll"):
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
        yield Footer(compact=True)

    def on_mount(self) -> None:
        store = self.app.store
        self.follower = RunFollower(store.run_dir(self.run_id))
        self.set_interval(REFRESH_S, self.request_poll)
        self.request_poll(force=True)
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._draw_header())
        self.on_resize()

    def on_resize(self, event=None) -> None:
        self.set_class(self.size.width < 100, "-narrow")

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
            if not d.empty():
                self.post_message(RunChanged(d))
        finally:
            self._polling = False

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
        h = self.history
        c = palette(self.app)
        run = h.config.run if h.config else None
        st = h.status
        total = h.config.value("train.epochs") if h.config else None
        t = SafeText(no_wrap=True, overflow="ellipsis", end="")
        t.append(self.run_id, style=f"bold {c.get('accent', '')}")
        t.append(f"  {(run.preset or run.label or '') if run else ''}")
        origin = (run.origin.text or "") if run and run.origin else ""
        if origin:
            t.append(f" ✎ {origin}", style=c.get("warning", ""))
        meta = h.meta
        if meta.title:
            t.append(f" · {meta.title}", style=c.get("muted", ""))
        for tag in meta.tags:
            t.append(f" #{tag}", style=c.get("accent", ""))
        if meta.archived:
            t.append(" (archived)", style=c.get("warning", ""))
        t.append(f"  seed {'?' if run is None or run.seed is None else run.seed}  ")
        t.append_text(badge(st.state, c, short=False))
        t.append(f"  epoch {len(h.epochs)}/{total or '?'}")
        if st.state == "running" and st.batch and st.batches:
            t.append(f" (batch {st.batch}/{st.batches})")
        if h.epochs:
            last = h.epochs[-1]
            t.append(f"  lr {last.get('lr', 0):.3g}")
            times = [e["time_s"] for e in h.epochs[-5:] if e.get("time_s")]
            if times:
                per = sum(times) / len(times)
                t.append(f"  {per:.1f} s/epoch")
                if st.state == "running" and total:
                    t.append(f"  ETA {duration(per * (total - len(h.epochs)))}")
        prov = h.config.provenance.to_json() if h.config and h.config.provenance else {}
        if prov.get("commit"):
            t.append(f"  commit {str(prov['commit'])[:7]}{' (dirty)' if prov.get('dirty') else ''}",
                     style=c.get("muted", ""))
        self.query_one("#detail-header", Static).update(t)

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
