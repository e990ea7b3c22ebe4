"""Upstream pools sized for held image edits (issue 19): with the default pool every
admitted edit reaches the provider at once; a configured ``pool.limit`` still caps."""

from __future__ import annotations

import asyncio

from tests.conftest import StartProxy
from tests.fakes.openai import FakeOpenAI
from tests.gateway import Gate, generate

# Above the old fixed default (pool.limit 100), within the admission limit below.
HELD = 120


async def test_default_pool_lets_every_admitted_edit_reach_the_provider(
    start_proxy: StartProxy, held: tuple[FakeOpenAI, Gate]
) -> None:
    fake, gate = held
    proxy = await start_proxy(
        {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        backpressure={"max_inflight": HELD, "max_inflight_share": 1},
    )
    calls = [asyncio.ensure_future(generate(proxy, None)) for _ in range(HELD)]
    try:
        # Before: 100 arrived and the other 20 waited for a pooled connection.
        async with asyncio.timeout(30):
            await gate.wait_for(HELD)
    finally:
        gate.open()
        results = await asyncio.gather(*calls)
    assert [status for status, _, _ in results] == [200] * HELD


async def test_a_configured_pool_limit_still_caps_connections(
    start_proxy: StartProxy, held: tuple[FakeOpenAI, Gate]
) -> None:
    fake, gate = held
    proxy = await start_proxy(
        {"openai": {"base_url": fake.url, "pool": {"limit": 3}}},  # type: ignore[attr-defined]
        backpressure={"max_inflight_share": 1},
    )
    calls = [asyncio.ensure_future(generate(proxy, None)) for _ in range(5)]
    try:
        async with asyncio.timeout(30):
            await gate.wait_for(3)
        await asyncio.sleep(0.3)  # room for a fourth to arrive, were it let through
        assert gate.arrived == 3
    finally:
        gate.open()
        results = await asyncio.gather(*calls)
    assert [status for status, _, _ in results] == [200] * 5
