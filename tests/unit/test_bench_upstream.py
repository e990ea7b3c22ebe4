"""The benchmark's fake upstream parses keep-alive requests however the bytes arrive."""

from __future__ import annotations

import asyncio
import random

import pytest

from bench.upstream import _Conn, _response

SMALL = _response("200 OK", b'{"small":1}')
BIG = _response("200 OK", b'{"big":1}')


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _requests() -> bytes:
    body = b"x" * 5000
    fixed = (
        b"POST /small/v1/images/edits HTTP/1.1\r\nHost: a\r\n"
        b"Content-Length: 5000\r\n\r\n" + body
    )
    chunked = (
        b"POST /big/v1/images/edits HTTP/1.1\r\nHost: a\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"7d0\r\n" + body[:2000] + b"\r\n" + b"bb8;ext=1\r\n" + body[:3000] + b"\r\n"
        b"0\r\n\r\n"
    )
    return fixed + chunked + fixed


@pytest.mark.parametrize("seed", range(20))
async def test_replies_once_per_request_for_any_split(seed: int) -> None:
    rng = random.Random(seed)
    data = _requests()
    conn = _Conn({b"small": SMALL, b"big": BIG}, latency=0.0)
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 2, 3, 7, 64, 1000, 4096])
        conn.data_received(data[pos : pos + step])
        pos += step
    assert transport.written == [SMALL, BIG, SMALL]
    assert not transport.closed


async def test_latency_delays_the_reply() -> None:
    conn = _Conn({b"small": SMALL, b"big": BIG}, latency=0.01)
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(b"POST /small/v1/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert transport.written == []
    await asyncio.sleep(0.05)
    assert transport.written == [SMALL]


async def test_oversized_head_is_refused() -> None:
    conn = _Conn({b"small": SMALL, b"big": BIG}, latency=0.0)
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(b"G" * 70_000)
    assert transport.closed
    assert transport.written[0].startswith(b"HTTP/1.1 400")
