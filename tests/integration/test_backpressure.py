"""Saturation answered with 503 and Retry-After at once; /readyz not ready meanwhile."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from tests.conftest import StartProxy, leftover_files
from tests.fakes.openai import FakeOpenAI
from tests.gateway import Gate, edit_multipart, generate, metric
from tests.images import sized_png

Result = tuple[int, dict[str, Any], dict[str, str]]


async def readyz(proxy: TestServer) -> int:
    async with aiohttp.ClientSession() as s, s.get(proxy.make_url("/readyz")) as r:
        return r.status


async def test_inflight_limit_answers_503_and_readyz_not_ready(
    start_proxy: StartProxy,
    held: tuple[FakeOpenAI, Gate],
    registry: CollectorRegistry,
) -> None:
    fake, gate = held
    proxy = await start_proxy(
        {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        # One client (127.0.0.1) fills the gateway: its share is not what is tested.
        backpressure={"max_inflight": 2, "max_inflight_share": 1, "retry_after_s": 3},
    )

    async def while_saturated() -> tuple[Result, int]:
        await gate.wait_for(2)
        refused = await generate(proxy, None)
        ready = await readyz(proxy)
        gate.open()
        return refused, ready

    first, second, (refused, ready) = await asyncio.gather(
        generate(proxy, None), generate(proxy, None), while_saturated()
    )
    assert (first[0], second[0]) == (200, 200)
    assert refused[0] == 503
    assert refused[1]["error"]["code"] == "overloaded"
    assert refused[2]["Retry-After"] == "3"
    assert ready == 503
    assert await readyz(proxy) == 200
    assert len(fake.received) == 2
    assert (
        metric(registry, "imagegate_rejected_requests_total", reason="overloaded") == 1
    )


async def test_temp_bytes_limit_refuses_uploads_but_not_json(
    start_proxy: StartProxy, held: tuple[FakeOpenAI, Gate], temp_root: Path
) -> None:
    fake, gate = held
    proxy = await start_proxy(
        {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        backpressure={"max_temp_bytes": 100_000},
    )
    big = sized_png(60_000)

    async def meanwhile() -> tuple[Result, Result, int]:
        await gate.wait_for(1)
        upload = await edit_multipart(proxy, None, big)
        json = await generate(proxy, None)  # no temp files: admitted, then held
        return upload, json, await readyz(proxy)

    async def release_after_json() -> None:
        await gate.wait_for(2)
        gate.open()

    first, (upload, json, ready), _ = await asyncio.gather(
        edit_multipart(proxy, None, big), meanwhile(), release_after_json()
    )
    assert first[0] == 200
    assert (upload[0], upload[1]["error"]["code"]) == (503, "overloaded")
    assert "bytes of uploads on disk" in upload[1]["error"]["message"]
    assert json[0] == 200
    assert ready == 200  # 60 KB reserved of 100 KB: not saturated
    assert leftover_files(temp_root) == []


async def test_draining_refuses_new_requests(
    start_proxy: StartProxy, held: tuple[FakeOpenAI, Gate]
) -> None:
    from proxy.state import LIFECYCLE

    fake, gate = held
    gate.open()
    proxy = await start_proxy({"openai": {"base_url": fake.url}})  # type: ignore[attr-defined]
    assert (await generate(proxy, None))[0] == 200
    proxy.app[LIFECYCLE].draining = True  # as serve() sets it on SIGTERM
    status, body, headers = await generate(proxy, None)
    assert (status, body["error"]["code"]) == (503, "shutting_down")
    assert headers["Connection"] == "close"
    assert await readyz(proxy) == 503
    assert len(fake.received) == 1
