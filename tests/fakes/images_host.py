"""A fake image host over real TLS (trustme), and a resolver the test controls.

The host records every request it gets, so a test can prove a refused URL was never
fetched. The resolver maps names to addresses and records its queries; it can answer
differently on later queries, to stand in for a DNS-rebinding attacker.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from tests.images import jpeg_like, png


class ImageHost:
    def __init__(self) -> None:
        self.paths: list[str] = []
        self.image = png(8, 8, seed=7)
        self.app = web.Application()
        self.app.router.add_get("/cat.png", self._image)
        self.app.router.add_get("/photo.jpg", self._jpeg)
        self.app.router.add_get("/redirect", self._redirect)
        self.app.router.add_get("/big", self._big)
        self.app.router.add_get("/chunked", self._chunked)
        self.app.router.add_get("/slow", self._slow)
        self.app.router.add_get("/page.html", self._html)
        self.app.router.add_get("/missing", self._missing)
        self.app.router.add_get("/gzip", self._gzip)
        self.app.middlewares.append(self._record)

    @web.middleware
    async def _record(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        self.paths.append(request.path_qs)
        return await handler(request)

    async def _image(self, request: web.Request) -> web.Response:
        return web.Response(body=self.image, content_type="image/png")

    async def _jpeg(self, request: web.Request) -> web.Response:
        return web.Response(body=jpeg_like(), content_type="image/jpeg")

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def _big(self, request: web.Request) -> web.Response:
        return web.Response(body=self.image + b"\0" * 2_000_000)

    async def _chunked(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(self.image)
        for _ in range(40):
            await resp.write(b"\0" * 65536)
        await resp.write_eof()
        return resp

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(self.image[:16])
        await asyncio.sleep(30)  # cancelled when the proxy gives up and disconnects
        return resp

    async def _html(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>not an image</html>", content_type="image/png")

    async def _missing(self, request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    async def _gzip(self, request: web.Request) -> web.Response:
        return web.Response(
            body=b"\x1f\x8b\x08\x00" + b"\0" * 32, headers={"Content-Encoding": "gzip"}
        )


class MapResolver(AbstractResolver):
    """Names → addresses; ``later`` answers replace the first after one query."""

    def __init__(
        self, names: dict[str, list[str]], later: dict[str, list[str]] | None = None
    ) -> None:
        self.names = names
        self.later = later or {}
        self.queries: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = self.names.get(host)
        if host in self.later and host in self.queries:
            answers = self.later[host]
        self.queries.append(host)
        if not answers:
            raise OSError(f"no such host: {host}")
        return [
            {
                "hostname": host,
                "host": ip,
                "port": port,
                "family": socket.AF_INET6 if ":" in ip else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for ip in answers
        ]

    async def close(self) -> None:
        return None
