"""A fixed-latency fake OpenAI images upstream for the benchmark, run as its own process.

``python -m bench.upstream --port P --latency-ms L``. It is a bare asyncio protocol (on
uvloop when installed) rather than an aiohttp app so that it is never the bottleneck:
the direct and nginx figures would otherwise measure this server, not the proxies.
It reads and discards each request body (Content-Length or chunked), waits the fixed
latency, and answers an OpenAI images reply chosen by the path's first segment:
``/small/...`` a few hundred bytes, ``/big/...`` about 1.5 MB of base64, ``/stream/...``
OpenAI's event stream: one partial image after the latency, the completed image
``STREAM_GAP_S`` later (chunked, so time to the first partial image can be measured);
``/trickle/...`` the big reply sent slowly: its head after the latency, then its body in
``TRICKLE_PIECES`` pieces spread over ``--trickle-s`` (a provider that answers at the
pace of a slow link; the in-flight benchmark, ``bench/inflight.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import time

import msgspec

SMALL_IMAGE_BYTES = 256
PARTIAL_IMAGE_BYTES = 16 * 1024
STREAM_GAP_S = 0.02
BIG_IMAGE_BYTES = 1_125_000  # 1.5 MB once base64-encoded
TRICKLE_PIECES = 24
_MAX_HEAD = 64 * 1024


def reply_body(image_bytes: int) -> bytes:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(max(image_bytes - 8, 0))
    return msgspec.json.encode(
        {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(data).decode("ascii")}],
            "usage": {
                "input_tokens": 50,
                "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
                "output_tokens": 1000,
                "total_tokens": 1050,
            },
            "size": "1024x1024",
            "quality": "low",
            "output_format": "png",
        }
    )


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n"


def stream_parts() -> tuple[bytes, bytes]:
    """The head and first partial image, then the completed event and the end."""
    b64 = base64.b64encode(
        reply_body(PARTIAL_IMAGE_BYTES)[:PARTIAL_IMAGE_BYTES]
    ).decode()
    common = {"background": "opaque", "created_at": int(time.time()),
              "output_format": "png", "quality": "low", "size": "1024x1024"}  # fmt: skip
    partial = {"type": "image_edit.partial_image", "partial_image_index": 0,
               "b64_json": b64, **common}  # fmt: skip
    done = {"type": "image_edit.completed", "b64_json": b64, **common,
            "usage": {"input_tokens": 50, "output_tokens": 1000,
                      "total_tokens": 1050,
                      "input_tokens_details": {"text_tokens": 10, "image_tokens": 40}}}  # fmt: skip

    def event(body: dict[str, object]) -> bytes:
        name = str(body["type"]).encode()
        return b"event: " + name + b"\ndata: " + msgspec.json.encode(body) + b"\n\n"

    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    return head + _chunk(event(partial)), _chunk(event(done)) + b"0\r\n\r\n"


def _response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Conn(asyncio.Protocol):
    """One keep-alive connection: head, body (discarded), delayed reply, repeat."""

    def __init__(
        self, replies: dict[bytes, bytes], latency: float, trickle: float = 2.0
    ) -> None:
        self._replies = replies
        self._latency = latency
        self._trickle = trickle
        self._buf = bytearray()
        self._remaining = 0  # body bytes still to discard (Content-Length mode)
        self._chunked = False
        self._in_body = False
        self._reply = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._step():
            pass

    def _step(self) -> bool:
        """Consume what the buffer allows; True if another step may make progress."""
        if not self._in_body:
            return self._head()
        if self._chunked:
            return self._chunk()
        take = min(self._remaining, len(self._buf))
        del self._buf[:take]
        self._remaining -= take
        if self._remaining == 0:
            self._done()
            return bool(self._buf)
        return False

    def _head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > _MAX_HEAD:
                self._fail()
            return False
        lines = bytes(self._buf[:end]).split(b"\r\n")
        del self._buf[: end + 4]
        path = lines[0].split(b" ")[1] if lines[0].count(b" ") >= 2 else b"/"
        segment = path.lstrip(b"/").split(b"/", 1)[0]
        self._reply = (
            segment
            if segment in (b"stream", b"trickle")
            else self._replies.get(segment, self._replies[b"small"])
        )
        self._remaining, self._chunked = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                self._remaining = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
        self._in_body = True
        return True

    def _chunk(self) -> bool:
        if self._remaining > 0:  # inside a chunk's data and its CRLF
            take = min(self._remaining, len(self._buf))
            del self._buf[:take]
            self._remaining -= take
            return self._remaining == 0 and bool(self._buf)
        end = self._buf.find(b"\r\n")
        if end < 0:
            return False
        size = int(bytes(self._buf[:end]).split(b";")[0], 16)
        if size == 0:
            # Last chunk and its empty trailer section (our clients send no trailers).
            if len(self._buf) < end + 4:
                return False
            del self._buf[: end + 4]
            self._done()
            return bool(self._buf)
        del self._buf[: end + 2]
        self._remaining = size + 2
        return True

    def _done(self) -> None:
        self._in_body = False
        reply = self._reply
        loop = asyncio.get_running_loop()
        if reply == b"stream":
            first, rest = self._replies[b"stream:first"], self._replies[b"stream:rest"]
            loop.call_later(self._latency, self._send, first)
            loop.call_later(self._latency + STREAM_GAP_S, self._send, rest)
        elif reply == b"trickle":
            whole = self._replies[b"big"]
            head = whole.index(b"\r\n\r\n") + 4
            step = -(-(len(whole) - head) // TRICKLE_PIECES)
            loop.call_later(self._latency, self._send, whole[:head])
            for i in range(TRICKLE_PIECES):
                at = self._latency + self._trickle * (i + 1) / TRICKLE_PIECES
                piece = whole[head + i * step : head + (i + 1) * step]
                loop.call_later(at, self._send, piece)
        elif self._latency > 0:
            loop.call_later(self._latency, self._send, reply)
        else:
            self._send(reply)

    def _send(self, reply: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(reply)

    def _fail(self) -> None:
        if self._transport is not None:
            self._transport.write(_response("400 Bad Request", b"{}"))
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def serve(host: str, port: int, latency: float, trickle: float = 2.0) -> None:
    replies = {
        b"small": _response("200 OK", reply_body(SMALL_IMAGE_BYTES)),
        b"big": _response("200 OK", reply_body(BIG_IMAGE_BYTES)),
    }
    replies[b"stream:first"], replies[b"stream:rest"] = stream_parts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Conn(replies, latency, trickle),
        host,
        port,
        backlog=4096,
        reuse_address=True,
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=2.0)
    parser.add_argument("--trickle-s", type=float, default=2.0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # plain asyncio still works, only slower
        asyncio.run(serve(args.host, args.port, args.latency_ms / 1000, args.trickle_s))
    else:
        uvloop.run(serve(args.host, args.port, args.latency_ms / 1000, args.trickle_s))


if __name__ == "__main__":
    main()
