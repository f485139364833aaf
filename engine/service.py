"""The app's one door into the run store: operations by run id, returning the store's typed records.

The Textual app's screens and widgets never hold a `Store` or a `RunDir`: they ask a
`Service(home)` for rows of the index (`IndexRow`), the records of one run (`ConfigRecord`,
`Status`, `Meta`, `PointRecord`), the incremental readers of engine.store.watch, and the
supervisor's and the reports' actions. So the app cannot write a run directory past the
store's lock, and the run-directory format can change without touching a screen.

Each operation delegates to one engine function; actions go through engine.facade, so what loads
torch (evaluation, benchmarks) is still imported on first use. The command line keeps calling the
facade with `Service.store`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from engine import facade
from engine.config.presets import PlannedRun
from engine.launch.request import LaunchRequest
from engine.report.document import ReportResult
from engine.report.model import CompareTable
from engine.store.index import Store
from engine.store.records import ConfigRecord, IndexRow, Meta, PointRecord, Status
from engine.store.rundir import RunDir
from engine.store.watch import IndexReader, RunFollower, file_sig

FileSig = tuple[int, int, int]
"""(mtime_ns, size, inode) of a file: what `points` compares to skip an unchanged metrics.json."""

RunRef = str | Mapping[str, typing.Any]
"""A run id, or its index row (whose `path` is where the index found the run, as IndexReader reads it)."""

BENCHES = ("steps", "epoch", "hs", "concurrency")
"""What `bench` measures (`advlc bench steps/epoch/hs/concurrency`)."""


class Service:
    """The operations the app needs on the store at `home` (default: ADVLC_HOME or ~/.advlc)."""

    def __init__(self, home: Path | str | None = None, *, create: bool = True):
        self.store = Store(home).ensure() if create else Store(home)
        """The store, for the command line's facade calls (the app uses the operations below)."""

    @property
    def home(self) -> Path:
        return self.store.home

    def _dir(self, run: RunRef) -> RunDir:
        if isinstance(run, str):
            return self.store.run_dir(run)
        return RunDir(Path(run["path"])) if run.get("path") else self.store.run_dir(run["id"])

    # -- reading --------------------------------------------------------------------------
    def runs(
        self,
        *,
        archived: bool | None = False,
        state: str | None = None,
        preset: str | None = None,
        group: str | None = None,
    ) -> list[IndexRow]:
        """The index rows in creation order (`archived`: False hides archived runs, True only them, None both)."""
        return self.store.runs(archived=archived, state=state, preset=preset, group=group)

    def watch(self) -> IndexReader:
        """An incremental reader of the index: `poll()` gives a new IndexSnapshot only when something changed."""
        return IndexReader(self.store)

    def follow(self, run_id: str) -> RunFollower:
        """An incremental reader of one run: `poll()` gives a RunDelta of what is new."""
        return RunFollower(self.store.run_dir(run_id))

    def config(self, run: RunRef) -> ConfigRecord:
        """The run's config as it ran (config.json with runtime.json over it)."""
        return self._dir(run).config()

    def status(self, run: RunRef) -> Status:
        return self._dir(run).status()

    def meta(self, run: RunRef) -> Meta:
        """meta.json: title, tags, note, archived."""
        return self._dir(run).meta()

    def points(self, run_id: str, seen: FileSig | None = None) -> tuple[FileSig | None, list[PointRecord]] | None:
        """(metrics.json's signature, an experiment run's `points` records), or None when the signature
        is still `seen` (None: no file): a poll re-reads the file only when it changed."""
        rd = self.store.run_dir(run_id)
        try:
            sig = file_sig(rd.metrics_path)
        except OSError:
            sig = None
        if sig == seen:
            return None
        return sig, typing.cast("list[PointRecord]", rd.records("points") if sig else [])

    # -- what people say about runs -----------------------------------------------------------
    def annotate(
        self,
        run_ids: Sequence[str],
        *,
        title: str | None = None,
        add_tags: Sequence[str] = (),
        remove_tags: Sequence[str] = (),
        note: str | None = None,
        archived: bool | None = None,
    ) -> list[Meta]:
        """Change each run's meta.json and index row, under the store's lock; the new meta of each."""
        return [
            self.store.annotate(
                self.store.run_dir(rid),
                title=title,
                add_tags=add_tags,
                remove_tags=remove_tags,
                note=note,
                archived=archived,
            )
            for rid in run_ids
        ]

    # -- starting and stopping runs ----------------------------------------------------------
    def plan(self, request: LaunchRequest) -> list[PlannedRun]:
        """The PlannedRuns a LaunchRequest makes (teacher runs found in this store)."""
        return request.plan(home=self.home, store=self.store)

    def launch(self, planned: list[PlannedRun], *, gpus: list[int] | None = None, executor: str = "local") -> list[str]:
        """Create the planned runs and start them detached (or queue them); their ids."""
        return [rd.id for rd in facade.launch(self.store, planned, gpus=gpus, executor=executor)]

    def stop(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Stop runs; {run id: why} for those left alone (their recorded process is not theirs)."""
        return facade.stop(self.store, [self.store.run_dir(rid) for rid in run_ids])

    def resume(self, run_ids: Sequence[str]) -> list[str]:
        """Resume each run from its last checkpoint, detached, the way it was launched."""
        rds = [self.store.run_dir(rid) for rid in run_ids]
        return [facade.resume(self.store, rd).id for rd in rds]

    def delete(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Delete runs that are not active (directory and index row)."""
        return facade.delete(self.store, [self.store.run_dir(rid) for rid in run_ids])

    def reconcile(self, run_ids: Sequence[str] | None = None) -> list[str]:
        """Mark runs whose process is gone as lost (only `run_ids` when given); the ids that changed."""
        rds = None if run_ids is None else [self.store.run_dir(rid) for rid in run_ids]
        return facade.reconcile(self.store, rds)

    # -- reports -------------------------------------------------------------------------------
    def compare(
        self,
        *,
        run_ids: list[str] | None = None,
        preset: str | None = None,
        group: str | None = None,
        by: str = "label",
        include_unfinished: bool = False,
        columns: list[str] | None = None,
    ) -> CompareTable:
        """The mean ± std CompareTable of the runs; `columns`: config keys read from each row's runs."""
        table = facade.compare_runs(
            self.store, run_ids=run_ids, preset=preset, group=group, by=by, include_unfinished=include_unfinished
        )
        if columns:
            facade.add_columns(table, columns, self.store)
        return table

    def curves(self, table: CompareTable, key: str, scale: float | None = None) -> dict[str, list[dict]]:
        """Row name -> per-epoch {"epoch", "mean", ...} of `key` over the row's runs."""
        return facade.row_curves(self.store, table, key, scale)

    def diff(self, run_a: str, run_b: str) -> dict:
        """What differs between two runs: config keys, origin, headline results (`advlc diff`)."""
        return facade.diff_runs(self.store.run_dir(run_a), self.store.run_dir(run_b))

    def export(self, table: CompareTable, folder: Path, formats: Sequence[str]) -> list[Path]:
        """Write a CompareTable in each format under `folder`; the paths written."""
        return facade.export(table, folder, list(formats))

    def report(
        self,
        refs: Sequence[str],
        out_dir: Path | None = None,
        *,
        formats: Sequence[str] = ("md", "html"),
        by: str = "label",
        include_unfinished: bool = False,
        where: str | None = None,
        columns: list[str] | None = None,
    ) -> ReportResult:
        """Write the tables and figures of presets, groups or runs into one folder (`advlc report`)."""
        return facade.build_report(
            self.store,
            list(refs),
            out_dir,
            formats=tuple(formats),
            by=by,
            include_unfinished=include_unfinished,
            where=where,
            columns=columns,
        )

    # -- what computes (loads torch on first use) ----------------------------------------------
    def evaluate(
        self,
        run: str,
        *,
        ckpts: Sequence[str] = ("best",),
        attacks: Sequence[str] = ("aa",),
        n: int = 0,
        batch_size: int | None = None,
        device: str | None = None,
        log: Callable[[str], None] = print,
        progress=None,
    ) -> list[dict]:
        """Final evaluation of a run's checkpoints (`advlc eval`; `run`: an id or unique prefix)."""
        return facade.eval_run(
            self.store.get(run),
            ckpts=list(ckpts),
            attacks=list(attacks),
            n=n,
            batch_size=batch_size,
            device=device,
            store=self.store,
            log=log,
            progress=progress,
        )

    def bench(self, what: str, **options) -> dict:
        """One benchmark of BENCHES with its options (`advlc bench`); `hs` of a run reads this store."""
        if what not in BENCHES:
            raise ValueError(f"bench {what!r}: one of {', '.join(BENCHES)}")
        if what == "hs":
            options.setdefault("home", self.home)
        return getattr(facade, f"bench_{what}")(**options)


__all__ = ["BENCHES", "FileSig", "RunRef", "Service"]
