"""The exceptions that reach a user as a single line, and how an OS error is said in one.

Anything the user can get wrong (a preset key, a data folder, a run id) raises `UserError`
with a message that names the file, the key, the value and what is allowed. The CLI prints
`advlc: <message>` and exits with `code`; it never shows a traceback for these. A full or
read-only disk and a permission problem are said by `os_error_line` in the same way.
"""

from __future__ import annotations

import errno
import os


class UserError(Exception):
    """A problem with the user's input, reported as one line."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class CorruptFile(UserError):
    """A store file that exists but cannot be read as what it should be. Nothing writes over it."""

    def __init__(self, path, detail: str, hint: str):
        super().__init__(f"{path}: {detail}; {hint}", code=1)
        self.path = path


DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EDQUOT: "the disk quota is exceeded",
}
"""The OS errors of a disk a run store lives on, in words."""


def os_error_line(exc: OSError, path=None) -> str:
    """One line for an OS error: the file that failed, what went wrong, and the errno's name.

    The file is the one the error names; when it names none (a write, flush or fsync that fails
    on a full disk: only opening and renaming name a file) or only the temporary file of an
    atomic write, it is `path` when the caller gives one, else the file advlc was writing
    (`failed_path`), so the line never says `?` for a file of the store."""
    where = failed_path(exc, path) or "?"
    code = exc.errno
    what = (DISK_ERRORS.get(code) if code is not None else None) or (exc.strerror or type(exc).__name__).lower()
    name = errno.errorcode.get(code, "") if code is not None else ""
    return f"{where}: {what}" + (f" ({name})" if name else "")


TEMPORARY_SUFFIX = ".tmp"
"""How the temporary file of an atomic write ends (`.status.json.<random>.tmp`, `last.pt.tmp`)."""
WRITERS = "engine."
"""advlc's own modules: by convention, each writer of the store names the file it writes `path`
(`files.atomic_write_bytes(path, ...)`, `checkpoints.save(obj, path)`, `write_json(path, ...)`)."""


def _named(value) -> str | None:
    if isinstance(value, (str, bytes, os.PathLike)):
        return os.fsdecode(value)
    return None if value is None else str(value)


def failed_path(exc: BaseException, path=None) -> str | None:
    """The file an OS error is about: `exc.filename`, unless it is missing or an atomic write's
    temporary file (`*.tmp`); then `path`; then the `path` of the innermost of advlc's frames the
    error passed through, the store's writer that failed (only that frame: an outer one's `path`
    may be another file); then the temporary file. None when nothing names one."""
    named = _named(getattr(exc, "filename", None))
    if named is not None and not named.endswith(TEMPORARY_SUFFIX):
        return named
    if path is not None:
        return _named(path)
    innermost = None
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(WRITERS):
            innermost = tb.tb_frame
        tb = tb.tb_next
    local = innermost.f_locals.get("path") if innermost is not None else None
    if isinstance(local, (str, os.PathLike)):
        return os.fspath(local)
    return _named(getattr(exc, "filename2", None)) or named
