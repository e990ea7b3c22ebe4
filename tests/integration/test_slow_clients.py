"""Clients that hold the gateway's shared resources: 100-continue before admission,
bodies that drip, bodies declared large that never come, gzip bodies."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import CLIENT_KEY, StartProxy
from tests.fakes.openai import FakeOpenAI
from tests.gateway import key_entry

GENERATE = msgspec.json.encode({"model": "openai/gpt-image-1", "prompt": "a cat"})


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return int(lines[0].split(" ", 2)[1]), headers


async def read_answer(
    reader: asyncio.StreamReader,
) -> tuple[int, dict[str, str], dict[str, object]]:
    status, headers = await read_head(reader)
    body = await asyncio.wait_for(
        reader.readexactly(int(headers.get("content-length", "0"))), 10
    )
    return status, headers, msgspec.json.decode(body) if body else {}


def head(
    path: str, length: int, *, key: str | None, ctype: str = "application/json"
) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n{auth}"
        f"Expect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.fixture
async def keyed(start_proxy: StartProxy, fake_openai: FakeOpenAI) -> TestServer:
    return await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        keys={"team": key_entry(CLIENT_KEY)},
        limits={"max_json_bytes": 4096, "max_body_bytes": 100_000},
    )


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/v3/images/generations", "application/json"),
        ("/v1/images/edits", "multipart/form-data; boundary=b"),
        ("/v3/upload", "multipart/form-data; boundary=b"),
    ],
)
async def test_expect_with_a_bad_key_gets_401_and_no_100(
    keyed: TestServer, fake_openai: FakeOpenAI, path: str, ctype: str
) -> None:
    for key in (None, "igk-wrong"):
        reader, writer = await asyncio.open_connection(keyed.host, keyed.port)
        writer.write(head(path, 1000, key=key, ctype=ctype))
        await writer.drain()
        status, headers, body = await read_answer(reader)
        assert status == 401, body
        assert headers["connection"] == "close"
        writer.close()
    assert fake_openai.received == []


@pytest.mark.parametrize(
    ("path", "ctype", "length"),
    [
        ("/v3/images/generations", "application/json", 4097),
        ("/v3/images/edits", "multipart/form-data; boundary=b", 100_001),
        ("/v3/upload", "multipart/form-data; boundary=b", 100_001),
    ],
)
async def test_expect_with_a_length_over_the_cap_gets_413_and_no_100(
    keyed: TestServer, path: str, ctype: str, length: int
) -> None:
    reader, writer = await asyncio.open_connection(keyed.host, keyed.port)
    writer.write(head(path, length, key=CLIENT_KEY, ctype=ctype))
    await writer.drain()
    status, headers, body = await read_answer(reader)
    assert status == 413, body
    assert headers["connection"] == "close"
    writer.close()


async def test_expect_admitted_gets_100_then_the_answer(
    keyed: TestServer, fake_openai: FakeOpenAI
) -> None:
    reader, writer = await asyncio.open_connection(keyed.host, keyed.port)
    writer.write(head("/v3/images/generations", len(GENERATE), key=CLIENT_KEY))
    await writer.drain()
    assert (await read_head(reader))[0] == 100
    writer.write(GENERATE)
    await writer.drain()
    status, _, body = await read_answer(reader)
    assert status == 200, body
    assert len(fake_openai.received) == 1
    writer.close()


async def test_unknown_expectation_is_refused(keyed: TestServer) -> None:
    reader, writer = await asyncio.open_connection(keyed.host, keyed.port)
    writer.write(
        head("/v3/images/generations", 10, key=CLIENT_KEY).replace(
            b"100-continue", b"200-maybe"
        )
    )
    await writer.drain()
    assert (await read_head(reader))[0] == 417
    writer.close()
