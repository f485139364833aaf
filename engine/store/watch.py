"""Watching the run store cheaply: re-read a file only when it changed, hand over only what is new.

- `IndexReader` watches `index.json` (one summary document per run, rewritten by the
  store after each epoch of each run). It re-parses the file only when its signature
  (mtime, size, inode) changed, and reads `status.json` only for runs that are running
  (for batch progress within an epoch). `poll()` returns `None` when nothing changed.
- `RunFollower` follows one run for a detail view: it re-reads `metrics.json` only
  when it changed and hands over only the epoch records it has not seen yet (a resumed
  run that dropped records past its checkpoint gives `reset=True`), re-reads `status.json`,
  `config.json` and `meta.json` (title, tags, note, archived) only when they changed, and it
  reads `log.txt` from the byte offset where it stopped last time.
- `RunHistory` accumulates a follower's deltas into the records a view plots.

They read tolerantly (a file that does not parse, or has the wrong shape, is taken as unchanged
or empty and read again at the next poll); the commands that act on a run read strictly. What
they hand over are the store's records (engine.store.records), checked like any other read. Plain Python with no UI: the
app calls them from thread workers, tests and the app benchmark call them directly.
"""

from __future__ import annotations

import os
import time
import typing
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import CorruptFile
from engine.store.files import read_json
from engine.store.index import Store
from engine.store.records import ConfigRecord, EpochRecord, EvalRecord, IndexRow, Meta, Shape, Status, table_records
from engine.store.rundir import RunDir


def _record(cls, path: Path, default):
    """The record of a file, or `default` when it is missing, does not parse or has the wrong shape."""
    data = read_json(path, None)
    if data is None:
        return default
    try:
        return cls.from_json(data)
    except Shape:
        return default


def file_sig(path: Path) -> tuple[int, int, int] | None:
    """(mtime_ns, size, inode) of a file, or None when it does not exist."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


# ---------------------------------------------------------------------------- index
@dataclass
class IndexSnapshot:
    """What the Runs screen shows: every index document, plus live progress of running runs."""

    rows: list[IndexRow]
    """Index documents (Store.runs() order: by creation time)."""
    live: dict[str, Status]
    """run id -> status.json of runs that are running (batch, batches, heartbeat, epoch)."""
    version: int
    """Increases by one with every snapshot a reader hands out."""
    read_s: float = 0.0
    """Seconds (wall clock) the worker spent reading and parsing."""
    read_cpu_s: float = 0.0
    """CPU seconds of the worker thread for the same (what the read costs, whatever the load)."""

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            s = r.get("state") or "queued"
            out[s] = out.get(s, 0) + 1
        return out


class IndexReader:
    """Incremental reader of the store's index (see the module docstring)."""

    def __init__(self, store: Store):
        self.store = store
        self._sig: tuple | None = ()
        self._rows: list[IndexRow] = []
        self._status_sig: dict[str, tuple | None] = {}
        self._live: dict[str, Status] = {}
        self._version = 0

    def poll(self, force: bool = False) -> IndexSnapshot | None:
        """A new snapshot when the index or a running run's status changed, else None."""
        t0, c0 = time.perf_counter(), time.thread_time()
        changed = force
        sig = file_sig(self.store.index_path)
        if sig != self._sig:
            rows = self.store.runs(archived=None)  # archived runs too: the Runs screen shows them on demand (A)
            if rows or not sig or sig[1] < 64 or not self._rows:
                self._sig = sig
                self._rows = rows
                changed = True
            # else: a non-empty index that read as empty (it cannot be half-written, but a
            # network filesystem may show a stale or partial view): keep the rows, retry next poll
        running = {r["id"]: r for r in self._rows if r.get("state") == "running"}
        for rid in list(self._live):
            if rid not in running:
                del self._live[rid]
                self._status_sig.pop(rid, None)
                changed = True
        for rid, r in running.items():
            rd = RunDir(Path(r["path"])) if r.get("path") else self.store.run_dir(rid)
            s = file_sig(rd.status_path)
            if s != self._status_sig.get(rid):
                self._status_sig[rid] = s
                self._live[rid] = _record(Status, rd.status_path, Status())  # a damaged file: no live progress
                changed = True
        if not changed:
            return None
        self._version += 1
        return IndexSnapshot(
            list(self._rows), dict(self._live), self._version, time.perf_counter() - t0, time.thread_time() - c0
        )


# ---------------------------------------------------------------------------- one run
@dataclass
class RunDelta:
    """What changed in one run since the last poll."""

    run_id: str
    reset: bool = False
    """True when the follower started over (first poll, or records were removed)."""
    epochs: list[EpochRecord] = field(default_factory=list)
    """New records of table `epochs` (all of them when `reset`)."""
    swa: list[EpochRecord] = field(default_factory=list)
    """New records of table `swa` (same keys, for the weight-averaged model)."""
    evals: list[EvalRecord] | None = None
    """All records of table `evals` when they changed, else None."""
    status: Status | None = None
    """status.json when it changed, else None."""
    config: ConfigRecord | None = None
    """The run's config (config.json with runtime.json) when it changed (first poll; provenance
    is added when the run starts)."""
    meta: Meta | None = None
    """meta.json (title, tags, note, archived; written by the store, not the run) when it changed."""
    log_lines: list[str] = field(default_factory=list)
    """New lines of log.txt."""
    log_reset: bool = False
    """True when the log shrank or was replaced: `log_lines` then holds its tail."""

    def empty(self) -> bool:
        return not (
            self.reset
            or self.epochs
            or self.swa
            or self.evals is not None
            or self.status is not None
            or self.config is not None
            or self.meta is not None
            or self.log_lines
            or self.log_reset
        )


LOG_TAIL_BYTES = 64 * 1024
"""How much of log.txt the detail screen reads when it opens a run."""


class RunFollower:
    """Follows one run directory; `poll()` returns what is new (see the module docstring)."""

    def __init__(self, rd: RunDir):
        self.rd = rd
        self._sig: dict[str, tuple | None] = {}
        self._n: dict[str, int] = {"epochs": 0, "swa": 0}
        self._first: dict[str, int | None] = {"epochs": None, "swa": None}
        self._log_pos = 0
        self._log_partial = b""
        self._started = False

    def _changed(self, name: str, path: Path) -> bool:
        s = file_sig(path)
        if s == self._sig.get(name, ()):
            return False
        self._sig[name] = s
        return True

    def poll(self) -> RunDelta:
        rd = self.rd
        d = RunDelta(rd.id)
        if not self._started:
            d.reset = True
            self._started = True
        if self._changed("config", rd.config_path) | self._changed("runtime", rd.runtime_path):
            try:
                d.config = rd.config()
            except CorruptFile:
                d.config = None
                self._sig["config"] = ()  # damaged: `advlc show` names it; read again next time
        if self._changed("status", rd.status_path):
            d.status = _record(Status, rd.status_path, Status())
        if self._changed("meta", rd.meta_path):
            d.meta = _record(Meta, rd.meta_path, Meta())
        if self._changed("metrics", rd.metrics_path):
            self._read_metrics(d)
        self._read_log(d)
        return d

    def _read_metrics(self, d: RunDelta) -> None:
        data = read_json(self.rd.metrics_path, None)
        try:
            tables = {name: table_records(data, name, self.rd.metrics_path) for name in ("epochs", "swa", "evals")}
        except CorruptFile:
            tables = None
        if tables is None or not isinstance(data, dict):
            self._sig["metrics"] = ()  # half-visible or damaged file: read again next time
            return
        for name in ("epochs", "swa"):
            rows = tables[name]
            first = int(min(data[name], key=int)) if rows else None
            if len(rows) < self._n[name] or (self._n[name] and first != self._first[name]):
                d.reset = True  # records were removed (resume past a checkpoint): start over
            self._first[name] = first
        if d.reset:
            self._n = {"epochs": 0, "swa": 0}
        for name in ("epochs", "swa"):
            rows = tables[name]
            setattr(d, name, rows[self._n[name] :])
            self._n[name] = len(rows)
        if tables["evals"]:
            d.evals = typing.cast("list[EvalRecord]", tables["evals"])

    def _read_log(self, d: RunDelta) -> None:
        path = self.rd.log_path
        try:
            size = os.path.getsize(path)
        except OSError:
            return
        if size < self._log_pos or (self._log_pos == 0 and size > LOG_TAIL_BYTES):
            # first read of a long log, or the log was truncated: take its tail
            d.log_reset = self._log_pos != 0 or d.log_reset
            self._log_pos = max(0, size - LOG_TAIL_BYTES)
            self._log_partial = b""
        if size == self._log_pos:
            return
        with open(path, "rb") as f:
            f.seek(self._log_pos)
            chunk = f.read(size - self._log_pos)
        self._log_pos += len(chunk)
        data = self._log_partial + chunk
        lines = data.split(b"\n")
        self._log_partial = lines.pop()  # an unfinished last line waits for its newline
        d.log_lines = [ln.decode("utf-8", "replace").rstrip("\r") for ln in lines]


# ---------------------------------------------------------------------------- runs, accumulated
class RunHistory:
    """The records of one run accumulated from `RunDelta`s (what the detail screen plots)."""

    def __init__(self, run_id: str, log_lines: int = 2000):
        self.run_id = run_id
        self.epochs: list[EpochRecord] = []
        self.swa: list[EpochRecord] = []
        self.evals: list[EvalRecord] = []
        self.status: Status = Status()
        self.config: ConfigRecord | None = None
        self.meta: Meta = Meta()
        self.log: deque[str] = deque(maxlen=log_lines)

    def apply(self, d: RunDelta) -> None:
        if d.reset:
            self.epochs, self.swa = [], []
        self.epochs.extend(d.epochs)
        self.swa.extend(d.swa)
        if d.evals is not None:
            self.evals = d.evals
        if d.status is not None:
            self.status = d.status
        if d.config is not None:
            self.config = d.config
        if d.meta is not None:
            self.meta = d.meta
        if d.log_reset:
            self.log.clear()
        self.log.extend(d.log_lines)
