"""A provider's JSON reply relayed to the client as it arrives (``proxy.passthrough``).

The fake provider is a real aiohttp server answering with a chunked body written in
pieces the test chooses. Before the relay, the proxy held the whole reply before the
client saw a byte (``test_the_client_reads_the_start_before_the_provider_ends``
failed: nothing arrived until the provider's last byte).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpServer

from tests.conftest import UPSTREAM_KEY, StartProxy
from tests.gateway import KEY_A, key_entry

KiB = 1024
BIG_B64 = base64.b64encode(os.urandom(300 * KiB)).decode()
USAGE = {
    "input_tokens": 50,
    "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
    "output_tokens": 1000,
    "total_tokens": 1050,
}


def reply_body(**extra: Any) -> bytes:
    body = {"created": 1, "data": [{"b64_json": BIG_B64}], **extra, "usage": USAGE}
    return msgspec.json.encode(body)


class Provider:
    """Answers every edit with ``body``, chunked, in the pieces ``handle`` says; each
    piece after the first waits for ``gate``."""

    def __init__(self, body: bytes, piece: int = 1000) -> None:
        self.body = body
        self.piece = piece
        self.gate = asyncio.Event()
        self.gate.set()
        self.length: int | None = None  # send a Content-Length (read whole if small)
        self.cut_at: int | None = None  # drop the connection after this many bytes

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        if self.length is not None:
            resp.content_length = self.length
        await resp.prepare(request)
        start = 0
        while start < len(self.body):
            if self.cut_at is not None and start >= self.cut_at:
                assert request.transport is not None
                request.transport.abort()
                return resp
            # Pieces of ``piece`` bytes over the first 4 KiB, then of 64 KiB.
            size = self.piece if start < 4 * KiB else 64 * KiB
            await resp.write(self.body[start : start + size])
            start += size
            await self.gate.wait()
        await resp.write_eof()
        return resp


Start = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def relay_gateway(aiohttp_server: AiohttpServer, start_proxy: StartProxy) -> Start:
    async def start(provider: Provider, **sections: Any) -> TestServer:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/v1/images/edits", provider.handle)
        app.router.add_post("/v1/images/generations", provider.handle)
        upstream = await aiohttp_server(app)
        return await start_proxy(
            {"openai": {"base_url": str(upstream.make_url("/v1"))}}, **sections
        )

    return start


REQUEST = {"model": "openai/gpt-image-2", "prompt": "p"}


async def post(proxy: TestServer) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/generations"), json=REQUEST) as r,
    ):
        return r.status, await r.read()


async def test_relayed_reply_is_the_providers_plus_provider_and_cost(
    relay_gateway: Start,
) -> None:
    # An upstream gateway's own provider and cost are dropped, as on the held path.
    body = reply_body(provider="other", cost=9.5, quality="low")
    provider = Provider(body, piece=777)
    proxy = await relay_gateway(provider)
    status, raw = await post(proxy)
    assert status == 200, raw[:300]
    got = msgspec.json.decode(raw)
    assert got["data"] == [{"b64_json": BIG_B64}]
    assert got["usage"] == USAGE
    assert got["quality"] == "low"
    assert got["provider"] == "openai"
    assert raw.count(b'"provider"') == 1
    assert raw.count(b'"cost"') == 1

    # The same reply read whole (it says its length and is small) costs the same.
    provider.body = body.replace(BIG_B64.encode(), b"aGk=")
    provider.length = len(provider.body)
    status, raw_small = await post(proxy)
    assert status == 200
    assert got["cost"] == msgspec.json.decode(raw_small)["cost"] is not None


async def test_the_client_reads_the_start_before_the_provider_ends(
    relay_gateway: Start,
) -> None:
    provider = Provider(reply_body(), piece=80 * KiB)  # past what is held
    provider.gate.clear()  # the provider sends its first piece, then waits
    proxy = await relay_gateway(provider)
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/generations"), json=REQUEST) as r,
    ):
        assert r.status == 200
        start = await asyncio.wait_for(r.content.readexactly(32 * KiB), 5)
        assert start.startswith(b'{"created":1,"data":[{"b64_json":"')
        assert not provider.gate.is_set()
        provider.gate.set()
        rest = await r.read()
    assert msgspec.json.decode(start + rest)["provider"] == "openai"


@pytest.mark.parametrize("piece", [1, 7, 64, 1000])
async def test_a_key_split_between_pieces_is_redacted(
    relay_gateway: Start, piece: int
) -> None:
    echo = {"auth": f"Bearer {UPSTREAM_KEY}", "fingerprint": UPSTREAM_KEY}
    # The echo comes first, in small pieces; the images make the reply one to relay.
    body = b'{"debug":' + msgspec.json.encode(echo) + b"," + reply_body()[1:]
    proxy = await relay_gateway(Provider(body, piece=piece))
    status, raw = await post(proxy)
    assert status == 200
    assert UPSTREAM_KEY.encode() not in raw
    got = msgspec.json.decode(raw)
    assert got["debug"] == {"auth": "Bearer [redacted]", "fingerprint": "[redacted]"}


async def test_a_relayed_reply_over_the_cap_is_cut_off(
    relay_gateway: Start, registry: CollectorRegistry
) -> None:
    proxy = await relay_gateway(
        Provider(reply_body(), piece=16 * KiB),
        limits={"max_response_bytes": 128 * KiB},
    )
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/generations"), json=REQUEST) as r,
    ):
        assert r.status == 200  # its start was relayed before the cap was reached
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()  # never taken for a whole body
    labels = {"provider": "openai", "kind": "protocol"}
    assert registry.get_sample_value("imagegate_upstream_errors_total", labels) == 1


async def test_a_reply_broken_off_midway_cuts_the_client_off(
    relay_gateway: Start, registry: CollectorRegistry
) -> None:
    provider = Provider(reply_body(), piece=16 * KiB)
    provider.cut_at = 100 * KiB
    proxy = await relay_gateway(provider)
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/generations"), json=REQUEST) as r,
    ):
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    labels = {"provider": "openai", "kind": "protocol"}
    assert registry.get_sample_value("imagegate_upstream_errors_total", labels) == 1


async def test_a_short_unsized_reply_is_answered_whole(relay_gateway: Start) -> None:
    body = reply_body().replace(BIG_B64.encode(), b"aGk=")
    proxy = await relay_gateway(Provider(body, piece=10))
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/generations"), json=REQUEST) as r,
    ):
        assert r.status == 200
        assert r.content_length is not None  # not chunked: held, then answered
        assert (await r.json())["provider"] == "openai"


async def test_a_reply_that_is_not_json_is_a_502_before_any_byte(
    relay_gateway: Start,
) -> None:
    proxy = await relay_gateway(Provider(b"<html>" + b"x" * 100 * KiB, piece=4096))
    status, raw = await post(proxy)
    assert status == 502
    assert msgspec.json.decode(raw)["error"]["code"] == "upstream_protocol_error"


async def _left(proxy: TestServer) -> float:
    """What the key has left today, from the refusal of a probe that cannot fit."""
    probe = {**REQUEST, "n": 10, "size": "1536x1024", "quality": "high"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/generations"), json=probe,
               headers={"Authorization": f"Bearer {KEY_A}"}) as r,
    ):  # fmt: skip
        body = await r.json()
    assert r.status == 429, body
    found = re.search(r"more than the \$([0-9.e-]+) left", body["error"]["message"])
    assert found, body
    return float(found[1])


async def test_a_relayed_reply_is_charged_its_cost(relay_gateway: Start) -> None:
    proxy = await relay_gateway(
        Provider(reply_body(), piece=64 * KiB),
        keys={"team-a": key_entry(KEY_A, budget_usd_day=1.0)},
    )
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/generations"), json=REQUEST,
               headers={"Authorization": f"Bearer {KEY_A}"}) as r,
    ):  # fmt: skip
        assert r.status == 200
        cost = (await r.json())["cost"]
    assert cost > 0
    assert await _left(proxy) == pytest.approx(1.0 - cost, abs=1e-6)


async def test_a_relay_the_client_leaves_is_charged_its_worst_case(
    relay_gateway: Start,
) -> None:
    provider = Provider(reply_body(), piece=80 * KiB)
    provider.gate.clear()  # the provider sends its first piece, then waits
    proxy = await relay_gateway(
        provider, keys={"team-a": key_entry(KEY_A, budget_usd_day=1.0)}
    )
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/generations"), json=REQUEST,
               headers={"Authorization": f"Bearer {KEY_A}"}) as r,
    ):  # fmt: skip
        assert r.status == 200
        await r.content.readexactly(1024)
        r.close()  # the client goes away mid-reply
    provider.gate.set()
    # The provider finished and bills the image: the key pays the call's worst case,
    # more than the reply's cost (about $0.04 here).
    spent = 0.0
    for _ in range(100):
        spent = 1.0 - await _left(proxy)
        if spent > 0:
            break
        await asyncio.sleep(0.05)
    assert spent > 0.1


async def test_an_idempotent_request_is_held_whole_and_replayed(
    relay_gateway: Start,
) -> None:
    # A reply long enough to be relayed; with an Idempotency-Key it must be kept, so
    # it stays on the held path (proxy.passthrough.wanted, keep=True) and a repeat is
    # answered from what was kept without a second upstream call.
    provider = Provider(reply_body(), piece=80 * KiB)
    calls = 0
    handle = provider.handle

    async def counted(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return await handle(request)

    provider.handle = counted  # type: ignore[method-assign]
    proxy = await relay_gateway(provider)
    answers = []
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            async with s.post(
                proxy.make_url("/v3/images/generations"),
                json=REQUEST,
                headers={"Idempotency-Key": "held-1"},
            ) as r:
                answers.append(
                    (r.status, r.headers.get("Idempotent-Replayed"), await r.read())
                )
    assert [a[0] for a in answers] == [200, 200]
    assert answers[0][1] is None
    assert answers[1][1] == "true"
    assert answers[0][2] == answers[1][2]
    assert msgspec.json.decode(answers[1][2])["data"] == [{"b64_json": BIG_B64}]
    assert calls == 1
