"""The floor: a bare aiohttp pass-through proxy, the fastest a Python gateway can be.

One pooled ClientSession; every POST (whatever the path) is forwarded as is to the upstream's
/chat/completions; the answer is returned whole (non-streaming) or written back chunk by chunk
as it arrives (text/event-stream). No parsing, no auth, no logging.

    python floor.py --port 9002 --upstream http://127.0.0.1:9001/v1
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

from _serve import serve


def make_app(upstream: str) -> web.Application:
    url = upstream.rstrip("/") + "/chat/completions"
    app = web.Application()

    async def start(app):
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False)

    async def stop(app):
        await app["session"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-test"}
        async with app["session"].post(url, data=body, headers=headers) as up:
            ctype = up.headers.get("Content-Type", "application/json")
            if not ctype.startswith("text/event-stream"):
                return web.Response(body=await up.read(), status=up.status, headers={"Content-Type": ctype})
            resp = web.StreamResponse(status=up.status, headers={"Content-Type": ctype})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/{tail:.*}", proxy)
    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9001/v1")
    args = ap.parse_args()
    serve(lambda: make_app(args.upstream), args.host, args.port)
