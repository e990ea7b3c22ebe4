"""Forwarded uploads (``proxy.forward``) against hostile providers and clients: what
a provider does while a client's body is still arriving must not stall the intake."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from tests.conftest import StartProxy
from tests.images import sized_png
from tests.integration.test_forward import END, FIELDS, MiB, fields, file_head, post

_EARLY = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
    b"Content-Length: 58\r\n\r\n"
    b'{"error": {"message": "refused early", "type": "invalid"}}\n'
)


_PARTIAL = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'2\r\n{"\r\n'
)


class EarlyProvider:
    """Answers a 400 as soon as a request's head is in, then reads no more of its
    body and keeps the connection open (a provider's edge refusing an upload);
    ``reply``: what it answers (the head of a reply it never ends, say)."""

    def __init__(self, reply: bytes = _EARLY) -> None:
        self.reply = reply
        self.heads = 0
        self.chunked: list[bool] = []
        self._writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        sock = socket.socket()
        # A small receive window, so that the unread body backs up at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(self._serve, sock=sock)
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads += 1
        self.chunked.append(b"transfer-encoding: chunked" in head.lower())
        writer.write(self.reply)
        await writer.drain()
        writer.transport.pause_reading()

    async def close(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def early() -> AsyncIterator[EarlyProvider]:
    provider = EarlyProvider()
    yield provider
    await provider.close()


async def test_a_provider_that_answers_early_and_stops_reading_does_not_stall(
    start_proxy: StartProxy, early: EarlyProvider
) -> None:
    url = await early.start()
    proxy = await start_proxy({"openai": {"base_url": url}})
    image = sized_png(24 * MiB)
    # The spooled run gets the provider's refusal once the body is in; so must the
    # forwarded one, not wait on a provider that will never read the rest.
    async with asyncio.timeout(20):
        status, body = await post(
            proxy, [fields(FIELDS) + file_head() + image + b"\r\n" + END]
        )
    assert early.chunked[0], "forwarded as it arrived"
    assert status == 400, body
    assert "refused early" in body["error"]["message"]


async def test_a_provider_that_stalls_mid_reply_while_the_body_arrives_times_out(
    start_proxy: StartProxy,
) -> None:
    """A reply's head, then nothing, and no more of the body read: the spooled run
    gives up after the pool's read timeout; the forwarded one must too, not wait for
    a client body it no longer reads (the pipe full, the client held)."""
    early = EarlyProvider(_PARTIAL)
    try:
        url = await early.start()
        proxy = await start_proxy(
            {"openai": {"base_url": url, "pool": {"read_timeout_s": 1.0}}}
        )
        image = sized_png(24 * MiB)
        async with asyncio.timeout(25):
            status, body = await post(
                proxy, [fields(FIELDS) + file_head() + image + b"\r\n" + END]
            )
        assert early.chunked[0], "forwarded as it arrived"
        assert status == 504, body
        # What the spooled run gets (files before the fields).
        async with asyncio.timeout(25):
            spooled = await post(
                proxy, [file_head() + image + b"\r\n" + fields(FIELDS) + END]
            )
        assert early.chunked[1:] == [False]
        assert spooled == (status, body)
    finally:
        await early.close()
