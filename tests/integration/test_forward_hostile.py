"""Forwarded uploads (``proxy.forward``) against hostile providers and clients: what
a provider does while a client's body is still arriving must not stall the intake."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from tests.conftest import (
    CLIENT_KEY,
    UPSTREAM_KEY,
    StartGateway,
    StartProxy,
    leftover_files,
)
from tests.fakes.arriving import ArrivingOpenAI, parse_form
from tests.fakes.openai import images_reply
from tests.gateway import eventually
from tests.images import sized_png
from tests.integration.test_forward import (
    END,
    FIELDS,
    FORWARD_ALL,
    B,
    MiB,
    fields,
    file_head,
    post,
)

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
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)  # a socket's: it reads too
        transport.pause_reading()

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
    proxy = await start_proxy({"openai": {"base_url": url}}, limits=FORWARD_ALL)
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
    start_proxy: StartProxy, temp_root: Path
) -> None:
    """A reply's head, then nothing, and no more of the body read: the spooled run
    gives up after the pool's read timeout; the forwarded one must too, not wait for
    a client body it no longer reads (the pipe full, the client held)."""
    early = EarlyProvider(_PARTIAL)
    try:
        url = await early.start()
        proxy = await start_proxy(
            {"openai": {"base_url": url, "pool": {"read_timeout_s": 1.0}}},
            limits=FORWARD_ALL,
        )
        image = sized_png(24 * MiB)
        async with asyncio.timeout(25):
            status, body = await post(
                proxy, [fields(FIELDS) + file_head() + image + b"\r\n" + END]
            )
        assert early.chunked[0], "forwarded as it arrived"
        assert status == 504, body
        # The gateway closed its connection to the provider (the provider holds its
        # own side open), and left no temp file.
        port = int(url.split(":")[2].split("/")[0])
        await eventually(lambda: _true(_open_to(port) == 0))
        assert leftover_files(temp_root) == []
        # What the spooled run gets (files before the fields).
        async with asyncio.timeout(25):
            spooled = await post(
                proxy, [file_head() + image + b"\r\n" + fields(FIELDS) + END]
            )
        assert early.chunked[1:] == [False]
        assert spooled == (status, body)
        # Its connection too: closed gracefully it stayed open, its unsent body
        # waiting for the provider to read on (a descriptor per such request).
        await eventually(lambda: _true(_open_to(port) == 0))
    finally:
        await early.close()


_BUSY = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
    b"Retry-After: 0\r\nContent-Length: 2\r\n\r\n{}"
)


class BusyThenWhole(EarlyProvider):
    """Its first request: a 429 (Retry-After: 0) as soon as the head is in, nothing
    more read. Later ones: read whole (a declared length) and answered 200."""

    def __init__(self) -> None:
        super().__init__(_BUSY)
        self.bodies: list[bytes] = []

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.heads == 0:
            await super()._serve(reader, writer)
            return
        self._writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads += 1
        self.chunked.append(b"transfer-encoding: chunked" in head.lower())
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        self.bodies.append(await reader.readexactly(length))
        reply = msgspec.json.encode(images_reply(1))
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(reply), reply)
        )
        await writer.drain()


async def test_a_429_while_the_client_sends_is_retried_with_the_spooled_copy(
    start_proxy: StartProxy,
) -> None:
    provider = BusyThenWhole()
    try:
        url = await provider.start()
        proxy = await start_proxy({"openai": {"base_url": url}}, limits=FORWARD_ALL)
        image = sized_png(8 * MiB)

        async def refused() -> bool:
            return provider.heads >= 1

        async def refused_meanwhile() -> None:
            await eventually(refused)

        async with asyncio.timeout(25):
            status, body = await post(
                proxy,
                [
                    fields(FIELDS) + file_head() + image[: 2 * MiB],
                    refused_meanwhile,
                    image[2 * MiB :] + b"\r\n" + END,
                ],
            )
        assert status == 200, body
        assert provider.chunked == [True, False]
        _, files = parse_form(
            f"multipart/form-data; boundary={boundary(provider.bodies[0])}",
            provider.bodies[0],
        )
        assert [f.data for f in files] == [image]
    finally:
        await provider.close()


def boundary(body: bytes) -> str:
    return body[2 : body.index(b"\r\n")].decode()


@pytest.mark.parametrize(
    "tail",
    [
        END + b"trailing bytes after the closing delimiter",
        b"",  # no closing delimiter
        END[:-2],  # the closing delimiter without its CRLF
        END[:-4],  # cut inside it
        b"--" + END,  # a delimiter that is not this body's
    ],
)
async def test_a_malformed_end_is_answered_as_the_spooled_run_answers_it(
    start_gateway: StartGateway, tail: bytes
) -> None:
    gw = await start_gateway(
        "openai", fake=ArrivingOpenAI(UPSTREAM_KEY), limits=FORWARD_ALL
    )
    fake: ArrivingOpenAI = gw.fake
    image = sized_png(MiB)
    spooled = await post(gw.proxy, [file_head() + image + b"\r\n" + fields() + tail])
    assert fake.chunked in ([], [False])
    forwarded = await post(gw.proxy, [fields() + file_head() + image + b"\r\n" + tail])
    assert forwarded == spooled
    if spooled[0] != 200:
        await asyncio.sleep(0.2)  # the provider's side of a cut-off body settles
        assert fake.received == []


async def test_a_forwarded_edit_with_expect_100_continue(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(
        "openai", fake=ArrivingOpenAI(UPSTREAM_KEY), limits=FORWARD_ALL
    )
    fake: ArrivingOpenAI = gw.fake
    image = sized_png(2 * MiB)
    body = fields() + file_head() + image + b"\r\n" + END
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.proxy.make_url("/v3/images/edits"),
            data=io.BytesIO(body),
            expect100=True,
            headers={
                "Authorization": f"Bearer {CLIENT_KEY}",
                "Content-Type": f"multipart/form-data; boundary={B}",
            },
        ) as r,
    ):
        assert r.status == 200, await r.text()
    assert fake.chunked == [True]
    assert fake.last.files[0].data == image


def _open_to(port: int) -> int:
    """This host's TCP connections to ``port`` still open on this side (Linux)."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    open_states = {"01", "08"}  # ESTABLISHED, CLOSE_WAIT
    return sum(
        1
        for row in rows
        if row[3] in open_states and row[2].split(":")[1] == f"{port:04X}"
    )


async def _true(value: bool) -> bool:
    return value
