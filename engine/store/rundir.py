"""The on-disk format of one run: `$ADVLC_HOME/runs/<run-id>/`. The only module that knows its file names.

    config.json     resolved RunConfig sections + "run" (id, preset, seed, group, created)
                    + "provenance" (code commit and dirty-diff hash, versions, device, host)
    .config.json.orig  config.json's bytes as written at creation: what `advlc repair` rebuilds
                    config.json from (written by `create`, and by the run process when missing)
    status.json     state, pid + process start time, heartbeat, epoch/batch progress, error
    metrics.json    TinyDB written only by this run's process: tables `epochs`, `evals`, `swa`, `points`
    meta.json       what people say about the run: title, tags, note, archived (written only by
                    `advlc label/tag/note/archive` and the app, never by the run's process)
    checkpoints/    last.pt, best.pt (+ swa_best.pt, swa_end.pt)
    log.txt         stdout/stderr of a detached run
    submitit/       a Slurm run's job files

Every JSON file is written atomically (engine.store.files) and read through `load_json`: a
missing file reads as empty, a corrupt one is a one-line `CorruptFile` error saying what to do.
Directories are user-only (0700), files 0600. State changes go through
engine.store.states.transition; everything else in status.json through `update_status`.

A run id is a name, never a path: `valid_run_id` is checked wherever an id comes from outside.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
import time
import typing
from pathlib import Path

from tinydb import TinyDB

from engine.errors import CorruptFile, UserError, os_error_line
from engine.store.files import atomic_write_bytes, atomic_write_text, dumps, load_json, open_db, table, write_json
from engine.store.records import (
    ConfigRecord,
    EpochRecord,
    EvalRecord,
    Meta,
    MetricRecord,
    RuntimeRecord,
    Shape,
    Status,
    effective,
    hint_for,
    table_records,
)
from engine.store.states import transition

CONFIG = "config.json"
CONFIG_COPY = ".config.json.orig"
STATUS = "status.json"
METRICS = "metrics.json"
LOG = "log.txt"
CHECKPOINTS = "checkpoints"
SUBMITIT = "submitit"
META = "meta.json"
RUNTIME = "runtime.json"

RUN_FILES = (CONFIG, CONFIG_COPY, STATUS, METRICS, RUNTIME, META, LOG)
"""The files that make a folder of runs/ a run's, even when config.json is lost."""

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""What a run id looks like (advlc makes 8 hex digits; no '/', '.', or anything a path needs)."""


def valid_run_id(ref: str) -> str:
    """`ref` when it can be a run id (or an id prefix); a one-line UserError when it is a path or worse."""
    if not RUN_ID.match(ref or ""):
        what = "a path" if ("/" in ref or ref.startswith(".") or "\\" in ref) else "not a run id"
        raise UserError(f"run id {ref!r} is {what}: run ids are letters, digits, '-' and '_' (see `advlc runs`)")
    return ref


class RunDir:
    """Accessors for one run directory. Cheap to construct; reads lazily."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.id = self.path.name

    # -- paths -----------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def status_path(self) -> Path:
        return self.path / STATUS

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def ckpt_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def meta_path(self) -> Path:
        return self.path / META

    @property
    def submitit_dir(self) -> Path:
        return self.path / SUBMITIT

    def ckpt(self, name: str) -> Path:
        """checkpoints/<name>.pt (name: last, best, swa_best, swa_end)."""
        return self.ckpt_dir / f"{name}.pt"

    def checkpoints(self) -> list[str]:
        """The names of the checkpoints that exist, sorted."""
        return sorted(p.stem for p in self.ckpt_dir.glob("*.pt")) if self.ckpt_dir.exists() else []

    def exists(self) -> bool:
        """Whether this is a run's folder: it holds config.json or, config.json lost, another file of
        a run (listed then as corrupt, never hidden). A folder whose making was interrupted before
        its config.json holds none of them."""
        return self.config_path.exists() or (
            self.path.is_dir()
            and (any((self.path / name).exists() for name in RUN_FILES) or any(self.path.glob(f"{CONFIG}.corrupt-*")))
        )

    def _load(self, path: Path, name: str):
        data = load_json(path, hint_for(path))
        if data is not None and not isinstance(data, dict):
            raise CorruptFile(path, "does not hold a JSON object", hint_for(path))
        return data

    def _parse(self, cls, path: Path, name: str):
        data = self._load(path, name)
        try:
            return cls.from_json(data if data is not None else {}, "")
        except Shape as exc:
            raise CorruptFile(path, f"has a wrong value: {exc}", hint_for(path)) from None

    # -- config ----------------------------------------------------------------------
    @property
    def config_copy_path(self) -> Path:
        return self.path / CONFIG_COPY

    def written_config(self) -> ConfigRecord:
        """config.json as written at creation (CorruptFile when missing, damaged or of the wrong shape)."""
        if not self.config_path.exists():
            raise CorruptFile(self.config_path, "is missing", hint_for(self.config_path))
        return self._parse(ConfigRecord, self.config_path, CONFIG)

    def config_copy(self) -> bytes | None:
        """The bytes of .config.json.orig when it reads as a config.json; None when missing or not."""
        try:
            data = self.config_copy_path.read_bytes()
            ConfigRecord.from_json(json.loads(data.decode("utf-8")) or None, "")
            return data
        except (OSError, ValueError, Shape):
            return None

    def keep_config_copy(self) -> bool:
        """Write .config.json.orig from config.json when it is missing or unreadable and config.json
        reads well (what `advlc repair` rebuilds config.json from); True when written."""
        if self.config_copy() is not None:
            return False
        try:
            data = self.config_path.read_bytes()
            self.written_config()
        except (OSError, CorruptFile):
            return False
        atomic_write_bytes(self.config_copy_path, data)
        return True

    def config(self) -> ConfigRecord:
        """The run's config as it ran: config.json with runtime.json laid over it (an experiment's
        source sections, a retargeted device, the latest start's provenance)."""
        return effective(self.written_config(), self.runtime() if self.runtime_path.exists() else None)

    def config_json(self) -> dict:
        """`config()` as config.json's JSON (what engine.config.schema.from_json reads)."""
        return self.config().to_json()

    def create(self, config: dict | ConfigRecord, **status) -> None:
        """Make the directory of a new run: config.json (its one and only write) and its copy
        .config.json.orig, then status `queued` (with `status` fields). A failure (a full disk,
        say) removes what was made, so no half-made run directory is left."""
        record = config if isinstance(config, ConfigRecord) else ConfigRecord.from_json(config, "config")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=False)
        try:
            self.ckpt_dir.mkdir(mode=0o700)
            data = dumps(record.to_json()).encode()
            atomic_write_bytes(self.config_path, data)
            atomic_write_bytes(self.config_copy_path, data)
            transition(self, "queued", created=time.time(), **status)
        except BaseException:
            _remove_tree(self.path)
            raise

    # -- runtime: what the run learns when it runs --------------------------------------
    @property
    def runtime_path(self) -> Path:
        return self.path / RUNTIME

    def runtime(self) -> RuntimeRecord:
        """runtime.json (empty when missing; CorruptFile when damaged)."""
        return self._parse(RuntimeRecord, self.runtime_path, RUNTIME)

    def update_runtime(self, **changes) -> RuntimeRecord:
        """Change fields of runtime.json (only the run's own process and the launcher that
        starts it write it)."""
        rt = self.runtime().replace(**changes)
        write_json(self.runtime_path, rt.to_json())
        return rt

    def add_start(self, provenance: dict) -> RuntimeRecord:
        """Record the provenance of one start of the run process."""
        rt = self.runtime()
        return self.update_runtime(starts=[p.to_json() for p in rt.starts] + [provenance])

    def check_writable(self) -> None:
        """A one-line error (exit 1) unless a file can be created here: before work whose result
        this directory must keep (an evaluation, an experiment)."""
        try:
            fd, tmp = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=self.path)
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise UserError(f"run {self.id}: cannot store results: {os_error_line(exc, self.path)}", code=1) from None

    # -- meta: what people say about the run -------------------------------------------
    def meta(self) -> Meta:
        """meta.json: title, tags, note, archived (empty when there is none)."""
        return self._parse(Meta, self.meta_path, META)

    def write_meta(self, meta: Meta) -> None:
        """Replace meta.json (callers hold the store's lock: engine.store.index.Store.annotate)."""
        write_json(self.meta_path, meta.to_json())

    # -- status ----------------------------------------------------------------------
    def status(self) -> Status:
        """status.json (a fresh `Status` when missing; CorruptFile when damaged)."""
        return self._parse(Status, self.status_path, STATUS)

    def update_status(self, **fields) -> Status:
        """Merge progress fields (heartbeat, epoch, batch, pid, launch, ...) into status.json.

        The state itself changes only through engine.store.states.transition."""
        if "state" in fields:
            raise ValueError("update_status cannot change the state: use engine.store.states.transition")
        return self._merge_status(fields)

    def _merge_status(self, fields: dict, check=None) -> Status:
        """Read status.json, let `check(status)` veto, merge `fields`, write atomically."""
        st = self.status()
        if check is not None:
            check(st)
        st = st.replace(**fields)
        text = dumps(st.to_json())
        try:
            atomic_write_text(self.status_path, text)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or "state" not in fields or not self.status_path.exists():
                raise
            _rewrite_in_place(self.status_path, text)
        return st

    # -- metrics ---------------------------------------------------------------------
    def metrics_db(self) -> TinyDB:
        """metrics.json as a TinyDB (only the run's own process writes it)."""
        return open_db(self.metrics_path)

    def metrics_table(self, name: str):
        return table(self.metrics_db(), name)

    def metrics(self) -> dict[str, list[MetricRecord]]:
        """Every table of metrics.json, parsed and checked once: {"epochs": [...], "swa": [...], ...}."""
        data = self._load(self.metrics_path, METRICS) or {}
        return {name: table_records(data, name, self.metrics_path) for name in data}

    def records(self, table_name: str = "epochs") -> list[MetricRecord]:
        return table_records(self._load(self.metrics_path, METRICS), table_name, self.metrics_path)

    def epochs(self) -> list[EpochRecord]:
        return typing.cast("list[EpochRecord]", self.records("epochs"))  # TABLE_RECORDS reads them so

    def evals(self) -> list[EvalRecord]:
        return typing.cast("list[EvalRecord]", self.records("evals"))

    # -- log -------------------------------------------------------------------------
    def open_log(self) -> int:
        """A file descriptor of log.txt opened for appending (created 0600), never through a link.

        advlc writes only regular files in a run's folder: a log.txt that is a symbolic link (to
        a file outside the store, in a store copied from elsewhere, say) or not a regular file (a
        FIFO) is first replaced by a new, empty regular file, whose first line says so; what the
        link led to is left as it was, never written or read. A log.txt that is a directory is
        a one-line error."""
        replaced = self._own_log()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(self.log_path, flags, 0o600)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # swapped since it was looked at
                raise UserError(
                    f"{self.log_path}: is not a regular file of this run's: left as it is, nothing written to it",
                    code=1,
                )
            if hasattr(os, "O_NONBLOCK"):
                os.set_blocking(fd, True)
            if replaced:
                os.write(
                    fd,
                    (
                        f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} advlc: log.txt was {replaced}; it is now a "
                        f"regular file of this run's, and what it led to was left as it was\n"
                    ).encode(),
                )
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _own_log(self) -> str | None:
        """Replace log.txt by a regular file of its own when it is not one (`open_log`); returns
        what it was, None when it needed nothing."""
        path = self.log_path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISREG(st.st_mode):
            return None
        if stat.S_ISDIR(st.st_mode):
            raise UserError(
                f"{path}: is a directory, not the run's log: remove or rename it (advlc writes the log there)", code=1
            )
        what = f"a symbolic link to {os.readlink(path)!r}" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        atomic_write_bytes(path, b"")  # os.replace: the link itself is replaced, never what it leads to
        return what

    def append_log(self, line: str) -> None:
        """Append one line to log.txt (`open_log`: never through a link)."""
        with os.fdopen(self.open_log(), "ab") as log:
            log.write((line.rstrip("\n") + "\n").encode())

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last `lines` lines of log.txt; none when it is missing or not a regular file of the
        run's own (a link is never followed: what it leads to is not the run's)."""
        try:
            fd = os.open(self.log_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return []
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return []
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
        return text.splitlines()[-lines:]


def run_folders(runs_dir: Path) -> list[RunDir]:
    """The run folders of a store's runs/, sorted by id: named as a run id, not a symlink, holding
    a run's files (`RunDir.exists`: a run whose config.json is lost is one, listed as corrupt)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return [
        RunDir(p)
        for p in sorted(runs_dir.iterdir())
        if RUN_ID.match(p.name) and not p.is_symlink() and RunDir(p).exists()
    ]


def _rewrite_in_place(path: Path, text: str) -> None:
    """Overwrite a small file within the blocks it already has: how a run still writes its final
    state on a full disk, where the temporary file of an atomic write cannot be created."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:
    for p in sorted(path.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        (p.rmdir if p.is_dir() and not p.is_symlink() else p.unlink)()
    path.rmdir()
