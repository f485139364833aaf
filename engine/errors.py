"""The exceptions that reach a user as a single line, and how an OS error is said in one.

Anything the user can get wrong (a preset key, a data folder, a run id) raises `UserError`
with a message that names the file, the key, the value and what is allowed. The CLI prints
`advlc: <message>` and exits with `code`; it never shows a traceback for these. A full or
read-only disk and a permission problem are said by `os_error_line` in the same way.
"""

from __future__ import annotations

import errno


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


DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
               errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
               errno.EDQUOT: "the disk quota is exceeded"}
"""The OS errors of a disk a run store lives on, in words."""


def os_error_line(exc: OSError, path=None) -> str:
    """One line for an OS error: the path, what went wrong, and the errno's name."""
    where = exc.filename or path or "?"
    what = DISK_ERRORS.get(exc.errno) or (exc.strerror or type(exc).__name__).lower()
    name = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    return f"{where}: {what}" + (f" ({name})" if name else "")
