"""A real Prometheus (Debian's package, on loopback) scrapes the proxy after real
requests; its HTTP API then returns the cost and overhead series. ``promtool check
metrics`` accepts the exposition."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import openai
import pytest
from aiohttp.test_utils import TestServer

from tests.images import png
from tests.observability.procs import REPO, free_port, require_binary, run, wait_http
from tests.observability.scrape import scrape, value


async def _exposition(proxy: TestServer) -> bytes:
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.make_url("/metrics")) as r,
    ):
        return await r.read()


@pytest.fixture
async def prometheus(proxy: TestServer, tmp_path: Path) -> AsyncIterator[str]:
    binary = require_binary("prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(REPO / "deploy/prometheus/rules.yaml")],
        "scrape_configs": [
            {
                "job_name": "imagegate",
                "static_configs": [{"targets": [f"{proxy.host}:{proxy.port}"]}],
            }
        ],
    }
    path = tmp_path / "prometheus.yml"
    await asyncio.to_thread(path.write_bytes, msgspec.yaml.encode(config))
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={path}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/-/ready", proc)
        yield base
    finally:
        proc.terminate()
        await proc.wait()


async def _query(base: str, promql: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{base}/api/v1/query", params={"query": promql}) as r,
    ):
        body = await r.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def _until(base: str, promql: str, want: float) -> list[dict[str, Any]]:
    """Query until Prometheus has scraped the value the proxy holds."""
    result: list[dict[str, Any]] = []
    for _ in range(300):
        result = await _query(base, promql)
        if result and float(result[0]["value"][1]) == want:
            return result
        await asyncio.sleep(0.1)
    pytest.fail(f"{promql} never reached {want}: {result}")


async def test_prometheus_scrapes_cost_and_overhead(
    sdk: openai.AsyncOpenAI, proxy: TestServer, prometheus: str
) -> None:
    for _ in range(3):
        await sdk.images.edit(
            model="openai/gpt-image-2.5-sunburst",
            image=("a.png", png(16, 16), "image/png"),
            prompt="hat",
        )
    held = await scrape(proxy)
    cost = value(held, "imagegate_cost_usd_total", provider="openai")
    assert cost > 0
    (series,) = await _until(
        prometheus, "sum by (provider, model, key) (imagegate_cost_usd_total)", cost
    )
    assert series["metric"] == {
        "provider": "openai", "model": "openai/gpt-image-2.5-sunburst", "key": "anonymous"
    }  # fmt: skip
    (overhead,) = await _until(
        prometheus,
        'imagegate_overhead_seconds_count{route="/v3/images/edits",job="imagegate"}',
        3,
    )
    assert overhead["metric"]["instance"] == f"{proxy.host}:{proxy.port}"
    p99 = await _query(prometheus, 'imagegate_overhead_seconds_bucket{le="+Inf"}')
    assert sum(float(s["value"][1]) for s in p99) == 3
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{prometheus}/api/v1/rules") as r,
    ):
        groups = (await r.json())["data"]["groups"]
    assert {g["name"] for g in groups} == {"imagegate.recording", "imagegate.alerts"}
    assert all(rule["health"] != "err" for g in groups for rule in g["rules"])


async def test_promtool_accepts_the_exposition(
    sdk: openai.AsyncOpenAI, proxy: TestServer
) -> None:
    promtool = require_binary("promtool")
    await sdk.images.edit(
        model="openai/gpt-image-2.5-sunburst",
        image=("a.png", png(), "image/png"),
        prompt="x",
    )
    text = await _exposition(proxy)
    assert b"imagegate_cost_usd_total" in text
    code, out, err = await run(promtool, "check", "metrics", stdin=text)
    assert (code, out, err) == (0, "", "")
