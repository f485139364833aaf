"""Files that never tear: atomic JSON writes, reads that tell missing from corrupt, TinyDB on atomic storage.

Every JSON file of the store is written to a temporary file in the same folder (mode 0600),
flushed, fsynced and `os.replace`d over the old one, so a reader or a crash sees the old or
the new file, never half of one. `load_json` is the one place that reads them: a missing
file is None, a file that is there but does not parse is a `CorruptFile` error naming it and
what to do, and the TinyDB storage refuses to write over a corrupt file (a command that would
add a record to a truncated metrics.json stops instead of replacing the old records).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from tinydb import TinyDB
from tinydb.storages import Storage

from engine.errors import CorruptFile

TMP_SUFFIX = ".tmp"
"""What a half-written temporary file of a killed writer is called (`.<name>.<random>.tmp`)."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file in the same folder and os.replace."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and os.replace."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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


def dumps(data) -> str:
    return json.dumps(data, indent=1, sort_keys=False, default=_json_default)


def write_json(path: Path, data) -> None:
    atomic_write_text(path, dumps(data))


def load_json(path: Path, hint: str = "restore it from a backup"):
    """The parsed JSON of `path`; None when the file does not exist; CorruptFile when it exists
    but is not JSON (truncated, binary, not UTF-8), with `hint` saying what to do."""
    try:
        raw = Path(path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        raise CorruptFile(path, "is a directory, not a file", hint) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CorruptFile(path, "is not UTF-8 text (corrupt)", hint) from None
    except json.JSONDecodeError as exc:
        what = "is empty" if not raw.strip() else f"is not valid JSON ({exc.msg} at byte {exc.pos} of {len(raw)})"
        raise CorruptFile(path, what + " — truncated or damaged", hint) from None


def read_json(path: Path, default=None):
    """Tolerant read for watchers that poll and retry: a missing or unreadable file gives `default`."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def table_rows(data, name: str) -> list[dict]:
    """The documents of TinyDB table `name` in a parsed TinyDB file, in insertion order."""
    rows = (data or {}).get(name, {}) or {}
    return [rows[k] for k in sorted(rows, key=int)]


def move_aside(path: Path) -> Path:
    """Rename a damaged file out of the way (`<name>.corrupt-<time>`), keeping it; returns the new path."""
    path = Path(path)
    dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, dest)
    return dest


def copy_aside(path: Path) -> Path:
    """Keep a copy of a damaged file (`<name>.corrupt-<time>`) before it is replaced atomically:
    unlike moving it aside, the run's file is never missing, whenever the process is killed."""
    path = Path(path)
    dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    atomic_write_bytes(dest, path.read_bytes())
    return dest


class AtomicJSONStorage(Storage):
    """TinyDB storage that never leaves a partial file and never writes over a corrupt one."""

    hint = "run `advlc repair` on this run (it moves the file aside and keeps what can be read)"

    def __init__(self, path, create_dirs: bool = False, **_):
        self.path = Path(path)
        if create_dirs:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def read(self):
        data = load_json(self.path, self.hint)
        if data is not None and not isinstance(data, dict):
            raise CorruptFile(self.path, "does not hold TinyDB tables", self.hint)
        return data

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
