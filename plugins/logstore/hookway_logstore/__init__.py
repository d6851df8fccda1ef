"""hookway-logstore: every request in a SQLite log, a query API and a live dashboard.

* ``hookway_log`` sink: batches from the core's bounded log queue are written by one writer
  thread into ``<server.data_dir>/logs.db`` (WAL), so the event loop never waits on SQLite.
* ``GET /api/logs`` (filters, paging, sorting), ``/api/logs/{id}``, ``/api/logs/stats``,
  ``/api/logs/stream`` (Server-Sent Events of new records): management endpoints
  (``hookway.app.admin_only``).
* ``GET /logs``: a self-contained dashboard page (no build step, no CDN).

Provider key values (and the admin token) are replaced by ``[redacted]`` in anything stored.
"""

from __future__ import annotations

import asyncio
import os
import time
from importlib import resources

import orjson
import structlog
from aiohttp import web

from hookway import hookimpl
from hookway.admin import admin_only

from .filters import FilterError, LogFilter, parse_bool, parse_duration, parse_page, parse_sort
from .store import CONTENT_COLUMNS, LogStore

__all__ = ["LogstorePlugin", "LogStore", "LogFilter"]

log = structlog.get_logger("hookway.logstore")

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no"}

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "description": "SQLite file; relative paths are under server.data_dir"},
        "log_content": {"type": "boolean", "description": "store request and response content (default true)"},
        "retention": {"type": ["string", "null"], "pattern": r"^\d+(s|m|h|d|w)$",
                      "description": "delete records older than this (default 30d; null keeps everything)"},
        "max_rows": {"type": ["integer", "null"], "minimum": 1},
        "max_content_bytes": {"type": "integer", "minimum": 1024},
        "retention_check_seconds": {"type": "number", "exclusiveMinimum": 0},
        "dashboard": {"type": "boolean", "description": "serve the /logs page (default true)"},
    },
}


def _json(body, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _bad(message: str) -> web.Response:
    return _json({"error": {"message": message, "type": "invalid_request_error"}}, 400)


class _Subscriber:
    __slots__ = ("filter", "queue", "lagged")

    def __init__(self, flt: LogFilter, size: int = 2000) -> None:
        self.filter = flt
        self.queue: asyncio.Queue = asyncio.Queue(size)
        self.lagged = False


class LogstorePlugin:
    def __init__(self) -> None:
        self.store: LogStore | None = None
        self.gateway = None
        self.log_content = True
        self.subscribers: set[_Subscriber] = set()
        self._retention_task: asyncio.Task | None = None

    # --- start-up ---

    @hookimpl
    def hookway_config_schema(self):
        return SCHEMA

    @hookimpl
    def hookway_configure(self, settings, gateway):
        self.gateway = gateway
        self.log_content = settings.get("log_content", True)
        if self.log_content:
            gateway.log_content = True
        data_dir = gateway.config.server.data_dir
        path = settings.get("path") or "logs.db"
        if not os.path.isabs(path):
            path = os.path.join(data_dir, path)
        self.path = path
        retention = settings.get("retention", "30d")
        self.retention = parse_duration(retention, "retention") if retention else None
        self.max_rows = settings.get("max_rows")
        self.retention_check = settings.get("retention_check_seconds", 300.0)
        self.dashboard = settings.get("dashboard", True)
        server = gateway.config.server
        # Records the store refuses (a full disk) wait in memory within the log queue's bounds.
        self.store = LogStore(path, max_content_chars=settings.get("max_content_bytes", 4_000_000),
                              backlog_records=server.log_queue_size, backlog_chars=server.log_queue_bytes,
                              on_written=self._broadcast, on_dropped=self._count_dropped)

    @hookimpl
    def hookway_cleanup_ctx(self, gateway):
        async def lifecycle(app):
            await self.store.open()
            log.info("logstore_open", path=self.path, log_content=self.log_content)
            if self.retention is not None or self.max_rows is not None:
                self._retention_task = asyncio.ensure_future(self._retention_loop())
            yield
            if self._retention_task is not None:
                self._retention_task.cancel()
            # The core flushes its log queue before plugins' cleanup runs, so every record is in.
            await self.store.close()
            log.info("logstore_closed", path=self.path, written=self.store.written)
        return lifecycle

    async def _retention_loop(self) -> None:
        while True:
            try:
                older = time.time() - self.retention if self.retention is not None else None
                deleted = await self.store.prune(older, self.max_rows)
                if deleted:
                    log.info("logstore_pruned", deleted=deleted)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("logstore_prune_failed")
            await asyncio.sleep(self.retention_check)

    # --- the sink ---

    @hookimpl
    async def hookway_log(self, records):
        if not self.log_content:
            records = [_without_content(r) for r in records]
        if self.store.closed:
            log.warning("logstore_records_after_close", count=len(records),
                        detail="the core delivered records after the store closed; written directly")
        rows = await self.store.write(records, self.gateway.redactor(), self._decode)
        self._broadcast(rows)

    def _count_dropped(self, count: int) -> None:
        """Records the store refused for longer than the backlog could hold them: counted with
        the log queue's drops (``/api/logs/stats``, the Prometheus metric)."""
        if self.gateway.log_queue is not None:
            self.gateway.log_queue.count_dropped(count)

    def _decode(self, record):
        """A pass-through answer's bytes read by the dialect that produced them (writer thread)."""
        dialect = self.gateway.dialects.get(record.dialect)
        if dialect is None:
            return None
        return dialect.response_from_bytes(record.response_body, record.operation, record.stream)

    def _broadcast(self, rows: list[dict]) -> None:
        for sub in list(self.subscribers):   # none, mostly
            for row in rows:
                if sub.filter.match(row):
                    try:
                        sub.queue.put_nowait({k: v for k, v in row.items() if k not in CONTENT_COLUMNS})
                    except asyncio.QueueFull:
                        sub.lagged = True
                        break

    # --- routes ---

    @hookimpl
    def hookway_register_routes(self, router, gateway):
        router.add_get("/api/logs", admin_only(self.api_list))
        router.add_get("/api/logs/stats", admin_only(self.api_stats))
        router.add_get("/api/logs/stream", admin_only(self.api_stream))
        router.add_get("/api/logs/{id}", admin_only(self.api_get))
        if self.dashboard:
            router.add_get("/logs", self.page)

    async def api_list(self, request: web.Request) -> web.Response:
        try:
            flt = LogFilter.from_query(request.query)
            order = parse_sort(request.query.get("sort"))
            limit, offset = parse_page(request.query)
        except FilterError as exc:
            return _bad(str(exc))
        rows, total = await self.store.list(flt, order, limit, offset)
        return _json({"data": rows, "total": total, "limit": limit, "offset": offset,
                      "sort": request.query.get("sort", "-time")})

    async def api_get(self, request: web.Request) -> web.Response:
        row = await self.store.get(request.match_info["id"])
        if row is None:
            return _json({"error": {"message": f"no log record {request.match_info['id']!r}",
                                    "type": "not_found_error"}}, 404)
        return _json(row)

    async def api_stats(self, request: web.Request) -> web.Response:
        try:
            flt = LogFilter.from_query(request.query, default_range=86400.0)
            buckets = int(request.query.get("buckets", 60))
            if not 1 <= buckets <= 1000:
                raise FilterError("buckets: expected 1..1000")
            exact = parse_bool(request.query.get("exact") or "false", "exact")
        except ValueError as exc:   # FilterError is a ValueError
            return _bad(str(exc) if isinstance(exc, FilterError) else "buckets must be an integer")
        stats = await self.store.stats(flt, buckets, exact)
        queue = self.gateway.log_queue
        stats["dropped"] = queue.dropped if queue is not None else 0
        stats["queued"] = len(queue.items) if queue is not None else 0
        stats["waiting_for_disk"] = len(self.store.backlog)
        stats["log_content"] = self.log_content
        return _json(stats)

    async def api_stream(self, request: web.Request) -> web.StreamResponse:
        try:
            flt = LogFilter.from_query({k: v for k, v in request.query.items() if k not in ("limit", "offset", "sort")})
        except FilterError as exc:
            return _bad(str(exc))
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        sub = _Subscriber(flt)
        self.subscribers.add(sub)
        queue = self.gateway.log_queue
        try:
            hello = {"time": time.time(), "dropped": queue.dropped if queue is not None else 0}
            await resp.write(b"retry: 2000\nevent: hello\ndata: " + orjson.dumps(hello) + b"\n\n")
            last = time.monotonic()
            while not self.gateway.stopping.is_set():
                try:
                    row = await asyncio.wait_for(sub.queue.get(), 0.5)
                except asyncio.TimeoutError:
                    if time.monotonic() - last > 15:
                        await resp.write(b": ping\n\n")
                        last = time.monotonic()
                    continue
                out = [b"event: log\ndata: " + orjson.dumps(row) + b"\n\n"]
                while not sub.queue.empty():
                    out.append(b"event: log\ndata: " + orjson.dumps(sub.queue.get_nowait()) + b"\n\n")
                if sub.lagged:
                    sub.lagged = False
                    out.append(b"event: reset\ndata: {}\n\n")   # the client re-queries
                await resp.write(b"".join(out))
                last = time.monotonic()
        except ConnectionResetError:
            pass
        finally:
            self.subscribers.discard(sub)
        return resp

    async def page(self, request: web.Request) -> web.Response:
        html = resources.files(__package__).joinpath("dashboard.html").read_bytes()
        return web.Response(body=html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache",
                                     "Content-Security-Policy": "default-src 'self'; style-src 'self' "
                                     "'unsafe-inline'; script-src 'self' 'unsafe-inline'; img-src 'self' data:"})


def _without_content(record):
    """A copy of a record without request/response content (``log_content: false``)."""
    from dataclasses import replace
    return replace(record, request=None, response=None, response_body=None)
