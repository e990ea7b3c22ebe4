"""The aiohttp floor: the least an aiohttp proxy can do, run as its own process.

``python -m bench.floor --port P --upstream U``. It reads each request body, posts it
to the same path on the fake upstream over a pooled ``ClientSession`` and streams the
reply back, on uvloop like imagegate. It parses no form, validates nothing, logs and
counts nothing: the gap between it and nginx is what the framework costs, and the gap
between imagegate and it is what imagegate's own work costs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator

import uvloop
from aiohttp import ClientSession, TCPConnector, web

# Headers the client side sets itself; everything else is passed through.
_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def build(upstream: int) -> web.Application:
    base = f"http://127.0.0.1:{upstream}"
    app = web.Application(client_max_size=1 << 30)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with ClientSession(connector=TCPConnector(limit=0)) as session:
            app["session"] = session
            yield

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        session: ClientSession = request.app["session"]
        async with session.post(base + request.path, data=body, headers=headers) as up:
            out = web.StreamResponse(status=up.status)
            out.content_type = up.content_type
            if up.content_length is not None:
                out.content_length = up.content_length
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{tail:.*}", forward)
    return app


async def serve(port: int, upstream: int) -> None:
    runner = web.AppRunner(build(upstream), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", type=int, required=True)
    args = p.parse_args()
    uvloop.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
