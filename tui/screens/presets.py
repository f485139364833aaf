"""Presets (new run): pick a preset, adjust it, launch it.

Left: the presets as a tree grouped by folder (quick/, paper/table1/, …, user/).
Right: description and paper reference, the override line (`section.key=value` words,
checked as you type: a mistake shows as one line in red, never as a crash), seeds,
device, GPUs and executor, and the fully resolved config (overridden keys marked).
Launch (button, enter in a field, `l` on the tree, ctrl+l anywhere) calls
the engine's `launch` in a worker and returns to the Runs screen with the cursor on
the new run(s).

Resolving a preset imports the method registry (and so torch): that happens only in
thread workers, never on the UI thread.

A sweep preset (e.g. the showcase: `[sweep] "method.name" = ["pgd", "advlc"]`, 1 seed) stands for
several runs per seed: the seeds field shows the preset's number of seeds (what typing a number
there replaces), and the plan line names each run's scheme (its label, or the swept values when
the label does not tell them apart) and the seeds: `2 runs: pgd, pgd+advlc × seed 0`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Input, Label, Select, Static, Tree

from engine.errors import UserError
from engine.facade import (
    DEFAULT_PRESET,
    LaunchRequest,
    caveats,
    list_presets,
    load_toml,
    plan_text,
    read_preset,
    seeds_of,
    split_overrides,
)
from tui.messages import ActionDone
from tui.widgets.key_bar import KeyBar
from tui.widgets.palette import palette
from tui.widgets.store_header import StoreHeader

DEVICES = ("auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:2", "cuda:3")
EXECUTORS = ("local", "slurm")


@dataclass
class PresetItem:
    """One leaf of the tree: what to pass to plan_runs (a preset name, or a TOML path)."""

    ref: str
    name: str
    description: str
    reference: str
    group: str


def list_items(home: Path | None, presets_dir: Path | None) -> list[PresetItem]:
    """The presets the tree shows: built-in + `$ADVLC_HOME/presets`, or those under `presets_dir`."""
    if presets_dir is None:
        return [PresetItem(e.name, e.name, e.description, e.reference, e.group) for e in list_presets(home)]
    out = []
    root = Path(presets_dir)
    for path in sorted(root.rglob("*.toml")):
        if path.name.startswith("_"):
            continue
        name = path.relative_to(root).with_suffix("").as_posix()
        try:
            info = load_toml(path).get("preset", {})
        except UserError:
            info = {"description": "(invalid TOML)"}
        if not isinstance(info, dict):  # `preset = "x"`: shown as broken, never a crash of the screen
            info = {"description": "(broken: 'preset' must be a table [preset])"}
        out.append(
            PresetItem(
                str(path),
                name,
                str(info.get("description", "")),
                str(info.get("reference", "")),
                name.rpartition("/")[0],
            )
        )
    return out


class Validated(Message):
    """Result of resolving the current preset + inputs in a worker."""

    def __init__(self, seq: int, error: str | None, planned=None, raw: dict | None = None):
        super().__init__()
        self.seq, self.error, self.planned, self.raw = seq, error, planned, raw


class PresetsScreen(Screen):
    """Choose and launch a preset."""

    BINDINGS = [
        Binding("escape", "back", "Back", show=True),
        Binding("ctrl+l", "launch", "Launch", show=True, priority=True),
        Binding("l", "launch", "Launch", show=False),
        Binding("o", "focus_overrides", "Overrides", show=True),
    ]

    DEFAULT_CSS = """
    PresetsScreen #preset-tree { width: 36%; min-width: 26; border: round $panel-lighten-2; }
    PresetsScreen #preset-tree:focus-within { border: round $accent; }
    PresetsScreen #preset-side { width: 1fr; padding: 0 1; }
    PresetsScreen #preset-title { text-style: bold; color: $accent; }
    PresetsScreen #preset-desc { color: $foreground; margin-bottom: 1; }
    PresetsScreen .field-row { height: 1; margin-top: 1; }
    PresetsScreen .field-row Label { padding: 0 1 0 0; }
    PresetsScreen .field-label { width: 10; color: $foreground-muted; }
    PresetsScreen #overrides { width: 1fr; }
    PresetsScreen #seeds { width: 8; margin-right: 2; }
    PresetsScreen #device { width: 16; }
    PresetsScreen #gpus { width: 8; margin-right: 2; }
    PresetsScreen #executor { width: 12; }
    PresetsScreen #launch-hint { color: $foreground-muted; }
    PresetsScreen #preset-error { color: $error; text-style: bold; height: auto; margin-top: 1; }
    PresetsScreen #preset-plan { color: $success; height: auto; }
    PresetsScreen #preset-config { height: auto; color: $foreground; margin-top: 1; }
    """

    def __init__(self, select: str | None = None):
        super().__init__()
        self.select = select
        self.items: list[PresetItem] = []
        self.current: PresetItem | None = None
        self._seq = 0
        self.last: Validated | None = None
        self._launching = False

    # -- layout --------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StoreHeader(self.app.service.home, id="header")
        with Horizontal():
            yield Tree("presets", id="preset-tree")
            with VerticalScroll(id="preset-side"):
                yield Static("", id="preset-title")
                yield Static("", id="preset-desc")
                with Horizontal(classes="field-row"):
                    yield Label("overrides", classes="field-label")
                    yield Input(
                        placeholder="section.key=value …  e.g. train.epochs=5 attack.eps=8/255",
                        id="overrides",
                        compact=True,
                    )
                with Horizontal(classes="field-row"):
                    yield Label("seeds", classes="field-label")
                    yield Input(placeholder="1", id="seeds", type="integer", compact=True)
                    yield Label("device")
                    yield Select(
                        [("preset's", "")] + [(d, d) for d in DEVICES],
                        value="",
                        allow_blank=False,
                        id="device",
                        compact=True,
                    )
                with Horizontal(classes="field-row"):
                    yield Label("GPUs", classes="field-label")
                    yield Input(placeholder="e.g. 0,1", id="gpus", compact=True)
                    yield Label("on")
                    yield Select(
                        [(e, e) for e in EXECUTORS], value="local", allow_blank=False, id="executor", compact=True
                    )
                with Horizontal(classes="field-row"):
                    yield Label("", classes="field-label")
                    yield Button("Launch ▶", id="launch", variant="success", compact=True)
                    yield Label("  enter in any field launches too", id="launch-hint")
                yield Static("", id="preset-error")
                yield Static("", id="preset-plan")
                yield Static("", id="preset-config")
        yield KeyBar(id="presets-keys")

    def on_mount(self) -> None:
        snap = getattr(self.app.runs_screen, "snapshot", None)
        if snap is not None:
            self.query_one("#header", StoreHeader).set_counts(snap.counts(), "new run")
        self.app.work(self, self._load_items, name="presets-list")

    def _load_items(self) -> None:
        items = list_items(self.app.home_arg, self.app.presets_dir)
        self.app.call_from_thread(self._fill_tree, items)

    def _fill_tree(self, items: list[PresetItem]) -> None:
        self.items = items
        tree = self.query_one("#preset-tree", Tree)
        tree.show_root = False
        tree.root.expand()
        folders: dict[str, Any] = {"": tree.root}  # tree nodes
        want = self.select or DEFAULT_PRESET
        target = None
        for it in items:
            parent = tree.root
            path = ""
            for part in it.group.split("/") if it.group else []:
                path = f"{path}{part}/"
                if path not in folders:
                    folders[path] = folders[path[: -len(part) - 1]].add(part + "/", expand=False)
                parent = folders[path]
            leaf = parent.add_leaf(it.name.rpartition("/")[2], data=it)
            if it.name == want or it.ref == want:
                target = leaf
        tree.focus()
        if target is None and items:
            target = next(n for n in _walk(tree.root) if n.data is not None)
        if target is not None:
            node = target.parent
            while node is not None:  # open the folders down to the chosen preset only
                node.expand()
                node = node.parent
            self._set_current(target.data)
            self.call_after_refresh(self._cursor_to, target)

    def _cursor_to(self, node) -> None:
        tree = self.query_one("#preset-tree", Tree)
        tree.move_cursor(node)
        tree.scroll_to_node(node, animate=False)

    # -- selection and validation ----------------------------------------------------
    @on(Tree.NodeHighlighted, "#preset-tree")
    def _highlighted(self, event: Tree.NodeHighlighted) -> None:
        if isinstance(event.node.data, PresetItem):
            self._set_current(event.node.data)

    @on(Tree.NodeSelected, "#preset-tree")
    def _selected(self, event: Tree.NodeSelected) -> None:
        if isinstance(event.node.data, PresetItem):
            self.query_one("#overrides", Input).focus()

    def _set_current(self, item: PresetItem) -> None:
        if self.current is item:
            return
        self.current = item
        self.query_one("#preset-title", Static).update(Text(item.name))
        desc = Text(item.description or "(no description)")
        if item.reference:
            desc.append(f"\nreproduces: {item.reference}", style="italic")
        self.query_one("#preset-desc", Static).update(desc)
        self.validate_inputs()

    @on(Input.Changed)
    @on(Select.Changed)
    def _inputs_changed(self, event) -> None:
        self.validate_inputs()

    def inputs(self) -> tuple[str, str, str, str, str]:
        dev = self.query_one("#device", Select).value
        ex = self.query_one("#executor", Select).value
        return (
            self.query_one("#overrides", Input).value,
            self.query_one("#seeds", Input).value,
            dev if isinstance(dev, str) else "",
            self.query_one("#gpus", Input).value,
            ex if isinstance(ex, str) else "local",
        )

    def validate_inputs(self) -> None:
        """Resolve the preset with the current inputs in a worker; the newest result wins."""
        if self.current is None:
            return
        self._seq += 1
        seq, ref, args = self._seq, self.current.ref, self.inputs()
        self.query_one("#preset-plan", Static).update(Text("checking…", style="italic"))
        self.app.work(self, lambda: self._validate(seq, ref, args), name="validate")

    def plan(self, ref: str, args) -> tuple[list, dict, dict]:
        """The launch the fields ask for (engine.launch.request.LaunchRequest, checked as the command
        line's) -> (planned runs, launch options, the raw preset). Raises UserError."""
        overrides_text, seeds_text, device, gpus_text, executor = args
        req = LaunchRequest.from_fields(
            ref, overrides=overrides_text, seeds=seeds_text, device=device or "", gpus=gpus_text, executor=executor
        )
        planned = self.app.service.plan(req)
        _, _, raw = read_preset(ref, self.app.home_arg)
        return planned, {"gpus": req.gpus, "executor": req.executor}, raw

    def _validate(self, seq: int, ref: str, args) -> None:
        try:
            planned, _opts, raw = self.plan(ref, args)
        except UserError as exc:
            self.post_message(Validated(seq, str(exc)))
        except Exception as exc:  # a bug somewhere below: show it, never crash the app
            self.post_message(Validated(seq, f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(Validated(seq, None, planned, raw))

    def on_validated(self, message: Validated) -> None:
        if message.seq != self._seq:
            return  # an older check finished after a newer one started
        self.last = message
        err = self.query_one("#preset-error", Static)
        plan = self.query_one("#preset-plan", Static)
        if message.error:
            err.update(Text("✖ " + message.error))
            plan.update("")
            self.query_one("#launch", Button).disabled = True
            return
        err.update("")
        self.query_one("#launch", Button).disabled = False
        planned = message.planned
        cfg = planned[0].cfg
        text = Text(
            f"will launch {plan_text(planned)} · {cfg.train.epochs} epochs "
            f"· {cfg.data.dataset} · device {cfg.train.device}"
        )
        for line in dict.fromkeys(c for p in planned for c in caveats(p.cfg)):
            text.append(f"\n⚠ {line}", style="yellow")
        plan.update(text)
        if not self.query_one("#seeds", Input).value:
            self.query_one("#seeds", Input).placeholder = str(
                len(seeds_of([p for p in planned if not p.role.startswith("teacher")]))
            )
        self.query_one("#preset-config", Static).update(self._config_text(cfg))

    def _config_text(self, cfg) -> Text:
        c = palette(self.app)
        try:
            overridden = {w.partition("=")[0].strip() for w in split_overrides(self.inputs()[0])}
        except UserError:
            overridden = set()
        t = Text(end="")
        for section, table in cfg.to_dict().items():
            if section == "preset":
                continue
            t.append(f"[{section}]\n", style=f"bold {c.get('accent', '')}")
            for k, v in table.items():
                mark = f"{section}.{k}" in overridden
                t.append(
                    f"  {k} = {v!r}" + ("   ← override" if mark else "") + "\n",
                    style=f"bold {c.get('success', '')}" if mark else "",
                )
        return t

    # -- launch --------------------------------------------------------------------
    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_launch()

    @on(Button.Pressed, "#launch")
    def _launch_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_launch()

    def action_launch(self) -> None:
        if self.current is None or self._launching:
            return
        self._launching = True
        ref, args = self.current.ref, self.inputs()
        self.query_one("#preset-plan", Static).update(Text("launching…", style="italic"))
        self.app.work(self, lambda: self._launch(ref, args), name="launch")

    def _launch(self, ref: str, args) -> None:
        try:
            planned, opts, _raw = self.plan(ref, args)
            ids = self.app.launch(planned, **opts)
        except UserError as exc:
            self.post_message(ActionDone("launch", False, str(exc)))
        except Exception as exc:
            self.post_message(ActionDone("launch", False, f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(ActionDone("launch", True, f"launched {len(ids)} run(s): {', '.join(ids)}", ids))

    def on_action_done(self, message) -> None:
        self._launching = False
        if message.what != "launch":
            return
        if not message.ok:
            self.query_one("#preset-error", Static).update(Text("✖ " + message.text))
            self.query_one("#preset-plan", Static).update("")
            return
        self.notify(message.text, title="launch")
        self.app.show_runs(focus=message.run_ids)

    # -- misc ----------------------------------------------------------------------
    def action_back(self) -> None:
        if self.focused is not None and self.focused.id in ("overrides", "seeds", "gpus"):
            self.query_one("#preset-tree").focus()
        else:
            self.app.pop_screen()

    def action_focus_overrides(self) -> None:
        self.query_one("#overrides", Input).focus()


def _walk(node):
    for child in node.children:
        yield child
        yield from _walk(child)
