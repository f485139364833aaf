"""`--where`: a small, safe expression language for selecting runs.

    method.lam > 0.3 and state == "finished" and best_robust_acc > 0.45
    "robust" in tags and not archived
    preset ~ "table1" or seed in [0, 1]

Names are the index document's keys (`state`, `preset`, `label` (the training scheme), `method`,
`attack`, `dataset`, `arch`, `seed`, `group`, `epoch`, `epochs`, `best_robust_acc`,
`end_robust_acc`, `best_clean_acc`, `end_clean_acc`, `end_ig`, `end_hs` (`ig`, `hs` still read
as these), `overrides_text` (the run's `--set` overrides), `title`, `tags`, `note`, `archived`,
…) and the config's keys written `section.key` (`method.lam`, `train.epochs`, `data.dataset`,
`attack.eps`, …). Values are numbers, "strings" or 'strings', `true`, `false`,
`null` and [lists]. Operators: `== != < <= > >=`, `in` and `not in` (membership in a list, or a
substring of a string), `~` (the right-hand string occurs in the left, ignoring case), `and`,
`or`, `not` and parentheses. A name a run does not have is null, and an order comparison with
null (or between a number and a string) is false.

The text is tokenized and parsed here; nothing is evaluated as Python. A mistake is one line
saying where: `--where 'method.lam >': expected a value at column 13 (the end)`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

from engine.config.schema import section_classes
from engine.errors import UserError
from engine.store.summary import SUMMARY_KEYS

INDEX_KEYS = ("id", "preset", "label", "method", "attack", "dataset", "arch", "seed", "group", "created", "state",
              "epoch", "epochs", "overfit_epoch", "updated", "error", "title", "tags", "note", "archived",
              "overrides_text", "origin_known") + SUMMARY_KEYS + tuple(
    f"swa_{k}" for k in SUMMARY_KEYS if not k.startswith(("epoch_time", "eval_time")))
"""The names of an index document a query may use (engine.store.summary)."""

ALIASES = {"ig": "end_ig", "hs": "end_hs", "epoch_time_s": "epoch_time_s_mean", "swa_ig": "swa_end_ig",
           "swa_hs": "swa_end_hs"}
"""Names of earlier index rows, read as the keys that replaced them."""

_TOKEN = re.compile(r"""\s*(?:
    (?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|-?\.\d+(?:[eE][-+]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
  | (?P<op>==|!=|<=|>=|<|>|~|\(|\)|\[|\]|,)
)""", re.X)
_WORDS = {"and", "or", "not", "in", "true", "false", "null"}
_ORDER = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}

Node = Callable[[Callable[[str], Any]], Any]


def _config_keys() -> set[str]:
    return {f"{s}.{f.name}" for s, cls in section_classes().items() for f in dataclasses.fields(cls)}


class _Parser:
    def __init__(self, text: str, where: str):
        self.text, self.where = text, where
        self.tokens: list[tuple[str, Any, int]] = []
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
            self.tokens.append((kind, val, col))
            pos = m.end()
        self.i = 0
        self.names: set[str] = set()

    def fail(self, what: str, col: int | None = None):
        at = "the end" if col is None or col > len(self.text) else f"column {col}"
        raise UserError(f"{self.where} {self.text!r}: {what} at {at}")

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
    def expr(self) -> Node:
        left = self.conj()
        while self.accept("word", "or"):
            right = self.conj()
            left = (lambda a, b: lambda get: bool(a(get)) or bool(b(get)))(left, right)
        return left

    def conj(self) -> Node:
        left = self.neg()
        while self.accept("word", "and"):
            right = self.neg()
            left = (lambda a, b: lambda get: bool(a(get)) and bool(b(get)))(left, right)
        return left

    def neg(self) -> Node:
        if self.accept("word", "not"):
            inner = self.neg()
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
            inner = self.expr()
            if not self.accept("op", ")"):
                self.fail("expected ')'", self.peek()[2])
            return inner
        if k == "op" and v == "[":
            items = []
            if not self.accept("op", "]"):
                while True:
                    items.append(self.term())
                    if self.accept("op", "]"):
                        break
                    if not self.accept("op", ","):
                        self.fail("expected ',' or ']'", self.peek()[2])
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
        def get(name: str):
            if "." in name:
                if hasattr(config, "value"):
                    return config.value(name)
                section, _, key = name.partition(".")
                return ((config or {}).get(section) or {}).get(key)
            return doc.get(ALIASES.get(name, name))

        return bool(self.node(get))


def parse(text: str, where: str = "--where") -> Query:
    """Parse an expression; a UserError naming the column of the first mistake, or an unknown name."""
    p = _Parser(text, where)
    if not p.tokens:
        raise UserError(f"{where} {text!r}: the expression is empty (e.g. {where} 'state == \"finished\"')")
    node = p.expr()
    k, v, col = p.peek()
    if k is not None:
        p.fail(f"unexpected {v!r}", col)
    known = set(INDEX_KEYS) | set(ALIASES) | _config_keys()
    for name in sorted(p.names):
        if name not in known:
            close = [k for k in sorted(known) if k.split(".")[-1] == name.split(".")[-1]][:3]
            hint = f" (did you mean {', '.join(close)}?)" if close else " (names: the columns of `advlc runs --json` " \
                                                                     "and section.key of the config)"
            raise UserError(f"{where} {text!r}: unknown name {name!r}{hint}")
    return Query(text, node, frozenset(p.names))


def select(docs: list[dict], query: Query | None, config_of: Callable[[str], dict] | None = None) -> list[dict]:
    """The index documents that match `query` (all when None); `config_of(run_id)` gives a run's
    config.json when the query names config keys."""
    if query is None:
        return docs
    return [d for d in docs if query.matches(d, config_of(d["id"]) if (query.needs_config and config_of) else None)]
