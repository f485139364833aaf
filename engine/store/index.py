"""The run store: `$ADVLC_HOME` with one directory per run and a TinyDB index of all runs.

Rules (DESIGN.md, Store):
- each run's `metrics.json` has one writer, the run's own process;
- `index.json` (one document per run: a summary for list views) is written only here,
  under a file lock, with atomic replace; readers take no lock and never see a partial file;
- the index is derived data: `reindex()` rebuilds it from the run directories.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from filelock import FileLock
from tinydb import Query

from engine.errors import UserError
from engine.store.rundir import RunDir, open_db, read_json, table

INDEX_TABLE = "runs"


def default_home() -> Path:
    env = os.environ.get("ADVLC_HOME")
    return Path(env).expanduser() if env else Path.home() / ".advlc"


def summarize(rd: RunDir) -> dict:
    """The index document of a run, computed from its directory alone."""
    cfg = rd.config()
    run = cfg.get("run", {})
    st = rd.status()
    from engine.report.tables import best_and_end

    epochs = rd.epochs()
    best, last = best_and_end(epochs)
    method = cfg.get("method", {}).get("name")
    attack = cfg.get("attack", {}).get("name")
    doc = {
        "id": rd.id,
        "preset": run.get("preset"),
        "label": run.get("label"),
        "method": method,
        "attack": attack,
        "dataset": cfg.get("data", {}).get("dataset"),
        "arch": cfg.get("model", {}).get("arch"),
        "seed": run.get("seed"),
        "group": run.get("group"),
        "created": run.get("created"),
        "state": st.get("state", "queued"),
        "epoch": len(epochs),
        "epochs": cfg.get("train", {}).get("epochs"),
        "best_epoch": best["epoch"] if best else None,
        "best_robust_acc": best["robust_acc"] if best else None,
        "best_clean_acc": best["clean_acc"] if best else None,
        "end_robust_acc": last["robust_acc"] if last else None,
        "end_clean_acc": last["clean_acc"] if last else None,
        "ig": last.get("ig") if last else None,
        "hs": next((e["hs"] for e in reversed(epochs) if e.get("hs") is not None), None),
        "epoch_time_s": epochs[-1].get("time_s") if epochs else None,
        "updated": st.get("heartbeat") or st.get("created"),
        "error": st.get("error"),
        "path": str(rd.path),
    }
    # the SWA model's own records (table `swa`, same keys), when the run averages weights
    swa_all = rd.records("swa")
    swa_best, swa_last = best_and_end(swa_all)
    doc.update({
        "swa_best_epoch": swa_best["epoch"] if swa_best else None,
        "swa_best_robust_acc": swa_best["robust_acc"] if swa_best else None,
        "swa_best_clean_acc": swa_best["clean_acc"] if swa_best else None,
        "swa_end_robust_acc": swa_last["robust_acc"] if swa_last else None,
        "swa_end_clean_acc": swa_last["clean_acc"] if swa_last else None,
        "swa_ig": swa_last.get("ig") if swa_last else None,
        "swa_hs": next((e["hs"] for e in reversed(swa_all) if e.get("hs") is not None), None),
    })
    return doc


class Store:
    """A run store rooted at `home` (created on first use, user-only)."""

    def __init__(self, home: Path | str | None = None):
        self.home = Path(home).expanduser() if home else default_home()
        self.runs_dir = self.home / "runs"
        self.index_path = self.home / "index.json"
        self._lock = FileLock(str(self.home / "index.json.lock"), timeout=60)

    def ensure(self) -> "Store":
        self.runs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self

    # -- runs --------------------------------------------------------------------------
    def new_run_id(self) -> str:
        while True:
            rid = secrets.token_hex(4)
            if not (self.runs_dir / rid).exists():
                return rid

    def create_run(self, config: dict) -> RunDir:
        """Create the directory of a new run from its full config.json content."""
        self.ensure()
        rid = config["run"]["id"] if config.get("run", {}).get("id") else self.new_run_id()
        config.setdefault("run", {})["id"] = rid
        rd = RunDir(self.runs_dir / rid)
        rd.create(config)
        self.sync(rd)
        return rd

    def run_dirs(self) -> list[RunDir]:
        if not self.runs_dir.exists():
            return []
        return [RunDir(p) for p in sorted(self.runs_dir.iterdir()) if (p / "config.json").exists()]

    def get(self, ref: str) -> RunDir:
        """Resolve a run id or unique id prefix."""
        ref = ref.strip()
        if not ref:
            raise UserError("run id is empty")
        exact = self.runs_dir / ref
        if (exact / "config.json").exists():
            return RunDir(exact)
        matches = [rd for rd in self.run_dirs() if rd.id.startswith(ref)]
        if not matches:
            raise UserError(f"no run '{ref}' in {self.runs_dir} (see `advlc runs`)")
        if len(matches) > 1:
            ids = ", ".join(rd.id for rd in matches[:5])
            raise UserError(f"run id '{ref}' is ambiguous: {ids}{'…' if len(matches) > 5 else ''}")
        return matches[0]

    def delete(self, rd: RunDir) -> None:
        with self._lock:
            db = open_db(self.index_path)
            table(db, INDEX_TABLE).remove(Query().id == rd.id)
        shutil.rmtree(rd.path, ignore_errors=True)

    # -- index -------------------------------------------------------------------------
    def sync(self, rd: RunDir, doc: dict | None = None) -> dict:
        """Write the run's summary into the index (under the lock, atomically)."""
        self.ensure()
        with self._lock:  # summarise under the lock, so a slower writer never upserts an older summary
            doc = doc if doc is not None else summarize(rd)
            db = open_db(self.index_path)
            table(db, INDEX_TABLE).upsert(doc, Query().id == doc["id"])
        return doc

    def sync_many(self, docs: list[dict]) -> None:
        if not docs:
            return
        self.ensure()
        with self._lock:
            db = open_db(self.index_path)
            t = table(db, INDEX_TABLE)
            q = Query()
            for doc in docs:
                t.upsert(doc, q.id == doc["id"])

    def index(self) -> list[dict]:
        """All index documents (no lock: the file is replaced atomically)."""
        data = read_json(self.index_path, {}) or {}
        rows = data.get(INDEX_TABLE, {})
        return [rows[k] for k in sorted(rows, key=int)]

    def reindex(self) -> int:
        """Rebuild index.json from the run directories; returns the number of runs."""
        self.ensure()
        docs = [summarize(rd) for rd in self.run_dirs()]
        with self._lock:
            db = open_db(self.index_path)
            t = table(db, INDEX_TABLE)
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
