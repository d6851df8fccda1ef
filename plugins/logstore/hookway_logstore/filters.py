"""Query parameters of ``/api/logs``, ``/api/logs/stats`` and ``/api/logs/stream``.

One :class:`LogFilter` is built from the query string and gives both the SQL ``WHERE`` clause
(for stored rows) and a Python predicate (for rows pushed live over SSE), so a live view and a
fresh query show the same rows.

Parameters (all optional; lists are comma-separated):

* ``provider``, ``model`` (the model asked for or the upstream model), ``key`` (key id or key
  name), ``team``, ``customer``, ``dialect``, ``operation``, ``rule``
* ``status``: ``200``, ``429``, ``2xx``/``4xx``/``5xx``, ``error`` (status >= 400 or an error),
  ``ok``
* ``since`` / ``until``: unix seconds or ISO 8601; ``range``: ``15m``, ``1h``, ``24h``, ``7d``
  (``since`` = now - range)
* ``min_latency`` / ``max_latency`` (ms), ``min_ttft`` / ``max_ttft`` (time to first token, ms),
  ``min_tokens`` / ``max_tokens`` (input + output), ``min_cost`` / ``max_cost``
* ``q``: content search (request, response, error, model; a substring, case-insensitive in every
  script: see :func:`fold_pattern`)
* ``cache_hit``, ``fallback``, ``stream``: ``true`` / ``false``
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Callable

LIST_FIELDS = {"provider": ("provider",), "model": ("model", "upstream_model"),
               "key": ("key_id", "key_name"), "team": ("team_id",), "customer": ("customer_id",),
               "dialect": ("dialect",), "operation": ("operation",), "rule": ("rule",)}

RANGE_FIELDS = {"latency": "latency_ms", "ttft": "ttft_ms", "tokens": "total_tokens", "cost": "cost"}

BOOL_FIELDS = {"cache_hit": "cache_hit", "fallback": "fallback_index", "stream": "stream"}

SORTABLE = ("time", "latency_ms", "ttft_ms", "upstream_ms", "total_tokens", "input_tokens",
            "output_tokens", "cost", "status", "provider", "model")

KNOWN = (set(LIST_FIELDS) | {f"{p}_{n}" for n in RANGE_FIELDS for p in ("min", "max")} | set(BOOL_FIELDS)
         | {"status", "since", "until", "range", "q", "limit", "offset", "sort", "buckets", "exact"})

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_STATUS_CLASS = re.compile(r"^([1-5])xx$")


class FilterError(ValueError):
    """A bad query parameter; the message names it."""


def parse_duration(text: str, name: str = "range") -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise FilterError(f"{name}: expected a duration such as 15m, 1h, 24h or 7d, found {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_time(text: str, name: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"{name}: expected unix seconds or an ISO 8601 time, found {text!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FilterError(f"{name}: expected a number, found {text!r}")


def parse_bool(text: str, name: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes"):
        return True
    if low in ("0", "false", "no"):
        return False
    raise FilterError(f"{name}: expected true or false, found {text!r}")


def _values(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


class LogFilter:
    """Conditions over the ``logs`` table, as SQL and as a Python predicate."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[Any] = []
        self.checks: list[Callable[[dict], bool]] = []   # on anything but the time
        self.time_checks: list[Callable[[dict], bool]] = []
        self.since: float | None = None
        self.until: float | None = None
        self.q: str | None = None
        self.columns: set[str] = set()   # the columns the conditions read, ``time`` aside

    @classmethod
    def from_query(cls, query, default_range: float | None = None) -> "LogFilter":
        unknown = sorted(set(query) - KNOWN)
        if unknown:
            raise FilterError(f"unknown parameter {unknown[0]!r} (known: {', '.join(sorted(KNOWN))})")
        f = cls()
        for name, columns in LIST_FIELDS.items():
            raw = query.get(name)
            if raw:
                f.any_of(columns, _values(raw))
        status = query.get("status")
        if status:
            f.status(_values(status))
        now = time.time()
        if query.get("range"):
            f.since = now - parse_duration(query["range"])
        elif default_range is not None and not query.get("since"):
            f.since = now - default_range
        if query.get("since"):
            f.since = parse_time(query["since"], "since")
        if query.get("until"):
            f.until = parse_time(query["until"], "until")
        if f.since is not None:
            f.compare("time", ">=", f.since)
        if f.until is not None:
            f.compare("time", "<=", f.until)
        for short, column in RANGE_FIELDS.items():
            for prefix, op in (("min", ">="), ("max", "<=")):
                raw = query.get(f"{prefix}_{short}")
                if raw not in (None, ""):
                    f.compare(column, op, _number(raw, f"{prefix}_{short}"))
        for name, column in BOOL_FIELDS.items():
            raw = query.get(name)
            if raw not in (None, ""):
                f.flag(column, parse_bool(raw, name))
        q = (query.get("q") or "").strip()
        if q:
            f.search(q)
        return f

    # --- building blocks ---

    def any_of(self, columns: tuple, values: list[str]) -> None:
        marks = ",".join("?" * len(values))
        self.columns.update(columns)
        self.clauses.append("(" + " OR ".join(f"{c} IN ({marks})" for c in columns) + ")")
        for _ in columns:
            self.params += values
        wanted = set(values)
        self.checks.append(lambda row: any(row.get(c) in wanted for c in columns))

    def status(self, tokens: list[str]) -> None:
        parts, params, preds = [], [], []
        for tok in tokens:
            low = tok.lower()
            m = _STATUS_CLASS.match(low)
            if low == "error":
                parts.append("(status >= 400 OR error IS NOT NULL)")
                preds.append(lambda r: r["status"] >= 400 or r.get("error") is not None)
            elif low == "ok":
                parts.append("(status < 400 AND error IS NULL)")
                preds.append(lambda r: r["status"] < 400 and r.get("error") is None)
            elif m:
                lo = int(m.group(1)) * 100
                parts.append("(status >= ? AND status < ?)")
                params += [lo, lo + 100]
                preds.append(lambda r, lo=lo: lo <= r["status"] < lo + 100)
            elif tok.isdigit():
                parts.append("status = ?")
                params.append(int(tok))
                preds.append(lambda r, s=int(tok): r["status"] == s)
            else:
                raise FilterError(f"status: expected a code (200), a class (4xx), error or ok; found {tok!r}")
        self.columns.update(("status", "error"))
        self.clauses.append("(" + " OR ".join(parts) + ")")
        self.params += params
        self.checks.append(lambda row: any(p(row) for p in preds))

    def compare(self, column: str, op: str, value: float) -> None:
        checks = self.time_checks if column == "time" else self.checks
        if column != "time":
            self.columns.add(column)
        self.clauses.append(f"{column} {op} ?")
        self.params.append(value)
        if op == ">=":
            checks.append(lambda r: r.get(column) is not None and r[column] >= value)
        else:
            checks.append(lambda r: r.get(column) is not None and r[column] <= value)

    def flag(self, column: str, value: bool) -> None:
        self.columns.add(column)
        if column == "fallback_index":
            self.clauses.append("fallback_index > 0" if value else "fallback_index = 0")
            self.checks.append(lambda r: (r["fallback_index"] > 0) == value)
        else:
            self.clauses.append(f"{column} = ?")
            self.params.append(1 if value else 0)
            self.checks.append(lambda r: bool(r[column]) == value)

    def search(self, q: str) -> None:
        """A case-insensitive substring of the stored request, response, error or model.

        SQLite's LIKE folds ASCII letters only, so the needle becomes a GLOB pattern whose letters
        are classes of their case variants (``école`` -> ``*[Éé][Cc][Oo][Ll][Ee]*``), and the
        same classes make the regular expression that filters rows pushed live. A GLOB starting
        with a class is slow to scan with, so a LIKE that every match passes goes first
        (``%_cole%``: LIKE finds its first plain character quickly)."""
        self.q = q
        self.columns.update(SEARCH_COLUMNS)
        self.clauses.append("(" + " OR ".join(f"({c} LIKE ? ESCAPE '\\' AND {c} GLOB ?)"
                                              for c in SEARCH_COLUMNS) + ")")
        self.params += [like_prefilter(q), fold_pattern(q)] * len(SEARCH_COLUMNS)
        regex = re.compile("".join(_regex_class(ch) for ch in q))
        self.checks.append(lambda r: any(regex.search(r.get(c) or "") for c in SEARCH_COLUMNS))

    # --- results ---

    def where(self) -> tuple[str, list]:
        if not self.clauses:
            return "", []
        return " WHERE " + " AND ".join(self.clauses), list(self.params)

    def match(self, row: dict) -> bool:
        return all(check(row) for check in self.time_checks) and self.match_columns(row)

    def match_columns(self, row: dict) -> bool:
        """The conditions other than time (on a row that has the columns in :attr:`columns`)."""
        return all(check(row) for check in self.checks)


# --- case-insensitive search -------------------------------------------------------------------

SEARCH_COLUMNS = ("request", "response", "error", "model")

# Characters whose case variants str.lower/upper/title/casefold do not lead back to: each folds
# (str.casefold) into a group it is otherwise unreachable from, such as the final sigma ``ς`` into
# ``σ`` or the Kelvin sign into ``k``. A test checks the list against the whole of Unicode.
FOLD_ONLY = ("\xb5\u017f\u0345\u0390\u03b0\u03c2\u03d0\u03d1\u03d5\u03d6\u03f0\u03f1\u03f4\u03f5"
             "\u1c80\u1c81\u1c82\u1c83\u1c84\u1c85\u1c86\u1c87\u1c88\u1e9b\u1e9e\u1fbe\u1fd3\u1fe3"
             "\u2126\u212a\u212b\ufb05\ufb06")
_FOLDS_INTO: dict[str, set[str]] = defaultdict(set)
for _ch in FOLD_ONLY:
    _FOLDS_INTO[_ch.casefold()].add(_ch)


@lru_cache(maxsize=4096)
def case_variants(ch: str) -> frozenset[str]:
    """Every single character equal to ``ch`` ignoring case (itself included)."""
    seen, todo = {ch}, [ch]
    while todo:
        c = todo.pop()
        for other in (c.lower(), c.upper(), c.title(), c.casefold(), *_FOLDS_INTO.get(c.casefold(), ())):
            if len(other) == 1 and other not in seen:
                seen.add(other)
                todo.append(other)
    return frozenset(seen)


def _glob_class(ch: str) -> str:
    variants = case_variants(ch)
    if len(variants) == 1:
        return f"[{ch}]" if ch in "*?[" else ch   # GLOB's own wildcards, taken literally
    return "[" + "".join(sorted(variants)) + "]"   # letters only: no ], ^ or - to escape


def _regex_class(ch: str) -> str:
    variants = case_variants(ch)
    if len(variants) == 1:
        return re.escape(ch)
    return "[" + "".join(sorted(variants)) + "]"


def like_prefilter(q: str) -> str:
    """A LIKE pattern matching at least every text :func:`fold_pattern` matches: a letter LIKE
    cannot fold (any letter with a variant outside ASCII, such as é, or k with the Kelvin sign)
    becomes ``_``, any one character."""
    out = []
    for ch in q:
        if ch in "%_\\":
            out.append("\\" + ch)
        elif len(case_variants(ch)) == 1 or all(v.isascii() for v in case_variants(ch)):
            out.append(ch)
        else:
            out.append("_")
    return "%" + "".join(out) + "%"


def fold_pattern(q: str) -> str:
    """A GLOB pattern matching any text that contains ``q``, ignoring case in every script."""
    return "*" + "".join(_glob_class(ch) for ch in q) + "*"


def parse_sort(text: str | None) -> str:
    text = (text or "-time").strip()
    desc = text.startswith("-")
    column = text.lstrip("-+")
    if column not in SORTABLE:
        raise FilterError(f"sort: expected one of {', '.join(SORTABLE)} (prefix - for descending), found {text!r}")
    direction = "DESC" if desc else "ASC"
    return f"{column} {direction}, seq {direction}"


def parse_page(query, default_limit: int = 50, max_limit: int = 1000) -> tuple[int, int]:
    try:
        limit = int(query.get("limit", default_limit))
        offset = int(query.get("offset", 0))
    except ValueError:
        raise FilterError("limit and offset must be integers")
    if limit < 1 or limit > max_limit:
        raise FilterError(f"limit: expected 1..{max_limit}, found {limit}")
    if offset < 0:
        raise FilterError(f"offset: expected 0 or more, found {offset}")
    return limit, offset
