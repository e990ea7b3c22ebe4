"""A fake OpenAI that reads a request body as it arrives: how many bytes came so far,
and which bodies ended before they were complete (a chunked body cut off without its
terminating chunk, a connection closed early). Only complete bodies are parsed,
recorded and answered, as a provider would; an incomplete one is never processed."""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from tests.fakes.openai import FakeOpenAI, FilePart, Received, images_reply

_NAME = re.compile(rb'name="([^"]*)"')
_FILENAME = re.compile(rb'filename="([^"]*)"')


def parse_form(
    content_type: str, body: bytes
) -> tuple[dict[str, list[str]], list[FilePart]]:
    """A multipart/form-data body's fields and files (CRLF lines, quoted names)."""
    boundary = content_type.partition("boundary=")[2].strip('"').encode()
    fields: dict[str, list[str]] = {}
    files: list[FilePart] = []
    sections = body.split(b"--" + boundary)
    assert sections[-1].startswith(b"--"), "no closing delimiter"
    for section in sections[1:-1]:
        head, _, data = section[2:].partition(b"\r\n\r\n")
        assert data.endswith(b"\r\n")
        data = data[:-2]
        name = _NAME.search(head)
        assert name is not None
        filename = _FILENAME.search(head)
        if filename is None:
            fields.setdefault(name[1].decode(), []).append(data.decode())
            continue
        ctype = ""
        for line in head.split(b"\r\n"):
            key, _, value = line.partition(b":")
            if key.lower() == b"content-type":
                ctype = value.strip().decode()
        files.append(FilePart(name[1].decode(), filename[1].decode(), ctype, data))
    return fields, files


class ArrivingOpenAI(FakeOpenAI):
    """``arrived``: bytes of the body being read; ``incomplete``: the sizes of the
    bodies that ended early; ``complete_at``: loop time each complete body ended."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.arrived = 0
        self.incomplete: list[int] = []
        self.chunked: list[bool] = []
        self.complete_at: list[float] = []
        self.image_b64: str | None = None  # the reply's image (a large one: relayed)
        self._progress = asyncio.Event()

    async def seen(self, count: int, *, within_s: float = 10) -> None:
        """Returns once a body being read has ``count`` bytes in."""
        async with asyncio.timeout(within_s):
            while self.arrived < count:
                self._progress.clear()
                await self._progress.wait()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = bytearray()
        self.arrived = 0
        try:
            while chunk := await request.content.readany():
                body += chunk
                self.arrived = len(body)
                self._progress.set()
        except BaseException:  # an error, or the handler cancelled on a lost peer
            self.incomplete.append(len(body))
            raise
        if request.content_length is not None and len(body) < request.content_length:
            self.incomplete.append(len(body))
            raise web.HTTPBadRequest()
        self.complete_at.append(asyncio.get_running_loop().time())
        self.chunked.append(request.headers.get("Transfer-Encoding") == "chunked")
        rec = Received(
            request.method, request.path, dict(request.headers), request.content_type
        )
        rec.fields, rec.files = parse_form(request.headers["Content-Type"], bytes(body))
        self.received.append(rec)
        reply = images_reply(1)
        if self.image_b64 is not None:
            reply["data"] = [{"b64_json": self.image_b64}]
        return web.json_response(reply)
