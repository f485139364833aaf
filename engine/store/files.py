"""Files that never tear: atomic JSON writes, reads that tell missing from corrupt, TinyDB on atomic storage.

Every JSON file of the store is written to a temporary file in the same folder (mode 0600),
flushed, fsynced and `os.replace`d over the old one, so a reader or a crash sees the old or
the new file, never half of one. `load_json` is the one place that reads them: a missing
file is None, a file that is there but does not parse is a `CorruptFile` error naming it and
what to do, and the TinyDB storage refuses to write over a corrupt file (a command that would
add a record to a truncated metrics.json stops instead of replacing the old records).
A damaged file that is rebuilt (`advlc repair`) goes through `replace_keeping_aside`: the
replacement is written first, the damaged file gets a second name `<name>.corrupt-<time>` (a hard
link: no data to write), then the replacement takes the name; so the name is never empty and no
damaged file is ever lost or written over.
"""

from __future__ import annotations

import errno
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
    _write_then_replace(Path(path), data)


def _write_then_replace(path: Path, data: bytes, before_replace=None):
    """`data` written and synced to a temporary file beside `path` (`.<name>.*.tmp`, swept when a
    writer was killed), `before_replace()` called, then the file renamed over `path`: a reader or a
    crash sees the old file or the new one. The temporary file is removed on any failure; returns
    what `before_replace` returned."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        result = before_replace() if before_replace is not None else None
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return result


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


ASIDE = ".corrupt-"
"""What a damaged file kept aside is called: `<name>.corrupt-<time>` (`-<n>` added when taken)."""


def _aside_names(path: Path):
    """`<name>.corrupt-<time>`, then `<name>.corrupt-<time>-1`, `-2`, ...: a new name each, so an
    earlier damaged copy is never written over."""
    base = path.with_name(f"{path.name}{ASIDE}{time.strftime('%Y%m%d-%H%M%S')}")
    yield base
    n = 1
    while True:
        yield base.with_name(f"{base.name}-{n}")
        n += 1


_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}
"""What a file system without hard links answers to os.link."""


def _link_aside(path: Path) -> Path:
    """A second name for the damaged file `path` (a hard link: no data written, so it works on a
    full disk, and the file under its own name is untouched); a copy where links are not
    supported. A name that already links to it is reused (a repair killed midway, run again)."""
    for old in path.parent.glob(f"{_glob_escape(path.name)}{ASIDE}*"):
        try:
            if os.path.samefile(old, path):
                return old
        except OSError:
            pass
    for dest in _aside_names(path):
        try:
            os.link(path, dest)
            return dest
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
        if not dest.exists():  # a file system without hard links: a copy
            atomic_write_bytes(dest, path.read_bytes())
            return dest
    raise AssertionError("unreachable")


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def replace_keeping_aside(path: Path, data: bytes) -> Path | None:
    """Replace a damaged file by `data`, keeping the damaged one as `<name>.corrupt-<time>`;
    returns that name (None when there was no file). In this order: the replacement is written
    to a temporary file and synced, the damaged file gets its second name, then the replacement
    is renamed over the first. Killed or refused (a full disk) at any step, the name holds the
    damaged file or its replacement, never nothing, and the damaged file is never lost."""
    path = Path(path)
    return _write_then_replace(path, data, lambda: _link_aside(path) if os.path.lexists(path) else None)


def move_aside(path: Path) -> Path:
    """Take a damaged file out of the way under a new name (`<name>.corrupt-<time>`), keeping it;
    returns the new name. The file gets its new name before it loses the old one: killed
    between the two, it has both, never neither. For a file that must stay under its name (a
    store file that is rebuilt), use `replace_keeping_aside`."""
    path = Path(path)
    dest = _link_aside(path)
    os.unlink(path)
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
