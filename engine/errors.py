"""The one exception type that reaches a user as a single line.

Anything the user can get wrong (a preset key, a data folder, a run id) raises
`UserError` with a message that names the file, the key, the value and what is
allowed. The CLI prints `advlc: <message>` and exits with `code`; it never shows
a traceback for these.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code
