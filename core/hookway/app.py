"""Builds the aiohttp application from a :class:`hookway.config.Config`.

Start-up order: load and configure plugins -> collect dialects and provider adapter classes ->
create one adapter per configured provider -> let plugins add routes -> compile per-request hook
tables (done in plugins.load) -> freeze. Sessions, background tasks and plugin resources live in
aiohttp's ``cleanup_ctx`` so they start inside the event loop and close on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any, Callable

import structlog
from aiohttp import web

from .admin import GATEWAY_KEY
from .config import Config, ConfigError, schema_problems
from .pipeline import LogRecord, Pipeline
from .plugins import LoadedPlugins, load as load_plugins
from .providers import ProviderAdapter


log = structlog.get_logger("hookway")


class LogQueue:
    """A bounded buffer of finished request records, drained in batches by a background task so
    sinks never slow a request down. When full, records are dropped and counted."""

    def __init__(self, sinks: list[Callable], maxsize: int, max_bytes: int = 256 * 1024 * 1024,
                 batch: int = 500, interval: float = 0.05):
        self.sinks = sinks
        self.maxsize = maxsize
        # Records carry request and response content when a sink logs it; a count alone would
        # let a stalled sink hold 100,000 agent conversations in memory.
        self.max_bytes = max_bytes
        self.bytes = 0        # content bytes of the records waiting
        self.batch = batch
        self.interval = interval
        self.items: list[LogRecord] = []
        self.sizes: list[int] = []
        self.dropped = 0      # records refused because the queue was full (or a sink's store, count_dropped)
        self.delivered = 0    # records handed to every sink
        self.failed = 0       # (record, sink) deliveries that raised
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    def put(self, record: LogRecord, size: int = 0) -> None:
        """Queue ``record``, whose logged content is ``size`` bytes, or drop it when full."""
        if len(self.items) >= self.maxsize or (size and self.bytes + size > self.max_bytes):
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("log_records_dropped", dropped=self.dropped, queue_size=self.maxsize,
                            queue_bytes=self.max_bytes)
            return
        self.items.append(record)
        self.sizes.append(size)
        self.bytes += size
        if len(self.items) >= self.batch:
            self._wakeup.set()

    def count_dropped(self, count: int) -> None:
        """Records a sink had to drop after the queue delivered them (its store refused them for
        longer than it could hold them): counted with the queue's own, so wherever drops are shown
        (``/api/logs/stats``, the Prometheus metric) they are too."""
        self.dropped += count

    async def _deliver(self, batch: list[LogRecord]) -> None:
        for sink in self.sinks:
            try:
                result = sink(records=batch)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                self.failed += len(batch)
                log.exception("log_sink_failed", sink=getattr(sink, "__qualname__", repr(sink)),
                              records=len(batch))
        self.delivered += len(batch)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wakeup.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
            self._wakeup.clear()
            await self.drain()

    async def drain(self) -> None:
        while self.items:
            batch, self.items = self.items[:self.batch], self.items[self.batch:]
            sizes, self.sizes = self.sizes[:self.batch], self.sizes[self.batch:]
            self.bytes -= sum(sizes)
            await self._deliver(batch)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Flush on graceful shutdown: the batch in flight and every record left reach every sink."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        await self.drain()


class Redactor:
    """Replaces known secrets in text bound for logs, spans or API answers (upstream errors can echo
    a provider key back). Longest first, so a secret containing another is replaced whole."""

    def __init__(self, secrets=()) -> None:
        self.secrets = tuple(sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True))

    def __call__(self, text):
        if not text or not self.secrets:
            return text
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text


class Gateway(Pipeline):
    """The running gateway: config, plugins, dialects, adapters, compiled hook tables."""

    def __init__(self, config: Config, extra_plugins: dict[str, Any] | None = None,
                 available_plugins: dict[str, Any] | None = None):
        self.config = config
        self.log = log
        self.debug = config.server.log_level == "debug"
        self.log_content = False          # set True by a sink that stores content (see docs)
        self.dialects: dict[str, Any] = {}
        self.adapter_types: dict[str, type[ProviderAdapter]] = {}
        self.adapters: dict[str, ProviderAdapter] = {}
        self.retired_adapters: list[ProviderAdapter] = []   # replaced at run time, not yet closed
        self._retiring: set[asyncio.Task] = set()
        self._redactor: tuple[Any, Redactor] | None = None
        self.log_queue: LogQueue | None = None
        self.stopping = asyncio.Event()   # set when a graceful shutdown begins
        self.tables = {}
        self.plugins: LoadedPlugins = load_plugins(config, self, available_plugins, extra_plugins)
        self.tables = self.plugins.tables

        def add_dialect(dialect):
            self.dialects[dialect.name] = dialect

        def add_adapter(type_name: str, cls: type[ProviderAdapter]):
            self.adapter_types[type_name] = cls

        self.plugins.call_startup("hookway_register_dialects", register=add_dialect)
        self.plugins.call_startup("hookway_register_providers", register=add_adapter)
        problems = []
        for name, pconf in config.providers.items():
            cls = self.adapter_types.get(pconf.type)
            if cls is None:
                problems.append(
                    f"providers.{name}: type {pconf.type!r} is provided by no enabled plugin "
                    f"(enabled types: {', '.join(sorted(self.adapter_types)) or 'none'}; "
                    f"enable the plugin that provides it under plugins:, e.g. `{pconf.type}: {{}}`)")
                continue
            settings_problems = self.provider_settings_problems(pconf)
            if settings_problems:
                problems += settings_problems
                continue
            self.adapters[name] = cls(pconf, self)
        if problems:
            raise ConfigError(problems)
        _log_redactor[:] = [self.redactor]
        sinks = [fn for _, fn in self.plugins.impls("hookway_log", self.plugins.all_names)]
        if sinks:
            self.log_queue = LogQueue(sinks, config.server.log_queue_size, config.server.log_queue_bytes)

    def dialect_of(self, request: web.Request, default):
        """The dialect whose clients send headers like ``request``'s, else ``default``."""
        for dialect in self.dialects.values():
            if dialect is not default and dialect.recognizes(request.headers):
                return dialect
        return default

    def redactor(self) -> Redactor:
        """The :class:`Redactor` for the current secrets: every provider key value and the admin
        token. Rebuilt when providers change at run time."""
        adapters = self.adapters
        if self._redactor is None or self._redactor[0] is not adapters:
            secrets = [k.value for a in adapters.values() for k in a.config.keys if k.value]
            secrets += [k.value for p in self.config.providers.values() for k in p.keys if k.value]
            if self.config.server.admin_token:
                secrets.append(self.config.server.admin_token)
            self._redactor = (adapters, Redactor(secrets))
        return self._redactor[1]

    # --- provider management at run time (used by management APIs) ---

    def provider_settings_problems(self, pconf) -> list[str]:
        """A provider block's ``settings:`` checked against its adapter's ``settings_schema``."""
        schema = getattr(self.adapter_types.get(pconf.type), "settings_schema", None)
        if not schema:
            return []
        return schema_problems(pconf.settings, schema, ["providers", pconf.name, "settings"])

    async def set_provider(self, pconf) -> None:
        """Add or replace a provider while running; effective for the next request."""
        cls = self.adapter_types.get(pconf.type)
        if cls is None:
            raise ConfigError(f"providers.{pconf.name}: type {pconf.type!r} is provided by no enabled plugin")
        problems = self.provider_settings_problems(pconf)
        if problems:
            raise ConfigError(problems)
        adapter = cls(pconf, self)
        await adapter.start()
        old = self.adapters.get(pconf.name)
        self.adapters = {**self.adapters, pconf.name: adapter}
        if old is not None:
            self._retire(old)

    async def remove_provider(self, name: str) -> bool:
        old = self.adapters.get(name)
        if old is None:
            return False
        self.adapters = {k: v for k, v in self.adapters.items() if k != name}
        self._retire(old)
        return True

    def _retire(self, adapter: ProviderAdapter) -> None:
        """Close a replaced adapter once the requests still using it are done (long streams
        included), or at shutdown."""
        self.retired_adapters.append(adapter)
        task = asyncio.ensure_future(self._close_when_idle(adapter))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close_when_idle(self, adapter: ProviderAdapter) -> None:
        while adapter.in_flight > 0:
            await asyncio.sleep(1)
        if adapter in self.retired_adapters:
            self.retired_adapters.remove(adapter)
            await adapter.close()

    # --- the aiohttp application ---

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.server.max_body_bytes)
        app[GATEWAY_KEY] = self
        app.router.add_get("/health", self._health)
        self.plugins.call_startup("hookway_register_routes", router=app.router, gateway=self)
        app.cleanup_ctx.append(self._lifecycle)
        for ctx_fn in self.plugins.call_startup("hookway_cleanup_ctx", names=self.plugins.all_names,
                                                gateway=self):
            app.cleanup_ctx.append(lambda _app, fn=ctx_fn: fn(_app))
        # Registered last: starts after the plugins' resources and is flushed before they close.
        app.cleanup_ctx.append(self._log_lifecycle)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        self.stopping.set()   # long-lived handlers (live log streams) end on this

    async def _lifecycle(self, app: web.Application):
        for adapter in self.adapters.values():
            await adapter.start()
        log.info("gateway_started", providers=sorted(self.adapters), plugins=self.plugins.global_names,
                 bundles=sorted(self.plugins.bundles))
        yield
        for adapter in [*self.adapters.values(), *self.retired_adapters]:
            await adapter.close()
        self.retired_adapters.clear()

    async def _log_lifecycle(self, app: web.Application):
        if self.log_queue is not None:
            self.log_queue.start()
        yield
        if self.log_queue is not None:
            await self.log_queue.stop()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "providers": sorted(self.adapters),
                                  "time": int(time.time()), "pid": os.getpid()})


_log_redactor: list = []   # the running gateway's redactor, for the gateway's own log lines


def _redact_event(logger, method, event_dict):
    """structlog processor: no secret (provider key, admin token) reaches a log line."""
    if _log_redactor:
        redact = _log_redactor[0]()
        for k, v in event_dict.items():
            if isinstance(v, str):
                event_dict[k] = redact(v)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "console", cache: bool = True, stream=None) -> None:
    """structlog for the gateway's own events; JSON lines with ``log_format: json``. Plugins that
    log through the standard library come out in the same format (ProcessorFormatter). Secrets are
    removed from every line. Everything goes to ``stream`` (default: standard error)."""
    stream = stream or sys.stderr
    lvl = getattr(logging, level.upper(), logging.INFO)
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    shared = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
              structlog.processors.TimeStamper(fmt="iso")]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, _redact_event, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=cache,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _redact_event, renderer],
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name]))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(lvl)
