"""What an executor does for the supervisor: engine.launch.supervisor calls these methods on the
executor of a run's launch record, so that it never needs to know which executor it has."""

from __future__ import annotations

from typing import Callable, ClassVar

from engine.config.presets import PlannedRun
from engine.errors import UserError
from engine.launch.processes import RUN_MODULE, Command
from engine.store.index import Store
from engine.store.records import Status
from engine.store.rundir import RunDir


class Executor:
    """One way of running a run's process (`python -m engine.run RUN_DIR`, or what a Slurm job calls).

    Stateless: one instance per executor, in engine.launch.executors.EXECUTORS. The defaults are
    those of an executor with nothing outside advlc to ask (no scheduler, no cluster)."""

    TAG: ClassVar[str]
    """Its name: status.json's `launch.executor`, and `--executor TAG` when `NAMED`."""
    RECORD: ClassVar[type]
    """Its launch record (engine.store.records), status.json's `launch`."""
    NAMED: ClassVar[bool] = False
    """Chosen by `--executor TAG` (the GPU queue is chosen by the local executor, for `--gpus`)."""
    FOREGROUND: ClassVar[bool] = False
    """`advlc run` without --detach may train in the terminal instead of launching."""
    STARTS_LATER: ClassVar[bool] = False
    """A queued run is started by a scheduler or a cluster, so its launcher dying does not strand it."""
    REMOTE: ClassVar[bool] = False
    """Its run process may be on another host: `stop` cancels its job and waits for the run to
    write its own final state."""

    # -- starting ----------------------------------------------------------------------
    def launch(
        self,
        store: Store,
        planned: list[PlannedRun],
        create: Callable[[], list[RunDir]],
        *,
        gpus: list[int] | None,
        slots_per_gpu: int,
        params: dict,
    ) -> list[RunDir]:
        """Check what the launch asks for (a UserError before any run exists), make the run
        directories with `create()`, then start, queue or submit them; returns them."""
        raise NotImplementedError

    def check_resume(self, rd: RunDir, launch, params: dict) -> dict:
        """Before a resume changes anything: the executor parameters `params` (`--partition`,
        `--time`, ... given on the command line) checked; returns what `resume` takes."""
        if params:
            names = ", ".join("--slurm-gpus" if k == "gpus" else f"--{k}" for k in params)
            raise UserError(f"run {rd.id} was not launched on Slurm: {names} apply to Slurm runs only")
        return {}

    def resume(self, store: Store, rd: RunDir, launch, checked: dict) -> None:
        """Start (or queue, or submit) a run that `prepare_resume` queued again, the way it was
        launched before (`launch`, its previous launch record; None when it never was)."""
        raise NotImplementedError

    # -- stopping ----------------------------------------------------------------------
    def run_commands(self, rd: RunDir) -> list[Command]:
        """What the run's own process (status.json `pid`) runs when this executor started it:
        `stop` signals that pid only when its command is one of these (engine.launch.processes.owned)."""
        return [(RUN_MODULE, rd.path)]

    def processes(self, status: Status, rd: RunDir) -> list[tuple[int | None, float | None, str | None, list[Command]]]:
        """(pid, create time, host, the commands it runs) of processes to signal besides the run's
        own; each is signalled only when it is still that process (engine.launch.processes.owned)."""
        return []

    def job(self, status: Status) -> str | None:
        """The id of a job a cluster holds for the run, which `stop` must cancel."""
        return None

    def check_cancel(self) -> None:
        """A UserError when jobs cannot be cancelled from here (before any run is marked stopped)."""

    def cancel(self, jobs: list[str]) -> None:
        """Cancel the jobs (best effort)."""

    def release(self, store: Store, rd: RunDir) -> None:
        """Give back what the run holds (a GPU lease) once it has stopped, is lost or deleted."""

    # -- watching ----------------------------------------------------------------------
    def reconcile(self, store: Store, queued: dict[str, RunDir]) -> list[str]:
        """At each `reconcile`, with this executor's `queued` runs (id -> run): make those that
        will never start `lost` or `stopped` and tidy up; returns the ids whose state changed."""
        return []

    def queue_info(self, store: Store) -> dict:
        """This executor's part of `advlc queue`."""
        return {}
