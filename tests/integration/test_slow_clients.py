"""Clients that hold the gateway's shared resources: 100-continue before admission,
bodies that drip, bodies declared large that never come, gzip bodies."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from tests.conftest import CLIENT_KEY, StartProxy, leftover_files
from tests.fakes.openai import FakeOpenAI
from tests.gateway import (
    KEY_A,
    KEY_B,
    Gate,
    edit_multipart,
    generate,
    key_entry,
    metric,
)
from tests.images import png, sized_png

Result = tuple[int, dict[str, Any], dict[str, str]]
GENERATE = msgspec.json.encode(
    {"model": "openai/gpt-image-2.5-sunburst", "prompt": "a cat"}
)


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
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\n{auth}"
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


class Dripper:
    """A client that declares a large body, sends its start, then a byte at a time."""

    def __init__(self, proxy: TestServer, path: str, ctype: str, length: int) -> None:
        self._proxy = proxy
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()
        self._task: asyncio.Task[None] | None = None
        self.started = 0.0

    async def start(self, first: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.reader, self.writer = await asyncio.open_connection(
            self._proxy.host, self._proxy.port
        )
        self.started = loop.time()
        self.writer.write(self._head + first)
        await self.writer.drain()
        self._task = loop.create_task(self._drip())

    async def _drip(self) -> None:
        try:
            while True:
                await asyncio.sleep(0.2)
                self.writer.write(b"a")
                await self.writer.drain()
        except ConnectionError:
            pass

    async def answer(self, within_s: float) -> tuple[int, float]:
        """The status the proxy answered with, and how long after the start."""
        status, _, _ = await asyncio.wait_for(read_answer(self.reader), within_s)
        return status, asyncio.get_running_loop().time() - self.started

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.writer.transport.abort()


MULTIPART_START = (
    b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
    b"Content-Type: image/png\r\n\r\n" + png()
)
GRACE_S = 3.0
RATE = 1000  # bytes per second


@pytest.fixture
async def paced(start_proxy: StartProxy, fake_openai: FakeOpenAI) -> TestServer:
    return await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        # The idle timer alone never fires: a byte comes every 0.2 s.
        limits={
            "client_idle_timeout_s": 30,
            "client_body_grace_s": GRACE_S,
            "client_min_body_rate_bytes_s": RATE,
        },
        backpressure={"max_temp_bytes": 500_000, "max_inflight": 8},
    )


async def readyz(proxy: TestServer) -> int:
    async with aiohttp.ClientSession() as s, s.get(proxy.make_url("/readyz")) as r:
        return r.status


async def test_drippers_declaring_the_temp_budget_do_not_lock_out_uploads(
    paced: TestServer, fake_openai: FakeOpenAI, temp_root: Path
) -> None:
    drippers = [
        Dripper(paced, "/v3/images/edits", "multipart/form-data; boundary=b", 100_000)
        for _ in range(5)
    ]
    try:
        for d in drippers:
            await d.start(MULTIPART_START)
        await asyncio.sleep(0.3)  # each has been admitted and is reading
        assert await readyz(paced) == 200
        status, body, _ = await edit_multipart(paced, None, sized_png(60_000))
        assert status == 200, body
        uploaded = aiohttp.FormData()
        uploaded.add_field("file", png(), filename="a.png", content_type="image/png")
        async with (
            aiohttp.ClientSession() as s,
            s.post(paced.make_url("/v3/upload"), data=uploaded) as r,
        ):
            assert r.status == 200, await r.text()
        # Then each dripper is cut off once behind its pace.
        bound = GRACE_S + len(MULTIPART_START) / RATE + 1.5
        for d in drippers:
            status, after = await d.answer(within_s=bound)
            assert status == 408
            assert after < bound
    finally:
        for d in drippers:
            await d.close()
    assert len(fake_openai.received) == 1
    assert await readyz(paced) == 200
    # Only the upload that was kept is left (the upload store is under temp_root).
    left = leftover_files(temp_root)
    assert [f for f in left if "imagegate-store" not in f] == []


async def test_drippers_lose_their_inflight_slots_at_the_deadline(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, registry: CollectorRegistry
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        limits={
            "client_idle_timeout_s": 30,
            "client_body_grace_s": 1.0,
            "client_min_body_rate_bytes_s": RATE,
        },
        backpressure={"max_inflight": 3},
    )
    first = b'{"model": "openai/gpt-image-2.5-sunburst", "prompt": "'
    drippers = [
        Dripper(proxy, "/v3/images/generations", "application/json", 10_000)
        for _ in range(3)
    ]
    try:
        for d in drippers:
            await d.start(first)
        await asyncio.sleep(0.3)
        assert (await generate(proxy, None))[0] == 503  # every slot is taken
        bound = 1.0 + len(first) / RATE + 1.5
        for d in drippers:
            status, after = await d.answer(within_s=bound)
            assert status == 408
            assert after < bound
    finally:
        for d in drippers:
            await d.close()
    status, body, _ = await generate(proxy, None)
    assert status == 200, body
    assert await readyz(proxy) == 200
    assert metric(registry, "imagegate_requests_total", route="/v3/images/generations",
                  provider="none", code_class="4xx", key="anonymous") == 3  # fmt: skip


async def test_a_body_at_the_minimum_pace_is_served(
    paced: TestServer, fake_openai: FakeOpenAI
) -> None:
    # 2 KiB/s against a minimum of 1000 B/s, past the grace period: not cut off.
    body = msgspec.json.encode(
        {"model": "openai/gpt-image-2.5-sunburst", "prompt": "a" * 9000}
    )
    reader, writer = await asyncio.open_connection(paced.host, paced.port)
    writer.write(
        b"POST /v3/images/generations HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    for i in range(0, len(body), 400):
        writer.write(body[i : i + 400])
        await writer.drain()
        await asyncio.sleep(0.2)
    status, _, answer = await read_answer(reader)
    assert status == 200, answer
    writer.close()


async def test_one_key_holds_at_most_its_share_of_upload_space(
    start_proxy: StartProxy, held: tuple[FakeOpenAI, Gate]
) -> None:
    fake, gate = held
    proxy = await start_proxy(
        {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        keys={"a": key_entry(KEY_A), "b": key_entry(KEY_B)},
        backpressure={"max_temp_bytes": 200_000, "max_temp_share": 0.5},
    )
    big = sized_png(60_000)

    async def meanwhile() -> tuple[Result, Result]:
        await gate.wait_for(1)  # key a's first edit holds 60 KB, waiting upstream
        second = await edit_multipart(proxy, KEY_A, big)  # 120 KB > its 100 KB
        other = asyncio.ensure_future(edit_multipart(proxy, KEY_B, big))
        await gate.wait_for(2)  # key b: 120 KB of 200 KB in all, admitted
        gate.open()
        return second, await other

    async with asyncio.timeout(20):
        first, (second, other) = await asyncio.gather(
            edit_multipart(proxy, KEY_A, big), meanwhile()
        )
    assert first[0] == 200
    assert (second[0], second[1]["error"]["code"]) == (503, "overloaded")
    assert "for one client" in second[1]["error"]["message"]
    assert other[0] == 200
    assert len(fake.received) == 2


async def test_a_body_past_the_hard_deadline_gets_a_408(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        limits={"client_body_timeout_s": 1.0, "client_min_body_rate_bytes_s": 100},
    )
    # 2 KB/s, well above the minimum pace, but the body needs 4 s in all.
    body = msgspec.json.encode(
        {"model": "openai/gpt-image-2.5-sunburst", "prompt": "a" * 8000}
    )
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(
        b"POST /v3/images/generations HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    started = asyncio.get_running_loop().time()
    answer = asyncio.ensure_future(read_answer(reader))
    with contextlib.suppress(ConnectionError):
        for i in range(0, len(body), 400):
            if answer.done():
                break
            writer.write(body[i : i + 400])
            await writer.drain()
            await asyncio.sleep(0.2)
    status, _, error = await asyncio.wait_for(answer, 5)
    assert status == 408
    assert "longer than 1 s" in str(error)
    assert asyncio.get_running_loop().time() - started < 2.5
    assert fake_openai.received == []
    writer.close()


async def test_expect_refused_after_the_keys_limits_gives_its_slot_back(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        keys={"team": key_entry(CLIENT_KEY, concurrency=1)},
        limits={"max_json_bytes": 4096},
    )
    for _ in range(3):
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(head("/v3/images/generations", 5000, key=CLIENT_KEY))
        await writer.drain()
        assert (await read_answer(reader))[0] == 413
        writer.close()
    # The key's one concurrency slot is free again.
    assert (await generate(proxy, CLIENT_KEY))[0] == 200
