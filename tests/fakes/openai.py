"""A fake OpenAI Images API: parses what it receives the way OpenAI would, records it,
and replies with scripted responses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import BodyPartReader, web

from tests.fakes.sse import StreamPlan, stream_reply

IMAGE_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\nfake-output").decode()
ALLOWED_TYPES = {"image/png", "image/jpeg", "image/webp"}


@dataclass
class FilePart:
    name: str
    filename: str | None
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    content_type: str
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[FilePart] = field(default_factory=list)
    json: dict[str, Any] | None = None
    size: int = 0  # body bytes read (a chunked body's without its chunk framing)


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict → JSON; bytes → raw
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False  # close the connection without an answer
    hold: asyncio.Event | None = None  # answer only once the test sets it
    arrived: asyncio.Event | None = None  # set when the request has been read


def images_reply(n: int = 1, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "created": int(time.time()),
        "data": [{"b64_json": IMAGE_B64} for _ in range(n)],
        "usage": {
            "input_tokens": 50,
            "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
            "output_tokens": 1000 * n,
            "total_tokens": 50 + 1000 * n,
        },
        "size": "1024x1024",
        "quality": "low",
        "output_format": "png",
        "background": "opaque",
    }
    body.update(extra)
    return body


async def record(request: web.Request) -> Received:
    """Parse a request the way an OpenAI-style API reads it: form parts or JSON."""
    rec = Received(
        request.method, request.path, dict(request.headers), request.content_type
    )
    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        async for part in reader:
            assert isinstance(part, BodyPartReader)
            with warnings.catch_warnings():
                # aiohttp's own reader calls its deprecated unread_data() on some
                # chunked bodies (a forwarded upload); a provider's parser would not.
                warnings.simplefilter("ignore", DeprecationWarning)
                data = await part.read()
            if part.filename is not None:
                ctype = part.headers.get("Content-Type", "")
                rec.files.append(FilePart(part.name or "", part.filename, ctype, data))
            else:
                rec.fields.setdefault(part.name or "", []).append(data.decode())
    elif request.content_type == "application/json":
        rec.json = msgspec.json.decode(await request.read())
    else:
        rec.fields = {
            k: [v] for k, v in (await request.post()).items() if isinstance(v, str)
        }
    rec.size = request.content.total_bytes
    return rec


def asked_n(rec: Received) -> int:
    """The ``n`` the client asked for, from the form or the JSON body."""
    if rec.json is None:
        return int((rec.fields.get("n") or ["1"])[0])
    return int(rec.json.get("n", 1))


async def play(
    request: web.Request,
    reply: Reply,
    success: Callable[[Reply], web.StreamResponse],
) -> web.StreamResponse:
    """Act out one scripted reply; ``success(reply)`` answers one with no body."""
    if reply.arrived is not None:
        reply.arrived.set()
    if reply.hold is not None:
        await reply.hold.wait()
    if reply.delay_s:
        await asyncio.sleep(reply.delay_s)
    if reply.drop:
        assert request.transport is not None
        request.transport.close()
        return web.Response()
    body = reply.body
    if body is None:
        return success(reply)
    if isinstance(body, bytes):
        return web.Response(status=reply.status, body=body, headers=reply.headers)
    return web.json_response(body, status=reply.status, headers=reply.headers)


class FakeOpenAI:
    """An aiohttp app for /v1/images/{edits,generations}; check ``received`` after."""

    def __init__(self, key: str = "sk-upstream-test") -> None:
        self.key = key
        self.received: list[Received] = []
        self.replies: list[Reply] = []
        self.streams: list[StreamPlan] = []
        self.app = web.Application(client_max_size=1024**3)
        self.app.router.add_post("/v1/images/edits", self._handle)
        self.app.router.add_post("/v1/images/generations", self._handle)

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def last(self) -> Received:
        return self.received[-1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rec = await record(request)
        self.received.append(rec)
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response(
                {"error": {"message": "Incorrect API key provided: sk-up***",
                           "type": "invalid_request_error", "param": None,
                           "code": "invalid_api_key"}},
                status=401,
            )  # fmt: skip
        for f in rec.files:
            if f.content_type not in ALLOWED_TYPES:
                return web.json_response(
                    {"error": {"message": f"Invalid file '{f.name}': unsupported "
                               f"mimetype ('{f.content_type}').",
                               "type": "invalid_request_error", "param": f.name,
                               "code": "invalid_value"}},
                    status=400,
                )  # fmt: skip
        # OpenAI's replacement for `user`; the lower of the two documented limits.
        sid = (rec.json or {}).get("safety_identifier") or "".join(
            rec.fields.get("safety_identifier", [])
        )
        if len(sid) > 64:
            return web.json_response(
                {"error": {"message": "Invalid 'safety_identifier': string too long.",
                           "type": "invalid_request_error",
                           "param": "safety_identifier", "code": "string_above_max_length"}},
                status=400,
            )  # fmt: skip
        stream = (rec.json or {}).get("stream") is True or rec.fields.get("stream") == [
            "true"
        ]
        # A scripted error or redirect answers a stream request too.
        if stream and not (self.replies and self.replies[0].status >= 300):
            plan = self.streams.pop(0) if self.streams else StreamPlan()
            return await stream_reply(request, plan)
        reply = self.replies.pop(0) if self.replies else Reply()
        return await play(
            request,
            reply,
            # A scripted status or header with no body still gets an images body.
            lambda r: web.json_response(
                images_reply(asked_n(rec)), status=r.status, headers=r.headers
            ),
        )
