"""A small subset of CEL (Common Expression Language), compiled once into Python closures.

Bifrost's routing rules carry a ``cel_expression``; this module accepts the expressions such rules
use in practice so a Bifrost user's rules keep working, without a CEL runtime dependency:

* literals: strings (``"a"``, ``'a'``), numbers, ``true``/``false``/``null``, lists ``[a, b]``
* variables (see :data:`VARIABLES`), map indexing ``headers["x-tier"]``, field access
  ``headers.tier``
* operators: ``!``, ``-`` (unary), ``&&``, ``||``, ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``,
  ``in`` (list membership, map key presence), ``cond ? a : b``
* methods: ``startsWith``, ``endsWith``, ``contains``, ``matches`` (regular expression, searched;
  compiled once when the pattern is a literal), ``lowerAscii``, ``upperAscii``, ``size``; the
  functions ``size(x)`` and ``has(map.field)``

A missing header or parameter makes the expression false (as Bifrost does), not an error.
Anything else is rejected at compile time with a message naming the position.
"""

from __future__ import annotations

import re
from typing import Any, Callable

VARIABLES = frozenset({
    "model", "provider", "request_type", "headers", "params", "virtual_key_id", "virtual_key_name",
    "team_id", "team_name", "customer_id", "customer_name", "budget_used", "tokens_used", "request",
})


class CELError(ValueError):
    """The expression is outside the supported subset or malformed."""


class NoSuchKey(LookupError):
    """A map key is missing: the rule does not match."""


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>\d+\.\d*|\.\d+|\d+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\],.?:\-])
""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


def _unquote(s: str) -> str:
    body = s[1:-1]
    if "\\" not in body:
        return body
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _tokens(src: str) -> list[tuple[str, Any, int]]:
    out, pos = [], 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if m is None:
            raise CELError(f"unexpected character {src[pos]!r} at position {pos}")
        kind = m.lastgroup
        text = m.group()
        if kind == "num":
            out.append(("lit", float(text) if "." in text else int(text), pos))
        elif kind == "str":
            out.append(("lit", _unquote(text), pos))
        elif kind == "ident":
            if text in ("true", "false"):
                out.append(("lit", text == "true", pos))
            elif text == "null":
                out.append(("lit", None, pos))
            elif text == "in":
                out.append(("op", "in", pos))
            else:
                out.append(("ident", text, pos))
        elif kind == "op":
            out.append(("op", text, pos))
        pos = m.end()
    out.append(("end", None, len(src)))
    return out


Fn = Callable[[dict], Any]


def _const(value) -> Fn:
    fn = lambda v: value  # noqa: E731
    fn.const = value       # type: ignore[attr-defined]
    return fn


def _or(left: Fn, right: Fn) -> Fn:
    # CEL's commutative logic: an error on one side is absorbed when the other side decides.
    def fn(v):
        try:
            a = left(v)
        except NoSuchKey:
            if right(v) is True:
                return True
            raise
        return a is True or right(v) is True
    return fn


def _and(left: Fn, right: Fn) -> Fn:
    def fn(v):
        try:
            a = left(v)
        except NoSuchKey:
            if right(v) is False:
                return False
            raise
        return a is True and right(v) is True
    return fn


class _Parser:
    def __init__(self, src: str):
        self.src = src
        self.toks = _tokens(src)
        self.i = 0
        self.names: set[str] = set()

    def peek(self):
        return self.toks[self.i]

    def take(self, kind=None, value=None):
        tok = self.toks[self.i]
        if (kind is not None and tok[0] != kind) or (value is not None and tok[1] != value):
            want = value or kind
            got = "the end" if tok[0] == "end" else repr(tok[1])
            raise CELError(f"expected {want!r} at position {tok[2]}, found {got}")
        self.i += 1
        return tok

    def at(self, value) -> bool:
        tok = self.toks[self.i]
        return tok[0] == "op" and tok[1] == value

    def parse(self) -> Fn:
        fn = self.expr()
        if self.peek()[0] != "end":
            tok = self.peek()
            raise CELError(f"unexpected {tok[1]!r} at position {tok[2]}")
        return fn

    def expr(self) -> Fn:
        cond = self.or_()
        if self.at("?"):
            self.take()
            a = self.expr()
            self.take("op", ":")
            b = self.expr()
            return lambda v: a(v) if cond(v) else b(v)
        return cond

    def or_(self) -> Fn:
        left = self.and_()
        while self.at("||"):
            self.take()
            right = self.and_()
            left = _or(left, right)
        return left

    def and_(self) -> Fn:
        left = self.rel()
        while self.at("&&"):
            self.take()
            right = self.rel()
            left = _and(left, right)
        return left

    def rel(self) -> Fn:
        left = self.unary()
        tok = self.peek()
        if tok[0] == "op" and tok[1] in ("==", "!=", "<", "<=", ">", ">=", "in"):
            self.take()
            right = self.unary()
            op = tok[1]
            if op == "==":
                return lambda v: left(v) == right(v)
            if op == "!=":
                return lambda v: left(v) != right(v)
            if op == "in":
                if hasattr(right, "const") and isinstance(right.const, list):
                    members = frozenset(x for x in right.const if isinstance(x, (str, int, float, bool)))
                    return lambda v: left(v) in members
                return lambda v: left(v) in right(v)
            cmp = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
                   ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}[op]

            def compare(v):
                try:
                    return cmp(left(v), right(v))
                except TypeError:
                    return False
            return compare
        return left

    def unary(self) -> Fn:
        if self.at("!"):
            self.take()
            inner = self.unary()
            return lambda v: not inner(v)
        if self.at("-"):
            self.take()
            inner = self.unary()
            if hasattr(inner, "const"):
                return _const(-inner.const)
            return lambda v: -inner(v)
        return self.postfix()

    def postfix(self) -> Fn:
        fn = self.primary()
        while True:
            if self.at("["):
                self.take()
                key = self.expr()
                self.take("op", "]")
                fn = self._index(fn, key)
            elif self.at("."):
                self.take()
                name = self.take("ident")[1]
                if self.at("("):
                    args = self.args("(", ")")
                    fn = self._method(fn, name, args)
                else:
                    fn = self._index(fn, _const(name))
            else:
                return fn

    @staticmethod
    def _index(obj: Fn, key: Fn) -> Fn:
        def index(v):
            container = obj(v)
            k = key(v)
            try:
                if isinstance(container, dict):
                    return container[k.lower() if isinstance(k, str) else k]
                return container[k]
            except (KeyError, IndexError, TypeError):
                raise NoSuchKey(k)
        return index

    def _method(self, obj: Fn, name: str, args: list[Fn]) -> Fn:
        def need(n):
            if len(args) != n:
                raise CELError(f"{name}() takes {n} argument{'s' if n != 1 else ''}")
        if name in ("startsWith", "endsWith", "contains"):
            need(1)
            arg = args[0]
            meth = {"startsWith": str.startswith, "endsWith": str.endswith,
                    "contains": str.__contains__}[name]

            def call(v):
                s, a = obj(v), arg(v)
                return isinstance(s, str) and isinstance(a, str) and meth(s, a)
            return call
        if name == "matches":
            need(1)
            arg = args[0]
            if hasattr(arg, "const"):
                try:
                    rx = re.compile(arg.const)
                except re.error as exc:
                    raise CELError(f"matches(): bad regular expression {arg.const!r}: {exc}")
                return lambda v: isinstance(s := obj(v), str) and rx.search(s) is not None
            return lambda v: isinstance(s := obj(v), str) and re.search(arg(v), s) is not None
        if name in ("lowerAscii", "upperAscii"):
            need(0)
            conv = str.lower if name == "lowerAscii" else str.upper
            return lambda v: conv(obj(v))
        if name == "size":
            need(0)
            return lambda v: len(obj(v))
        raise CELError(f"unsupported method {name}()")

    def args(self, open_, close) -> list[Fn]:
        self.take("op", open_)
        out = []
        if not self.at(close):
            out.append(self.expr())
            while self.at(","):
                self.take()
                out.append(self.expr())
        self.take("op", close)
        return out

    def primary(self) -> Fn:
        tok = self.peek()
        if tok[0] == "lit":
            self.take()
            return _const(tok[1])
        if tok[0] == "op" and tok[1] == "(":
            self.take()
            inner = self.expr()
            self.take("op", ")")
            return inner
        if tok[0] == "op" and tok[1] == "[":
            items = self.args("[", "]")
            if all(hasattr(f, "const") for f in items):
                return _const([f.const for f in items])
            return lambda v: [f(v) for f in items]
        if tok[0] == "ident":
            self.take()
            name = tok[1]
            if self.at("("):
                return self._function(name, tok[2])
            if name not in VARIABLES:
                raise CELError(f"unknown variable {name!r} at position {tok[2]} "
                               f"(known: {', '.join(sorted(VARIABLES))})")
            self.names.add(name)
            return lambda v: v[name]
        got = "the end" if tok[0] == "end" else repr(tok[1])
        raise CELError(f"expected a value at position {tok[2]}, found {got}")

    def _function(self, name: str, pos: int) -> Fn:
        if name == "has":
            self.take("op", "(")
            start = self.i
            target = self.postfix()
            self.take("op", ")")
            if not (self.i - start >= 3 and self.toks[self.i - 3][1] == "."):
                raise CELError(f"has() at position {pos} takes a field selection like has(headers.x)")

            def has(v):
                try:
                    target(v)
                    return True
                except NoSuchKey:
                    return False
            return has
        args = self.args("(", ")")
        if name == "size" and len(args) == 1:
            arg = args[0]
            return lambda v: len(arg(v))
        raise CELError(f"unsupported function {name}() at position {pos}")


class Expression:
    """A compiled expression: ``expr.evaluate(variables) -> bool`` (False on a missing key)."""

    __slots__ = ("source", "fn", "names")

    def __init__(self, source: str):
        self.source = source
        if not source.strip():
            self.fn = _const(True)   # Bifrost: an empty expression always matches
            self.names = frozenset()
            return
        parser = _Parser(source)
        self.fn = parser.parse()
        self.names = frozenset(parser.names)

    def evaluate(self, variables: dict) -> bool:
        try:
            return self.fn(variables) is True
        except NoSuchKey:
            return False
        except (TypeError, ValueError, AttributeError, re.error):
            return False


def compile_expression(source: str) -> Expression:
    """Compile ``source``; raises :class:`CELError` naming what is wrong."""
    return Expression(source)
