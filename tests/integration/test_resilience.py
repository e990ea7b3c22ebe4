"""Retries, fallbacks and circuit breakers through HTTP, counted at fake upstreams."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import openai
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import StartProxy, leftover_files
from tests.fakes.openai import FakeOpenAI, Reply
from tests.gateway import (
    edit_multipart,
    free_port,
    generate,
    metric,
    providers_for,
    sdk_for,
)
from tests.images import png

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05}


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_within_bound_is_retried(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    registry: CollectorRegistry,
    status: int,
) -> None:
    proxy = await start_proxy(providers_for(fake_openai), retry=FAST)
    fake_openai.script(Reply(status=status, body={"error": {"message": "busy"}},
                             headers={"Retry-After": "0"}))  # fmt: skip
    code, body, _ = await generate(proxy, None)
    assert code == 200
    assert body["provider"] == "openai"
    assert len(fake_openai.received) == 2
    labels = {"provider": "openai"}
    assert metric(registry, "imagegate_upstream_retries_total", **labels) == 1


async def test_long_retry_after_goes_back_to_the_client(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(providers_for(fake_openai), retry=FAST)
    fake_openai.script(Reply(status=429, body={"error": {"message": "slow down"}},
                             headers={"Retry-After": "60"}))  # fmt: skip
    async with sdk_for(proxy, "k") as sdk:
        with pytest.raises(openai.RateLimitError) as exc:
            await sdk.images.generate(
                model="openai/gpt-image-2.5-sunburst", prompt="a cat"
            )
    assert exc.value.response.headers["Retry-After"] == "60"
    assert len(fake_openai.received) == 1


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply(status=500, body={"error": {"message": "boom"}}), 502),
        (Reply(status=503, body={"error": {"message": "no retry-after"}}), 502),
        (Reply(drop=True), 502),  # the body was sent; a response may have begun
    ],
    ids=["500", "503-without-retry-after", "dropped-after-send"],
)
async def test_nothing_is_retried_once_the_provider_had_the_request(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, reply: Reply, status: int
) -> None:
    proxy = await start_proxy(providers_for(fake_openai), retry=FAST)
    fake_openai.script(reply, Reply())
    code, _, _ = await generate(proxy, None)
    assert code == status
    assert len(fake_openai.received) == 1


async def test_timeout_after_sending_is_not_retried(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    provider = {"base_url": fake_openai.url, "pool": {"read_timeout_s": 0.2}}  # type: ignore[attr-defined]
    proxy = await start_proxy({"openai": provider}, retry=FAST)
    fake_openai.script(Reply(delay_s=1.0), Reply())
    code, body, _ = await generate(proxy, None)
    assert (code, body["error"]["code"]) == (504, "upstream_timeout")
    assert len(fake_openai.received) == 1


async def test_refused_connection_is_retried_up_to_attempts(
    start_proxy: StartProxy, registry: CollectorRegistry
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    proxy = await start_proxy({"openai": {"base_url": dead}}, retry=FAST)
    code, body, _ = await generate(proxy, None)
    assert (code, body["error"]["code"]) == (502, "upstream_unavailable")
    labels = {"provider": "openai"}
    assert metric(registry, "imagegate_upstream_retries_total", **labels) == 2
    outcome = {"provider": "openai", "outcome": "error"}
    assert metric(registry, "imagegate_upstream_requests_total", **outcome) == 3


@pytest.mark.parametrize("where", ["memory", "disk"])
async def test_multipart_retry_rebuilds_the_form(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, temp_root: Path, where: str
) -> None:
    # With no in-memory spool, the image is read back from its temp file on each try.
    spool = {"spool_bytes": 0 if where == "disk" else 4 * 1024 * 1024}
    proxy = await start_proxy(providers_for(fake_openai), retry=FAST, limits=spool)
    fake_openai.script(Reply(status=503, headers={"Retry-After": "0"}), Reply())
    image = png(64, 64, seed=7)
    code, _, _ = await edit_multipart(proxy, None, image)
    assert code == 200
    first, second = fake_openai.received
    assert [f.data for f in first.files] == [f.data for f in second.files] == [image]
    assert first.fields == second.fields
    assert leftover_files(temp_root) == []


async def test_connect_timeout_is_retried(
    start_proxy: StartProxy, registry: CollectorRegistry
) -> None:
    # A listener that never accepts, its backlog filled: new connects hang in SYN.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        for f in fillers:
            f.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                f.connect(("127.0.0.1", port))
        try:
            provider = {
                "base_url": f"http://127.0.0.1:{port}/v1",
                "pool": {"connect_timeout_s": 0.2},
            }
            proxy = await start_proxy(
                {"openai": provider}, retry=FAST | {"attempts": 2}
            )
            code, body, _ = await generate(proxy, None)
        finally:
            for f in fillers:
                f.close()
    assert (code, body["error"]["code"]) == (504, "upstream_timeout")
    assert "did not accept a connection" in body["error"]["message"]
    labels = {"provider": "openai"}
    assert metric(registry, "imagegate_upstream_retries_total", **labels) == 1


async def test_retry_stops_at_the_deadline(
    start_proxy: StartProxy, registry: CollectorRegistry
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    retry = {"backoff_base_s": 5.0, "backoff_max_s": 5.0, "deadline_s": 0.001}
    proxy = await start_proxy({"openai": {"base_url": dead}}, retry=retry)
    assert (await generate(proxy, None))[0] == 502
    labels = {"provider": "openai"}
    assert metric(registry, "imagegate_upstream_retries_total", **labels) == 0


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")),
        0,
    )  # fmt: skip
    await reader.readexactly(length)


def _head(status: bytes, length: int, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n" + extra
        + b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )  # fmt: skip


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # the request was read, then the connection reset: it may have run
        _head(b"200 OK", 1000) + b'{"data":',  # a response began, then the reset
        _head(b"503 Service Unavailable", 100, b"Retry-After: 0\r\n") + b"{",
    ],
    ids=["reset-after-request", "reset-mid-response", "503-cut-short"],
)
async def test_no_retry_once_the_request_was_sent(
    start_proxy: StartProxy, registry: CollectorRegistry, answer: bytes
) -> None:
    accepted = 0

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal accepted
        accepted += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await _read_request(reader)
            writer.write(answer)
            await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        base = {"base_url": f"http://127.0.0.1:{port}/v1"}
        proxy = await start_proxy({"openai": base}, retry=FAST)
        code, _, _ = await generate(proxy, None)
    finally:
        server.close()
    assert code == 502
    assert accepted == 1
    assert metric(registry, "imagegate_upstream_retries_total", provider="openai") == 0
