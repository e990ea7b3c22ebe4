"""A large answer held whole (``proxy.held``): an ``Idempotency-Key`` keeps the reply
off the relay, and an answer over ``held.WHOLE`` is written in pieces, never joined.

The client must get the bytes and headers a ``web.Response`` would have sent, the
idempotency store keep what it kept, and a big kept answer replay byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import os

import aiohttp
import msgspec
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpServer

from proxy import held
from proxy.accounting import splice
from proxy.providers._openai_compat import parse_images
from tests.conftest import UPSTREAM_KEY
from tests.integration.test_relay import (
    REQUEST,
    USAGE,
    Provider,
    Start,
    relay_gateway,  # noqa: F401 - the fixture
)
from tests.s3server import s3_server

MiB = 1024 * 1024
# Base64 of 5 MiB: the answer is over held.WHOLE.
BIG = base64.b64encode(os.urandom(5 * MiB)).decode()


def big_reply(**extra: object) -> bytes:
    body = {"created": 1, "data": [{"b64_json": BIG}], **extra, "usage": USAGE}
    return msgspec.json.encode(body)


async def ask(proxy: TestServer, key: str | None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Idempotency-Key": key} if key else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/generations"), json=REQUEST, headers=headers
        ) as r,
    ):
        return r.status, dict(r.headers), await r.read()


def expected(reply: bytes, answer: bytes) -> bytes:
    """The provider's reply with our provider and cost spliced in (its cost as
    answered, priced from the usage)."""
    cost = msgspec.json.decode(answer)["cost"]
    assert cost is not None
    return splice(reply, b'"provider":"openai","cost":' + msgspec.json.encode(cost))


async def test_a_large_held_answer_is_byte_identical_and_replayed(
    relay_gateway: Start,  # noqa: F811
    registry: CollectorRegistry,
) -> None:
    reply = big_reply()
    provider = Provider(reply, piece=64 * 1024)
    proxy = await relay_gateway(provider)
    status, headers, first = await ask(proxy, "big-1")
    assert status == 200
    assert len(first) > held.WHOLE
    assert first == expected(reply, first)
    assert headers["Content-Length"] == str(len(first))
    assert headers["Content-Type"] == "application/json"
    assert "Transfer-Encoding" not in headers
    # The same reply relayed (no key) is the same bytes.
    status, _, relayed = await ask(proxy, None)
    assert (status, relayed) == (200, first)
    # Kept (under max_answer_bytes, 16 MiB) and replayed in pieces, byte for byte.
    provider.body = b"{}"  # a second call would answer something else
    status, again_headers, again = await ask(proxy, "big-1")
    assert status == 200
    assert again_headers["Idempotent-Replayed"] == "true"
    assert again == first
    assert again_headers["Content-Length"] == str(len(first))
    assert again_headers["Content-Type"] == "application/json"
    stored = registry.get_sample_value(
        "imagegate_idempotency_requests_total", {"outcome": "stored"}
    )
    assert stored == 1


async def test_a_large_answer_over_max_answer_bytes_is_answered_not_kept(
    relay_gateway: Start,  # noqa: F811
    registry: CollectorRegistry,
) -> None:
    reply = big_reply()
    provider = Provider(reply, piece=64 * 1024)
    proxy = await relay_gateway(provider, idempotency={"max_answer_bytes": MiB})
    status, _, first = await ask(proxy, "big-2")
    assert (status, first) == (200, expected(reply, first))
    status, _, body = await ask(proxy, "big-2")
    assert status == 409
    assert msgspec.json.decode(body)["error"]["code"] == "idempotency_answer_not_kept"
    outcome = "imagegate_idempotency_requests_total"
    assert registry.get_sample_value(outcome, {"outcome": "not_kept"}) == 2


async def test_a_secret_in_a_large_held_answer_is_redacted(
    relay_gateway: Start,  # noqa: F811
) -> None:
    echo = {"auth": f"Bearer {UPSTREAM_KEY}"}
    reply = big_reply(debug=echo)
    proxy = await relay_gateway(Provider(reply, piece=64 * 1024))
    status, _, raw = await ask(proxy, "big-3")
    assert status == 200
    assert UPSTREAM_KEY.encode() not in raw
    got = msgspec.json.decode(raw)
    assert got["debug"] == {"auth": "Bearer [redacted]"}
    assert got["data"] == [{"b64_json": BIG}]


async def test_held_response_sends_what_web_response_sends(
    aiohttp_server: AiohttpServer,
) -> None:
    body = os.urandom(3 * held.PIECE + 12345)
    cut: list[bytes | memoryview] = [
        body[:10],
        memoryview(body)[10 : 2 * held.PIECE + 7],
        body[2 * held.PIECE + 7 :],
    ]

    async def whole(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    async def pieces(request: web.Request) -> web.StreamResponse:
        return held.HeldResponse(cut)

    app = web.Application()
    app.router.add_get("/whole", whole)
    app.router.add_get("/pieces", pieces)
    server = await aiohttp_server(app)
    got = []
    async with aiohttp.ClientSession() as s:
        for path in ("/whole", "/pieces"):
            async with s.get(server.make_url(path)) as r:
                headers = {k: v for k, v in r.headers.items() if k != "Date"}
                got.append((r.status, headers, await r.read()))
    assert got[0] == got[1]
    assert got[1][2] == body


async def test_held_response_to_a_head_request_sends_no_body(
    aiohttp_server: AiohttpServer,
) -> None:
    """A GET route answers HEAD too (a job's large result): the body after the head
    of a HEAD answer is read as the next answer on the connection (the provider's
    bytes taken for a response to a request the client has not made yet)."""
    body = os.urandom(held.WHOLE + 12345)

    async def whole(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    async def pieces(request: web.Request) -> web.StreamResponse:
        return held.HeldResponse([body])

    app = web.Application()
    app.router.add_get("/whole", whole)
    app.router.add_get("/pieces", pieces)
    server = await aiohttp_server(app)
    got = []
    for path in ("/whole", "/pieces"):
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(
            f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        async with asyncio.timeout(10):
            raw = await reader.read(-1)
        writer.close()
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = [line for line in head.split(b"\r\n") if not line.startswith(b"Date:")]
        got.append((lines, len(rest)))
    assert got[0][1] == 0
    assert got[1] == got[0]


async def test_an_upstream_gateway_s_provider_and_cost_in_a_large_reply_are_dropped(
    relay_gateway: Start,  # noqa: F811
) -> None:
    # Parsed from the slim copy, then (an upstream's own members found) decoded whole
    # and re-encoded without them, as a small reply is.
    reply = big_reply(provider="other", cost=9.5)
    proxy = await relay_gateway(Provider(reply, piece=64 * 1024))
    status, _, raw = await ask(proxy, "big-4")
    assert status == 200
    assert raw == expected(parse_images("openai", reply).body, raw)
    assert raw.count(b'"provider"') == raw.count(b'"cost"') == 1


async def test_a_large_reply_that_is_not_an_images_reply_is_a_502(
    relay_gateway: Start,  # noqa: F811
) -> None:
    reply = b'{"data":"' + BIG.encode() + b'"}'  # data not a list
    proxy = await relay_gateway(Provider(reply, piece=64 * 1024))
    status, _, raw = await ask(proxy, "big-5")
    assert status == 502
    assert msgspec.json.decode(raw)["error"]["code"] == "upstream_protocol_error"


async def test_a_large_answer_kept_in_the_bucket_replays_byte_for_byte(
    relay_gateway: Start,  # noqa: F811
) -> None:
    reply = big_reply()
    provider = Provider(reply, piece=64 * 1024)
    with s3_server() as s3:
        bucket = await asyncio.to_thread(s3.bucket, "idempotency-answers")
        proxy = await relay_gateway(
            provider,
            environ={"OPENAI_API_KEY": UPSTREAM_KEY, **s3.credentials},
            files=s3.files_config(bucket),
            idempotency={"max_answer_bytes": MiB},
        )
        status, headers, first = await ask(proxy, "big-6")
        assert (status, first) == (200, expected(reply, first))
        provider.body = b"{}"
        status, again_headers, again = await ask(proxy, "big-6")
    assert (status, again_headers["Idempotent-Replayed"]) == (200, "true")
    assert again == first
    assert again_headers["Content-Type"] == headers["Content-Type"]
    assert again_headers["Content-Length"] == str(len(first))
