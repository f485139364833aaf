"""The run store: `$ADVLC_HOME` with one directory per run and a TinyDB index of all runs.

Rules:
- each run's `metrics.json` has one writer, the run's own process;
- `index.json` (one document per run: a summary for list views) is written only here,
  under a file lock, with atomic replace; readers take no lock and never see a partial file;
- the index is derived data: `reindex()` rebuilds it from the run directories, and a reader
  that finds it corrupt rebuilds it (the damaged copy is kept beside it);
- run ids are resolved only inside `$ADVLC_HOME/runs`: a path, `..` or a symlink that leads out
  is refused in one line.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
import typing
from collections.abc import Mapping
from pathlib import Path

from filelock import FileLock
from tinydb import Query

from engine.errors import CorruptFile, UserError, os_error_line
from engine.paths import default_home
from engine.printable import has_control, printable
from engine.store.files import (
    TMP_SUFFIX,
    load_json,
    move_aside,
    open_db,
    table,
)
from engine.store.records import IndexRow, Meta, Shape, hint_for, table_records
from engine.store.rundir import RunDir, run_folders, valid_run_id
from engine.store.summary import INDEX_VERSION, summarize

INDEX = "index.json"
INDEX_TABLE = "runs"
RUNS = "runs"


class Store:
    """A run store rooted at `home` (created on first use, user-only)."""

    def __init__(self, home: Path | str | None = None):
        self.home = Path(home).expanduser() if home else default_home()
        self.runs_dir = self.home / RUNS
        self.index_path = self.home / INDEX
        self._lock = FileLock(str(self.home / (INDEX + ".lock")), timeout=60, mode=0o600)
        self.repaired: str | None = None
        """Set when a read found index.json corrupt and rebuilt it: where the damaged copy went."""

    @classmethod
    def containing(cls, rd: RunDir) -> "Store":
        """The store a run directory belongs to (HOME/runs/<id> -> HOME)."""
        return cls(rd.path.parent.parent)

    def ensure(self) -> "Store":
        """Create the store when missing: $ADVLC_HOME and runs/ user-only (0700)."""
        if not self.runs_dir.is_dir():
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.runs_dir.mkdir(mode=0o700, exist_ok=True)
        return self

    # -- runs --------------------------------------------------------------------------
    def new_run_id(self) -> str:
        while True:
            rid = secrets.token_hex(4)
            if not (self.runs_dir / rid).exists():
                return rid

    def run_dir(self, run_id: str) -> RunDir:
        """The directory of run `run_id` (which may not exist yet); a UserError when the id is a path."""
        return RunDir(self.runs_dir / valid_run_id(run_id))

    def create_run(self, config: dict, **status) -> RunDir:
        """Create the directory of a new run from its full config.json content (and first status fields)."""
        self.ensure()
        run = config.setdefault("run", {})
        rid = run.get("id") or self.new_run_id()
        run["id"] = rid
        rd = self.run_dir(rid)
        rd.create(config, **status)
        self.sync(rd)
        return rd

    def sweep_temporary(self, older_than_s: float = 600.0) -> list[Path]:
        """Remove the temporary files of writers that were killed (atomic writes, checkpoint
        saves) once they are `older_than_s` old; returns what was removed."""
        gone = []
        cutoff = time.time() - older_than_s
        home = self.home.resolve()
        for depth in range(1, 5):  # home, leases/, runs/<id>/, runs/<id>/checkpoints/
            for p in self.home.glob("*/" * (depth - 1) + f"*{TMP_SUFFIX}"):
                try:
                    inside = p.resolve().is_relative_to(home)  # never through a symlink that leads out
                    if inside and p.is_file() and not p.is_symlink() and p.stat().st_mtime < cutoff:
                        p.unlink()
                        gone.append(p)
                except OSError:
                    pass
        return gone

    def check_writable(self) -> None:
        """A one-line error (exit 1) unless a file can be created in runs/: before work whose
        result must be stored."""
        try:
            self.ensure()
            fd, tmp = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=self.runs_dir)
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise UserError(f"cannot write to the run store: {os_error_line(exc, self.runs_dir)}", code=1) from None

    def run_dirs(self) -> list[RunDir]:
        return run_folders(self.runs_dir)

    def get(self, ref: str) -> RunDir:
        """Resolve a run id or unique id prefix, inside runs/ only."""
        ref = ref.strip()
        if not ref:
            raise UserError("run id is empty")
        exact = self.run_dir(ref)
        if exact.path.is_symlink() or (exact.path.exists() and exact.path.resolve().parent != self.runs_dir.resolve()):
            raise UserError(f"run {ref}: {exact.path} leads outside {self.runs_dir}; refusing to use it")
        if exact.exists():
            return exact
        matches = [rd for rd in self.run_dirs() if rd.id.startswith(ref) and not rd.path.is_symlink()]
        if not matches:
            raise UserError(f"no run '{ref}' in {self.runs_dir} (see `advlc runs`)")
        if len(matches) > 1:
            ids = ", ".join(rd.id for rd in matches[:5])
            raise UserError(f"run id '{ref}' is ambiguous: {ids}{'…' if len(matches) > 5 else ''}")
        return matches[0]

    def delete(self, rd: RunDir) -> None:
        """Remove a run: its directory is first renamed out of runs/ (one atomic step that a
        read-only or full disk refuses, leaving the run whole), then removed, then unindexed."""
        trash = self.runs_dir / f".deleting-{rd.id}-{secrets.token_hex(3)}"
        os.replace(rd.path, trash)
        shutil.rmtree(trash)
        self.prune([rd.id])

    # -- index -------------------------------------------------------------------------
    def sync(self, rd: RunDir, doc: Mapping | None = None) -> Mapping:
        """Write the run's summary into the index (under the lock, atomically)."""
        self.ensure()
        with self._lock:  # summarise under the lock, so a slower writer never upserts an older summary
            row: Mapping = doc if doc is not None else summarize(rd)
            self._write_index(lambda t: t.upsert(dict(row), Query().id == row["id"]))
        return row

    def sync_many(self, rds: list[RunDir]) -> None:
        """`sync` for several runs, under one lock and one write."""
        if not rds:
            return
        self.ensure()
        with self._lock:
            docs = [summarize(rd) for rd in rds]

            def upsert_all(t):
                for doc in docs:
                    t.upsert(dict(doc), Query().id == doc["id"])

            self._write_index(upsert_all)

    def prune(self, run_ids: list[str]) -> None:
        """Remove the index rows of these runs."""
        if not run_ids:
            return
        with self._lock:
            self._write_index(lambda t: t.remove(Query().id.one_of(list(run_ids))))

    def _write_index(self, change) -> None:
        """Apply `change(table)` to the index (the caller holds the lock); a corrupt or
        wrong-shaped index is rebuilt first rather than written over."""
        try:
            table_records(load_json(self.index_path), INDEX_TABLE, self.index_path, IndexRow)
            change(table(open_db(self.index_path), INDEX_TABLE))
        except CorruptFile:
            self.repair_index()
            change(table(open_db(self.index_path), INDEX_TABLE))

    def index(self) -> list[IndexRow]:
        """All index rows, checked (no lock: the file is replaced atomically). A corrupt or
        wrong-shaped index is rebuilt from the run directories, its damaged copy kept
        (`self.repaired` says where); an index of an older vocabulary is rebuilt in place."""

        def read(hint: str | None = None) -> list[IndexRow]:
            data = load_json(self.index_path, hint) if hint else load_json(self.index_path)
            rows = table_records(data, INDEX_TABLE, self.index_path, IndexRow)
            return typing.cast("list[IndexRow]", rows)

        try:
            rows = read(hint_for(self.index_path))
        except CorruptFile:
            self.repair_index()
            return read()
        if any(r.get("v") != INDEX_VERSION for r in rows):
            try:
                self.reindex()
            except OSError:  # a read-only store: summarise in memory
                return [summarize(rd) for rd in self.run_dirs()]
            return read()
        return rows

    def repair_index(self) -> int:
        """Move a corrupt or wrong-shaped index.json aside and rebuild it; returns the number of runs."""
        with self._lock:
            self._move_damaged_index()
        return self.reindex()

    def _move_damaged_index(self) -> None:
        """Move index.json aside when it does not parse or its rows have the wrong shape (caller holds the lock)."""
        try:
            table_records(load_json(self.index_path), INDEX_TABLE, self.index_path, IndexRow)
        except CorruptFile:
            self.repaired = str(move_aside(self.index_path))

    def reindex(self) -> int:
        """Rebuild index.json from the run directories; returns the number of runs. A corrupt
        index.json is moved aside first (the index is derived data)."""
        self.ensure()
        docs = [summarize(rd) for rd in self.run_dirs()]
        with self._lock:
            self._move_damaged_index()
            t = table(open_db(self.index_path), INDEX_TABLE)
            t.truncate()
            t.insert_multiple([d.to_json() for d in docs])
        return len(docs)

    def annotate(
        self,
        rd: RunDir,
        *,
        title: str | None = None,
        add_tags=(),
        remove_tags=(),
        note: str | None = None,
        archived: bool | None = None,
    ) -> Meta:
        """Change what people say about a run (meta.json) and its index row, under the store's lock.
        The run's own process never writes meta.json, so this is safe while it trains."""
        _refuse_controls(title=title, tags=list(add_tags), note=note)
        with self._lock:
            meta = rd.meta()
            changes: dict = {"updated": time.time()}
            if title is not None:
                changes["title"] = title.strip() or None
            tags = [t for t in meta.tags if t not in set(remove_tags)]
            changes["tags"] = tags + [t for t in dict.fromkeys(add_tags) if t not in tags]
            if note is not None:
                changes["note"] = note.rstrip() or None
            if archived is not None:
                changes["archived"] = archived
            try:
                meta = meta.replace(**changes)
            except Shape as exc:
                raise UserError(f"run {rd.id}: {exc}") from None
            rd.write_meta(meta)
            self.sync(rd)
        return meta

    def runs(
        self,
        *,
        state: str | None = None,
        preset: str | None = None,
        group: str | None = None,
        archived: bool | None = False,
    ) -> list[IndexRow]:
        """Index rows in creation order, filtered; `archived`: False hides archived runs (the
        default views), True lists only them, None both."""
        rows = self.index()
        if archived is not None:
            rows = [r for r in rows if bool(r.get("archived")) == archived]
        if state:
            rows = [r for r in rows if r.get("state") == state]
        if preset:
            rows = [
                r
                for r in rows
                if r.get("preset") == preset or (r.get("preset") or "").startswith(preset.rstrip("/") + "/")
            ]
        if group:
            rows = [r for r in rows if r.get("group") == group]
        return sorted(rows, key=lambda r: (r.get("created") or 0, r["id"]))


def _refuse_controls(*, title, tags, note) -> None:
    """Titles, tags and notes are shown in terminals and reports: no control characters in them
    (a note keeps its newlines and tabs)."""
    for what, text, multi in [("title", title, False), ("note", note, True)] + [("tag", t, False) for t in tags]:
        if isinstance(text, str) and has_control(text, multiline=multi):
            raise UserError(
                f"{what} {printable(text)!r}: control characters (escape sequences, direction "
                f"marks) are not allowed" + ("; newlines and tabs are" if multi else "")
            )
