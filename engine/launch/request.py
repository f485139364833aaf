"""A launch request: what `advlc run` and the Presets screen ask for, parsed and checked once.

The command line gives typed options (`--seeds 3 --gpus 0,1 --set k=v`), the Presets screen
text fields; both become one `LaunchRequest`, checked by the same rules (each mistake one
UserError line naming the field), and planned by the same call (`plan`), so the two can never
accept different things.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from engine.config.presets import PlannedRun
from engine.config.schema import SEED_MAX
from engine.errors import UserError
from engine.launch.executors import executor_named
from engine.launch.plan import plan_runs

MAX_SLOTS_PER_GPU = 64
"""`--slots-per-gpu`'s upper end: more runs than that on one GPU at once is a typo."""


def split_overrides(text: str) -> list[str]:
    """'train.epochs=2 eval.n=100 train.lr_milestones=[5, 8]' -> ['train.epochs=2', …].

    Words are split like a shell does (quotes keep spaces); a word without '=' continues
    the previous value, so lists may contain spaces.
    """
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UserError(f"overrides: {exc}") from None
    out: list[str] = []
    for w in words:
        if "=" not in w and out:
            out[-1] += " " + w
        else:
            out.append(w)
    for w in out:
        if "=" not in w:
            raise UserError(f"override '{w}': expected section.key=value (e.g. train.epochs=5)")
    return out


def parse_gpus(text: str | None, what: str = "--gpus") -> list[int] | None:
    """'0,1' or '0 1' -> [0, 1]; '' or 'all' -> None (every visible GPU)."""
    if text is None or text.strip() in ("", "all"):
        return None
    try:
        gpus = [int(g) for g in text.replace(" ", ",").split(",") if g.strip()]
    except ValueError:
        raise UserError(f"{what} {text}: give GPU ids separated by commas, e.g. 0,1") from None
    if any(g < 0 for g in gpus):
        raise UserError(f"{what} {text}: GPU ids are numbers >= 0")
    return gpus or None


@dataclass
class LaunchRequest:
    """One launch: a preset, its overrides and seeds, and where its runs go."""

    preset: str
    overrides: list[str] = field(default_factory=list)  # --set, as given
    seeds: int | None = None  # how many (default: the preset's)
    seed: int | None = None  # the first (default: the preset's train.seed)
    device: str | None = None  # train.device
    gpu_queue: bool = False  # through the GPU queue (--gpus given, or GPUs typed in the app)
    gpus: list[int] | None = None  # the queue's GPUs (None: every visible one)
    slots_per_gpu: int = 1
    executor: str = "local"
    detach: bool = False
    with_teachers: bool = False
    slurm: dict = field(default_factory=dict)
    command: str | None = None  # the command line that asked, or "app"

    @classmethod
    def from_fields(
        cls,
        preset: str,
        *,
        overrides: str = "",
        seeds: str = "",
        device: str = "",
        gpus: str = "",
        executor: str = "local",
    ) -> LaunchRequest:
        """The Presets screen's text fields (empty = the preset's own)."""
        n = None
        if seeds.strip():
            try:
                n = int(seeds)
            except ValueError:
                raise UserError(f"seeds = {seeds!r}: must be a whole number >= 1") from None
        queue = parse_gpus(gpus, "GPUs =")
        return cls(
            preset,
            split_overrides(overrides),
            seeds=n,
            device=device or None,
            gpu_queue=queue is not None,
            gpus=queue,
            executor=executor or "local",
            detach=True,
            command="app",
        ).checked()

    def checked(self) -> LaunchRequest:
        """self, when every field is allowed; else one UserError line naming the field."""
        if self.seeds is not None and self.seeds < 1:  # no cap of its own: the plan's (points x seeds) has one
            raise UserError(f"seeds = {self.seeds}: must be a whole number >= 1")
        if self.seed is not None and not 0 <= self.seed <= SEED_MAX:
            raise UserError(f"seed = {self.seed}: must be between 0 and {SEED_MAX} (2**32 - 1)")
        if not 1 <= self.slots_per_gpu <= MAX_SLOTS_PER_GPU:
            raise UserError(f"slots per GPU = {self.slots_per_gpu}: must be between 1 and {MAX_SLOTS_PER_GPU}")
        executor_named(self.executor)  # a name no executor has: one line
        if self.with_teachers and self.background:
            raise UserError(
                "--with-teachers trains the teachers before the student, so it runs in the foreground; "
                "drop --detach/--gpus/--executor, or run the teacher presets detached first"
            )
        return self

    @property
    def background(self) -> bool:
        """Detached: asked for, through the GPU queue, or an executor that never runs in the foreground."""
        return self.detach or self.gpu_queue or not executor_named(self.executor).FOREGROUND

    def all_overrides(self) -> list[str]:
        """--set overrides, then --device and --seed as the overrides they are."""
        out = list(self.overrides)
        if self.device:
            out.append(f"train.device={self.device}")
        if self.seed is not None:
            out.append(f"train.seed={self.seed}")
        return out

    def plan(self, home=None, store=None) -> list[PlannedRun]:
        """Every run the request makes (teachers first with `with_teachers`), each knowing its command."""
        self.checked()
        planned = plan_runs(
            self.preset,
            self.all_overrides(),
            seeds=self.seeds,
            home=home,
            with_teachers=self.with_teachers,
            store=store,
        )
        for p in planned:
            p.command = self.command
        return planned
