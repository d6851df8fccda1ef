"""Run an aiohttp app on uvloop when available, without access logs (shared by mock and floor)."""

from __future__ import annotations

import asyncio
from typing import Callable

from aiohttp import web


def serve(make_app: Callable[[], web.Application], host: str, port: int) -> None:
    async def main():
        runner = web.AppRunner(make_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, backlog=1024).start()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        run(main())
    except KeyboardInterrupt:
        pass
