"""``GET /v3/usage``: a key sees its own spend and counters, never another key's.

Run against both limit stores (in memory, and a real Redis), since each answers from
its own records.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import AiohttpServer, StartProxy
from tests.fakes.openai import FakeOpenAI
from tests.gateway import KEY_A, KEY_B, Gate, generate, key_entry, redis_server

# One gpt-image-2 generation of the fake: 10 text tokens in at $5/1M, 40 image tokens
# in at $8/1M, 1000 image tokens out at $30/1M.
ONE_RUN_USD = 0.03037


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "memory":
        yield None
    else:
        with redis_server() as server:
            yield server.url


@pytest.fixture
async def gated(
    aiohttp_server: AiohttpServer,
) -> AsyncIterator[tuple[FakeOpenAI, Gate]]:
    fake, gate = FakeOpenAI("sk-upstream-test"), Gate()
    gate.install(fake.app)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("/v1"))  # type: ignore[attr-defined]
    gate.open()
    yield fake, gate
    gate.open()


async def usage(proxy: TestServer, key: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.make_url("/v3/usage"), headers=headers) as r,
    ):
        return r.status, await r.json()


async def _two_keys(
    start_proxy: StartProxy, fake: FakeOpenAI, backend: str | None
) -> TestServer:
    sections: dict[str, Any] = {
        "keys": {
            "team-a": key_entry(KEY_A, budget_usd_day=5, budget_usd_month=50, rpm=100,
                                concurrency=3),
            "team-b": key_entry(KEY_B, budget_usd_day=2),
        }
    }  # fmt: skip
    if backend is not None:
        sections["redis_url"] = backend
    return await start_proxy({"openai": {"base_url": fake.url}}, **sections)  # type: ignore[attr-defined]


async def test_each_key_sees_only_its_own_spend(
    start_proxy: StartProxy, gated: tuple[FakeOpenAI, Gate], backend: str | None
) -> None:
    fake, _ = gated
    proxy = await _two_keys(start_proxy, fake, backend)
    for _ in range(2):
        assert (await generate(proxy, KEY_A))[0] == 200

    status, a = await usage(proxy, KEY_A)
    assert status == 200
    assert a["object"] == "usage"
    assert a["key"] == "team-a"
    assert a["day"]["spent_usd"] == pytest.approx(2 * ONE_RUN_USD)
    assert a["day"]["budget_usd"] == 5
    assert a["day"]["remaining_usd"] == pytest.approx(5 - 2 * ONE_RUN_USD)
    assert a["month"]["spent_usd"] == pytest.approx(2 * ONE_RUN_USD)
    assert a["month"]["budget_usd"] == 50
    assert a["day"]["resets_at"].endswith("T00:00:00Z")
    # Two generations and this request, in the last minute.
    assert a["rpm"] == {"in_use": 3, "limit": 100}
    assert a["concurrency"] == {"in_use": 0, "limit": 3}

    status, b = await usage(proxy, KEY_B)
    assert status == 200
    assert b["key"] == "team-b"
    assert b["day"]["spent_usd"] == 0
    assert b["day"]["budget_usd"] == 2
    assert b["month"] == {
        "spent_usd": 0.0, "budget_usd": None, "remaining_usd": None,
        "resets_at": b["month"]["resets_at"],
    }  # fmt: skip
    # team-b has no rate limits: nothing is counted, so nothing is claimed.
    assert b["rpm"] == {"in_use": None, "limit": None}
    assert b["concurrency"] == {"in_use": None, "limit": None}


async def test_requests_in_flight_are_counted(
    start_proxy: StartProxy, gated: tuple[FakeOpenAI, Gate], backend: str | None
) -> None:
    fake, gate = gated
    proxy = await _two_keys(start_proxy, fake, backend)
    gate.released.clear()
    running = asyncio.ensure_future(generate(proxy, KEY_A))
    await gate.wait_for(1)
    _, held = await usage(proxy, KEY_A)
    # The held generation, not this request itself; its budget hold counts as spent.
    assert held["concurrency"]["in_use"] == 1
    assert held["day"]["spent_usd"] > 0
    gate.open()
    assert (await running)[0] == 200
    _, after = await usage(proxy, KEY_A)
    assert after["concurrency"]["in_use"] == 0
    assert after["day"]["spent_usd"] == pytest.approx(ONE_RUN_USD)


async def test_usage_needs_a_valid_key(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await _two_keys(start_proxy, fake_openai, None)
    assert (await usage(proxy, None))[0] == 401
    status, body = await usage(proxy, "igk-not-a-key")
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key"


async def test_without_keys_nothing_is_tracked(proxy: TestServer) -> None:
    status, body = await usage(proxy, None)
    assert status == 200
    assert body["key"] is None
    for period in ("day", "month"):
        assert body[period]["spent_usd"] is None
        assert body[period]["budget_usd"] is None
    assert body["rpm"] == {"in_use": None, "limit": None}
    assert body["concurrency"] == {"in_use": None, "limit": None}


async def test_usage_answers_503_when_redis_is_down(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    with redis_server() as redis:
        proxy = await start_proxy(
            {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
            keys={"team-a": key_entry(KEY_A, rpm=10)},
            redis_url=redis.url,
        )
        redis.kill()
        # Rate limits fail open, so the request is admitted; its counts cannot be
        # read, and a made-up zero would mislead.
        status, body = await usage(proxy, KEY_A)
        assert status == 503
        assert body["error"]["code"] == "limits_unavailable"
        assert "usage of key 'team-a'" in body["error"]["message"]
