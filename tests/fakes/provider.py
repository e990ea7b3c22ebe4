"""Conveniences over ``tests.fakes.base.FakeProvider`` for the fakes of Azure, xAI,
Bedrock, Replicate and BFL: routes that record before handling, and success replies
given as plain JSON-able values."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.fakes import base
from tests.fakes.base import OUTPUT_B64, OUTPUT_PNG, Received

Handler = Callable[[web.Request, Received], Awaitable[web.StreamResponse]]
RESULT_PNG = OUTPUT_PNG
RESULT_B64 = OUTPUT_B64
# The fakes serve on 127.0.0.1 over http; production defaults name the provider hosts.
LOCAL = ["http://127.0.0.1:*"]


class FakeProvider(base.FakeProvider):
    def route(self, method: str, path: str, handler: Handler) -> None:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            return await handler(request, await self.record(request))

        self.app.router.add_route(method, path, wrapped)

    async def scripted(
        self, request: web.Request, success: Callable[[], Any]
    ) -> web.StreamResponse:
        """The next scripted reply, or ``success()`` (a dict, bytes or a response)."""

        def build() -> web.StreamResponse:
            body = success()
            if isinstance(body, web.StreamResponse):
                return body
            if isinstance(body, bytes):
                return web.Response(body=body)
            return web.json_response(body)

        return await self.answer(request, build)
