"""The SQLite request log: one row per request, written in batches from a single writer thread.

The event loop never touches SQLite: writes go to one dedicated thread (one connection, one
transaction per batch, which also updates the summaries of :mod:`.summary`), reads to a small
pool of reader threads with their own connections. WAL mode lets readers run while the writer
writes.

When the store refuses a batch (full disk, read-only file, I/O error), its rows wait in memory, as
many records and content characters as the core's log queue may hold, behind which every later
batch waits too; retries, spaced out from :data:`RETRY_FIRST` to :data:`RETRY_MAX` seconds, write
them in order once the store accepts them. Rows beyond the bound are dropped and counted.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import is_dataclass
from typing import Any, Callable

import orjson
import structlog

from hookway import ir, storage

from . import summary
from .filters import LogFilter
from .summary import Agg, SummaryWriter

log = structlog.get_logger("hookway.logstore")

# 1: the logs table. 2: the summary tables (stats_*), filled for older rows in the background.
SCHEMA_VERSION = 2
BACKFILL_CHUNK = 5000
# Rows the store refused are retried after RETRY_FIRST seconds, the wait doubling up to RETRY_MAX,
# and written FLUSH_CHUNK to a transaction (new batches may go in between, behind them).
RETRY_FIRST = 0.5
RETRY_MAX = 30.0
FLUSH_CHUNK = 500

SUMMARY_COLUMNS = (
    "id", "time", "dialect", "operation", "model", "provider", "upstream_model", "rule",
    "key_id", "key_name", "team_id", "customer_id", "status", "error", "latency_ms", "ttft_ms",
    "upstream_ms", "input_tokens", "output_tokens", "cached_tokens", "total_tokens", "cost",
    "cache_hit", "cache_similarity", "fallback_index", "stream", "passthrough", "finish_reason",
)
CONTENT_COLUMNS = ("request", "response", "extra")
ALL_COLUMNS = SUMMARY_COLUMNS + CONTENT_COLUMNS
BOOL_COLUMNS = ("cache_hit", "stream", "passthrough")

SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    time REAL NOT NULL,
    dialect TEXT, operation TEXT, model TEXT, provider TEXT, upstream_model TEXT, rule TEXT,
    key_id TEXT, key_name TEXT, team_id TEXT, customer_id TEXT,
    status INTEGER NOT NULL, error TEXT,
    latency_ms REAL, ttft_ms REAL, upstream_ms REAL,
    input_tokens INTEGER, output_tokens INTEGER, cached_tokens INTEGER, total_tokens INTEGER,
    cost REAL, cache_hit INTEGER, cache_similarity REAL, fallback_index INTEGER,
    stream INTEGER, passthrough INTEGER, finish_reason TEXT,
    request TEXT, response TEXT, extra TEXT
);
CREATE INDEX IF NOT EXISTS logs_time ON logs(time);
CREATE INDEX IF NOT EXISTS logs_provider_time ON logs(provider, time);
CREATE INDEX IF NOT EXISTS logs_model_time ON logs(model, time);
CREATE INDEX IF NOT EXISTS logs_key_time ON logs(key_id, time);
CREATE INDEX IF NOT EXISTS logs_team_time ON logs(team_id, time);
CREATE INDEX IF NOT EXISTS logs_status ON logs(status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

_INSERT = f"INSERT INTO logs ({', '.join(ALL_COLUMNS)}) VALUES ({', '.join('?' * len(ALL_COLUMNS))})"


# --- turning a LogRecord into a row ----------------------------------------------------------------

def _default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray)):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def dumps(obj: Any) -> str:
    return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()


def _usage_dict(u: Any) -> dict | None:
    if u is None:
        return None
    if isinstance(u, dict):
        return u
    return {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
            "cache_read_input_tokens": u.cache_read_input_tokens,
            "cache_creation_input_tokens": u.cache_creation_input_tokens,
            "reasoning_tokens": u.reasoning_tokens}


_OPENAI_FINISH = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                  "function_call": "tool_use", "content_filter": "refusal"}


def _from_openai(data: dict) -> dict:
    """An OpenAI chat/completions answer in the canonical (Anthropic-shaped) block form."""
    content: list[dict] = []
    finish = None
    choices = data.get("choices") or []
    if choices:
        choice = choices[0] or {}
        finish = choice.get("finish_reason")
        message = choice.get("message")
        if isinstance(message, dict):
            reasoning = message.get("reasoning") or message.get("reasoning_content")
            if reasoning:
                content.append({"type": "thinking", "thinking": reasoning})
            if message.get("content"):
                text = message["content"]
                content.append({"type": "text", "text": text if isinstance(text, str) else dumps(text)})
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                try:
                    args = orjson.loads(fn.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    args = {"_raw": fn.get("arguments")}
                content.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                                "input": args})
        elif "text" in choice:
            content.append({"type": "text", "text": choice.get("text") or ""})
    return {"id": data.get("id"), "model": data.get("model"), "content": content,
            "stop_reason": _OPENAI_FINISH.get(finish, finish), "usage": data.get("usage")}


def normalise_response(resp: Any, raw: Any = None) -> dict | None:
    """The answer as ``{"id", "model", "content": [blocks], "stop_reason", "usage"}``.

    ``resp`` is the canonical :class:`hookway.ir.Response` when the core built one; ``raw`` is the
    upstream body of a byte pass-through (bytes or str), kept by this plugin's middleware."""
    if resp is not None:
        if isinstance(resp, ir.Response):
            return {"id": resp.id, "model": resp.model, "content": resp.content,
                    "stop_reason": resp.stop_reason, "usage": _usage_dict(resp.usage)}
        if is_dataclass(resp):
            return orjson.loads(orjson.dumps(resp, default=_default))
        if isinstance(resp, dict):
            raw = resp
        else:
            raw = resp
    if raw is None:
        return None
    data = raw
    if isinstance(raw, (bytes, bytearray, str)):
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw
            return {"content": [{"type": "text", "text": text}], "raw": True}
    if isinstance(data, dict):
        if "choices" in data:
            return _from_openai(data)
        if data.get("type") == "message" and "content" in data:   # Anthropic Messages
            return {"id": data.get("id"), "model": data.get("model"), "content": data.get("content") or [],
                    "stop_reason": data.get("stop_reason"), "usage": data.get("usage")}
        return {"content": [], "body": data}
    return {"content": [], "body": data}


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return dumps({"_truncated": True, "chars": len(text), "head": text[:limit]})


def record_row(r: Any, redact: Callable[[str | None], str | None], max_content_chars: int,
               decode: Callable[[Any], Any] | None = None) -> dict:
    """A row dict (every column) from a :class:`hookway.pipeline.LogRecord`. ``decode(record)``
    reads a pass-through answer's bytes into an :class:`ir.Response` (the dialect's
    ``response_from_bytes``), so streamed answers are stored as answers, not as SSE text."""
    extra = dict(r.extra or {})
    decoded = None
    if r.response is None and r.response_body and decode is not None:
        try:
            decoded = decode(r)
        except Exception:   # an unreadable body is stored as it came
            decoded = None
    raw = r.response_body
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    cost = r.cost
    try:
        cost = float(cost) if cost is not None else None
    except (TypeError, ValueError):
        cost = None
    response = normalise_response(r.response or decoded, raw)
    finish = (response.get("stop_reason") if response else None) or r.stop_reason
    if finish is None:
        finish = extra.get("finish_reason")
    request = None if r.request is None else _clip(redact(dumps(r.request)), max_content_chars)
    response_text = None if response is None else _clip(redact(dumps(response)), max_content_chars)
    extra_text = redact(dumps(extra)) if extra else None
    return {
        "id": r.id, "time": r.time, "dialect": r.dialect, "operation": r.operation, "model": r.model,
        "provider": r.provider, "upstream_model": r.upstream_model, "rule": r.rule,
        "key_id": r.key_id, "key_name": r.key_name, "team_id": r.team_id, "customer_id": r.customer_id,
        "status": r.status, "error": redact(r.error), "latency_ms": r.latency_ms, "ttft_ms": r.ttft_ms,
        "upstream_ms": r.upstream_ms, "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
        "cached_tokens": r.cached_tokens, "total_tokens": (r.input_tokens or 0) + (r.output_tokens or 0),
        "cost": cost, "cache_hit": bool(r.cache_hit), "cache_similarity": r.cache_similarity,
        "fallback_index": r.fallback_index, "stream": bool(r.stream), "passthrough": bool(r.passthrough),
        "finish_reason": finish if isinstance(finish, str) else None,
        "request": request, "response": response_text, "extra": extra_text,
    }


def _row_values(row: dict) -> tuple:
    return tuple(row[c] for c in ALL_COLUMNS)


def _content_size(row: dict) -> int:
    """The characters of a row's content, for the bound on rows waiting for the disk."""
    return sum(len(row[c]) for c in CONTENT_COLUMNS if row[c] is not None)


def _narrow(row: dict) -> tuple:
    """A row dict as the :data:`summary.NARROW` tuple the summaries are computed from."""
    return (row["time"], row["provider"], row["model"], row["upstream_model"], row["key_id"], row["key_name"],
            row["team_id"], row["status"], row["error"] is not None, row["latency_ms"], row["ttft_ms"],
            row["input_tokens"], row["output_tokens"], row["cached_tokens"], row["cost"], row["cache_hit"],
            row["fallback_index"])


def _decode(row: dict, content: bool) -> dict:
    for c in BOOL_COLUMNS:
        if c in row and row[c] is not None:
            row[c] = bool(row[c])
    if content:
        for c in CONTENT_COLUMNS:
            if row.get(c) is not None:
                try:
                    row[c] = orjson.loads(row[c])
                except orjson.JSONDecodeError:
                    pass
    return row


def _rank(n: int, p: float) -> int:
    """The 0-based index of the nearest-rank ``p`` percentile among ``n`` ascending values."""
    return max(0, min(n - 1, int(-(-p * n // 100)) - 1))


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    return sorted_values[_rank(len(sorted_values), p)]


_ERR = "CASE WHEN status >= 400 OR error IS NOT NULL THEN 1 ELSE 0 END"


# --- the store -------------------------------------------------------------------------------------

class LogStore:
    def __init__(self, path: str, max_content_chars: int = 4_000_000, readers: int = 2,
                 backlog_records: int = 100_000, backlog_chars: int = 256 * 1024 * 1024,
                 on_written: Callable[[list[dict]], None] | None = None,
                 on_dropped: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.max_content_chars = max_content_chars
        self.readers = readers
        # Rows the store refused, oldest first, with their content size (the writer thread's).
        self.backlog: collections.deque[tuple[dict, int]] = collections.deque()
        self.backlog_chars = 0
        self.backlog_records_max = backlog_records
        self.backlog_chars_max = backlog_chars
        self.outage = storage.Outage()       # the writer thread's
        self.dropped = 0                     # rows dropped because the backlog was full
        self._dropped_in_outage = 0
        # Called on the event loop: rows written by a retry (the batch's caller gets the others),
        # and rows dropped.
        self.on_written = on_written or (lambda rows: None)
        self.on_dropped = on_dropped or (lambda count: None)
        self.retry_first = RETRY_FIRST
        self.retry_max = RETRY_MAX
        self._retry_task: asyncio.Task | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._summary = SummaryWriter()
        self._combos: dict[int, tuple] = {}   # stats_combos, as far as read (never changed, only added to)
        self._backfill_task: asyncio.Task | None = None
        self.closed = True
        self.written = 0

    # --- lifecycle ---

    async def open(self) -> None:
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="logstore-writer")
        self._reader = ThreadPoolExecutor(self.readers, thread_name_prefix="logstore-reader")
        backfill = await asyncio.get_running_loop().run_in_executor(self._writer, self._open)
        self.closed = False
        if backfill:
            self._backfill_task = asyncio.ensure_future(self._backfill())

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        # Before anything writes the file's header (journal_mode does): effective on a new file only.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        storage.use_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.create_function("hist_add", 2, summary.hist_add, deterministic=True)
        conn.executescript(SCHEMA + summary.SCHEMA)
        return conn

    def _open(self) -> bool:
        """Create or migrate the database; True when older records still need summaries."""
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        conn = self._connect_writer()
        conn.execute("BEGIN IMMEDIATE")   # one worker migrates; the others find it done
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None or int(row[0]) < 2:
                # The records already there get their summaries in the background (_backfill);
                # new ones as they are written. Until then stats are computed from the records.
                (last,) = conn.execute("SELECT MAX(seq) FROM logs").fetchone()
                if last is not None:
                    conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                     [("stats_backfill_done", "0"), ("stats_backfill_end", str(last))])
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            pending = conn.execute("SELECT 1 FROM meta WHERE key = 'stats_backfill_end'").fetchone() is not None
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        self._conn = conn
        return pending

    async def close(self) -> None:
        """Finish every pending write, then close the connections."""
        if self.closed:
            return
        self.closed = True
        if self._backfill_task is not None:
            self._backfill_task.cancel()
        loop = asyncio.get_running_loop()
        if self._retry_task is not None:
            self._retry_task.cancel()
            try:
                await self._retry_task
            except asyncio.CancelledError:
                pass
        if self.backlog:
            await self._write_backlog(final=True)
        await loop.run_in_executor(self._writer, self._close_writer)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    def _close_writer(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._conn.close()
            self._conn = None

    # --- writes ---

    async def write(self, records: list, redact: Callable, decode: Callable | None = None) -> list[dict]:
        """Store a batch (one transaction) and return the rows written: none while the store
        refuses writes, when the rows wait in the backlog (see the module docstring)."""
        if self.closed:
            # Only at shutdown, when the core delivers records after this store was closed:
            # write them directly rather than lose them.
            return self.write_sync(records, redact, decode)
        rows, dropped = await asyncio.get_running_loop().run_in_executor(
            self._writer, self._write_or_keep, records, redact, decode)
        self._count_dropped(dropped)
        if self.backlog and self._retry_task is None:
            self._retry_task = asyncio.ensure_future(self._retry())
        return rows

    def _write(self, records: list, redact: Callable, decode: Callable | None = None,
               conn: sqlite3.Connection | None = None) -> list[dict]:
        return self._insert([record_row(r, redact, self.max_content_chars, decode) for r in records], conn)

    def _insert(self, rows: list[dict], conn: sqlite3.Connection | None = None) -> list[dict]:
        """Write rows in one transaction; return those not already stored."""
        conn = conn or self._conn
        conn.execute("BEGIN IMMEDIATE")   # the write lock first: nobody adds an id between the check and the insert
        try:
            # A record delivered twice is stored (and summed) once.
            seen = {r[0] for r in conn.execute("SELECT id FROM logs WHERE id IN (SELECT value FROM json_each(?))",
                                               (dumps([row["id"] for row in rows]),))}
            new = []
            for row in rows:
                if row["id"] not in seen:
                    seen.add(row["id"])
                    new.append(row)
            conn.executemany(_INSERT, [_row_values(row) for row in new])
            self._summary.add(conn, [_narrow(row) for row in new])
            conn.execute("COMMIT")
        except BaseException:
            storage.rollback(conn)
            self._summary.forget()
            raise
        self.written += len(rows)
        return new

    # --- when the store refuses writes (writer thread, but for the retry task) ---

    def _write_or_keep(self, records: list, redact: Callable, decode: Callable | None) -> tuple[list[dict], int]:
        """(rows written, rows dropped): written, or kept in the backlog when it is not empty
        (these rows come after it) or when the store refuses them."""
        rows = [record_row(r, redact, self.max_content_chars, decode) for r in records]
        if not self.backlog:
            try:
                written = self._insert(rows)
            except Exception as exc:
                if not storage.unwritable(exc):
                    raise       # a bug, not the disk: the core logs it (log_sink_failed)
                self._refused(exc)
            else:
                self._recovered()
                return written, 0
        return [], self._keep(rows)

    def _keep(self, rows: list[dict]) -> int:
        dropped = 0
        for row in rows:
            size = _content_size(row)
            if len(self.backlog) >= self.backlog_records_max or (
                    size and self.backlog_chars + size > self.backlog_chars_max):
                dropped += 1
                continue
            self.backlog.append((row, size))
            self.backlog_chars += size
        if dropped and not self._dropped_in_outage:
            log.warning("logstore_backlog_full", path=self.path, waiting=len(self.backlog),
                        waiting_chars=self.backlog_chars,
                        detail="the store still refuses writes; further records are dropped and counted "
                               "until it accepts them again")
        self._dropped_in_outage += dropped
        return dropped

    def _refused(self, exc: Exception) -> None:
        if self.outage.failed(exc):
            log.warning("logstore_write_failing", path=self.path, error=f"{type(exc).__name__}: {exc}",
                        detail=f"records are kept in memory (at most {self.backlog_records_max} records and "
                               f"{self.backlog_chars_max} characters of content) and written once the store "
                               "accepts them again; requests are served as usual")

    def _recovered(self) -> None:
        ended = self.outage.recovered()
        if ended is not None:
            seconds, failures = ended
            log.warning("logstore_write_recovered", path=self.path, seconds=round(seconds, 1),
                        failed_attempts=failures, dropped=self._dropped_in_outage)
            self._dropped_in_outage = 0

    def _write_backlog_chunk(self) -> tuple[list[dict], bool]:
        """Write the oldest :data:`FLUSH_CHUNK` rows of the backlog: (rows written, refused)."""
        chunk = [self.backlog[i] for i in range(min(FLUSH_CHUNK, len(self.backlog)))]
        try:
            written = self._insert([row for row, _ in chunk])
        except Exception as exc:
            if not storage.unwritable(exc):
                raise
            self._refused(exc)
            return [], True
        for _, size in chunk:
            self.backlog.popleft()
            self.backlog_chars -= size
        if not self.backlog:
            self._recovered()
        return written, False

    def _count_dropped(self, count: int) -> None:
        if count:
            self.dropped += count
            self.on_dropped(count)

    async def _write_backlog(self, final: bool = False) -> bool:
        """Write the backlog, a chunk at a time; False when the store refuses it again. ``final``
        (at close): what it refuses is lost, logged and counted."""
        loop = asyncio.get_running_loop()
        while self.backlog:
            try:
                rows, refused = await loop.run_in_executor(self._writer, self._write_backlog_chunk)
            except Exception:
                log.exception("logstore_backlog_write_failed", path=self.path)
                refused = True
                rows = []
            if rows:
                self.on_written(rows)
            if refused:
                if final:
                    lost = len(self.backlog)
                    log.error("logstore_records_lost", path=self.path, count=lost, error=self.outage.error,
                              detail="the store still refused them when the gateway stopped")
                    self.backlog.clear()
                    self.backlog_chars = 0
                    self._count_dropped(lost)
                return False
        return True

    async def _retry(self) -> None:
        delay = self.retry_first
        try:
            while True:
                await asyncio.sleep(delay)
                if await self._write_backlog():
                    return
                delay = min(delay * 2, self.retry_max)
        finally:
            self._retry_task = None

    def write_sync(self, records: list, redact: Callable, decode: Callable | None = None) -> list[dict]:
        conn = self._connect_writer()
        try:
            return self._write(records, redact, decode, conn)
        finally:
            conn.close()

    async def _backfill(self) -> None:
        """Summaries for the records of a database written before they existed, a chunk at a time
        on the writer thread, between batches. Progress is in ``meta``, so a restart resumes."""
        loop = asyncio.get_running_loop()
        log.info("logstore_summary_backfill_started", path=self.path)
        try:
            while await loop.run_in_executor(self._writer, self._backfill_step):
                pass
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("logstore_summary_backfill_failed", path=self.path)
            return
        log.info("logstore_summary_backfill_done", path=self.path)

    def _backfill_step(self) -> bool:
        """Summarise the next :data:`BACKFILL_CHUNK` records; False once every record is summarised."""
        limit = BACKFILL_CHUNK
        conn = self._conn
        if conn is None:
            return False
        conn.execute("BEGIN IMMEDIATE")
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN "
                                     "('stats_backfill_done', 'stats_backfill_end')").fetchall())
            if "stats_backfill_end" not in meta:   # finished (maybe by another worker)
                conn.execute("COMMIT")
                return False
            done, end = int(meta["stats_backfill_done"]), int(meta["stats_backfill_end"])
            rows = conn.execute(f"SELECT seq, {summary.NARROW_SQL} FROM logs WHERE seq > ? AND seq <= ? "
                                "ORDER BY seq LIMIT ?", (done, end, limit)).fetchall()
            self._summary.add(conn, [r[1:] for r in rows])
            if len(rows) < limit:
                conn.execute("DELETE FROM meta WHERE key IN ('stats_backfill_done', 'stats_backfill_end')")
            else:
                conn.execute("UPDATE meta SET value = ? WHERE key = 'stats_backfill_done'", (str(rows[-1][0]),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            self._summary.forget()
            raise
        return len(rows) == limit

    async def prune(self, older_than: float | None, max_rows: int | None) -> int:
        if self.closed:
            return 0
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._prune, older_than, max_rows)

    def _prune(self, older_than: float | None, max_rows: int | None) -> int:
        """Delete old records. First the summaries' watermark moves (``stats_from``: no record
        older than it is left), then the records go, then the summaries wholly before it."""
        conn = self._conn
        deleted = 0
        if older_than is not None and conn.execute("SELECT 1 FROM logs WHERE time < ? LIMIT 1",
                                                   (older_than,)).fetchone():
            self._raise_watermark(older_than)
            while True:   # in chunks, so readers and the next batch are not held up
                cur = conn.execute("DELETE FROM logs WHERE seq IN (SELECT seq FROM logs WHERE time < ? LIMIT 5000)",
                                   (older_than,))
                deleted += cur.rowcount
                if cur.rowcount < 5000:
                    break
        if max_rows is not None:
            (count,) = conn.execute("SELECT COUNT(*) FROM logs").fetchone()
            if count > max_rows:
                (newest_deleted,) = conn.execute("SELECT time FROM logs ORDER BY time ASC, seq ASC LIMIT 1 OFFSET ?",
                                                 (count - max_rows - 1,)).fetchone()
                self._raise_watermark(newest_deleted)
                cur = conn.execute("DELETE FROM logs WHERE seq IN (SELECT seq FROM logs ORDER BY time ASC, seq ASC "
                                   "LIMIT ?)", (count - max_rows,))
                deleted += cur.rowcount
        if deleted:
            (watermark,) = conn.execute("SELECT CAST(value AS REAL) FROM meta WHERE key = 'stats_from'").fetchone()
            summary.prune(conn, watermark)
            conn.execute("PRAGMA incremental_vacuum")
        return deleted

    def _raise_watermark(self, at: float) -> None:
        self._conn.execute("INSERT INTO meta VALUES ('stats_from', ?) ON CONFLICT (key) DO UPDATE SET "
                           "value = MAX(CAST(value AS REAL), CAST(excluded.value AS REAL))", (repr(float(at)),))

    # --- reads ---

    def _rconn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=1")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, fn, *args):
        if self.closed:
            raise RuntimeError("the log store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    async def list(self, flt: LogFilter, order: str, limit: int, offset: int) -> tuple[list[dict], int]:
        return await self._read(self._list, flt, order, limit, offset)

    def _list(self, flt: LogFilter, order: str, limit: int, offset: int) -> tuple[list[dict], int]:
        conn = self._rconn()
        where, params = flt.where()
        cols = ", ".join(SUMMARY_COLUMNS)
        rows = conn.execute(f"SELECT {cols} FROM logs{where} ORDER BY {order} LIMIT ? OFFSET ?",
                            params + [limit, offset]).fetchall()
        (total,) = conn.execute(f"SELECT COUNT(*) FROM logs{where}", params).fetchone()
        return [_decode(dict(r), False) for r in rows], total

    async def get(self, record_id: str) -> dict | None:
        return await self._read(self._get, record_id)

    def _get(self, record_id: str) -> dict | None:
        row = self._rconn().execute(f"SELECT {', '.join(ALL_COLUMNS)} FROM logs WHERE id = ?",
                                    (record_id,)).fetchone()
        return _decode(dict(row), True) if row is not None else None

    async def count(self) -> int:
        return await self._read(lambda: self._rconn().execute("SELECT COUNT(*) FROM logs").fetchone()[0])

    async def stats(self, flt: LogFilter, buckets: int, exact: bool = False) -> dict:
        """Stats of the matching records: from the summaries when they can answer (``source``:
        ``summary``; percentiles within :data:`summary.PERCENTILE_ERROR`), else, or with ``exact``,
        from the records themselves (``source``: ``records``)."""
        return await self._read(self._stats, flt, buckets, exact)

    def _stats(self, flt: LogFilter, buckets: int, exact: bool = False) -> dict:
        conn = self._rconn()
        conn.execute("BEGIN")   # one snapshot: summaries, combinations and records agree
        try:
            result = None
            if not exact and flt.since is not None and flt.q is None and flt.columns <= summary.FILTERABLE:
                result = self._stats_summary(conn, flt, max(buckets, 1))
            if result is None:
                result = self._stats_exact(conn, flt, buckets)
        finally:
            conn.execute("COMMIT")
        return result

    def _series_end(self, conn: sqlite3.Connection, flt: LogFilter, now: float) -> float:
        """``until``, or now: or the newest matching record if it is in the future (a cheap look)."""
        if flt.until is not None:
            return flt.until
        where, params = flt.where()
        and_ = " AND " if where else " WHERE "
        latest = conn.execute(f"SELECT MAX(time) FROM logs{where}{and_}time > ?", params + [now]).fetchone()[0]
        return max(now, latest or now)

    def _combo_table(self, conn: sqlite3.Connection) -> dict[int, tuple]:
        """stats_combos, read incrementally (rows are only ever added)."""
        combos = self._combos
        rows = conn.execute(f"SELECT id, {', '.join(summary.COMBO_COLUMNS)} FROM stats_combos WHERE id > ?",
                            (max(combos, default=0),)).fetchall()
        if rows:
            combos = {**combos, **{r[0]: tuple(r[1:]) for r in rows}}
            with self._lock:
                if len(combos) > len(self._combos):
                    self._combos = combos
        return combos

    def _stats_summary(self, conn: sqlite3.Connection, flt: LogFilter, nb: int) -> dict | None:
        """The stats from the summary tables (see :mod:`.summary`), or None when they cannot answer
        this filter exactly."""
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('stats_backfill_end', 'stats_from')")
                    .fetchall())
        if "stats_backfill_end" in meta:   # older records are not all summarised yet
            return None
        combos = self._combo_table(conn)
        matching = {cid for cid, combo in combos.items() if flt.match_columns(summary.combo_row(combo))}
        scope = summary.scope_for(matching, combos)
        if scope is None:
            return None
        dim, values = scope
        since, until = flt.since, flt.until
        # Nothing older than the watermark is left; summaries of the granule it falls in are not used.
        start = max(since, float(meta["stats_from"])) if "stats_from" in meta else since
        end = self._series_end(conn, flt, time.time())

        # Series buckets of whole granules: minutes, or hours over more than two days (so that a
        # series never reads more than 2,880 minutes).
        width = max((end - since) / nb, 1e-3)
        level = 3600 if end - since > summary.MINUTE_SERIES_SPAN else 60
        step = math.ceil(width / level) * level
        first = math.floor(since / level) * level
        series = [Agg() for _ in range(max(1, math.ceil((end - first) / step)))]

        def bucket_of(t: float) -> Agg:
            return series[min(len(series) - 1, max(0, int((t - first) // step)))]

        edge_rows = self._edge_rows(conn, flt, start)
        for r in edge_rows:
            bucket_of(r[0]).add(r)
        marks = ", ".join("?" * len(values))
        for lvl, lo, hi in summary.rollup_ranges(start, until, level):
            for t, *row in conn.execute(
                    f"SELECT t, {', '.join(summary.SCOPE_COLUMNS)} FROM stats_scope WHERE level = ? AND dim = ? "
                    f"AND t >= ? AND t < ? AND value IN ({marks})",
                    [lvl, dim, lo, hi] + [summary.stored(v) for v in values]):
                bucket_of(t).merge_scope_row(row)
        total = Agg()
        for agg in series:
            total.merge(agg)
        breakdowns = self._summary_breakdowns(conn, dim, matching, combos, start, until, edge_rows)
        return {
            "since": since, "until": end, "count": total.n, "errors": total.errors,
            "error_rate": total.errors / total.n if total.n else 0.0,
            "input_tokens": total.input_tokens, "output_tokens": total.output_tokens,
            "cached_tokens": total.cached_tokens, "total_tokens": total.input_tokens + total.output_tokens,
            "cost": total.cost, "cache_hits": total.cache_hits, "fallbacks": total.fallbacks,
            "latency_ms": {"avg": total.lat.avg(), "max": total.lat.max, **total.lat.percentiles((50, 90, 99))},
            "ttft_ms": {"avg": total.ttft.avg(), **total.ttft.percentiles((50, 90, 99))},
            "bucket_seconds": step,
            "series": [{"t": first + i * step, "count": agg.n, "errors": agg.errors,
                        **{f"latency_{k}": v for k, v in agg.lat.percentiles((50, 90)).items()},
                        "latency_avg": agg.lat.avg()} for i, agg in enumerate(series)],
            **{f"by_{name}": breakdowns[name] for name in summary.BREAKDOWNS},
            "source": "summary",
        }

    @staticmethod
    def _edge_rows(conn: sqlite3.Connection, flt: LogFilter, start: float) -> list[tuple]:
        """The matching records of the part-minutes at the ends of the range (:func:`summary.raw_ranges`)."""
        where, params = flt.where()
        and_ = " AND " if where else " WHERE "
        rows: list[tuple] = []
        for lo, hi in summary.raw_ranges(start, flt.until):
            bounds = f"{and_}time >= ?" + (" AND time < ?" if hi is not None else "")
            rows += conn.execute(f"SELECT {summary.NARROW_SQL} FROM logs{where}{bounds}",
                                 params + [lo] + ([hi] if hi is not None else [])).fetchall()
        return rows

    @staticmethod
    def _summary_breakdowns(conn: sqlite3.Connection, dim: str, matching: set[int], combos: dict[int, tuple],
                            start: float, until: float | None, edge_rows: list[tuple]) -> dict[str, list[dict]]:
        """by_provider, by_model, ...: from the per-dimension summaries when every record counts,
        else from the per-combination ones of the matching combinations; hours where whole."""
        groups: dict[str, dict] = {d: {} for d in summary.BREAKDOWNS}
        for r in edge_rows:
            combo = summary.combo_of(r)
            for d in summary.BREAKDOWNS:
                summary.merge_breakdowns(groups, d, summary.DIMS[d](combo), 1, combo[7], (r[11] or 0) + (r[12] or 0),
                                         r[14] or 0.0, r[9] or 0.0, 1 if r[9] is not None else 0)
        sums = "SUM(n), SUM(errors), TOTAL(input_tokens + output_tokens), TOTAL(cost), TOTAL(lat_sum), SUM(lat_n)"
        dims = ", ".join("?" * len(summary.BREAKDOWNS))
        for level, lo, hi in summary.rollup_ranges(start, until, 3600):
            if dim == "":
                for d, value, *sums_row in conn.execute(
                        f"SELECT dim, value, {sums} FROM stats_scope WHERE level = ? AND dim IN ({dims}) "
                        "AND t >= ? AND t < ? GROUP BY dim, value", [level, *summary.BREAKDOWNS, lo, hi]):
                    summary.merge_breakdowns(groups, d, summary.loaded(value), *sums_row)
            else:
                for cid, *sums_row in conn.execute(
                        f"SELECT combo, {sums} FROM stats_rollup WHERE level = ? AND t >= ? AND t < ? "
                        "AND combo IN (SELECT value FROM json_each(?)) GROUP BY combo",
                        (level, lo, hi, dumps(sorted(matching)))):
                    for d in summary.BREAKDOWNS:
                        summary.merge_breakdowns(groups, d, summary.DIMS[d](combos[cid]), *sums_row)
        return summary.breakdown_lists(groups)

    def _stats_exact(self, conn: sqlite3.Connection, flt: LogFilter, buckets: int) -> dict:
        """One SQL statement (``_STATS_SQL``), one pass over the matching rows of the (wide) ``logs``
        table, plus, when the filter leaves the time range open, a look at its bounds.

        The matching rows are copied once, narrow, into ``f``; everything else is aggregated by
        SQLite from there: totals, a GROUP BY over (bucket, provider, model, key, team, status)
        that the time series and every breakdown are rolled up from, and the percentiles, picked
        by rank (``ROW_NUMBER``) so that only the rows at those ranks come back. The answer has a
        few rows per bucket and per breakdown value, however many records the range holds."""
        where, params = flt.where()
        nb = max(buckets, 1)
        now = time.time()
        since = flt.since
        if since is None:   # the oldest matching row
            since = conn.execute(f"SELECT MIN(time) FROM logs{where}", params).fetchone()[0]
            since = since if since is not None else now - 3600
        until = self._series_end(conn, flt, now)
        width = max((until - since) / nb, 1e-3)
        rows = conn.execute(_STATS_SQL.replace("{where}", where), [nb - 1, since, width] + params).fetchall()
        agg = next(r[2:13] for r in rows if r[0] == "agg")
        (count, errors, input_tokens, output_tokens, cached_tokens, cost, cache_hits, fallbacks,
         latency_avg, latency_max, ttft_avg) = agg
        count = count or 0
        errors = errors or 0
        series = [{"t": since + i * width, "count": 0, "errors": 0, "latency_p50": None, "latency_p90": None,
                   "latency_avg": None} for i in range(buckets)]
        latency = {"p50": None, "p90": None, "p99": None}
        ttft = {"p50": None, "p90": None, "p99": None}
        groups: dict[str, list[dict]] = {name: [] for name in _GROUPS}
        for kind, key, a, b, c, d, e, *_ in rows:
            if kind == "bucket":
                series[key].update(count=a, errors=b or 0, latency_avg=c)
            elif kind == "bucket_pct":   # key: bucket, a: rank, b: count, c: value
                for p in (50, 90):
                    if a == _rank(b, p) + 1:
                        series[key][f"latency_p{p}"] = c
            elif kind in ("latency_pct", "ttft_pct"):
                target = latency if kind == "latency_pct" else ttft
                for p in (50, 90, 99):
                    if a == _rank(b, p) + 1:
                        target[f"p{p}"] = c
            elif kind in groups:
                groups[kind].append({"value": key, "count": a, "errors": b, "tokens": int(c), "cost": d,
                                     "latency_avg": e})
        for name in groups:
            groups[name].sort(key=lambda g: -g["count"])
        return {
            "since": since, "until": until, "count": count, "errors": errors,
            "error_rate": errors / count if count else 0.0,
            "input_tokens": int(input_tokens), "output_tokens": int(output_tokens),
            "cached_tokens": int(cached_tokens), "total_tokens": int(input_tokens + output_tokens),
            "cost": cost, "cache_hits": cache_hits or 0, "fallbacks": fallbacks or 0,
            "latency_ms": {"avg": latency_avg, "max": latency_max, **latency},
            "ttft_ms": {"avg": ttft_avg, **ttft},
            "bucket_seconds": width, "series": series,
            **{f"by_{name}": groups[name] for name in _GROUPS},
            "source": "records",
        }


_GROUPS = ("provider", "model", "key", "team", "status")


def _stats_sql() -> str:
    width = 13   # the widest part ("agg") has 12 values after its kind

    def part(select: str, columns: int) -> str:
        return select.replace("{pad}", ", NULL" * (width - 1 - columns))

    def pct(kind: str, key: str, column: str, partition: str, ranks: tuple) -> str:
        """Rows at the nearest ranks (1-based: ceil(p * n / 100)) of ``column``, per partition."""
        wanted = " OR ".join(f"rn = ({p} * n + 99) / 100" for p in ranks)
        if partition:   # n: the partition's size, from the same sort
            window = (f"OVER ({partition}ORDER BY {column} ROWS BETWEEN UNBOUNDED PRECEDING "
                      "AND UNBOUNDED FOLLOWING)")
            inner = (f"SELECT b, {column} AS v, ROW_NUMBER() {window} AS rn, COUNT(*) {window} AS n FROM f "
                     f"WHERE {column} IS NOT NULL")
        else:   # n: a plain count (cheaper than a whole-table window frame)
            inner = (f"SELECT {column} AS v, ROW_NUMBER() OVER (ORDER BY {column}) AS rn, "
                     f"(SELECT COUNT({column}) FROM f) AS n FROM f WHERE {column} IS NOT NULL")
        return part(f"SELECT '{kind}', {key}, rn, n, v{{pad}} FROM ({inner}) WHERE {wanted}", 4)

    rollup = ("SUM(n), SUM(errors), TOTAL(tokens), TOTAL(cost), "
              "CASE WHEN SUM(lat_n) > 0 THEN TOTAL(lat_sum) / SUM(lat_n) END")
    parts = [
        part("SELECT 'agg', NULL, COUNT(*), SUM(err), TOTAL(input_tokens), TOTAL(output_tokens), "
             "TOTAL(cached_tokens), TOTAL(cost), SUM(cache_hit), "
             "SUM(CASE WHEN fallback_index > 0 THEN 1 ELSE 0 END), AVG(latency_ms), MAX(latency_ms), "
             "AVG(ttft_ms){pad} FROM f", 12),
        part(f"SELECT 'bucket', b, SUM(n), SUM(errors), "
             f"CASE WHEN SUM(lat_n) > 0 THEN TOTAL(lat_sum) / SUM(lat_n) END{{pad}} FROM g GROUP BY b", 4),
        pct("bucket_pct", "b", "latency_ms", "PARTITION BY b ", (50, 90)),
        pct("latency_pct", "NULL", "latency_ms", "", (50, 90, 99)),
        pct("ttft_pct", "NULL", "ttft_ms", "", (50, 90, 99)),
    ] + [part(f"SELECT * FROM (SELECT '{name}', {name}, {rollup}{{pad}} FROM g GROUP BY {name} "
              f"ORDER BY SUM(n) DESC LIMIT 100)", 6) for name in _GROUPS]
    # parameters: buckets - 1, since, bucket width, then the filter's
    return (
        # int() in Python and CAST in SQLite both truncate toward zero
        "WITH f AS MATERIALIZED (SELECT MIN(?, MAX(0, CAST((time - ?) / ? AS INTEGER))) AS b, latency_ms, ttft_ms, "
        f"{_ERR} AS err, provider, model, COALESCE(key_name, key_id) AS key, team_id AS team, status, "
        "input_tokens, output_tokens, cached_tokens, cost, cache_hit, fallback_index FROM logs{where}), "
        "g AS MATERIALIZED (SELECT b, provider, model, key, team, status, COUNT(*) AS n, SUM(err) AS errors, "
        "TOTAL(input_tokens + output_tokens) AS tokens, TOTAL(cost) AS cost, TOTAL(latency_ms) AS lat_sum, "
        "COUNT(latency_ms) AS lat_n FROM f GROUP BY b, provider, model, key, team, status) "
        + " UNION ALL ".join(parts)
    )


_STATS_SQL = _stats_sql()
