"""`--where`: a small, safe expression language for selecting runs.

    method.lam > 0.3 and state == "finished" and best_robust_acc > 0.45
    "robust" in tags and not archived
    preset ~ "table1" or seed in [0, 1]

Names are the index document's keys (`state`, `preset`, `label` (the training scheme), `method`,
`attack`, `dataset`, `arch`, `seed`, `group`, `epoch`, `epochs`, `best_robust_acc`,
`end_robust_acc`, `best_clean_acc`, `end_clean_acc`, `end_ig`, `end_hs` (`ig`, `hs` still read
as these), `overfit_epoch`, `catastrophic_epoch` (the alerts' epochs), `select_on`, `test_best_robust_acc`,
`stopped_early_at`, `epochs_saved`, `overrides_text` (the run's `--set` overrides), `title`, `tags`, `note`, `archived`,
…) and the config's keys written `section.key` (`method.lam`, `train.epochs`, `data.dataset`,
`attack.eps`, …), a method's own parameters `method.<name>.key` (`method.advlc.top_n`). Values are numbers, "strings" or 'strings', `true`, `false`,
`null` and [lists]. Operators: `== != < <= > >=`, `in` and `not in` (membership in a list, or a
substring of a string), `~` (the right-hand string occurs in the left, ignoring case), `and`,
`or`, `not` and parentheses. A name a run does not have is null, and an order comparison with
null (or between a number and a string) is false.

The text is tokenized and parsed here; nothing is evaluated as Python. A mistake is one line
saying where: `--where 'method.lam >': expected a value at column 13 (the end)`.

The text is bounded, so a hostile or runaway expression is one line too, never a traceback:
at most `MAX_LENGTH` characters, `MAX_DEPTH` nested parentheses, `not`s and lists, `MAX_TERMS`
values (names and literals) and number literals of `MAX_NUMBER` characters.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable

from engine.config.origin import flat
from engine.config.schema import config_keys
from engine.errors import UserError
from engine.store.summary import SUMMARY_KEYS

INDEX_KEYS = (
    (
        "id",
        "preset",
        "label",
        "method",
        "attack",
        "dataset",
        "arch",
        "seed",
        "group",
        "created",
        "state",
        "epoch",
        "epochs",
        "overfit_epoch",
        "catastrophic_epoch",
        "select_on",
        "stopped_early_at",
        "epochs_saved",
        "updated",
        "error",
        "title",
        "tags",
        "note",
        "archived",
        "overrides_text",
        "origin_known",
    )
    + SUMMARY_KEYS
    + tuple(f"swa_{k}" for k in SUMMARY_KEYS if not k.startswith(("epoch_time", "eval_time")))
)
"""The names of an index document a query may use (engine.store.summary)."""

ALIASES = {
    "ig": "end_ig",
    "hs": "end_hs",
    "epoch_time_s": "epoch_time_s_mean",
    "swa_ig": "swa_end_ig",
    "swa_hs": "swa_end_hs",
}
"""Names of earlier index rows, read as the keys that replaced them."""

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|-?\.\d+(?:[eE][-+]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*){0,2})
  | (?P<op>==|!=|<=|>=|<|>|~|\(|\)|\[|\]|,)
)""",
    re.X,
)
_WORDS = {"and", "or", "not", "in", "true", "false", "null"}
_ORDER = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}

Node = Callable[[Callable[[str], Any]], Any]

MAX_LENGTH = 2000
"""Characters an expression may have."""
MAX_DEPTH = 32
"""How deeply parentheses, `not`s and lists may nest (counted together)."""
MAX_TERMS = 256
"""Values (names and literals, list items included) an expression may have."""
MAX_NUMBER = 32
"""Characters of a number literal (a float's shortest exact form needs at most 24)."""


def _config_keys() -> set[str]:
    return set(config_keys())


def _shown(text: str) -> str:
    """The expression as an error line shows it: whole when short, else its start."""
    return repr(text) if len(text) <= 80 else repr(text[:60]) + f"… ({len(text)} characters)"


class _Parser:
    def __init__(self, text: str, where: str):
        self.text, self.where = text, where
        if len(text) > MAX_LENGTH:
            raise UserError(
                f"{where} {_shown(text)}: the expression is {len(text)} characters long, "
                f"at most {MAX_LENGTH} are allowed"
            )
        self.tokens: list[tuple[str, Any, int]] = []
        self.depth = 0
        self.terms = 0
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                col = pos + len(text[pos:]) - len(text[pos:].lstrip()) + 1
                self.fail(f"unexpected {text[col - 1]!r}", col)
            kind = m.lastgroup
            val = m.group(kind)
            col = m.start(kind) + 1
            if kind == "name" and val in _WORDS:
                kind = "word"
            if kind == "num" and len(val) > MAX_NUMBER:
                self.fail(f"a number of {len(val)} characters (at most {MAX_NUMBER})", col)
            self.tokens.append((kind, val, col))
            pos = m.end()
        self.i = 0
        self.names: set[str] = set()

    def fail(self, what: str, col: int | None = None):
        at = "the end" if col is None or col > len(self.text) else f"column {col}"
        raise UserError(f"{self.where} {_shown(self.text)}: {what} at {at}")

    def enter(self, col: int) -> None:
        """One level deeper (a parenthesis, a `not`, a list); refused past MAX_DEPTH."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"nested more than {MAX_DEPTH} deep (parentheses, 'not's and lists)", col)

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, None, len(self.text) + 1)

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def accept(self, kind: str, val: str) -> bool:
        k, v, _ = self.peek()
        if k == kind and v == val:
            self.i += 1
            return True
        return False

    # expr := and ("or" and)* ; and := not ("and" not)* ; not := "not" not | cmp
    # A chain of `or`s (`and`s) is one node over a list, so evaluating it does not recurse per term.
    def expr(self) -> Node:
        parts = [self.conj()]
        while self.accept("word", "or"):
            parts.append(self.conj())
        if len(parts) == 1:
            return parts[0]
        return lambda get: any(bool(p(get)) for p in parts)

    def conj(self) -> Node:
        parts = [self.neg()]
        while self.accept("word", "and"):
            parts.append(self.neg())
        if len(parts) == 1:
            return parts[0]
        return lambda get: all(bool(p(get)) for p in parts)

    def neg(self) -> Node:
        col = self.peek()[2]
        if self.accept("word", "not"):
            self.enter(col)
            inner = self.neg()
            self.depth -= 1
            return lambda get: not inner(get)
        return self.cmp()

    def cmp(self) -> Node:
        left = self.term()
        k, v, col = self.peek()
        if k == "op" and v in ("==", "!=", "<", "<=", ">", ">=", "~"):
            self.take()
            return _compare(v, left, self.term())
        if k == "word" and v in ("in", "not"):
            if v == "not":
                self.take()
                if not self.accept("word", "in"):
                    self.fail("expected 'in' after 'not'", self.peek()[2])
                return (lambda r: lambda get: not r(get))(_member(left, self.term()))
            self.take()
            return _member(left, self.term())
        return left

    _ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}

    def unquote(self, literal: str, col: int) -> str:
        """The text of a quoted string: backslash escapes \\ \" \' \n \t only (anything else is a
        mistake at its column; non-ASCII text is kept as it is)."""
        out, body, i = [], literal[1:-1], 0
        while i < len(body):
            ch = body[i]
            if ch == "\\":
                nxt = body[i + 1] if i + 1 < len(body) else ""
                if nxt not in self._ESCAPES:
                    self.fail(f"unknown escape '\\{nxt}' in a string (use \\\\ for a backslash)", col + 1 + i)
                out.append(self._ESCAPES[nxt])
                i += 2
                continue
            out.append(ch)
            i += 1
        return "".join(out)

    def term(self) -> Node:
        k, v, col = self.take()
        if k is None:
            self.fail("expected a value")
        self.terms += 1
        if self.terms > MAX_TERMS:
            self.fail(f"more than {MAX_TERMS} values (names and literals)", col)
        if k == "num":
            n = float(v) if any(c in v for c in ".eE") else int(v)
            return lambda get: n
        if k == "str":
            s = self.unquote(v, col)
            return lambda get: s
        if k == "word" and v in ("true", "false", "null"):
            c = {"true": True, "false": False, "null": None}[v]
            return lambda get: c
        if k == "name":
            self.names.add(v)
            return lambda get: get(v)
        if k == "op" and v == "(":
            self.enter(col)
            inner = self.expr()
            if not self.accept("op", ")"):
                self.fail("expected ')'", self.peek()[2])
            self.depth -= 1
            return inner
        if k == "op" and v == "[":
            self.enter(col)
            items = []
            if not self.accept("op", "]"):
                while True:
                    items.append(self.term())
                    if self.accept("op", "]"):
                        break
                    if not self.accept("op", ","):
                        self.fail("expected ',' or ']'", self.peek()[2])
            self.depth -= 1
            return lambda get: [f(get) for f in items]
        self.fail(f"expected a value, found {v!r}", col)


def _compare(op: str, left: Node, right: Node) -> Node:
    def ev(get):
        a, b = left(get), right(get)
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op == "~":
            return isinstance(a, str) and isinstance(b, str) and b.lower() in a.lower()
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
        if numbers or (isinstance(a, str) and isinstance(b, str)):
            return _ORDER[op](a, b)
        return False

    return ev


def _member(left: Node, right: Node) -> Node:
    def ev(get):
        a, b = left(get), right(get)
        if isinstance(b, (list, tuple)):
            return a in b
        if isinstance(b, str) and isinstance(a, str):
            return a in b
        return False

    return ev


@dataclasses.dataclass
class Query:
    """A parsed `--where` expression: `matches(doc, config)`."""

    text: str
    node: Node
    names: frozenset[str]

    @property
    def needs_config(self) -> bool:
        """Whether it names a config key (`section.key`), so each run's config.json must be read."""
        return any("." in n for n in self.names)

    def matches(self, doc, config=None) -> bool:
        """Whether the run of index row `doc` (and config: a ConfigRecord or config.json's JSON) is selected."""

        @functools.lru_cache(maxsize=1)
        def keys() -> dict:  # the config's "section.key" and "method.<name>.key" values, read once
            return flat(config.to_json() if hasattr(config, "to_json") else config or {})

        def get(name: str):
            if "." in name:
                return keys().get(name)
            return doc.get(ALIASES.get(name, name))

        return bool(self.node(get))


def parse(text: str, where: str = "--where") -> Query:
    """Parse an expression; a UserError naming the column of the first mistake, or an unknown name."""
    p = _Parser(text, where)
    if not p.tokens:
        raise UserError(f"{where} {_shown(text)}: the expression is empty (e.g. {where} 'state == \"finished\"')")
    node = p.expr()
    k, v, col = p.peek()
    if k is not None:
        p.fail(f"unexpected {v!r}", col)
    known = set(INDEX_KEYS) | set(ALIASES) | _config_keys()
    for name in sorted(p.names):
        if name not in known:
            close = [k for k in sorted(known) if k.split(".")[-1] == name.split(".")[-1]][:3]
            hint = (
                f" (did you mean {', '.join(close)}?)"
                if close
                else " (names: the columns of `advlc runs --json` and section.key of the config)"
            )
            raise UserError(f"{where} {_shown(text)}: unknown name {name!r}{hint}")
    return Query(text, node, frozenset(p.names))


def select(docs: list[dict], query: Query | None, config_of: Callable[[str], dict] | None = None) -> list[dict]:
    """The index documents that match `query` (all when None); `config_of(run_id)` gives a run's
    config.json when the query names config keys."""
    if query is None:
        return docs
    return [d for d in docs if query.matches(d, config_of(d["id"]) if (query.needs_config and config_of) else None)]
