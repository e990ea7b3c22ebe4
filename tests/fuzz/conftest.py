"""A proxy and a fake upstream on their own event loop in a thread, so hypothesis
(which drives synchronous tests) can throw real HTTP bytes at them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from tests.conftest import UPSTREAM_KEY, build_config
from tests.fakes.openai import FakeOpenAI


@dataclass
class Served:
    host: str
    port: int
    temp_root: Path
    fake: FakeOpenAI
    registry: CollectorRegistry


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    temp_root = tmp_path_factory.mktemp("fuzz-tmp")
    loop = asyncio.new_event_loop()
    fake = FakeOpenAI(UPSTREAM_KEY)
    registry = CollectorRegistry()
    runners: list[web.AppRunner] = []

    async def start() -> tuple[int, int]:
        up = web.AppRunner(fake.app)
        await up.setup()
        up_site = web.TCPSite(up, "127.0.0.1", 0)
        await up_site.start()
        runners.append(up)
        up_port = up.addresses[0][1]
        config = build_config(
            temp_root,
            {"openai": {"base_url": f"http://127.0.0.1:{up_port}/v1"}},
            limits={"max_file_bytes": 256 * 1024, "max_fields": 32},
        )
        app = create_app(
            config, environ={"OPENAI_API_KEY": UPSTREAM_KEY}, registry=registry
        )
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return up_port, runner.addresses[0][1]

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    _, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield Served("127.0.0.1", port, temp_root, fake, registry)
    finally:

        async def stop() -> None:
            for runner in reversed(runners):
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
