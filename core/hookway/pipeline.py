"""One request's journey: parse, auth, route, cache, transform, call the provider, render, log.

    client -> dialect.peek/parse -> auth -> route -> cache -> transform -> adapter
           -> fallback (on failure before the first byte) -> dialect render -> log (queued)

The per-request hooks come from a compiled :class:`hookway.plugins.HookTable`; an absent hook is a
``None`` test at the call site. The same-dialect fast path forwards bytes with only the model
rewritten and a cheap usage tap.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from . import ir
from .errors import GatewayError, invalid
from .plugins import compose_stream_transforms
from .providers import Target
from .sse import SSE_HEADERS


@dataclass(slots=True)
class Identity:
    """Who is calling, as decided by an auth plugin."""

    key_id: str | None = None
    key_name: str | None = None
    team_id: str | None = None
    customer_id: str | None = None
    bundle: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(slots=True)
class LogRecord:
    """One finished request, handed to ``hookway_log`` sinks in batches."""

    id: str
    time: float
    dialect: str
    operation: str
    model: str | None
    provider: str | None
    upstream_model: str | None
    rule: str | None
    key_id: str | None
    key_name: str | None
    team_id: str | None
    customer_id: str | None
    status: int
    error: str | None
    latency_ms: float
    ttft_ms: float | None
    upstream_ms: float | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_hit: bool
    cache_similarity: float | None
    fallback_index: int        # how many times the request moved to another target (retries excluded)
    stream: bool
    passthrough: bool
    stop_reason: str | None = None
    cost: float | None = None  # USD, set by a pricing plugin (governance)
    cache_status: str | None = None   # hit | miss | skip when a cache was consulted, else None
    # Every failed upstream attempt: {provider, model, key, status, error, start_ms, end_ms}
    attempts: list = field(default_factory=list)
    request: Any = None        # the request body (dict), when content logging is on
    response: Any = None       # ir.Response when known and content logging is on
    response_body: bytes | None = None   # the upstream bytes of a pass-through answer (content logging)
    extra: dict = field(default_factory=dict)


# Request ids: a random per-process prefix and a counter; unique across workers and restarts, and
# cheaper than uuid4 per request.
def _new_id_prefix() -> None:
    global _ID_PREFIX, _id_counter
    _ID_PREFIX = os.urandom(8).hex()
    _id_counter = itertools.count(1)


_new_id_prefix()
# `hookway serve --workers N` forks after this module is imported: each worker draws its own prefix.
os.register_at_fork(after_in_child=_new_id_prefix)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


class RequestContext:
    """Everything about one request; per-request hooks read and set its attributes."""

    __slots__ = ("id", "gateway", "request", "headers", "dialect", "operation", "body", "model",
                 "stream", "identity", "table", "targets", "target", "rule", "state", "_ir",
                 "usage", "response_headers", "started", "first_byte_at", "upstream_started",
                 "upstream_done", "status", "error", "attempt", "cache_hit", "cache_similarity",
                 "response", "passthrough", "collect", "stop_reason", "cost", "attempts",
                 "fallback_index", "cache_status", "delivered", "body_size")

    def __init__(self, gateway, request, dialect, operation):
        self.id = new_request_id()
        self.gateway = gateway
        self.request = request
        self.headers = request.headers if request is not None else {}
        self.dialect = dialect
        self.operation = operation
        self.body: dict = {}
        self.body_size = 0             # bytes of the request body as received
        self.model: str | None = None
        self.stream = False
        self.identity: Any = None
        self.table = gateway.tables[None]
        self.targets: list[Target] = []
        self.target: Target | None = None
        self.rule: str | None = None
        self.state: dict = {}
        self._ir: ir.Request | None = None
        self.usage = ir.Usage()
        self.response_headers: dict = {"x-request-id": self.id}   # the id of the log record
        self.started = time.perf_counter()
        self.first_byte_at: float | None = None
        self.upstream_started: float | None = None
        self.upstream_done: float | None = None
        self.status = 0
        self.error: GatewayError | None = None
        self.attempt = 0               # attempts made so far (retries and fallbacks)
        self.fallback_index = 0        # target changes so far
        self.attempts: list[dict] = []  # the failed ones, for logs and spans
        self.cache_hit = False
        self.cache_similarity: float | None = None
        self.cache_status: str | None = None   # a cache plugin sets "miss" or "skip"; the core "hit"
        self.response: ir.Response | None = None
        self.passthrough = False
        self.collect = False
        self.stop_reason: str | None = None
        self.cost: float | None = None
        # The whole answer reached the client: a disconnect after it is not a cancellation (499).
        self.delivered = False

    @property
    def ir(self) -> ir.Request:
        """The canonical request, parsed on first use. Touching it turns off the byte
        pass-through, because the request may have been changed."""
        if self._ir is None:
            self._ir = self.dialect.parse(self.body, self.operation)
        return self._ir

    @property
    def parsed(self) -> bool:
        return self._ir is not None

    def logged_content_size(self) -> int:
        """Roughly how many bytes of content the log record holds (the request body as received,
        the response's bytes or its blocks' text), for the log queue's bound."""
        if not self.gateway.log_content:
            return 0
        raw = self.state.get("raw_response")
        if raw:
            return self.body_size + len(raw)
        size = self.body_size
        for block in (self.response.content if self.response is not None else ()):
            for value in block.values():
                size += len(value) if type(value) is str else len(orjson.dumps(value))
        return size

    def log_record(self) -> LogRecord:
        ident = self.identity
        target = self.target
        now = time.perf_counter()
        upstream_ms = None
        if self.upstream_started is not None:
            upstream_ms = ((self.upstream_done or now) - self.upstream_started) * 1000
        err = self.error
        return LogRecord(
            id=self.id, time=time.time(), dialect=self.dialect.name, operation=self.operation,
            model=self.model, provider=target.provider if target else None,
            upstream_model=target.model if target else None, rule=self.rule,
            key_id=getattr(ident, "key_id", None), key_name=getattr(ident, "key_name", None),
            team_id=getattr(ident, "team_id", None), customer_id=getattr(ident, "customer_id", None),
            status=self.status, error=(f"{err.kind}: {err.message}" if err else None),
            latency_ms=(now - self.started) * 1000,
            ttft_ms=((self.first_byte_at - self.started) * 1000) if self.first_byte_at else None,
            upstream_ms=upstream_ms,
            input_tokens=self.usage.input_tokens, output_tokens=self.usage.output_tokens,
            cached_tokens=self.usage.cache_read_input_tokens, cache_hit=self.cache_hit,
            cache_similarity=self.cache_similarity, cache_status=self.cache_status, fallback_index=self.fallback_index, stream=self.stream,
            passthrough=self.passthrough, stop_reason=self.stop_reason, cost=self.cost,
            attempts=self.attempts,
            request=self.body if self.gateway.log_content else None,
            response=self.response if self.gateway.log_content else None,
            response_body=self.state.get("raw_response") if self.gateway.log_content else None,
            extra=self.state.get("log", {}),
        )


def _json_response(status: int, body: Any, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                        headers=headers)


class _EventStreamResponse(web.StreamResponse):
    """A stream whose headers go out with its first bytes, in one write: aiohttp otherwise sends a
    stream's headers on their own, one more system call per request. The pipeline writes right
    after ``prepare()``, so the client never waits for them."""

    _send_headers_immediately = False


class _Keepalive:
    """Writes the dialect's ping into a stream after ``interval`` seconds without a write.

    A timer re-armed every interval, not a task per stream: creating and cancelling a task costs
    more than all the other per-stream bookkeeping of a short answer. A task exists only while a
    ping is being written."""

    __slots__ = ("resp", "render", "interval", "last_write", "_loop", "_timer", "_writing")

    def __init__(self, resp: web.StreamResponse, render, interval: float):
        self.resp = resp
        self.render = render
        self.interval = interval
        self.last_write = time.monotonic()   # the stream updates it after each of its writes
        self._loop = asyncio.get_running_loop()
        self._writing: asyncio.Task | None = None
        self._timer = self._loop.call_later(interval, self._check)

    def _check(self) -> None:
        if self._writing is None and time.monotonic() - self.last_write >= self.interval:
            data = self.render(ir.Ping())
            if data:
                self._writing = asyncio.ensure_future(self._write(data))
        self._timer = self._loop.call_later(self.interval, self._check)

    async def _write(self, data: bytes) -> None:
        try:
            await self.resp.write(data)
            self.last_write = time.monotonic()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._writing = None

    def cancel(self) -> None:
        self._timer.cancel()
        if self._writing is not None:
            self._writing.cancel()


class Pipeline:
    """The request journey; mixed into :class:`hookway.app.Gateway`."""

    # --- entry points used by dialect plugins' route handlers ---

    async def handle(self, request: web.Request, dialect, operation: str) -> web.StreamResponse:
        ctx = RequestContext(self, request, dialect, operation)
        try:
            await self._read(ctx)
            await self._auth(ctx)
            mw = ctx.table.middleware
            if mw is not None:
                return await mw(ctx, self._serve)
            return await self._serve(ctx)
        except GatewayError as err:
            return self._fail(ctx, err)
        except asyncio.CancelledError:
            if not ctx.delivered:
                ctx.status = 499   # the client went away
            raise
        except ConnectionResetError:   # the client went away while we were writing to it
            if not ctx.delivered:
                ctx.status = 499
            return web.Response(status=499)
        except Exception as exc:  # a bug must still answer in the caller's dialect
            self.log.exception("internal_error", request_id=ctx.id)
            return self._fail(ctx, GatewayError("api_error", f"internal error: {type(exc).__name__}"))
        finally:
            self._finish(ctx)

    async def authenticate(self, request: web.Request, dialect) -> RequestContext:
        """Auth only (for endpoints without a body such as ``GET /v1/models``)."""
        ctx = RequestContext(self, request, dialect, "models")
        await self._auth(ctx)
        return ctx

    async def prepare(self, request: web.Request, dialect, operation: str) -> RequestContext:
        """Read, auth and route a request without calling the provider (``count_tokens``...)."""
        ctx = RequestContext(self, request, dialect, operation)
        await self._read(ctx)
        await self._auth(ctx)
        await self._route(ctx)
        return ctx

    def error_response(self, dialect, err: GatewayError) -> web.Response:
        self.scrub(err)
        status, body = dialect.render_error(err)
        return _json_response(status, body, err.headers or None)

    # --- stages ---

    async def _read(self, ctx: RequestContext) -> None:
        try:
            raw = await ctx.request.read()
        except web.HTTPRequestEntityTooLarge:
            raise GatewayError("request_too_large",
                               f"request body is larger than the limit of {ctx.request.app._client_max_size} bytes "
                               "(server.max_body_bytes)")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise invalid(f"request body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            raise invalid("request body must be a JSON object")
        ctx.body = body
        ctx.body_size = len(raw)
        ctx.model, ctx.stream = ctx.dialect.peek(body, ctx.operation)

    async def _auth(self, ctx: RequestContext) -> None:
        auth = ctx.table.auth
        if auth is None:
            return
        identity = await auth(ctx)
        ctx.identity = identity
        bundle = getattr(identity, "bundle", None)
        if bundle is not None:
            table = self.tables.get(bundle)
            if table is None:
                raise GatewayError("api_error", f"bundle {bundle!r} is not configured")
            ctx.table = table

    async def _route(self, ctx: RequestContext) -> None:
        targets = None
        if ctx.table.route is not None:
            targets = await ctx.table.route(ctx)
        if not targets:
            targets = [self.resolve_model(ctx.model)]
        ctx.targets = targets

    async def _serve(self, ctx: RequestContext) -> web.StreamResponse:
        await self._route(ctx)
        table = ctx.table
        if table.cache_lookup is not None:
            hit = await table.cache_lookup(ctx)
            if hit is not None:
                ctx.cache_hit = True
                ctx.cache_status = "hit"
                ctx.target = ctx.targets[0]
                return await self._replay(ctx, hit)
        ctx.collect = self.log_content or table.cache_store is not None
        target = ctx.targets[0]
        first_error: GatewayError | None = None
        while True:
            started = time.perf_counter()
            try:
                response = await self._attempt(ctx, target)
            except GatewayError as err:
                if ctx.first_byte_at is not None:
                    raise
                self.scrub(err)
                key = ctx.state.get("provider_key")
                ctx.attempts.append({
                    "provider": target.provider, "model": target.model,
                    "key": getattr(key, "name", None), "status": err.status,
                    "error": f"{err.kind}: {err.message}",
                    "start_ms": (started - ctx.started) * 1000,
                    "end_ms": (time.perf_counter() - ctx.started) * 1000})
                first_error = first_error or err
                nxt = None
                if table.fallback is not None:
                    nxt = await table.fallback(ctx, err, ctx.attempt)
                if nxt is None:
                    if first_error is not err:
                        self.log.info("all_targets_failed", request_id=ctx.id, last_error=err.message)
                        ctx.target = ctx.targets[0]   # the log names the target whose error is sent
                    raise first_error
                ctx.attempt += 1
                if nxt.provider != target.provider or nxt.model != target.model:
                    ctx.fallback_index += 1
                target = nxt
                continue
            if table.cache_store is not None and ctx.response is not None and ctx.error is None:
                if not response.prepared:   # a whole answer: send it before storing it
                    await response.prepare(ctx.request)
                    await response.write_eof()
                await table.cache_store(ctx, ctx.response)
            return response

    async def _attempt(self, ctx: RequestContext, target: Target) -> web.StreamResponse:
        ctx.target = target
        adapter = self.adapters.get(target.provider)
        if adapter is None:
            raise GatewayError("not_found", f"provider {target.provider!r} is not configured")
        # Counted so an adapter replaced at run time is closed only once its requests are done.
        adapter.in_flight += 1
        try:
            return await self._attempt_on(ctx, adapter, target)
        finally:
            adapter.in_flight -= 1

    async def _attempt_on(self, ctx: RequestContext, adapter, target: Target) -> web.StreamResponse:
        op = ctx.operation
        if op not in adapter.operations:
            raise adapter.unsupported(op)
        table = ctx.table
        if table.transform_request is not None:
            await table.transform_request(ctx, target)
        transform = None
        if ctx.stream and table.stream_transform_factories:
            transform = compose_stream_transforms(
                [t for t in (f(ctx) for f in table.stream_transform_factories) if t is not None])
        if (transform is None and not ctx.parsed and adapter.native_dialect == ctx.dialect.name
                and op in adapter.passthrough):
            return await self._passthrough(ctx, adapter, target)
        request = ctx.ir
        ctx.upstream_started = time.perf_counter()
        if ctx.stream:
            events = adapter.stream(request, target, ctx)
            return await self._stream(ctx, events, transform, adapter.config.network.first_byte_timeout_in_seconds)
        if op == "embeddings":
            result = await self._first_byte(adapter.embed(request, target, ctx), adapter, target)
            ctx.upstream_done = time.perf_counter()
            ctx.status = 200
            return _json_response(200, result, ctx.response_headers or None)
        response = await self._first_byte(adapter.complete(request, target, ctx), adapter, target)
        ctx.upstream_done = time.perf_counter()
        ctx.usage = response.usage
        ctx.stop_reason = response.stop_reason
        response.model = ctx.model
        ctx.response = response
        ctx.status = 200
        ctx.first_byte_at = time.perf_counter()
        return _json_response(200, ctx.dialect.render_response(response, request, op),
                              ctx.response_headers or None)

    # --- the byte pass-through ---

    async def _passthrough(self, ctx: RequestContext, adapter, target: Target) -> web.StreamResponse:
        ctx.passthrough = True
        body = dict(ctx.body)   # the adapter's own copy: it may apply quirks in place
        body["model"] = target.model
        body.pop("fallbacks", None)
        ctx.upstream_started = time.perf_counter()
        if adapter.config.network.first_byte_timeout_in_seconds:
            upstream = await self._first_byte(adapter.forward(body, ctx.operation, target, ctx), adapter, target)
        else:
            upstream = await adapter.forward(body, ctx.operation, target, ctx)
        tap = ctx.dialect.usage_tap(ctx.operation, ctx.stream)
        try:
            content_type = upstream.headers.get("Content-Type", "application/json")
            if not ctx.stream or not content_type.startswith("text/event-stream"):
                try:   # nothing has reached the client yet: a broken body can still fall back
                    data = await upstream.response.read()
                except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
                    raise self._upstream_failure(exc, target)
                ctx.upstream_done = time.perf_counter()
                if tap is not None:
                    tap.feed(data)
                    ctx.usage = tap.usage
                    ctx.stop_reason = getattr(tap, "stop_reason", None)
                if ctx.collect:
                    ctx.state["raw_response"] = data
                ctx.status = upstream.status
                ctx.first_byte_at = time.perf_counter()
                headers = {"Content-Type": content_type}
                headers.update(ctx.response_headers)
                return web.Response(status=upstream.status, body=data, headers=headers)
            resp = web.StreamResponse(status=upstream.status, headers={**SSE_HEADERS, **ctx.response_headers})
            await resp.prepare(ctx.request)
            ctx.status = upstream.status
            ctx.first_byte_at = time.perf_counter()
            write = resp.write
            collected = [] if ctx.collect else None
            flt = upstream.filter
            try:
                async for chunk in upstream.response.content.iter_any():
                    if tap is not None:
                        tap.feed(chunk)
                    if flt is not None:
                        chunk = flt(chunk)
                        if not chunk:
                            continue
                    if collected is not None:
                        collected.append(chunk)
                    await write(chunk)
                if flt is not None:
                    rest = flt(None)
                    if rest:
                        await write(rest)
                ctx.upstream_done = time.perf_counter()
                ctx.delivered = True
            except (ConnectionResetError, asyncio.CancelledError):
                # A client that closes once it has read the final event (OpenAI SDKs stop at
                # [DONE]) got the whole answer; only an earlier close is a cancellation.
                if tap is not None and getattr(tap, "done", False):
                    ctx.delivered = True
                else:
                    ctx.status = 499
                raise
            except Exception as exc:  # upstream broke after the first byte: say so in-stream
                err = self.scrub(self._upstream_failure(exc, target))
                ctx.error = err
                await write(ctx.dialect.render_stream_error(err))
            finally:   # what was read counts even when the client left early (usage, budgets, logs)
                if tap is not None:
                    ctx.usage = tap.usage
                    ctx.stop_reason = getattr(tap, "stop_reason", None)
                if collected is not None:
                    ctx.state["raw_response"] = b"".join(collected)
            await resp.write_eof()
            return resp
        finally:
            upstream.close()

    # --- translated streams ---

    async def _stream(self, ctx: RequestContext, events, transform,
                      first_byte_timeout: float | None = None) -> web.StreamResponse:
        # The first event decides between an error answer (fallbacks may still act) and a stream.
        try:
            if first_byte_timeout:
                async with asyncio.timeout(first_byte_timeout):
                    first = await events.__anext__()
            else:
                first = await events.__anext__()
        except StopAsyncIteration:
            raise GatewayError("bad_gateway", f"{ctx.target.provider}: empty answer")
        except TimeoutError:
            await events.aclose()
            raise self._first_byte_timeout(ctx.target, first_byte_timeout)
        if type(first) is list:   # adapters may yield one network read's events as a list
            if not first:
                first = [ir.Ping()]
            if type(first[0]) is ir.StreamError:
                await events.aclose()
                raise first[0].error
        elif type(first) is ir.StreamError:
            await events.aclose()
            raise first.error
        render = ctx.dialect.stream_renderer(ctx._ir, ctx.operation, ctx.model)
        resp = _EventStreamResponse(status=200, headers={**SSE_HEADERS, **ctx.response_headers})
        await resp.prepare(ctx.request)
        ctx.status = 200
        ctx.first_byte_at = time.perf_counter()
        collector = ir.ResponseCollector() if ctx.collect else None
        usage = ctx.usage
        keepalive = _Keepalive(resp, render, self.config.server.ping_interval_seconds)
        stop = False     # MessageStop seen
        ended = False    # MessageStop was written, and the end of the body with it
        try:
            pending = first
            while True:
                # One write per batch the adapter yields (one upstream read), not per event.
                batch = pending if type(pending) is list else (pending,)
                if transform is not None:
                    batch = [e for ev in batch for e in transform(ev)]
                out = []
                for e in batch:
                    t = type(e)
                    if t is not ir.BlockDelta:   # the usual event (one per token) needs no bookkeeping
                        if t is ir.MessageDelta:
                            usage.add(e.usage)
                            ctx.stop_reason = e.stop_reason or ctx.stop_reason
                        elif t is ir.MessageStart:
                            usage.add(e.usage)
                        elif t is ir.MessageStop:
                            stop = True
                        elif t is ir.StreamError:
                            ctx.error = self.scrub(e.error)
                    if collector is not None:
                        collector.feed(e)
                    data = render(e)
                    if data:
                        out.append(data)
                if ended:
                    pass   # nothing may follow MessageStop; the adapter is only read to its end
                elif stop:
                    # MessageStop is the last event: its bytes go out with the end of the body.
                    keepalive.cancel()
                    await resp.write_eof(b"".join(out))
                    ended = ctx.delivered = True
                elif out or pending is first:   # the first write also sends the headers
                    await resp.write(b"".join(out))
                    keepalive.last_write = time.monotonic()
                try:
                    pending = await events.__anext__()
                except StopAsyncIteration:
                    break
            ctx.upstream_done = time.perf_counter()
            ctx.delivered = True
        except (ConnectionResetError, asyncio.CancelledError):
            if not ctx.delivered:
                ctx.status = 499
            raise
        except GatewayError as err:  # an adapter raised after the first byte
            ctx.error = self.scrub(err)
            if not ended:
                await resp.write(render(ir.StreamError(err)))
        finally:
            keepalive.cancel()
            await events.aclose()
        if collector is not None:
            ctx.response = collector.response()
            ctx.response.model = ctx.model
        await resp.write_eof()
        return resp

    async def _replay(self, ctx: RequestContext, response: ir.Response) -> web.StreamResponse:
        """Answer from a cached :class:`ir.Response`, streamed if the client asked for a stream."""
        response.model = ctx.model
        ctx.usage = response.usage
        ctx.stop_reason = response.stop_reason
        ctx.response = response
        if not ctx.stream:
            ctx.status = 200
            ctx.first_byte_at = time.perf_counter()
            return _json_response(200, ctx.dialect.render_response(response, ctx._ir, ctx.operation),
                                  ctx.response_headers or None)

        async def events():
            yield ir.response_events(response)   # one batch: the whole answer in one write
        return await self._stream(ctx, events(), None)

    async def _first_byte(self, awaitable, adapter, target: Target):
        """Await the start of an upstream answer within network_config.first_byte_timeout_in_seconds."""
        limit = adapter.config.network.first_byte_timeout_in_seconds
        if not limit:
            return await awaitable
        try:
            async with asyncio.timeout(limit):
                return await awaitable
        except TimeoutError:
            raise self._first_byte_timeout(target, limit)

    @staticmethod
    def _first_byte_timeout(target: Target, limit: float) -> GatewayError:
        return GatewayError("timeout", f"{target.provider}: no answer within {limit:g}s "
                            "(network_config.first_byte_timeout_in_seconds)", provider=target.provider)

    # --- errors and the end of a request ---

    def scrub(self, err: GatewayError) -> GatewayError:
        """Remove the gateway's secrets from an error's message before anyone sees it: an upstream
        can echo the provider key back in its error text."""
        err.message = self.redactor()(err.message)
        return err

    def _upstream_failure(self, exc: Exception, target: Target) -> GatewayError:
        if isinstance(exc, GatewayError):
            return exc
        if isinstance(exc, asyncio.TimeoutError):
            return GatewayError("timeout", f"{target.provider}: upstream timed out", provider=target.provider)
        return GatewayError("bad_gateway", f"{target.provider}: upstream connection failed: "
                            f"{type(exc).__name__}: {exc}", provider=target.provider)

    def _fail(self, ctx: RequestContext, err: GatewayError) -> web.Response:
        ctx.error = err
        ctx.status = err.status
        response = self.error_response(ctx.dialect, err)
        response.headers["x-request-id"] = ctx.id
        return response

    def _finish(self, ctx: RequestContext) -> None:
        if self.debug:
            self.log.debug("request", request_id=ctx.id, model=ctx.model, status=ctx.status,
                           provider=ctx.target.provider if ctx.target else None,
                           ms=round((time.perf_counter() - ctx.started) * 1000, 2))
        if self.log_queue is not None:
            self.log_queue.put(ctx.log_record(), ctx.logged_content_size())

    # --- model names ---

    def resolve_model(self, model: str) -> Target:
        """``provider/model``, or an unprefixed name served by exactly one provider; else 404."""
        prefix, sep, rest = model.partition("/")
        if sep and prefix in self.adapters:
            if not rest:
                raise GatewayError("not_found", f"model name {model!r} has no model after the provider",
                                   param="model")
            return Target(prefix, rest)
        serving = [name for name, a in self.adapters.items()
                   if any(m == model or (("*" in m or "?" in m) and fnmatch.fnmatchcase(model, m))
                          for m in a.config.models)]
        if len(serving) == 1:
            return Target(serving[0], model)
        if not serving and len(self.adapters) == 1:
            (name, adapter), = self.adapters.items()
            if not adapter.config.models:
                return Target(name, model)
        known = ", ".join(sorted(self.adapters)) or "none configured"
        if serving:
            why = f"model {model!r} is served by several providers ({', '.join(sorted(serving))}); " \
                  f"name one as provider/model"
        else:
            examples = [f"{n}/{m}" for n, a in sorted(self.adapters.items()) for m in a.config.models[:3]]
            why = (f"model {model!r} not found: use provider/model with a configured provider "
                   f"({known})" + (f", e.g. {', '.join(examples[:6])}" if examples else ""))
        raise GatewayError("not_found", why, param="model")

    async def model_ids(self, ctx: RequestContext | None = None) -> list[str]:
        """``provider/model`` ids the caller may use: every provider's models, then each
        ``hookway_filter_models`` implementation of the caller's bundle in turn."""
        results = await asyncio.gather(*(a.list_models() for a in self.adapters.values()),
                                       return_exceptions=True)
        ids = []
        for (name, _), models in zip(self.adapters.items(), results):
            if isinstance(models, BaseException):
                continue
            ids += [f"{name}/{m}" for m in models]
        names = ctx.table.plugins if ctx is not None else self.plugins.global_names
        for _, fn in self.plugins.impls("hookway_filter_models", list(names)):
            result = fn(ctx=ctx, ids=ids)
            if asyncio.iscoroutine(result):
                result = await result
            if result is not None:
                ids = list(result)
        return ids
