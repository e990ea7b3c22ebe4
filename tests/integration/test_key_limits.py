"""Per-key limits through HTTP, on the in-memory store and on a shared real Redis:
rpm and concurrency reached exactly at their numbers, budgets stopping the next
request, two proxies sharing one Redis, and Redis killed mid-test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from tests.conftest import UPSTREAM_KEY, AiohttpServer, ServeFake, build_config
from tests.fakes.openai import FakeOpenAI, Reply
from tests.gateway import (
    KEY_A,
    Gate,
    RedisServer,
    generate,
    key_entry,
    metric,
    redis_server,
)

# One gpt-image-2 reply of the fake costs $0.03037 (see tests/fakes/openai.py usage:
# 10 text tokens in at $5/1M, 40 image tokens in at $8/1M, 1000 out at $30/1M).
COST = 0.03037
# A 1024x1024 high-quality image reserves 7024 output tokens at $30/1M plus the prompt
# ("a cat", 5 bytes) at $5/1M: $0.210745 must fit before the request is sent.
HIGH = {"size": "1024x1024", "quality": "high"}
BUDGET = 0.25  # two requests fit ($0.06074 spent + $0.210745 reserved > $0.25)

Start = Callable[..., Awaitable[tuple[TestServer, CollectorRegistry]]]


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
async def gate_fake(serve_fake: ServeFake) -> AsyncIterator[tuple[FakeOpenAI, Gate]]:
    fake, gate = FakeOpenAI(UPSTREAM_KEY), Gate()
    gate.install(fake.app)
    await serve_fake("openai", fake)
    gate.open()  # tests that hold requests clear it first
    yield fake, gate
    gate.open()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "memory":
        yield None
    else:
        with redis_server() as server:
            yield server.url


@pytest.fixture
def start(aiohttp_server: AiohttpServer, temp_root: Path) -> Start:
    """Proxies with their own registries, so two can run side by side."""

    async def start_one(
        upstream_url: str, **sections: Any
    ) -> tuple[TestServer, CollectorRegistry]:
        registry = CollectorRegistry()
        config = build_config(
            temp_root, {"openai": {"base_url": upstream_url}}, **sections
        )
        app: web.Application = create_app(
            config, environ={"OPENAI_API_KEY": UPSTREAM_KEY}, registry=registry
        )
        return await aiohttp_server(app), registry

    return start_one


def _sections(redis_url: str | None, **rules: Any) -> dict[str, Any]:
    sections: dict[str, Any] = {"keys": {"team-a": key_entry(KEY_A, **rules)}}
    if redis_url is not None:
        sections["redis_url"] = redis_url
    return sections


async def test_rpm_reached_exactly(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate], backend: str | None
) -> None:
    fake, _ = gate_fake
    proxy, registry = await start(fake.url, **_sections(backend, rpm=3))  # type: ignore[attr-defined]
    statuses = [(await generate(proxy, KEY_A))[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    status, body, headers = await generate(proxy, KEY_A)
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert "3 requests per minute" in body["error"]["message"]
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert len(fake.received) == 3
    assert (
        metric(registry, "imagegate_rejected_requests_total", reason="rate_limited")
        == 3
    )


async def test_concurrency_reached_exactly(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate], backend: str | None
) -> None:
    fake, gate = gate_fake
    proxy, _ = await start(fake.url, **_sections(backend, concurrency=2))  # type: ignore[attr-defined]
    gate.released.clear()

    async def third() -> tuple[int, dict[str, Any], dict[str, str]]:
        await gate.wait_for(2)
        refused = await generate(proxy, KEY_A)
        gate.open()
        return refused

    first, second, refused = await asyncio.gather(
        generate(proxy, KEY_A), generate(proxy, KEY_A), third()
    )
    assert (first[0], second[0], refused[0]) == (200, 200, 429)
    assert refused[1]["error"]["code"] == "concurrency_limit_exceeded"
    # Both slots were released when the requests finished, failed ones too.
    fake.script(Reply(status=500), Reply(status=500))
    assert [(await generate(proxy, KEY_A))[0] for _ in range(2)] == [502, 502]
    assert [(await generate(proxy, KEY_A))[0] for _ in range(2)] == [200, 200]


@pytest.mark.parametrize(("rule", "word"), [("budget_usd_day", "daily"),
                                            ("budget_usd_month", "monthly")])  # fmt: skip
async def test_budget_stops_the_next_request(
    start: Start,
    gate_fake: tuple[FakeOpenAI, Gate],
    backend: str | None,
    rule: str,
    word: str,
) -> None:
    fake, _ = gate_fake
    proxy, registry = await start(fake.url, **_sections(backend, **{rule: BUDGET}))  # type: ignore[attr-defined]
    first = await generate(proxy, KEY_A, **HIGH)
    assert first[0] == 200
    assert first[1]["cost"] == pytest.approx(COST)
    assert (await generate(proxy, KEY_A, **HIGH))[0] == 200  # $0.03037 spent
    status, body, headers = await generate(proxy, KEY_A, **HIGH)  # $0.06074 spent
    assert status == 429
    assert body["error"]["code"] == "budget_exceeded"
    now = datetime.now(UTC)
    if word == "daily":
        reset = (now + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    else:
        nxt = (now.replace(day=28) + timedelta(days=4)).replace(day=1)
        reset = nxt.strftime("%Y-%m-%dT00:00:00Z")
    assert body["error"]["message"] == (
        f"this request may cost up to $0.210745, more than the $0.18926 left of the "
        f"{word} budget of $0.25 for key 'team-a' (spent or held by requests in "
        f"flight); ask for fewer or smaller images, or retry; it resets at {reset}"
    )
    assert int(headers["Retry-After"]) > 0
    assert headers["x-should-retry"] == "false"
    assert len(fake.received) == 2
    assert metric(registry, "imagegate_rejected_requests_total", reason="budget") == 1


async def test_two_proxies_share_limits_through_redis(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate], redis: RedisServer
) -> None:
    fake, gate = gate_fake
    url = fake.url  # type: ignore[attr-defined]
    keys = {
        "rated": key_entry("k-rated", rpm=3, concurrency=1),
        "budgeted": key_entry("k-budget", budget_usd_day=BUDGET),
    }
    (a, _), (b, _) = (
        await start(url, keys=keys, redis_url=redis.url),
        await start(url, keys=keys, redis_url=redis.url),
    )
    # Concurrency: a request held on A takes the key's only slot for B too.
    gate.released.clear()

    async def on_b() -> tuple[int, dict[str, Any], dict[str, str]]:
        await gate.wait_for(1)
        refused = await generate(b, "k-rated")
        gate.open()
        return refused

    held, refused = await asyncio.gather(generate(a, "k-rated"), on_b())
    assert (held[0], refused[0]) == (200, 429)
    assert refused[1]["error"]["code"] == "concurrency_limit_exceeded"
    # rpm 3: one request so far; two more fit across both proxies, then none.
    statuses = [(await generate(p, "k-rated"))[0] for p in (b, a, b, a)]
    assert statuses == [200, 200, 429, 429]
    # Budget: spend recorded by A stops the key on B.
    assert [(await generate(a, "k-budget", **HIGH))[0] for _ in range(2)] == [200, 200]
    status, body, _ = await generate(b, "k-budget", **HIGH)
    assert (status, body["error"]["code"]) == (429, "budget_exceeded")
    assert len(fake.received) == 5


async def test_redis_outage_fails_closed_for_budgets_open_for_rates(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate], redis: RedisServer
) -> None:
    fake, _ = gate_fake
    url = fake.url  # type: ignore[attr-defined]
    keys = {
        "budgeted": key_entry("k-budget", budget_usd_day=10.0),
        "rated": key_entry("k-rated", rpm=100),
    }
    proxy, registry = await start(url, keys=keys, redis_url=redis.url)
    assert (await generate(proxy, "k-budget"))[0] == 200
    assert (await generate(proxy, "k-rated"))[0] == 200
    redis.kill()
    status, body, headers = await generate(proxy, "k-budget")
    assert (status, body["error"]["code"]) == (503, "limits_unavailable")
    assert headers["Retry-After"] == "1"
    assert (await generate(proxy, "k-rated"))[0] == 200
    assert len(fake.received) == 3
    assert (
        metric(registry, "imagegate_limit_store_errors_total", operation="admit") == 2
    )
    assert (
        metric(registry, "imagegate_rejected_requests_total", reason="overloaded") == 1
    )


async def test_redis_outage_fail_modes_are_configurable(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate], redis: RedisServer
) -> None:
    fake, _ = gate_fake
    keys = {
        "budgeted": key_entry("k-budget", budget_usd_day=10.0),
        "rated": key_entry("k-rated", rpm=100, concurrency=2),
    }
    proxy, registry = await start(
        fake.url,  # type: ignore[attr-defined]
        keys=keys,
        redis_url=redis.url,
        redis={"budgets_on_error": "open", "rates_on_error": "closed"},
    )
    redis.kill()
    assert (await generate(proxy, "k-budget"))[0] == 200
    assert (await generate(proxy, "k-rated"))[0] == 503
    # The answered request's spend and its slot release could not be recorded.
    assert (
        metric(registry, "imagegate_limit_store_errors_total", operation="spend") == 1
    )


async def test_redis_killed_mid_request(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate], redis: RedisServer
) -> None:
    fake, gate = gate_fake
    keys = {"rated": key_entry("k-rated", concurrency=1)}
    proxy, registry = await start(fake.url, keys=keys, redis_url=redis.url)  # type: ignore[attr-defined]
    gate.released.clear()

    async def kill_then_release() -> None:
        await gate.wait_for(1)
        redis.kill()
        gate.open()

    held, _ = await asyncio.gather(generate(proxy, "k-rated"), kill_then_release())
    assert held[0] == 200  # answered although its slot could not be given back
    errors = {"operation": "release"}
    assert metric(registry, "imagegate_limit_store_errors_total", **errors) == 1
    # Rates fail open by default: the key keeps being served uncounted.
    assert (await generate(proxy, "k-rated"))[0] == 200


async def test_redis_outage_is_skipped_for_recheck_s_then_asked_again(
    start: Start,
    gate_fake: tuple[FakeOpenAI, Gate],
    redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, _ = gate_fake
    keys = {"rated": key_entry("k-rated", rpm=2)}
    proxy, registry = await start(
        fake.url,  # type: ignore[attr-defined]
        keys=keys,
        redis_url=redis.url,
        redis={"recheck_s": 0.2},
    )
    assert (await generate(proxy, "k-rated"))[0] == 200
    redis.kill()
    # Served uncounted (rates fail open); only the first call waits on Redis.
    assert [(await generate(proxy, "k-rated"))[0] for _ in range(3)] == [200] * 3
    assert (
        metric(registry, "imagegate_limit_store_errors_total", operation="admit") == 3
    )
    redis.restart()  # empty: the outage's requests were never counted
    await asyncio.sleep(0.25)  # past recheck_s
    statuses = [(await generate(proxy, "k-rated"))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_lua_month_matches_the_utc_calendar(redis: RedisServer) -> None:
    """The scripts derive the budget month from Redis' clock; check their calendar."""
    import redis.asyncio as aioredis

    from proxy.quotas import DAY_S, month_id
    from proxy.redis_store import _LUA_MONTH

    script = _LUA_MONTH + (
        "local out = {} for i, d in ipairs(ARGV) do out[i] = month_of(tonumber(d)) end "
        "return out"
    )
    # Every month boundary from 1970 to 2100, leap years and centuries included.
    firsts = [
        d for d in range(1, 47500) if month_id(d * DAY_S) != month_id((d - 1) * DAY_S)
    ]
    assert len(firsts) == (2100 - 1970) * 12
    days = [d + shift for d in firsts for shift in (-1, 0)]
    client = aioredis.Redis.from_url(redis.url, driver_info=None)
    try:
        months = await client.eval(script, 1, "unused", *days)
    finally:
        await client.aclose()
    assert [int(m) for m in months] == [month_id(d * DAY_S) for d in days]
