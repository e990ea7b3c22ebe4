"""A base for fake upstreams: records each request as its provider would parse it, and
answers with scripted replies (status, body, delay, dropped connection) or the
subclass's own documented success reply."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import BodyPartReader, web

from tests.fakes.openai import FilePart, Received, Reply

Handler = Callable[[web.Request, Received], Awaitable[web.StreamResponse]]
# A small real PNG the fakes hand back as their "generated" image.
RESULT_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
RESULT_B64 = base64.b64encode(RESULT_PNG).decode()


class FakeProvider:
    def __init__(self, key: str) -> None:
        self.key = key
        self.received: list[Received] = []
        self.replies: list[Reply] = []
        self.app = web.Application(client_max_size=1024**3)
        self.url = ""  # set by the fixture that starts the server

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def last(self) -> Received:
        return self.received[-1]

    def route(self, method: str, path: str, handler: Handler) -> None:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            rec = await self.record(request)
            return await handler(request, rec)

        self.app.router.add_route(method, path, wrapped)

    async def record(self, request: web.Request) -> Received:
        rec = Received(
            request.method, request.path_qs, dict(request.headers), request.content_type
        )
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                assert isinstance(part, BodyPartReader)
                data = await part.read()
                if part.filename is not None:
                    ctype = part.headers.get("Content-Type", "")
                    rec.files.append(
                        FilePart(part.name or "", part.filename, ctype, data)
                    )
                else:
                    rec.fields.setdefault(part.name or "", []).append(data.decode())
        elif request.method == "POST":
            raw = await request.read()
            rec.json = msgspec.json.decode(raw) if raw else None
        self.received.append(rec)
        return rec

    async def scripted(
        self, request: web.Request, success: Callable[[], Any]
    ) -> web.StreamResponse:
        """The next scripted reply, or ``success()`` (a dict, bytes or a response)."""
        reply = self.replies.pop(0) if self.replies else Reply()
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        body = success() if reply.body is None else reply.body
        if isinstance(body, web.StreamResponse):
            return body
        if isinstance(body, bytes):
            return web.Response(status=reply.status, body=body, headers=reply.headers)
        return web.json_response(body, status=reply.status, headers=reply.headers)
