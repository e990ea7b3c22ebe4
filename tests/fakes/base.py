"""What every fake provider shares: recording requests and answering scripted replies.

A fake subclass parses requests the way its provider documents them, records them as
``Received``, checks the credential header, and builds its provider's success and error
bodies. Scripted ``Reply``s (status, body, delay, dropped connection) override the
default success answer, one per request, in order.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.openai import FilePart, Received, Reply, play, record
from tests.images import png

__all__ = ["FakeProvider", "FilePart", "Received", "Reply"]

OUTPUT_PNG = png(8, 8, seed=99)
OUTPUT_B64 = base64.b64encode(OUTPUT_PNG).decode()


class FakeProvider:
    """Base for fakes; ``url`` is set once the server runs (the adapter's base_url)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.url = ""
        self.received: list[Received] = []
        self.replies: list[Reply] = []
        self.app = web.Application(client_max_size=1024**3)

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def last(self) -> Received:
        return self.received[-1]

    def error_body(self, status: int, message: str) -> Any:
        """The provider's own error body for ``status`` (JSON-able or bytes)."""
        raise NotImplementedError

    async def record(self, request: web.Request) -> Received:
        rec = await record(request)
        self.received.append(rec)
        return rec

    async def answer(
        self, request: web.Request, success: Callable[[], web.StreamResponse]
    ) -> web.StreamResponse:
        """The next scripted reply, or ``success()`` when none is scripted."""
        reply = self.replies.pop(0) if self.replies else None
        if reply is None:
            return success()
        return await play(request, reply, lambda _: success())
