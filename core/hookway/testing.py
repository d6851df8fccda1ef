"""pytest plugin for hookway plugin authors (and hookway's own tests). Loaded automatically once
hookway is installed (entry point ``pytest11``).

Fixtures:

* ``fake_upstream`` — a local HTTP server that speaks the OpenAI wire format (chat completions,
  streaming or not, text completions, models, embeddings), scriptable reply by reply, recording
  what it received. Runs in a background thread, so sync SDK clients work in tests.
* ``start_gateway`` — ``start_gateway(config_dict, extra_plugins=None)`` builds and runs a gateway
  in a background thread and returns a :class:`RunningGateway` with ``.url``. ``server.data_dir``
  defaults to the test's temporary directory, so embedded stores never touch ``./data``.
* ``fake_upstreams`` — a factory of further :class:`FakeOpenAI` servers (fallback tests).
* ``start_test_gateway`` — ``start_gateway`` with :class:`RecordingSink` and :class:`HeaderIdentity`
  enabled (as ``sink`` and ``headerauth``), on one data directory for the whole test, so a test
  can stop a gateway and start another on the same stores.

* ``refused_port`` — a port on 127.0.0.1 where connections are refused, reserved for the test.

Test plugins to enable with ``extra_plugins``: :class:`RecordingSink` (keeps every log record),
:class:`GatedSink` (holds the log records until the test opens it) and :class:`HeaderIdentity`
(an identity from ``x-test-*`` headers, instead of a real auth plugin).

Log records reach the sinks in background batches, after the answer reached the client: wait for
them (``RecordingSink.wait(n)``) rather than reading them right after a response.

A full disk, portably: :func:`refuse_writes` makes a plugin's open SQLite connection fail its
writes as on a full disk or a read-only file, :func:`accept_writes` frees it again.

Example::

    def test_hello(fake_upstream, start_gateway):
        fake_upstream.enqueue(Reply(text="hi"))
        gw = start_gateway({"plugins": {"openai": {}},
                            "providers": {"up": {"type": "openai", "keys": [{"value": "k"}],
                                                 "network_config": {"base_url": fake_upstream.url}}}})
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x")
        assert client.chat.completions.create(model="up/m", messages=[...]).choices[0].message.content == "hi"
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
import pytest
from aiohttp import web

from .config import build as build_config
from .hookspecs import hookimpl
from .pipeline import Identity

__all__ = ["Reply", "FakeOpenAI", "RunningGateway", "ThreadedApp", "RecordingSink", "GatedSink",
           "HeaderIdentity", "provider_block", "fake_upstream", "fake_upstreams", "start_gateway",
           "start_test_gateway", "refused_port", "refuse_writes", "accept_writes", "assert_write_refused", "wait_until"]


class ThreadedApp:
    """Runs an aiohttp application on 127.0.0.1 in a thread with its own event loop."""

    def __init__(self, app: web.Application, port: int = 0, handler_cancellation: bool = True):
        self.app = app
        self.port = port
        self.handler_cancellation = handler_cancellation
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, handler_cancellation=self.handler_cancellation,
                                     access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def start(self) -> "ThreadedApp":
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the test server did not start within 60 s")
        if self._error is not None:
            raise self._error
        return self

    def call(self, coro, timeout: float = 30):
        """Run a coroutine on the server's loop from the test thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._runner is not None and self.loop.is_running():
            try:
                self.call(self._runner.cleanup(), timeout=15)
            except Exception:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# --- the fake OpenAI-compatible upstream -----------------------------------------------------------

@dataclass
class Reply:
    """One scripted upstream answer (see the module docstring and docs/testing.md)."""

    text: str = ""
    tool_calls: list[dict] = field(default_factory=list)   # {"id", "name", "arguments": json str}
    reasoning: str | None = None
    finish_reason: str | None = None
    usage: tuple = (10, 5, 0)                # prompt, completion, cached
    status: int = 200
    error: str | None = None
    error_type: str = "server_error"
    headers: dict = field(default_factory=dict)
    chunk_size: int | None = None
    chunk_delay: float = 0.0
    first_byte_delay: float = 0.0
    drop_after: int | None = None
    eof_delay: float = 0.0                   # hold the stream open after its last event
    raw: bytes | None = None
    model: str | None = None
    embedding: list[float] | None = None


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    json: Any


def _pieces(text: str, size: int | None) -> list[str]:
    if not text:
        return []
    if not size:
        return [text]
    return [text[i:i + size] for i in range(0, len(text), size)]


class FakeOpenAI:
    """A scriptable OpenAI-compatible server (chat completions, completions, models, embeddings)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.replies: list[Reply] = []
        self.responder: Callable[[Recorded], Reply] | None = None
        self.models = ["llama-3.3-70b", "gpt-oss-120b"]
        self.open_streams = 0
        self.cancelled_streams = 0
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        self.server = ThreadedApp(app, handler_cancellation=True)

    def start(self) -> "FakeOpenAI":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url + "/v1"

    def enqueue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    async def _record(self, request: web.Request) -> Recorded:
        body = await request.read()
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            data = None
        rec = Recorded(request.method, request.path, dict(request.query),
                       {k.lower(): v for k, v in request.headers.items()}, body, data)
        self.requests.append(rec)
        return rec

    def _next(self, rec: Recorded) -> Reply:
        if self.replies:
            return self.replies.pop(0)
        if self.responder is not None:
            return self.responder(rec)
        return Reply(text="hello")

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]})

    async def _embeddings(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        reply = self._next(rec)
        if reply.status >= 400:
            return self._error(reply)
        inputs = rec.json.get("input") if isinstance(rec.json, dict) else None
        inputs = inputs if isinstance(inputs, list) else [inputs]
        vector = reply.embedding or [0.1, 0.2, 0.3]
        return web.json_response({"object": "list", "model": rec.json.get("model"), "data": [
            {"object": "embedding", "index": i, "embedding": vector} for i in range(len(inputs))],
            "usage": {"prompt_tokens": reply.usage[0], "total_tokens": reply.usage[0]}})

    def _error(self, reply: Reply) -> web.Response:
        body = reply.raw if reply.raw is not None else orjson.dumps(
            {"error": {"message": reply.error or "fake upstream error", "type": reply.error_type,
                       "code": None, "param": None}})
        return web.Response(status=reply.status, body=body, headers=reply.headers,
                            content_type="application/json")

    def _usage(self, reply: Reply) -> dict:
        prompt, completion, cached = (tuple(reply.usage) + (0, 0, 0))[:3]
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}
        if cached:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return usage

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        reply = self._next(rec)
        if reply.first_byte_delay:
            await asyncio.sleep(reply.first_byte_delay)
        if reply.status >= 400:
            return self._error(reply)
        body = rec.json if isinstance(rec.json, dict) else {}
        if reply.raw is not None and reply.drop_after is None:
            headers = {"Content-Type": "application/json", **reply.headers}
            return web.Response(status=reply.status, body=reply.raw, headers=headers)
        if reply.drop_after is not None and not body.get("stream"):
            # A whole answer cut off after its headers and part of its body.
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                           "Content-Length": "100000"})
            await resp.prepare(request)
            await resp.write((reply.raw or b'{"id": "cut", "choices": [')[:max(1, reply.drop_after)])
            if request.transport:
                request.transport.abort()
            return resp
        model = reply.model or body.get("model", "fake-model")
        is_text = request.path.endswith("/v1/completions")
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        cid = ("cmpl-" if is_text else "chatcmpl-") + uuid.uuid4().hex[:12]
        if not body.get("stream"):
            if is_text:
                return web.json_response({"id": cid, "object": "text_completion", "created": int(time.time()),
                                          "model": model, "choices": [{"index": 0, "text": reply.text,
                                                                       "finish_reason": finish, "logprobs": None}],
                                          "usage": self._usage(reply)}, headers=reply.headers)
            message: dict = {"role": "assistant", "content": reply.text or None}
            if reply.reasoning:
                message["reasoning"] = reply.reasoning
            if reply.tool_calls:
                message["tool_calls"] = [{"id": tc.get("id") or f"call_{i}", "type": "function",
                                          "function": {"name": tc["name"], "arguments": tc.get("arguments", "{}")}}
                                         for i, tc in enumerate(reply.tool_calls)]
            return web.json_response({"id": cid, "object": "chat.completion", "created": int(time.time()),
                                      "model": model, "choices": [{"index": 0, "message": message,
                                                                   "finish_reason": finish}],
                                      "usage": self._usage(reply)}, headers=reply.headers)
        return await self._stream(request, reply, body, model, cid, finish, is_text)

    def _chunks(self, reply: Reply, model: str, cid: str, finish: str, is_text: bool,
                include_usage: bool) -> list[bytes]:
        created = int(time.time())
        obj = "text_completion" if is_text else "chat.completion.chunk"

        def chunk(delta=None, finish_reason=None, usage=None, text=None) -> bytes:
            if is_text:
                choices = [] if usage else [{"index": 0, "text": text or "", "finish_reason": finish_reason}]
            else:
                choices = [] if usage else [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}]
            data = {"id": cid, "object": obj, "created": created, "model": model, "choices": choices}
            if usage:
                data["usage"] = usage
            return b"data: " + orjson.dumps(data) + b"\n\n"

        out = []
        if is_text:
            out += [chunk(text=p) for p in _pieces(reply.text, reply.chunk_size)]
            out.append(chunk(finish_reason=finish))
        else:
            out.append(chunk({"role": "assistant", "content": ""}))
            for p in _pieces(reply.reasoning or "", reply.chunk_size):
                out.append(chunk({"reasoning": p}))
            for p in _pieces(reply.text, reply.chunk_size):
                out.append(chunk({"content": p}))
            for i, tc in enumerate(reply.tool_calls):
                out.append(chunk({"tool_calls": [{"index": i, "id": tc.get("id") or f"call_{uuid.uuid4().hex[:8]}",
                                                  "type": "function",
                                                  "function": {"name": tc["name"], "arguments": ""}}]}))
                for p in _pieces(tc.get("arguments", "{}"), reply.chunk_size):
                    out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}))
            out.append(chunk({}, finish_reason=finish))
        if include_usage:
            out.append(chunk(usage=self._usage(reply)))
        out.append(b"data: [DONE]\n\n")
        return out

    async def _stream(self, request, reply: Reply, body: dict, model: str, cid: str, finish: str,
                      is_text: bool) -> web.StreamResponse:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = [reply.raw] if reply.raw is not None else self._chunks(reply, model, cid, finish, is_text, include_usage)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", **reply.headers})
        await resp.prepare(request)
        self.open_streams += 1
        try:
            for i, data in enumerate(chunks):
                if reply.drop_after is not None and i >= reply.drop_after:
                    # Abort the TCP connection mid-stream, as a crashed upstream would.
                    request.transport.abort() if request.transport else None
                    return resp
                if reply.chunk_delay and i:
                    await asyncio.sleep(reply.chunk_delay)
                await resp.write(data)
            if reply.eof_delay:
                await asyncio.sleep(reply.eof_delay)
            await resp.write_eof()
        except asyncio.CancelledError:
            self.cancelled_streams += 1
            raise
        finally:
            self.open_streams -= 1
        return resp


# --- a gateway under test --------------------------------------------------------------------------

class RunningGateway:
    def __init__(self, gateway, server: ThreadedApp):
        self.gateway = gateway
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    def call(self, coro, timeout: float = 30):
        return self.server.call(coro, timeout)

    def stop(self) -> None:
        self.server.stop()


class RecordingSink:
    """A log sink plugin (``hookway_log``) that keeps every record in ``RecordingSink.records``
    (emptied by the ``start_gateway`` fixture). Enable as ``{"sink": RecordingSink}``."""

    records: list = []

    @hookimpl
    def hookway_log(self, records):
        RecordingSink.records.extend(records)

    @classmethod
    def wait(cls, n: int, timeout: float = 30.0) -> list:
        """The records once there are at least ``n`` (log records arrive in background batches,
        after the answer reached the client). The deadline only bounds a failing test."""
        deadline = time.monotonic() + timeout
        while len(cls.records) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(cls.records)} of {n} log records after {timeout} s: {cls.records}")
            time.sleep(0.02)
        return cls.records


class GatedSink:
    """A log sink plugin (``hookway_log``) that holds every batch until :meth:`open` is called, as
    a sink stuck on a slow backend would: records pile up in the gateway's log queue for as long as
    the test wants, without guessing at timings. It runs before the other sinks, so they see
    nothing while it is closed. Enable as ``{"gate": GatedSink}``; the ``start_gateway`` fixture
    closes it before the test and opens it before stopping the gateways, so they can flush."""

    opened = threading.Event()
    batches = 0      # batches that reached the gate

    @hookimpl(tryfirst=True)
    async def hookway_log(self, records):
        GatedSink.batches += 1
        while not GatedSink.opened.is_set():
            await asyncio.sleep(0.01)

    @classmethod
    def open(cls) -> None:
        cls.opened.set()

    @classmethod
    def close(cls) -> None:
        cls.opened.clear()
        cls.batches = 0


class HeaderIdentity:
    """An auth plugin for tests: the identity comes from ``x-test-key``, ``x-test-team``,
    ``x-test-customer`` and ``x-test-bundle`` headers; without any of them it declines."""

    @hookimpl
    def hookway_auth(self, ctx):
        h = ctx.headers
        key, team, customer, bundle = (h.get("x-test-key"), h.get("x-test-team"),
                                       h.get("x-test-customer"), h.get("x-test-bundle"))
        if key is None and team is None and customer is None and bundle is None:
            return None
        return Identity(key_id=key, team_id=team, customer_id=customer, bundle=bundle)


def refuse_writes(conn: sqlite3.Connection, how: str = "full") -> None:
    """Make ``conn``'s writes fail the way they fail when the disk is full (``how="full"``: the
    database file may not grow, so a write that needs a new page raises ``sqlite3.OperationalError``
    "database or disk is full", SQLITE_FULL, as a real full disk does) or when the file cannot be
    written (``how="read-only"``: every write raises "attempt to write a readonly database",
    SQLITE_READONLY). No mount, no root. With ``"full"``, a write that fits in the free space of
    the pages already there still succeeds: write more than a page (4 KiB) to be refused. Call it
    on the thread that uses ``conn`` (the plugin's executor)."""
    if how == "full":
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
    elif how == "read-only":
        conn.execute("PRAGMA query_only = 1")
    else:
        raise ValueError(f"how: 'full' or 'read-only', not {how!r}")


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    """Poll ``condition()`` until it is true; fail naming ``what`` after ``timeout`` seconds (a
    bound on a failure only: a passing test waits just as long as it needs)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def assert_write_refused(response, status: int, reason: str) -> None:
    """``response`` (an httpx answer from a management API) is the Bifrost-shaped error that says
    the store could not be written (``status`` 507 for a full disk, 503 otherwise) and changed
    nothing; ``reason`` is part of its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status_code"] == status and body["error"]["type"] == "api_error"
    message = body["error"]["message"]
    assert "the store could not be written" in message and "nothing was changed" in message, message
    assert reason in message, message


def accept_writes(conn: sqlite3.Connection) -> None:
    """Undo :func:`refuse_writes`: the disk has room again."""
    conn.execute("PRAGMA max_page_count = 1073741823")
    conn.execute("PRAGMA query_only = 0")


def provider_block(fake: FakeOpenAI, *keys: str, **network) -> dict:
    """A provider of type openai pointed at ``fake``, with the given key names (= values)."""
    return {"type": "openai", "keys": [{"name": k, "value": k} for k in (keys or ("k",))],
            "network_config": {"base_url": fake.url, **network}}


def run_gateway(config: dict, extra_plugins: dict | None = None, port: int = 0) -> RunningGateway:
    """Build a gateway from a config dict and serve it on 127.0.0.1 in a background thread."""
    from .app import Gateway

    cfg = build_config(config)
    gateway = Gateway(cfg, extra_plugins=extra_plugins)
    app = gateway.build_app()
    server = ThreadedApp(app, port=port).start()
    return RunningGateway(gateway, server)


@pytest.fixture
def fake_upstream():
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_upstreams():
    made: list[FakeOpenAI] = []

    def make() -> FakeOpenAI:
        fake = FakeOpenAI().start()
        made.append(fake)
        return fake
    yield make
    for fake in made:
        fake.stop()


@pytest.fixture
def start_gateway(tmp_path_factory):
    started: list[RunningGateway] = []
    data_dir = str(tmp_path_factory.mktemp("hookway-data"))
    RecordingSink.records = []
    GatedSink.close()

    def start(config: dict, extra_plugins: dict | None = None) -> RunningGateway:
        server = {"data_dir": data_dir, **(config.get("server") or {})}
        gw = run_gateway({**config, "server": server}, extra_plugins)
        started.append(gw)
        return gw

    yield start
    GatedSink.open()
    for gw in started:
        gw.stop()


@pytest.fixture
def start_test_gateway(start_gateway, tmp_path):
    def start(config: dict) -> RunningGateway:
        server = {"data_dir": str(tmp_path / "data"), **(config.get("server") or {})}
        plugins = {**(config.get("plugins") or {}), "sink": {}, "headerauth": {}}
        return start_gateway({**config, "server": server, "plugins": plugins},
                             {"sink": RecordingSink, "headerauth": HeaderIdentity})
    return start


@pytest.fixture
def refused_port():
    """A port on 127.0.0.1 that refuses connections: bound for the whole test but not listening,
    so no other process can start listening there meanwhile (as it could on a port merely found
    free and closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
