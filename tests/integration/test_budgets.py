"""Budgets that requests cannot get around: each attack of the budget finding run
against a real proxy and fake providers, on the in-memory store and on a real Redis.

Parallel slow edits reserve their worst case before any upstream call, so no more go
out than the budget has room for; a stream the client abandons, a fan-out whose calls
partly fail and a stream the provider breaks off are charged what they cost; a failed
call gives its reservation back; an unpriced model on a budgeted key is refused, or
charged the configured fallback price.

What a key has left is read from the proxy itself: a probe whose worst case cannot fit
is refused with a message naming the budget left, and is never sent upstream.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from proxy.logs import JsonFormatter
from tests.conftest import (
    UPSTREAM_KEY,
    AiohttpServer,
    ServeFake,
    StartGateway,
    StartProxy,
    build_config,
)
from tests.fakes.openai import FakeOpenAI, Reply
from tests.fakes.sse import StreamPlan
from tests.fakes.stabilityai import FakeStability
from tests.gateway import KEY_A, Gate, eventually, generate, key_entry, redis_server
from tests.images import png
from tests.observability import scrape as metrics

# The fake's gpt-image-2 reply: 10 text tokens in at $5/1M, 40 image tokens in at
# $8/1M, 1000 out at $30/1M ($0.00005 + $0.00032 + $0.03).
COST = 0.03037
# Worst case of one 1024x1024 high-quality gpt-image-2 image with the 5-byte prompt:
# 7024 output tokens at $30/1M + 5 prompt bytes at $5/1M.
WORST = 0.210745
HIGH = {"size": "1024x1024", "quality": "high"}
# A probe far over any budget here: 10 images at 1536x1024, high.
PROBE = {"n": 10, "size": "1536x1024", "quality": "high"}
_LEFT = re.compile(r"more than the \$([0-9.e-]+) left of the daily budget")


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    if request.param == "memory":
        yield {}
    else:
        with redis_server() as server:
            yield {"redis_url": server.url}


def _keys(**rules: Any) -> dict[str, Any]:
    return {"team-a": key_entry(KEY_A, **rules)}


async def edit(
    proxy: TestServer, model: str = "openai/gpt-image-2", **fields: Any
) -> tuple[int, dict[str, Any]]:
    """One multipart edit (a 1024x1024 high-quality image unless told otherwise)."""
    form = aiohttp.FormData()
    for name, value in {"model": model, "prompt": "a hat", **HIGH, **fields}.items():
        form.add_field(name, str(value))
    form.add_field("image", png(), filename="a.png", content_type="image/png")
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/edits"),
            data=form,
            headers={"Authorization": f"Bearer {KEY_A}"},
        ) as r,
    ):
        return r.status, await r.json()


async def left(proxy: TestServer | str, model: str = "openai/gpt-image-2") -> float:
    """What the key has left today, from the refusal of a probe that cannot fit."""
    base = proxy if isinstance(proxy, str) else str(proxy.make_url(""))
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{base}/v3/images/generations",
            json={"model": model, "prompt": "a cat", **PROBE},
            headers={"Authorization": f"Bearer {KEY_A}"},
        ) as r,
    ):
        status, body, headers = r.status, await r.json(), r.headers
    assert status == 429, body
    assert body["error"]["code"] == "budget_exceeded"
    assert headers["x-should-retry"] == "false"
    found = _LEFT.search(body["error"]["message"])
    assert found, body["error"]["message"]
    return float(found[1])


async def test_parallel_slow_edits_cannot_outspend_the_budget(
    start_proxy: StartProxy,
    held: tuple[FakeOpenAI, Gate],
    backend: dict[str, Any],
) -> None:
    fake, gate = held
    budget = 0.7  # room for 3 worst cases ($0.632235), not 4 ($0.84298)
    proxy = await start_proxy(
        {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        keys=_keys(budget_usd_day=budget),
        **backend,
    )
    tasks = [asyncio.ensure_future(edit(proxy)) for _ in range(20)]

    async def settled() -> bool:
        # Every edit either waits at the slow upstream or has its answer.
        return gate.arrived + sum(t.done() for t in tasks) == 20

    await eventually(settled)
    assert gate.arrived == 3
    refused = [t.result() for t in tasks if t.done()]
    assert len(refused) == 17
    for status, body in refused:
        assert status == 429
        assert body["error"]["code"] == "budget_exceeded"
        assert f"${WORST:g}" in body["error"]["message"]
    gate.open()
    answered = await asyncio.gather(*tasks)
    assert [s for s, _ in answered].count(200) == 3
    assert len(fake.received) == 3
    # The reservations were settled to what the three edits cost.
    assert await left(proxy) == pytest.approx(budget - 3 * COST, abs=1e-6)
    assert len(fake.received) == 3


async def test_parallel_edits_across_two_replicas_share_one_reservation_count(
    aiohttp_server: AiohttpServer, temp_root: Path, held: tuple[FakeOpenAI, Gate]
) -> None:
    fake, gate = held
    budget = 0.7  # room for 3 worst cases
    proxies = []
    with redis_server() as redis:
        for _ in range(2):
            config = build_config(
                temp_root,
                {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
                keys=_keys(budget_usd_day=budget),
                redis_url=redis.url,
            )
            app = create_app(
                config,
                environ={"OPENAI_API_KEY": UPSTREAM_KEY},
                registry=CollectorRegistry(),
            )
            proxies.append(await aiohttp_server(app))
        tasks = [asyncio.ensure_future(edit(proxies[i % 2])) for i in range(20)]

        async def settled() -> bool:
            return gate.arrived + sum(t.done() for t in tasks) == 20

        await eventually(settled)
        assert gate.arrived == 3
        gate.open()
        answered = await asyncio.gather(*tasks)
        assert sorted(s for s, _ in answered) == [200] * 3 + [429] * 17
        assert await left(proxies[1]) == pytest.approx(budget - 3 * COST, abs=1e-6)
    assert len(fake.received) == 3


async def test_failed_call_gives_its_reservation_back(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backend: dict[str, Any]
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        keys=_keys(budget_usd_day=0.5),
        **backend,
    )
    fake_openai.script(Reply(status=500), Reply(status=500))
    assert [(await edit(proxy))[0] for _ in range(2)] == [502, 502]
    assert await left(proxy) == pytest.approx(0.5)
    assert (await edit(proxy))[0] == 200
    assert await left(proxy) == pytest.approx(0.5 - COST)


async def test_fan_out_with_failures_charges_the_calls_that_answered(
    start_gateway: StartGateway, backend: dict[str, Any]
) -> None:
    gateway = await start_gateway(
        "stabilityai", keys=_keys(budget_usd_day=0.2), **backend
    )
    fake, proxy = gateway.fake, gateway.proxy
    failure = Reply(status=500, body=fake.error_body(500, "boom"))
    fake.script(Reply(), Reply(), Reply(), Reply(), failure, failure)
    status, body, _ = await generate(proxy, KEY_A, "stabilityai/core", n=6)
    assert status == 502, body
    assert len(fake.received) == 6
    # stabilityai/core is $0.03 per image: four images made, four charged.
    assert await left(proxy, "stabilityai/core") == pytest.approx(0.2 - 4 * 0.03)
    assert len(fake.received) == 6


async def test_fan_out_with_failures_logs_and_counts_what_was_spent(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    # The failed request still cost the four images made: the access line and the
    # cost counter say so, with or without a budget (they said null and nothing).
    gateway = await start_gateway("stabilityai", keys={"team-a": key_entry(KEY_A)})
    fake, proxy = gateway.fake, gateway.proxy
    failure = Reply(status=500, body=fake.error_body(500, "boom"))
    fake.script(Reply(), Reply(), Reply(), Reply(), failure, failure)
    caplog.set_level(logging.INFO, logger="imagegate.access")
    status, body, _ = await generate(proxy, KEY_A, "stabilityai/core", n=6)
    assert status == 502, body
    assert "cost" not in body  # an error answer carries no cost
    (line,) = [
        msgspec.json.decode(JsonFormatter().format(r))
        for r in caplog.records
        if r.name == "imagegate.access"
    ]
    assert line["status"] == 502
    assert line["cost_usd"] == pytest.approx(4 * 0.03)
    samples = await metrics.scrape(proxy)
    spent = metrics.value(samples, "imagegate_cost_usd_total", key="team-a")
    assert spent == pytest.approx(4 * 0.03)


async def test_unpriced_model_is_refused_for_a_budgeted_key(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        keys={
            "team-a": key_entry(KEY_A, budget_usd_month=5.0),
            "team-b": key_entry("igk-unbudgeted"),
        },
    )
    status, body = await edit(proxy, "openai/gpt-image-next")
    assert status == 403
    assert body["error"]["param"] == "model"
    assert body["error"]["code"] == "model_unpriced"
    assert "has no price" in body["error"]["message"]
    assert "limits.unpriced_image_usd" in body["error"]["message"]
    assert fake_openai.received == []
    # A key without a budget has nothing to count: served as before.
    status, _, _ = await generate(proxy, "igk-unbudgeted", "openai/gpt-image-next")
    assert status == 200


async def test_unpriced_model_is_charged_the_configured_price(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backend: dict[str, Any]
) -> None:
    model = "openai/gpt-image-next"
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        keys=_keys(budget_usd_day=0.2),
        limits={"unpriced_image_usd": 0.05},
        **backend,
    )
    # Room for 4 images at the fallback price: 5 are refused before sending.
    status, body, _ = await generate(proxy, KEY_A, model, n=5)
    assert (status, body["error"]["code"]) == (429, "budget_exceeded")
    assert fake_openai.received == []
    status, body, _ = await generate(proxy, KEY_A, model, n=2)
    assert status == 200
    assert body["cost"] is None  # the response reports no price it does not know
    assert await left(proxy, model) == pytest.approx(0.1)


async def test_stream_broken_off_by_the_provider_is_charged_its_partials(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        keys=_keys(budget_usd_day=1.0),
    )
    fake_openai.streams.append(StreamPlan(partials=2, error=True))
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/generations"),
            json={
                "model": "openai/gpt-image-2",
                "prompt": "a cat",
                "stream": True,
                "partial_images": 2,
                **HIGH,
            },
            headers={"Authorization": f"Bearer {KEY_A}"},
        ) as r,
    ):
        text = await r.text()
    assert text.count("partial_image") >= 2
    assert "event: error" in text
    # Two partial images of 100 output tokens each at $30/1M.
    assert await left(proxy) == pytest.approx(1.0 - 2 * 100 * 30 / 1e6)


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` that carries ``labels``."""
    total = 0.0
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                total += s.value
    return total


@pytest.fixture(params=[True, False], ids=["handler-cancellation", "write-failure"])
async def budget_proxy(
    request: pytest.FixtureRequest, fake_openai: FakeOpenAI, temp_root: Path
) -> AsyncIterator[tuple[str, CollectorRegistry]]:
    """A proxy with a budgeted key under each of aiohttp's behaviours when a client
    goes away: the handler cancelled (the test server's), or left running until a
    write fails (run_app's and the gateway's own)."""
    registry = CollectorRegistry()
    config = build_config(
        temp_root,
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        keys=_keys(budget_usd_day=1.0),
    )
    app = create_app(
        config, environ={"OPENAI_API_KEY": UPSTREAM_KEY}, registry=registry
    )
    runner = web.AppRunner(app, handler_cancellation=request.param)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", registry
    await runner.cleanup()


async def test_abandoned_stream_is_charged_its_worst_case(
    budget_proxy: tuple[str, CollectorRegistry], fake_openai: FakeOpenAI
) -> None:
    base, registry = budget_proxy
    gate = asyncio.Event()
    plan = StreamPlan(partials=2, gate=gate, keep_writing=True)
    fake_openai.streams.append(plan)
    form = aiohttp.FormData()
    for name, value in {"model": "openai/gpt-image-2", "prompt": "a hat",
                        "stream": "true", "partial_images": "2", **HIGH}.items():  # fmt: skip
        form.add_field(name, value)
    form.add_field("image", png(), filename="a.png", content_type="image/png")
    async with aiohttp.ClientSession() as s:
        resp = await s.post(
            f"{base}/v3/images/edits",
            data=form,
            headers={"Authorization": f"Bearer {KEY_A}"},
        )
        seen = b""
        while b"partial_image" not in seen:
            seen += await resp.content.readany()
        resp.close()  # the client keeps its partial image and leaves
    gate.set()

    async def recorded() -> bool:
        return _sample(registry, "imagegate_requests_total", code_class="4xx") == 1

    async def upstream_released() -> bool:
        return plan.reader_gone

    await eventually(recorded)
    await eventually(upstream_released)
    assert not plan.finished
    # (7024 + 2 partials x 100) output tokens at $30/1M + 5 prompt bytes at $5/1M.
    assert await left(base) == pytest.approx(1.0 - 0.216745)


async def _stability_pair(
    serve_fake: ServeFake, start_proxy: StartProxy, budget: float
) -> tuple[TestServer, FakeStability, FakeStability]:
    """``stabilityai/core`` falling back to ``backup/core``, each on its own fake."""
    primary: FakeStability = (await serve_fake("stabilityai")).fake
    backup: FakeStability = (await serve_fake("stabilityai")).fake
    proxy = await start_proxy(
        {
            "stabilityai": {"base_url": primary.url},
            "backup": {"type": "stabilityai", "base_url": backup.url},
        },
        environ={"STABILITY_API_KEY": UPSTREAM_KEY},
        keys=_keys(budget_usd_day=budget),
        fallbacks={"stabilityai/core": ["backup/core"]},
    )
    failure = Reply(status=500, body=primary.error_body(500, "boom"))
    primary.script(Reply(), Reply(), Reply(), Reply(), failure, failure)
    return proxy, primary, backup


async def test_fallback_chain_charges_every_call_that_made_an_image(
    serve_fake: ServeFake, start_proxy: StartProxy
) -> None:
    proxy, primary, backup = await _stability_pair(serve_fake, start_proxy, 0.4)
    status, body, _ = await generate(proxy, KEY_A, "stabilityai/core", n=6)
    assert status == 200, body
    assert body["provider"] == "backup"
    assert (len(primary.received), len(backup.received)) == (6, 6)
    # Four images on the primary before it failed, six on the backup: $0.03 each.
    assert await left(proxy, "stabilityai/core") == pytest.approx(0.4 - 10 * 0.03)


async def test_fallback_whose_worst_case_does_not_fit_is_not_sent(
    serve_fake: ServeFake, start_proxy: StartProxy
) -> None:
    proxy, primary, backup = await _stability_pair(serve_fake, start_proxy, 0.25)
    # $0.18 reserved fits; after $0.12 spent on the primary, the backup's $0.18 does not.
    status, body, _ = await generate(proxy, KEY_A, "stabilityai/core", n=6)
    assert status == 429, body
    assert body["error"]["code"] == "budget_exceeded"
    assert (len(primary.received), len(backup.received)) == (6, 0)
    assert await left(proxy, "stabilityai/core") == pytest.approx(0.25 - 4 * 0.03)


async def test_per_megapixel_reserves_its_bound_and_charges_its_cost(
    start_gateway: StartGateway, backend: dict[str, Any]
) -> None:
    # Per megapixel: FLUX.2 [klein 4B] at 1920x1080 (2.07 MP) is $0.014 + 2 x $0.001,
    # reserved and charged alike (the fake makes the size asked). Before the catalogue
    # bound, a row without a flat price had no worst case: 403 model_unpriced.
    gw = await start_gateway("bfl", keys=_keys(budget_usd_day=0.1), **backend)
    status, body, _ = await generate(
        gw.proxy, KEY_A, "bfl/flux-2-klein-4b", size="1920x1080", n=2
    )
    assert status == 200, body
    assert body["cost"] == pytest.approx(0.032)
    assert await left(gw.proxy, "bfl/flux-2-klein-4b") == pytest.approx(0.1 - 0.032)


async def test_per_image_tier_reserves_its_bound_and_charges_its_cost(
    start_gateway: StartGateway, backend: dict[str, Any]
) -> None:
    # Per image by tier: xAI 2.0 at 2k/medium ($0.08 each); room for one image, not
    # two. Before the catalogue bound: 403 model_unpriced.
    gw = await start_gateway("xai", keys=_keys(budget_usd_day=0.1), **backend)
    model, tier = (
        "xai/grok-imagine-image-2.0",
        {"resolution": "2k", "quality": "medium"},
    )
    status, body, _ = await generate(gw.proxy, KEY_A, model, n=2, **tier)
    assert (status, body["error"]["code"]) == (429, "budget_exceeded")
    assert "may cost up to $0.16" in body["error"]["message"]
    assert gw.fake.received == []
    status, body, _ = await generate(gw.proxy, KEY_A, model, **tier)
    assert (status, body["cost"]) == (200, pytest.approx(0.08))
    # Charged its cost: $0.02 left, which the next image does not fit.
    status, body, _ = await generate(gw.proxy, KEY_A, model, **tier)
    assert status == 429
    assert "more than the $0.02 left" in body["error"]["message"]
    assert len(gw.fake.received) == 1
