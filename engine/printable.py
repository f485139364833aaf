"""Strings from a run store made safe to show: what a title, a note, a log line or an error holds
is data, never a terminal instruction.

A store may come from someone else (an archive, a copied folder), and any string in it could
carry escape sequences that set the window title, clear the screen, write a hyperlink or move
the cursor to spoof a line, or bidirectional-text controls that reorder what is read. Everything
shown from the store passes through `printable` first: control characters are shown the way
`cat -v` shows them (ESC as `^[`, DEL as `^?`, a C1 control as `M-^[`), and the Unicode
direction controls as `<U+202E>`. Tabs are kept, newlines are kept where the text is multi-line
(a note, a log) and shown as `^J` where it is one line (a table cell).
"""

from __future__ import annotations

import re

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
"""The Unicode characters that change the direction text is shown in (Trojan Source)."""

_UNSAFE = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f{BIDI}]")
_UNSAFE_KEEP_NL = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{BIDI}]")


def _show(m: re.Match) -> str:
    c = m.group(0)
    o = ord(c)
    if o < 0x20:
        return "^" + chr(o + 0x40)
    if o == 0x7F:
        return "^?"
    if o < 0xA0:
        return "M-^" + chr(o - 0x80 + 0x40)
    return f"<U+{o:04X}>"


def printable(text, *, multiline: bool = False) -> str:
    """`text` (any value: None and numbers are shown as str() gives them) with every control
    character shown as `cat -v` shows it; `multiline` keeps newlines."""
    s = text if isinstance(text, str) else str(text)
    return (_UNSAFE_KEEP_NL if multiline else _UNSAFE).sub(_show, s)


def has_control(text: str, *, multiline: bool = False) -> bool:
    """Whether `text` holds a character `printable` would change (for refusing it at input)."""
    return bool((_UNSAFE_KEEP_NL if multiline else _UNSAFE).search(text))
