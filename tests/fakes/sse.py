"""OpenAI's image event stream, as a fake upstream sends it (``stream=true``).

A ``StreamPlan`` scripts one stream: how many partial images, where to wait for the
test (``gate``), whether to break off instead of completing, and whether to keep
writing until the reader goes away (to observe that the proxy released the connection).
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

USAGE = {
    "input_tokens": 50,
    "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
    "output_tokens": 1000,
    "total_tokens": 1050,
}


def partial_b64(index: int, size: int = 64) -> str:
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes([index]) * size).decode()


@dataclass
class StreamPlan:
    partials: int = 2
    partial_size: int = 64
    gate: asyncio.Event | None = None  # awaited after the first partial image
    drop: bool = False  # close the connection instead of completing
    error: bool = False  # send OpenAI's error event instead of completing
    error_message: str = "The server had an error"
    done: bool = False  # end with `data: [DONE]`
    crlf: bool = False  # CRLF line endings
    keep_writing: bool = False  # after the gate, write until the reader is gone
    linger: bool = False  # after completing, write until the reader is gone
    as_json: bool = False  # ignore stream=true and answer a JSON images reply
    json_body: dict[str, Any] | None = None  # that reply, if not the default
    # Real pictures (base64) for the partials in turn, the last also the final image;
    # empty: the default stand-in bytes (tests/browser shows pictures in a page).
    pictures: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # members every event adds
    # What happened, for the test to check.
    sent: list[str] = field(default_factory=list)
    finished: bool = False
    reader_gone: bool = False


def _picture(plan: StreamPlan, index: int) -> str:
    if plan.pictures:
        return plan.pictures[min(index, len(plan.pictures) - 1)]
    return partial_b64(index, plan.partial_size)


async def _until_gone(resp: web.StreamResponse) -> None:
    for _ in range(1000):
        await asyncio.sleep(0.01)
        await resp.write(b": keep-alive\n\n")


def _event(kind: str, body: dict[str, Any], *, crlf: bool) -> bytes:
    nl = b"\r\n" if crlf else b"\n"
    data = msgspec.json.encode(body)
    return b"event: " + kind.encode() + nl + b"data: " + data + nl + nl


async def stream_reply(request: web.Request, plan: StreamPlan) -> web.StreamResponse:
    kind = "image_edit" if request.path.endswith("/edits") else "image_generation"
    common = {"background": "opaque", "created_at": int(time.time()),
              "output_format": "png", "quality": "low", "size": "1024x1024",
              **plan.extra}  # fmt: skip
    if plan.as_json:
        default = {"created": 1, "data": [{"b64_json": partial_b64(9)}]}
        return web.json_response(plan.json_body or default)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    try:
        for i in range(plan.partials):
            name = f"{kind}.partial_image"
            body = {"type": name, "partial_image_index": i,
                    "b64_json": _picture(plan, i), **common}  # fmt: skip
            await resp.write(_event(name, body, crlf=plan.crlf))
            plan.sent.append(name)
            if i == 0 and plan.gate is not None:
                await plan.gate.wait()
        if plan.keep_writing:
            await _until_gone(resp)
        if plan.drop:
            assert request.transport is not None
            request.transport.close()
            return resp
        if plan.error:
            err = {"error": {"message": plan.error_message, "type": "server_error",
                             "param": None, "code": "server_error"}}  # fmt: skip
            await resp.write(_event("error", err, crlf=plan.crlf))
        else:
            name = f"{kind}.completed"
            final = plan.pictures[-1] if plan.pictures else partial_b64(9)
            body = {"type": name, "b64_json": final, "usage": USAGE, **common}
            await resp.write(_event(name, body, crlf=plan.crlf))
            plan.sent.append(name)
        if plan.linger:
            await _until_gone(resp)
        if plan.done:
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        plan.finished = True
    except ConnectionResetError:
        plan.reader_gone = True
    except asyncio.CancelledError:
        # The test server cancels its handler when the peer closes the connection.
        plan.reader_gone = True
        raise
    return resp
