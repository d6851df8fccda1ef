"""Summaries of the request log per minute and per hour, so that ``/api/logs/stats`` over a large
range reads a few thousand summary rows instead of every record.

The writer thread keeps two tables up to date in the same transaction as each batch:

* ``stats_scope``: per (granule, dimension, value), where the dimension is none (every record),
  ``provider``, ``model``, ``key``, ``team``, ``status`` or ``failed``: counts, tokens, cost, cache
  hits, fallbacks and the latency and time-to-first-token distributions (sum, min, max and a
  histogram with logarithmic buckets, :data:`RATIO` apart);
* ``stats_rollup``: the same sums (no histograms) per (granule, combination of every dimension's
  value); the combinations are numbered in ``stats_combos``.

A query can be answered from the summaries when its filter reads only those dimensions and its
matching records are exactly those with some values of one dimension (``provider=a,b``,
``status=error``, ``team=red&provider=x`` when only team red uses x, ...): :func:`scope_for`
decides, from ``stats_combos``. Then the range is cut into pieces: the records themselves for the
part-minutes at each end, minute summaries up to the first and from the last whole hour, hour
summaries in between (:func:`rollup_ranges`). Counts, sums, averages and the maximum come out
exact; percentiles come from the merged histograms, within :data:`PERCENTILE_ERROR` of the
nearest-rank value. Series buckets are whole minutes (whole hours for ranges over two days), so
their edges, and their number, can differ a little from the exact computation's.
"""

from __future__ import annotations

import math
import sys
from array import array
from operator import add
from typing import Iterable

# Histogram bucket b holds the values in [RATIO**b, RATIO**(b+1)) ms and reads back as the bucket's
# geometric middle, RATIO**(b+1/2): off by less than sqrt(RATIO) - 1 from any value in it.
RATIO = 1.04
PERCENTILE_ERROR = math.sqrt(RATIO) - 1   # 1.98%
_LOG_RATIO = math.log(RATIO)
_SMALLEST = 1e-3   # ms; anything below shares the lowest bucket (and is read back clamped to the minimum)

LEVELS = (60, 3600)   # granule sizes in seconds
MINUTE_SERIES_SPAN = 2 * 86400   # up to this range, series buckets are whole minutes; beyond, whole hours

# The columns a summary is computed from, in this order (``error IS NOT NULL`` is all that is kept of the error).
NARROW = ("time", "provider", "model", "upstream_model", "key_id", "key_name", "team_id", "status",
          "error IS NOT NULL", "latency_ms", "ttft_ms", "input_tokens", "output_tokens", "cached_tokens", "cost",
          "cache_hit", "fallback_index")
NARROW_SQL = ", ".join(NARROW)

# A combination: the values of every dimension of a record (``failed``: status >= 400 or an error).
COMBO_COLUMNS = ("provider", "model", "upstream_model", "key_id", "key_name", "team_id", "status", "failed")
# The filter columns a combination can answer for (``error`` only as far as status=error/ok go).
FILTERABLE = {"provider", "model", "upstream_model", "key_id", "key_name", "team_id", "status", "error"}

# The dimensions of stats_scope, as functions of a combination.
DIMS = {
    "": lambda c: "",
    "provider": lambda c: c[0],
    "model": lambda c: c[1],
    "key": lambda c: c[4] if c[4] is not None else c[3],   # the name, else the id (as by_key shows it)
    "team": lambda c: c[5],
    "status": lambda c: c[6],
    "failed": lambda c: c[7],
}
BREAKDOWNS = ("provider", "model", "key", "team", "status")

# stats_scope's key cannot hold NULL (WITHOUT ROWID); no real value is a blob, so a NUL byte stands for it.
NULL_VALUE = b"\0"

SCHEMA = """
CREATE TABLE IF NOT EXISTS stats_combos (
    id INTEGER PRIMARY KEY,
    provider, model, upstream_model, key_id, key_name, team_id, status, failed
);
CREATE INDEX IF NOT EXISTS stats_combos_values ON stats_combos
    (provider, model, upstream_model, key_id, key_name, team_id, status, failed);
CREATE TABLE IF NOT EXISTS stats_rollup (
    level INTEGER NOT NULL, t INTEGER NOT NULL, combo INTEGER NOT NULL,
    n INTEGER, errors INTEGER, input_tokens INTEGER, output_tokens INTEGER, cached_tokens INTEGER, cost REAL,
    cache_hits INTEGER, fallbacks INTEGER, lat_n INTEGER, lat_sum REAL, ttft_n INTEGER, ttft_sum REAL,
    PRIMARY KEY (level, t, combo)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stats_scope (
    level INTEGER NOT NULL, dim TEXT NOT NULL, t INTEGER NOT NULL, value NOT NULL,
    n INTEGER, errors INTEGER, input_tokens INTEGER, output_tokens INTEGER, cached_tokens INTEGER, cost REAL,
    cache_hits INTEGER, fallbacks INTEGER,
    lat_n INTEGER, lat_sum REAL, lat_min REAL, lat_max REAL, lat_hist BLOB,
    ttft_n INTEGER, ttft_sum REAL, ttft_min REAL, ttft_max REAL, ttft_hist BLOB,
    PRIMARY KEY (level, dim, t, value)
) WITHOUT ROWID;
"""

_SUMS = ("n", "errors", "input_tokens", "output_tokens", "cached_tokens", "cost", "cache_hits", "fallbacks")
_ROLLUP_COLUMNS = _SUMS + ("lat_n", "lat_sum", "ttft_n", "ttft_sum")
SCOPE_COLUMNS = _SUMS + ("lat_n", "lat_sum", "lat_min", "lat_max", "lat_hist",
                          "ttft_n", "ttft_sum", "ttft_min", "ttft_max", "ttft_hist")


def _upsert(table: str, key: tuple, columns: tuple) -> str:
    def merged(c: str) -> str:
        if c.endswith("_min"):
            return f"CASE WHEN {c} IS NULL OR excluded.{c} < {c} THEN excluded.{c} ELSE {c} END"
        if c.endswith("_max"):
            return f"CASE WHEN {c} IS NULL OR excluded.{c} > {c} THEN excluded.{c} ELSE {c} END"
        if c.endswith("_hist"):
            return f"hist_add({c}, excluded.{c})"
        return f"{c} + excluded.{c}"
    names = key + columns
    return (f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET " + ", ".join(f"{c} = {merged(c)}" for c in columns))


_UPSERT_ROLLUP = _upsert("stats_rollup", ("level", "t", "combo"), _ROLLUP_COLUMNS)
_UPSERT_SCOPE = _upsert("stats_scope", ("level", "dim", "t", "value"), SCOPE_COLUMNS)


# --- distributions ---------------------------------------------------------------------------------

def bucket(ms: float) -> int:
    return math.floor(math.log(max(ms, _SMALLEST)) / _LOG_RATIO)


class Histogram:
    """Counts per bucket, in two parts: a dict for counts added a few at a time (records, small
    histograms: what a batch makes) and a list over the buckets from ``lo`` on for stored
    histograms, so that adding those up is a slice-wise ``map(add)`` at C speed (the bulk of
    reading the summaries).

    Stored as bytes: ``D`` + [lo, counts...] when dense, ``S`` + [bucket, count, ...] pairs when
    fewer than half the buckets in the span are used (int32, little-endian)."""

    __slots__ = ("few", "lo", "counts")

    def __init__(self) -> None:
        self.few: dict[int, int] = {}
        self.lo = 0
        self.counts: list[int] = []

    def add(self, b: int, count: int = 1) -> None:
        self.few[b] = self.few.get(b, 0) + count

    def merge(self, other: "Histogram") -> None:
        few = self.few
        for b, count in other.few.items():
            few[b] = few.get(b, 0) + count
        if other.counts:
            self._add_run(other.lo, other.counts)

    def merge_blob(self, blob: bytes | None) -> None:
        if not blob:
            return
        values = array("i", blob[1:])
        if _BIG_ENDIAN:
            values.byteswap()
        if blob[:1] == b"D":
            self._add_run(values[0], values[1:])
        else:
            for b, count in zip(values[::2], values[1::2]):
                self.add(b, count)

    def _add_run(self, lo: int, counts) -> None:
        """Counts for the buckets ``lo``, ``lo + 1``, ..."""
        if not len(counts):
            return
        hi = lo + len(counts)
        if not self.counts:
            self.lo, self.counts = lo, [0] * len(counts)
        if lo < self.lo:
            self.counts[0:0] = [0] * (self.lo - lo)
            self.lo = lo
        if hi > self.lo + len(self.counts):
            self.counts.extend([0] * (hi - self.lo - len(self.counts)))
        i, j = lo - self.lo, hi - self.lo
        self.counts[i:j] = map(add, self.counts[i:j], counts)

    def _fold(self) -> None:
        """Move the few counts into the list."""
        if self.few:
            few = sorted(self.few.items())
            self.few = {}
            self._add_run(few[0][0], [0] * (few[-1][0] - few[0][0] + 1))   # cover the span
            for b, count in few:
                self.counts[b - self.lo] += count

    def items(self) -> list[tuple[int, int]]:
        """(bucket, count) for every bucket used, in order."""
        self._fold()
        lo = self.lo
        return [(lo + i, count) for i, count in enumerate(self.counts) if count]

    def encode(self) -> bytes | None:
        self._fold()
        counts = self.counts
        used = len(counts) - counts.count(0)
        if not used:
            return None
        first = next(i for i, count in enumerate(counts) if count)
        last = len(counts) - next(i for i, count in enumerate(reversed(counts)) if count)
        if 2 * used >= last - first:
            kind, values = b"D", array("i", [self.lo + first]) + array("i", counts[first:last])
        else:
            kind, values = b"S", array("i", [x for item in self.items() for x in item])
        if _BIG_ENDIAN:
            values.byteswap()
        return kind + values.tobytes()


_BIG_ENDIAN = sys.byteorder == "big"


def hist_add(a: bytes | None, b: bytes | None) -> bytes | None:
    """The SQL function the upserts merge two stored histograms with."""
    hist = Histogram()
    hist.merge_blob(a)
    hist.merge_blob(b)
    return hist.encode()


class Dist:
    """Count, sum, min, max and histogram of one measure (latency or time to first token)."""

    __slots__ = ("n", "sum", "min", "max", "hist")

    def __init__(self) -> None:
        self.n, self.sum, self.min, self.max = 0, 0.0, None, None
        self.hist = Histogram()

    def add(self, value: float | None) -> None:
        if value is None:
            return
        self.n += 1
        self.sum += value
        if self.min is None or value < self.min:
            self.min = value
        if self.max is None or value > self.max:
            self.max = value
        b = math.floor(math.log(value if value > _SMALLEST else _SMALLEST) / _LOG_RATIO)   # bucket(), inlined
        few = self.hist.few
        few[b] = few.get(b, 0) + 1

    def merge(self, other: "Dist") -> None:
        if not other.n:
            return
        self.n += other.n
        self.sum += other.sum
        if self.min is None or other.min < self.min:
            self.min = other.min
        if self.max is None or other.max > self.max:
            self.max = other.max
        self.hist.merge(other.hist)

    def merge_stored(self, n, total, low, high, blob) -> None:
        if not n:
            return
        self.n += n
        self.sum += total
        if self.min is None or low < self.min:
            self.min = low
        if self.max is None or high > self.max:
            self.max = high
        self.hist.merge_blob(blob)

    def avg(self) -> float | None:
        return self.sum / self.n if self.n else None

    def percentiles(self, ps: Iterable[int]) -> dict[str, float | None]:
        """Nearest-rank percentiles, read from the histogram (clamped to the exact min and max,
        which are also the answer for the first and the last rank)."""
        out: dict[str, float | None] = {f"p{p}": None for p in ps}
        if not self.n:
            return out
        ranks = sorted((max(1, -(-p * self.n // 100)), p) for p in ps)
        seen, i = 0, 0
        for b, count in self.hist.items():
            seen += count
            while i < len(ranks) and ranks[i][0] <= seen:
                rank, p = ranks[i]
                if rank == 1 or rank == self.n:   # the smallest or the largest: known exactly
                    out[f"p{p}"] = self.min if rank == 1 else self.max
                else:
                    out[f"p{p}"] = min(self.max, max(self.min, RATIO ** (b + 0.5)))
                i += 1
        return out


class Agg:
    """The sums of a set of records: what one summary row holds."""

    __slots__ = _SUMS + ("lat", "ttft")

    def __init__(self) -> None:
        self.n = self.errors = self.input_tokens = self.output_tokens = self.cached_tokens = 0
        self.cache_hits = self.fallbacks = 0
        self.cost = 0.0
        self.lat, self.ttft = Dist(), Dist()

    def add(self, r: tuple) -> None:
        """One record, as a :data:`NARROW` tuple."""
        self.n += 1
        self.errors += 1 if r[7] >= 400 or r[8] else 0
        self.input_tokens += r[11] or 0
        self.output_tokens += r[12] or 0
        self.cached_tokens += r[13] or 0
        self.cost += r[14] or 0.0
        self.cache_hits += 1 if r[15] else 0
        self.fallbacks += 1 if (r[16] or 0) > 0 else 0
        self.lat.add(r[9])
        self.ttft.add(r[10])

    def merge(self, other: "Agg") -> None:
        self.n += other.n   # spelled out: this runs for every summary row a batch touches
        self.errors += other.errors
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_tokens += other.cached_tokens
        self.cost += other.cost
        self.cache_hits += other.cache_hits
        self.fallbacks += other.fallbacks
        self.lat.merge(other.lat)
        self.ttft.merge(other.ttft)

    def merge_scope_row(self, row: tuple) -> None:
        """A stats_scope row's :data:`SCOPE_COLUMNS`."""
        for name, value in zip(_SUMS, row):
            setattr(self, name, getattr(self, name) + value)
        self.lat.merge_stored(*row[8:13])
        self.ttft.merge_stored(*row[13:18])

    def sums(self) -> tuple:
        """The :data:`_SUMS` values."""
        return (self.n, self.errors, self.input_tokens, self.output_tokens, self.cached_tokens, self.cost,
                self.cache_hits, self.fallbacks)

    def rollup_values(self) -> tuple:
        return self.sums() + (self.lat.n, self.lat.sum, self.ttft.n, self.ttft.sum)

    def scope_values(self) -> tuple:
        lat, ttft = self.lat, self.ttft
        return (self.sums() + (lat.n, lat.sum, lat.min, lat.max, lat.hist.encode())
                + (ttft.n, ttft.sum, ttft.min, ttft.max, ttft.hist.encode()))


def combo_of(r: tuple) -> tuple:
    """A :data:`NARROW` record's combination (:data:`COMBO_COLUMNS`)."""
    return (*r[1:8], 1 if r[7] >= 400 or r[8] else 0)


def stored(value):
    return NULL_VALUE if value is None else value


def loaded(value):
    return None if value == NULL_VALUE else value


# --- writing ---------------------------------------------------------------------------------------

class SummaryWriter:
    """Adds batches of records to the summary tables (on the writer thread, inside its transaction)."""

    def __init__(self) -> None:
        self.combo_ids: dict[tuple, int] = {}

    def add(self, conn, records: list[tuple]) -> None:
        if not records:
            return
        # Each record goes into one (minute, combination) sum; the other summary rows a batch
        # touches are sums of those: per dimension value and minute, then per hour.
        per_minute: dict[tuple, Agg] = {}
        for r in records:
            key = (int(r[0] // 60) * 60, combo_of(r))
            agg = per_minute.get(key)
            if agg is None:
                agg = per_minute[key] = Agg()
            agg.add(r)
        ids = self._ids(conn, {combo for _, combo in per_minute})
        rollup: dict[tuple, Agg] = {}
        scope: dict[tuple, Agg] = {}
        for (minute, combo), agg in per_minute.items():
            rollup[(60, minute, ids[combo])] = agg
            _merge_into(rollup, (3600, minute - minute % 3600, ids[combo]), agg)
            for dim, value_of in DIMS.items():
                _merge_into(scope, (60, dim, minute, stored(value_of(combo))), agg)
        for (_, dim, minute, value), agg in list(scope.items()):
            _merge_into(scope, (3600, dim, minute - minute % 3600, value), agg)
        conn.executemany(_UPSERT_ROLLUP, [key + agg.rollup_values() for key, agg in rollup.items()])
        conn.executemany(_UPSERT_SCOPE, [key + agg.scope_values() for key, agg in scope.items()])

    def _ids(self, conn, combos: set[tuple]) -> dict[tuple, int]:
        """Numbers for combinations, looked up (another worker may have added one) or added."""
        ids = {}
        for combo in combos:
            cid = self.combo_ids.get(combo)
            if cid is None:
                row = conn.execute("SELECT id FROM stats_combos WHERE " +
                                   " AND ".join(f"{c} IS ?" for c in COMBO_COLUMNS), combo).fetchone()
                if row is not None:
                    cid = row[0]
                else:
                    cid = conn.execute(f"INSERT INTO stats_combos ({', '.join(COMBO_COLUMNS)}) VALUES "
                                       f"({', '.join('?' * len(COMBO_COLUMNS))})", combo).lastrowid
                self.combo_ids[combo] = cid
            ids[combo] = cid
        return ids

    def forget(self) -> None:
        """After a rolled-back transaction: numbers handed out in it may not exist."""
        self.combo_ids.clear()


def _merge_into(table: dict, key: tuple, agg: Agg) -> None:
    into = table.get(key)
    if into is None:
        into = table[key] = Agg()
    into.merge(agg)


def prune(conn, before: float) -> None:
    """Drop the summaries of granules that end before ``before``."""
    for level in LEVELS:
        conn.execute("DELETE FROM stats_rollup WHERE level = ? AND t <= ?", (level, before - level))
        for dim in DIMS:
            conn.execute("DELETE FROM stats_scope WHERE level = ? AND dim = ? AND t <= ?", (level, dim, before - level))


# --- reading ---------------------------------------------------------------------------------------

def combo_row(combo: tuple) -> dict:
    """A combination as a record dict, for :meth:`LogFilter.match`."""
    row = dict(zip(COMBO_COLUMNS, combo))
    row["error"] = "error" if combo[7] else None
    return row


def scope_for(matching: set[int], combos: dict[int, tuple]) -> tuple[str, list] | None:
    """The dimension and values whose records are exactly those of the ``matching`` combinations,
    or None. Combinations are never deleted, so this holds for any time range."""
    if len(matching) == len(combos):
        return "", [""]
    best = None
    for dim, value_of in DIMS.items():
        if not dim:
            continue
        values = {value_of(combos[cid]) for cid in matching}
        if all(cid in matching for cid, combo in combos.items() if value_of(combo) in values):
            if best is None or len(values) < len(best[1]):
                best = (dim, list(values))
    return best


def raw_ranges(since: float, until: float | None) -> list[tuple[float, float | None]]:
    """The parts of [since, until] read from the records: up to the first minute boundary after
    ``since``, and from the last one at or before ``until``. ``None``: no upper bound."""
    first = math.floor(since / 60) * 60 + 60
    if until is not None and until < first:
        return [(since, None)]   # the filter's own bound ends it
    out = [(since, first)]
    if until is not None:
        out.append((math.floor(until / 60) * 60, None))
    return out


def rollup_ranges(since: float, until: float | None, top: int) -> list[tuple[int, int, float]]:
    """(level, from, to) pieces of summaries covering what :func:`raw_ranges` leaves: minutes up to
    the first ``top`` boundary and from the last, ``top`` granules in between."""
    first = math.floor(since / 60) * 60 + 60
    if until is not None and until < first:
        return []
    last = math.floor(until / 60) * 60 if until is not None else math.inf
    top_first = math.ceil(first / top) * top
    top_last = math.floor(last / top) * top if until is not None else math.inf
    if top_first >= top_last:
        pieces = [(60, first, last)]
    else:
        pieces = [(60, first, top_first), (top, top_first, top_last), (60, top_last, last)]
    return [(level, lo, hi) for level, lo, hi in pieces if hi > lo]


def merge_breakdowns(into: dict, dim: str, value, n: int, errors: int, tokens: float, cost: float,
                     lat_sum: float, lat_n: int) -> None:
    g = into[dim].get(value)
    if g is None:
        g = into[dim][value] = [0, 0, 0.0, 0.0, 0.0, 0]
    g[0] += n
    g[1] += errors
    g[2] += tokens
    g[3] += cost
    g[4] += lat_sum
    g[5] += lat_n


def breakdown_lists(groups: dict) -> dict[str, list[dict]]:
    out = {}
    for dim in BREAKDOWNS:
        items = [{"value": value, "count": n, "errors": errors, "tokens": int(tokens), "cost": cost,
                  "latency_avg": lat_sum / lat_n if lat_n else None}
                 for value, (n, errors, tokens, cost, lat_sum, lat_n) in groups[dim].items() if n]
        items.sort(key=lambda g: -g["count"])
        out[dim] = items[:100]
    return out
