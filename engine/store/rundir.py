"""The on-disk format of one run: `$ADVLC_HOME/runs/<run-id>/`.

    config.json     resolved RunConfig sections + "run" (id, preset, seed, group, created)
                    + "provenance" (code commit and dirty-diff hash, versions, device, host)
    status.json     state, pid + process start time, heartbeat, epoch/batch progress, error
    metrics.json    TinyDB written only by this run's process: tables `epochs`, `evals`, `swa`
    checkpoints/    last.pt, best.pt (+ swa_*.pt)
    log.txt         stdout/stderr of a detached run

Every JSON file is written to a temporary file and `os.replace`d, so a reader or a crash
sees the old or the new file, never half of one. Directories are user-only (0700).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from tinydb import TinyDB
from tinydb.storages import Storage

STATES = ("queued", "running", "finished", "failed", "stopped", "lost")
FINAL_STATES = ("finished", "failed", "stopped", "lost")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file in the same folder and os.replace."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False, default=_json_default))


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path, default=None):
    """Read a JSON file; a missing or unparsable file gives `default`."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
        return default


class AtomicJSONStorage(Storage):
    """TinyDB storage that never leaves a partial file: whole-file atomic replace.

    TinyDB rewrites the whole file on every write anyway; this makes each rewrite atomic.
    """

    def __init__(self, path, create_dirs: bool = False, **_):
        self.path = Path(path)
        if create_dirs:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def read(self):
        data = read_json(self.path)
        return data if isinstance(data, dict) else None

    def write(self, data):
        write_json(self.path, data)

    def close(self):
        pass


def open_db(path: Path) -> TinyDB:
    """A TinyDB on atomic storage with the query cache off (other processes write too)."""
    db = TinyDB(path, storage=AtomicJSONStorage)
    db.default_table_name = "_default"
    return db


def table(db: TinyDB, name: str):
    return db.table(name, cache_size=0)


class RunDir:
    """Accessors for one run directory. Cheap to construct; reads lazily."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.id = self.path.name

    # -- paths -----------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

    @property
    def ckpt_dir(self) -> Path:
        return self.path / "checkpoints"

    def ckpt(self, name: str) -> Path:
        return self.ckpt_dir / f"{name}.pt"

    def exists(self) -> bool:
        return self.config_path.exists()

    # -- config ----------------------------------------------------------------------
    def config(self) -> dict:
        return read_json(self.config_path, {}) or {}

    def run_config(self):
        from engine.config.schema import from_json

        return from_json(self.config())

    def create(self, config: dict) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=False)
        self.ckpt_dir.mkdir(mode=0o700)
        write_json(self.config_path, config)
        self.write_status(state="queued", created=time.time())

    # -- status ----------------------------------------------------------------------
    def status(self) -> dict:
        return read_json(self.status_path, {}) or {}

    def write_status(self, **updates) -> dict:
        """Merge `updates` into status.json (only this run's process and the supervisor write it)."""
        st = self.status()
        st.update(updates)
        write_json(self.status_path, st)
        return st

    # -- metrics ---------------------------------------------------------------------
    def metrics_db(self) -> TinyDB:
        return open_db(self.metrics_path)

    def records(self, table_name: str = "epochs") -> list[dict]:
        data = read_json(self.metrics_path, {}) or {}
        rows = data.get(table_name, {})
        return [rows[k] for k in sorted(rows, key=int)]

    def epochs(self) -> list[dict]:
        return self.records("epochs")

    def evals(self) -> list[dict]:
        return self.records("evals")

    def log_tail(self, lines: int = 20) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        return text.splitlines()[-lines:]
