"""A fake Anthropic API for the adapter tests: it speaks the Messages wire format (JSON and SSE,
event by event as the real API sends them) and records what it received.

Use the ``fake_anthropic`` fixture; script answers with
``fake_anthropic.enqueue(fake_anthropic.Reply(...))``. (Test modules cannot import this conftest:
with ``--import-mode=importlib`` the name ``conftest`` is the root one, so everything is reached
through the fixture.)"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from hookway.testing import Recorded, ThreadedApp


@dataclass
class AReply:
    """One scripted answer. ``content`` holds Message content blocks; a ``thinking`` block's
    ``signature`` is sent as a ``signature_delta``."""

    content: list[dict] = field(default_factory=lambda: [{"type": "text", "text": "hello"}])
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    usage: tuple = (12, 5, 0, 0)       # input, output, cache_read, cache_creation
    status: int = 200
    error_type: str = "api_error"
    error: str = "fake error"
    headers: dict = field(default_factory=dict)
    chunk_size: int | None = None      # split text/json/thinking into deltas of this size
    stream_error: tuple | None = None  # (after N events, error type, message): an in-stream error
    cut_after: int | None = None       # end the body after N events, with no message_stop
    raw: bytes | None = None           # exact body bytes to send (status 200)
    count: int = 42                    # count_tokens answer
    msg_id: str = "msg_fake0001"


def _pieces(text: str, size: int | None) -> list[str]:
    if not size:
        return [text]
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def sse(event: str, data: dict) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def stream_events(reply: AReply, model: str) -> list[bytes]:
    """The SSE events the real API sends for ``reply``, one bytes item per event."""
    inp, out, cache_read, cache_creation = reply.usage
    usage = {"input_tokens": inp, "cache_creation_input_tokens": cache_creation,
             "cache_read_input_tokens": cache_read, "output_tokens": 1}
    events = [sse("message_start", {"type": "message_start", "message": {
        "id": reply.msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": usage}})]
    for i, block in enumerate(reply.content):
        kind = block["type"]
        if kind == "text":
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"], reply.chunk_size)]
        elif kind == "tool_use":
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            raw = orjson.dumps(block["input"]).decode()
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(raw, reply.chunk_size)]
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"], reply.chunk_size)]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:   # e.g. redacted_thinking: sent whole in the start event
            start, deltas = block, []
        events.append(sse("content_block_start", {"type": "content_block_start", "index": i, "content_block": start}))
        if i == 0:
            events.append(sse("ping", {"type": "ping"}))
        for d in deltas:
            events.append(sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}))
        events.append(sse("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(sse("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence},
                                        "usage": {"output_tokens": out}}))
    events.append(sse("message_stop", {"type": "message_stop"}))
    return events


class FakeAnthropic:
    Reply = AReply
    stream_events = staticmethod(stream_events)

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.replies: list[AReply] = []
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        self.server = ThreadedApp(app)

    @property
    def url(self) -> str:
        return self.server.url + "/v1"

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def enqueue(self, *replies: AReply) -> None:
        self.replies.extend(replies)

    async def _record(self, request: web.Request) -> tuple[Recorded, AReply]:
        body = await request.read()
        rec = Recorded(request.method, request.path, dict(request.query),
                       {k.lower(): v for k, v in request.headers.items()}, body, orjson.loads(body))
        self.requests.append(rec)
        return rec, (self.replies.pop(0) if self.replies else AReply())

    def _error(self, reply: AReply) -> web.Response:
        return web.Response(status=reply.status, headers=reply.headers, content_type="application/json",
                            body=orjson.dumps({"type": "error", "error": {"type": reply.error_type,
                                                                          "message": reply.error}}))

    async def _count_tokens(self, request: web.Request) -> web.Response:
        _, reply = await self._record(request)
        if reply.status >= 400:
            return self._error(reply)
        return web.json_response({"input_tokens": reply.count})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        rec, reply = await self._record(request)
        if reply.status >= 400:
            return self._error(reply)
        model = rec.json.get("model", "")
        headers = {"request-id": "req_fake", **reply.headers}
        if not rec.json.get("stream"):
            if reply.raw is not None:
                return web.Response(body=reply.raw, headers=headers, content_type="application/json")
            inp, out, cache_read, cache_creation = reply.usage
            return web.json_response({
                "id": reply.msg_id, "type": "message", "role": "assistant", "model": model,
                "content": reply.content, "stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence,
                "usage": {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": cache_read,
                          "cache_creation_input_tokens": cache_creation}}, headers=headers)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", **headers})
        await resp.prepare(request)
        events = [reply.raw] if reply.raw is not None else stream_events(reply, model)
        for n, event in enumerate(events):
            if reply.stream_error is not None and n == reply.stream_error[0]:
                await resp.write(sse("error", {"type": "error", "error": {"type": reply.stream_error[1],
                                                                          "message": reply.stream_error[2]}}))
                break
            if reply.cut_after is not None and n == reply.cut_after:
                break
            await resp.write(event)
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp


@pytest.fixture
def fake_anthropic():
    fake = FakeAnthropic()
    fake.server.start()
    yield fake
    fake.server.stop()


# The captured Claude Code requests (CONFORMANCE.md), kept in the repository's tests/fixtures.
CLAUDE_CODE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "claude-code"


@pytest.fixture
def claude_code_request():
    """``load(name)`` -> a fresh copy of a captured request: ``{"path", "headers", "body"}``."""
    def load(name: str) -> dict:
        return json.loads((CLAUDE_CODE / name).read_text())["request"]
    return load
