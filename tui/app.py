"""The advlc Textual app: one factory, `make_app(home, presets_dir) -> App`.

Screens (tui/screens/, one a file): Runs (home), Run detail, Presets (new run), Compare,
and the modals Help, Confirm and Export. The app reaches the run store only through
`app.service` (engine.service: reads by run id in thread workers, the watchers of
engine.store.watch, the supervisor's launch, stop, resume, delete and reconcile, the reports'
compare, diff and export); engine.facade gives it only what touches no store (presets, parsing,
formatting, alerts). Quitting (`q`) closes the app only: runs are detached processes and keep training.

Worker failures are reported in one place (`work`): a notification, never a crash of the app.

Typed-ahead keys: a key that opens a text field after a read (`e`: the run's meta.json, read in
a worker) calls `hold_keys`; the keys typed after it wait, in order, until the field has focus
(`release_keys`), then go to it as if typed then. Over SSH a burst of keys arrives at once.

What the app remembers across restarts (the Runs screen's sort and filter) is `AppState`:
`$ADVLC_HOME/app-state.json`, read in the Runs screen's first poll worker and written in a worker
(`remember`) to a temporary file that replaces it, so a crash leaves the old file or the new one.
A damaged file is ignored with a notification (the next change writes a good one).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from functools import partial
from pathlib import Path

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

from engine.errors import UserError
from engine.facade import atomic_write_text
from engine.service import Service
from engine.printable import printable
from tui.messages import RECONCILE_S, ActionDone
from tui.screens.help import HelpScreen
from tui.screens.presets import PresetsScreen, list_items
from tui.screens.run_detail import RunDetailScreen
from tui.screens.runs import RunsScreen

HOLD_MAX_S = 3.0
"""Keys are held at most this long (a read that never ends must not freeze the keyboard)."""

DEFAULT_THEME = "textual-dark"
"""Theme unless ADVLC_THEME names another (e.g. textual-light); ctrl+p → 'theme' switches live."""

STATE_FILE = "app-state.json"
"""What the app remembers across restarts, in the store's home (see AppState)."""
STATE_VERSION = 1
STATE_MAX_BYTES = 64 * 1024
"""A state file larger than this is not read (it is damaged, or not ours)."""


class AppState:
    """`$ADVLC_HOME/app-state.json`: {"version": 1, "<section>": {...}} — e.g. "runs": sort and filter.

    `load` (a worker) gives the sections and, when the file is damaged, one line saying so (the
    sections are then empty: the app starts as if there were no file). `want` (UI thread) records a
    section's new value; `save` (a worker) writes the newest wanted document, atomically: a temporary
    file in the same folder, fsynced, then `os.replace`d over the old one. Writers are serialised; a
    write that fails stops the writing (one error, not one per key) until the app is restarted.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._wanted: dict | None = None
        """The newest document asked for (replaced, never changed in place: read by the writer thread)."""
        self._written: dict | None = None
        self._lock = threading.Lock()
        self.failed = False

    def load(self) -> tuple[dict, str | None]:
        """(sections, None), or ({}, why the file is ignored)."""
        name = f"{self.path.name} ({self.path.parent})"
        try:
            if self.path.stat().st_size > STATE_MAX_BYTES:
                return {}, f"{name} is larger than {STATE_MAX_BYTES // 1024} KiB: ignored"
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}, None
        except OSError as exc:
            return {}, f"cannot read {name}: {exc.strerror or exc}: ignored"
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return {}, f"{name} is damaged ({type(exc).__name__}): ignored, the next change rewrites it"
        if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
            return {}, f"{name} is not an app-state file of version {STATE_VERSION}: ignored"
        sections = {k: v for k, v in doc.items() if k != "version"}
        self._wanted = self._written = {**doc}
        return sections, None

    def want(self, section: str, value: dict) -> bool:
        """(UI thread.) Record a section's value; True when that changes the document (save it then)."""
        base = self._wanted or {"version": STATE_VERSION}
        if base.get(section) == value or self.failed:
            return False
        self._wanted = {**base, "version": STATE_VERSION, section: dict(value)}
        return True

    def save(self) -> None:
        """(Worker.) Write the newest wanted document, unless it is written already."""
        with self._lock:
            while not self.failed and self._wanted is not None and self._wanted != self._written:
                doc = self._wanted
                try:
                    atomic_write_text(self.path, json.dumps(doc, indent=1) + "\n")
                except OSError as exc:
                    self.failed = True
                    raise UserError(
                        f"cannot save {self.path}: {exc.strerror or exc} (the sort and filter will not be remembered)"
                    ) from None
                self._written = doc


def run_words(r) -> str:
    """A run as the command palette matches it: id, preset, label, seed, title and #tags."""
    words = [
        f"Open run {r['id']}",
        r.get("preset") or "",
        f"[{r['label']}]" if r.get("label") else "",
        f"seed {r.get('seed')}",
        r.get("title") or "",
        " ".join(f"#{t}" for t in r.get("tags") or []),
    ]
    return " ".join(w for w in words if w)


class AdvlcCommands(Provider):
    """Command palette entries: screens, actions, every run (open) and every preset (new run)."""

    async def startup(self) -> None:
        app = self.app
        try:
            self._presets = await asyncio.to_thread(list_items, app.home_arg, app.presets_dir)
        except Exception:
            self._presets = []

    def _commands(self):
        app: AdvlcApp = self.app  # type: ignore[assignment]
        yield "Runs", "the table of runs (home)", app.show_runs
        yield "New run", "pick a preset and launch it", app.action_presets
        yield "Help", "every key", app.action_help
        yield "Compare visible runs", "mean ± std table of the runs shown", app.compare_visible
        for p in getattr(self, "_presets", []):
            yield f"New run: {p.name}", p.description, partial(app.action_presets, p.ref)
        snap = app.runs_screen.snapshot if app.runs_screen else None
        for r in (snap.rows if snap else [])[-2000:]:
            yield (printable(run_words(r)), r.get("state") or "", partial(app.open_run, r["id"]))

    async def discover(self) -> Hits:
        for name, help_text, cb in list(self._commands())[:4]:
            yield DiscoveryHit(name, cb, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, cb in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), cb, help=help_text)


class AdvlcApp(App):
    """Terminal experiment manager for adversarial training (docs/ARCHITECTURE.md, docs/APP.md)."""

    TITLE = "advlc"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {AdvlcCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", show=True),
        Binding("question_mark", "help", "Help", show=True),
        Binding("f1", "help", "Help", show=False),
        Binding("ctrl+c", "quit", "Quit", show=False),
    ]

    def __init__(self, home: Path | None = None, presets_dir: Path | None = None):
        super().__init__()
        self.home_arg = Path(home).expanduser() if home else None
        """The --home given (None: ADVLC_HOME or ~/.advlc); passed on to preset lookups."""
        self.service = Service(self.home_arg)
        """The run store's operations (engine.service): the app's one way to the store."""
        self.presets_dir = Path(presets_dir) if presets_dir else None
        self.reader = self.service.watch()
        self.state = AppState(self.service.home / STATE_FILE)
        """What the app remembers across restarts (the Runs screen's sort and filter)."""
        self.runs_screen: RunsScreen | None = None
        self.theme = os.environ.get("ADVLC_THEME") or DEFAULT_THEME
        self._held: list[events.Key] | None = None
        self._hold_timer = None
        self._holds = 0
        """How many holds began (a release belongs to the hold it was asked for)."""

    def on_mount(self) -> None:
        self.runs_screen = RunsScreen()
        self.push_screen(self.runs_screen)
        # `advlc` reconciles before the app opens; here it repeats, after the first render
        self.set_interval(RECONCILE_S, self.reconcile)

    # -- typed-ahead keys --------------------------------------------------------------
    def hold_keys(self) -> None:
        """Keys from now on wait, in order, until `release_keys` (or HOLD_MAX_S)."""
        if self._held is None:
            self._held = []
            self._holds += 1
            self._hold_timer = self.set_timer(HOLD_MAX_S, self.release_keys)

    def release_keys(self) -> None:
        """Hand the held keys on, after what is already queued (e.g. the focus a new screen asked for)."""
        if self._held is not None:
            self.call_later(self._release, self._holds)

    async def _release(self, hold: int) -> None:
        if self._held is None or hold != self._holds:
            return  # released already (by the timer, or the screen): a later hold is not this one
        held, self._held = self._held, None
        if self._hold_timer is not None:
            self._hold_timer.stop()
            self._hold_timer = None
        for i, event in enumerate(held):
            if self._held is not None:  # a held key held the keys again (e.g. a second `e`)
                self._held[:0] = held[i:]
                return
            await super().on_event(event)

    async def on_event(self, event: events.Event) -> None:
        if self._held is not None and isinstance(event, events.Key) and not event.is_forwarded:
            self._held.append(event)
            return
        await super().on_event(event)

    # -- navigation ----------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_presets(self, select: str | None = None) -> None:
        if isinstance(self.screen, PresetsScreen):
            return
        self.push_screen(PresetsScreen(select))

    def show_runs(self, focus: list[str] | None = None) -> None:
        """Back to the Runs screen (closing whatever is above it); the cursor goes to `focus`."""
        while len(self.screen_stack) > 1 and self.screen is not self.runs_screen:
            self.pop_screen()
        if focus and self.runs_screen is not None:
            self.runs_screen.focus_runs(focus)

    def open_run(self, run_id: str) -> None:
        self.show_runs()
        self.push_screen(RunDetailScreen(run_id))

    def compare_visible(self) -> None:
        self.show_runs()
        if self.runs_screen is not None:
            self.runs_screen.action_compare()

    # -- engine calls (run in thread workers by the screens) -------------------------
    def launch(self, planned, *, gpus=None, executor: str = "local") -> list[str]:
        """Create the runs and start them as detached processes; their ids."""
        for p in planned:
            p.command = p.command or "app"
        return self.service.launch(planned, gpus=gpus, executor=executor)

    def supervise(self, what: str, run_ids: list[str], *, on_screen=None) -> None:
        """Stop / resume / delete runs in a thread worker; the result goes to `on_screen` as ActionDone."""
        target = on_screen or self.screen

        def work() -> None:
            try:
                if what == "stop":
                    self.service.stop(run_ids)
                    text = f"stopped {', '.join(run_ids)}"
                elif what == "resume":
                    self.service.resume(run_ids)
                    text = f"resumed {', '.join(run_ids)}"
                elif what == "delete":
                    self.service.delete(run_ids)
                    text = f"deleted {', '.join(run_ids)}"
                else:
                    raise ValueError(what)
            except UserError as exc:
                self.call_from_thread(self.notify, str(exc), title=what, severity="error")
                target.post_message(ActionDone(what, False, str(exc), run_ids))
                return
            self.call_from_thread(self.notify, text, title=what)
            target.post_message(ActionDone(what, True, text, run_ids))
            if self.runs_screen is not None and target is not self.runs_screen:
                self.runs_screen.post_message(ActionDone(what, True, text, run_ids))

        self.work(self, work, name=what, group="actions")

    def reconcile(self) -> None:
        """Mark active runs whose process is gone as lost (Service.reconcile), in a worker.

        Only the runs the index shows as running or queued are checked (a full scan of a
        1,000-run store costs ~0.2 s of Python; `advlc` does one before the app opens).
        """
        snap = self.runs_screen.snapshot if self.runs_screen is not None else None
        active = [r["id"] for r in (snap.rows if snap else []) if r.get("state") in ("running", "queued")]
        if not active:
            return

        self.work(self, lambda: self.service.reconcile(active), name="reconcile", exclusive=True)

    # -- remembered across restarts ----------------------------------------------------
    def remember(self, section: str, value: dict) -> None:
        """Keep `value` as the state file's `section` (written in a worker, when it changed)."""
        if self.state.want(section, value):
            self.work(self, self.state.save, name="save app state", group="app-state")

    def exit(self, *args, **kwargs) -> None:
        # the last change may still wait for its worker: write it now (a small file, once)
        try:
            self.state.save()
        except UserError:
            pass
        super().exit(*args, **kwargs)

    # -- workers -------------------------------------------------------------------
    def work(self, node, fn, *, name: str, group: str | None = None, exclusive: bool = False):
        """Run `fn` in a thread worker owned by `node` (a screen): the one place worker errors go.

        An exception in `fn` becomes a notification (one line, never a traceback on screen)
        and a line in the Textual log; the app keeps running.
        """

        def wrapped():
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - reported, not swallowed
                self.call_from_thread(self.worker_failed, name, exc)
                return None

        return node.run_worker(
            wrapped, thread=True, name=name, group=group or name, exclusive=exclusive, exit_on_error=False
        )

    def worker_failed(self, name: str, exc: BaseException) -> None:
        msg = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        self.log.error(f"worker {name} failed: {msg}")
        self.notify(msg, title=f"{name} failed", severity="error", timeout=10)


def make_app(home: Path | None = None, presets_dir: Path | None = None) -> AdvlcApp:
    """The app for the run store at `home` (default: ADVLC_HOME or ~/.advlc).

    `presets_dir`, when given, replaces the built-in and user presets in the Presets screen.
    """
    return AdvlcApp(home, presets_dir)
