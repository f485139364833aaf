"""The run store: `$ADVLC_HOME` with one directory per run and a TinyDB index of all runs.

Rules:
- each run's `metrics.json` has one writer, the run's own process;
- `index.json` (one document per run: a summary for list views) is written only here,
  under a file lock, with atomic replace; readers take no lock and never see a partial file;
- the index is derived data: `reindex()` rebuilds it from the run directories.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from filelock import FileLock
from tinydb import Query

from engine.errors import UserError
from engine.paths import default_home
from engine.store.files import open_db, read_json, table, table_rows
from engine.store.rundir import CONFIG, RunDir
from engine.store.summary import summarize

INDEX = "index.json"
INDEX_TABLE = "runs"
RUNS = "runs"


class Store:
    """A run store rooted at `home` (created on first use, user-only)."""

    def __init__(self, home: Path | str | None = None):
        self.home = Path(home).expanduser() if home else default_home()
        self.runs_dir = self.home / RUNS
        self.index_path = self.home / INDEX
        self._lock = FileLock(str(self.home / (INDEX + ".lock")), timeout=60)

    @classmethod
    def containing(cls, rd: RunDir) -> "Store":
        """The store a run directory belongs to (HOME/runs/<id> -> HOME)."""
        return cls(rd.path.parent.parent)

    def ensure(self) -> "Store":
        self.runs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self

    # -- runs --------------------------------------------------------------------------
    def new_run_id(self) -> str:
        while True:
            rid = secrets.token_hex(4)
            if not (self.runs_dir / rid).exists():
                return rid

    def run_dir(self, run_id: str) -> RunDir:
        """The directory of run `run_id` (which may not exist yet)."""
        return RunDir(self.runs_dir / run_id)

    def create_run(self, config: dict) -> RunDir:
        """Create the directory of a new run from its full config.json content."""
        self.ensure()
        rid = config["run"]["id"] if config.get("run", {}).get("id") else self.new_run_id()
        config.setdefault("run", {})["id"] = rid
        rd = self.run_dir(rid)
        rd.create(config)
        self.sync(rd)
        return rd

    def run_dirs(self) -> list[RunDir]:
        if not self.runs_dir.exists():
            return []
        return [RunDir(p) for p in sorted(self.runs_dir.iterdir()) if (p / CONFIG).exists()]

    def get(self, ref: str) -> RunDir:
        """Resolve a run id or unique id prefix."""
        ref = ref.strip()
        if not ref:
            raise UserError("run id is empty")
        exact = self.run_dir(ref)
        if exact.exists():
            return exact
        matches = [rd for rd in self.run_dirs() if rd.id.startswith(ref)]
        if not matches:
            raise UserError(f"no run '{ref}' in {self.runs_dir} (see `advlc runs`)")
        if len(matches) > 1:
            ids = ", ".join(rd.id for rd in matches[:5])
            raise UserError(f"run id '{ref}' is ambiguous: {ids}{'…' if len(matches) > 5 else ''}")
        return matches[0]

    def delete(self, rd: RunDir) -> None:
        self.prune([rd.id])
        shutil.rmtree(rd.path, ignore_errors=True)

    # -- index -------------------------------------------------------------------------
    def sync(self, rd: RunDir, doc: dict | None = None) -> dict:
        """Write the run's summary into the index (under the lock, atomically)."""
        self.ensure()
        with self._lock:  # summarise under the lock, so a slower writer never upserts an older summary
            doc = doc if doc is not None else summarize(rd)
            table(open_db(self.index_path), INDEX_TABLE).upsert(doc, Query().id == doc["id"])
        return doc

    def sync_many(self, rds: list[RunDir]) -> None:
        """`sync` for several runs, under one lock and one write."""
        if not rds:
            return
        self.ensure()
        with self._lock:
            t = table(open_db(self.index_path), INDEX_TABLE)
            q = Query()
            for rd in rds:
                doc = summarize(rd)
                t.upsert(doc, q.id == doc["id"])

    def prune(self, run_ids: list[str]) -> None:
        """Remove the index rows of these runs."""
        if not run_ids:
            return
        with self._lock:
            table(open_db(self.index_path), INDEX_TABLE).remove(Query().id.one_of(list(run_ids)))

    def index(self) -> list[dict]:
        """All index documents (no lock: the file is replaced atomically)."""
        return table_rows(read_json(self.index_path, {}), INDEX_TABLE)

    def reindex(self) -> int:
        """Rebuild index.json from the run directories; returns the number of runs."""
        self.ensure()
        docs = [summarize(rd) for rd in self.run_dirs()]
        with self._lock:
            t = table(open_db(self.index_path), INDEX_TABLE)
            t.truncate()
            t.insert_multiple(docs)
        return len(docs)

    def runs(self, *, state: str | None = None, preset: str | None = None, group: str | None = None) -> list[dict]:
        rows = self.index()
        if state:
            rows = [r for r in rows if r.get("state") == state]
        if preset:
            rows = [r for r in rows if r.get("preset") == preset or (r.get("preset") or "").startswith(preset.rstrip("/") + "/")]
        if group:
            rows = [r for r in rows if r.get("group") == group]
        return sorted(rows, key=lambda r: (r.get("created") or 0, r["id"]))
