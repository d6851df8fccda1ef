"""A fast mock OpenAI upstream: POST /v1/chat/completions, streaming or not.

Every answer is pre-built bytes, so the mock costs as little CPU as an aiohttp server can.
Streaming: 22 ``chat.completion.chunk`` events (role, 20 words, finish_reason), a usage chunk,
then ``data: [DONE]``, each written separately as a real upstream does.

    python mock_upstream.py --port 9001
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web

from _serve import serve

MODEL = "gpt-bench"
WORDS = [f"w{i} " for i in range(20)]
TEXT = "".join(WORDS)                       # what a client must reassemble
USAGE = {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}
_BASE = {"id": "chatcmpl-bench", "created": 1700000000, "model": MODEL}

COMPLETION = json.dumps({
    **_BASE, "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}],
    "usage": USAGE,
}, separators=(",", ":")).encode()


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    body = {**_BASE, "object": "chat.completion.chunk",
            "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        body["usage"] = usage
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


EVENTS = ([_chunk({"role": "assistant", "content": ""})]
          + [_chunk({"content": w}) for w in WORDS]
          + [_chunk({}, finish="stop"), _chunk({}, usage=USAGE), b"data: [DONE]\n\n"])
assert len(EVENTS) == 22 + 2


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    # Cheap stream detection without a JSON parse (bench bodies are compact or "key": value).
    if b'"stream":true' not in body and b'"stream": true' not in body:
        return web.Response(body=COMPLETION, content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    for event in EVENTS:
        await resp.write(event)
    await resp.write_eof()
    return resp


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    serve(make_app, args.host, args.port)
