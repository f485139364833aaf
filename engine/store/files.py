"""Files that never tear: atomic JSON writes, tolerant reads, and TinyDB on atomic storage.

Every JSON file of the store is written to a temporary file in the same folder, flushed,
fsynced and `os.replace`d over the old one, so a reader or a crash sees the old or the new
file, never half of one. TinyDB rewrites its whole file on every write anyway; the storage
class below makes each rewrite atomic, and readers turn its query cache off because other
processes write too.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tinydb import TinyDB
from tinydb.storages import Storage


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


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False, default=_json_default))


def read_json(path: Path, default=None):
    """Read a JSON file; a missing or unparsable file gives `default`."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
        return default


def table_rows(data, name: str) -> list[dict]:
    """The documents of TinyDB table `name` in a parsed TinyDB file, in insertion order."""
    rows = (data or {}).get(name, {}) or {}
    return [rows[k] for k in sorted(rows, key=int)]


class AtomicJSONStorage(Storage):
    """TinyDB storage that never leaves a partial file: whole-file atomic replace."""

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
    """A TinyDB on atomic storage."""
    db = TinyDB(path, storage=AtomicJSONStorage)
    db.default_table_name = "_default"
    return db


def table(db: TinyDB, name: str):
    """Table `name` of `db` with the query cache off (other processes write the file too)."""
    return db.table(name, cache_size=0)
