"""Clients that misbehave on the wire: slow, vanishing, pipelining, 100-continue."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import msgspec
from aiohttp.test_utils import TestServer

from tests.conftest import StartProxy, leftover_files
from tests.fakes.openai import FakeOpenAI, Reply
from tests.images import png

JSON_BODY = msgspec.json.encode(
    {"model": "openai/gpt-image-2", "prompt": "x",
     "images": [{"image_url": "data:image/png;base64," + base64.b64encode(png()).decode()}]}
)  # fmt: skip


def request(body: bytes = JSON_BODY, *, extra: bytes = b"") -> bytes:
    return (
        b"POST /v3/images/edits HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, await asyncio.wait_for(reader.readexactly(length), 10)


async def slow_proxy(start_proxy: StartProxy, fake: FakeOpenAI) -> TestServer:
    return await start_proxy(
        {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        server={"keepalive_timeout_s": 0.5},
        limits={"client_idle_timeout_s": 0.3},
    )


async def test_slowloris_headers_are_cut_off(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await slow_proxy(start_proxy, fake_openai)
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    closed = False
    for byte in b"POST /v3/images/edits HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            closed = True
            break
        await asyncio.sleep(0.05)
        if reader.at_eof():
            closed = True
            break
    if not closed:
        closed = await asyncio.wait_for(reader.read(), 5) == b""
    assert closed
    writer.close()


async def test_slow_body_gets_a_408(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, temp_root: Path
) -> None:
    proxy = await slow_proxy(start_proxy, fake_openai)
    for ctype, head in [
        (b"application/json", JSON_BODY[:20]),
        (b"multipart/form-data; boundary=b",
         b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n' + png()),
    ]:  # fmt: skip
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(
            b"POST /v3/images/edits HTTP/1.1\r\nHost: localhost\r\nContent-Type: " + ctype
            + b"\r\nContent-Length: 100000\r\n\r\n" + head
        )  # fmt: skip
        await writer.drain()
        status, body = await read_response(reader)
        assert status == 408
        assert msgspec.json.decode(body)["error"]["code"] == "request_timeout"
        writer.close()
    assert leftover_files(temp_root) == []
    assert fake_openai.received == []


async def test_pipelined_requests_are_answered_in_order(
    proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    bad = request(b'{"model": "openai/gpt-image-2"}')
    writer.write(request() + bad + request())
    await writer.drain()
    statuses = [(await read_response(reader))[0] for _ in range(3)]
    assert statuses == [200, 400, 200]
    assert len(fake_openai.received) == 2
    writer.close()


async def test_expect_100_continue(proxy: TestServer) -> None:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    full = request(extra=b"Expect: 100-continue\r\n")
    head, body = full.split(b"\r\n\r\n", 1)
    writer.write(head + b"\r\n\r\n")
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100")
    writer.write(body)
    await writer.drain()
    status, _ = await read_response(reader)
    assert status == 200
    writer.close()


async def test_disconnect_at_every_phase(
    proxy: TestServer, fake_openai: FakeOpenAI, temp_root: Path
) -> None:
    full = request()
    multipart = (
        b"POST /v3/images/edits HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 9999\r\n\r\n"
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
        + png()
    )
    fake_openai.script(Reply(delay_s=0.3))
    cuts = [
        full[:10],
        full[: full.index(b"\r\n\r\n")],
        full[: len(full) - 5],
        multipart,
        full,
    ]
    for cut in cuts:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(cut)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()
    # The last one reached the upstream; the proxy finishes it and keeps serving.
    for _ in range(100):
        if fake_openai.received and not leftover_files(temp_root):
            break
        await asyncio.sleep(0.02)
    assert len(fake_openai.received) == 1
    assert leftover_files(temp_root) == []
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(request())
    assert (await read_response(reader))[0] == 200
    writer.close()
