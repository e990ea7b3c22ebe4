"""Key limits shared by the worker processes of a real ``imagegate --workers 2``
through one real Redis: the processes count as one."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.fakes.openai import FakeOpenAI
from tests.gateway import RedisServer, eventually, free_port, key_entry, redis_server


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


async def _status(base: str, key: str) -> int:
    # A new session per request: a new connection, which the kernel may give to
    # either worker (SO_REUSEPORT).
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{base}/v3/images/generations",
            json={"model": "openai/gpt-image-2.5-sunburst", "prompt": "a cat"},
            headers={"Authorization": f"Bearer {key}"},
        ) as r,
    ):
        await r.read()
        return r.status


async def test_two_workers_share_rpm_through_redis(
    fake_openai: FakeOpenAI, redis: RedisServer, tmp_path: Path, temp_root: Path
) -> None:
    port = free_port()
    config = {
        "server": {"access_log": False, "shutdown_timeout_s": 5},
        "limits": {"temp_dir": str(temp_root)},
        "providers": {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        "keys": {"team": key_entry("k-team", rpm=6)},
        "redis_url": redis.url,
    }
    path = tmp_path / "imagegate.yaml"
    path.write_bytes(msgspec.yaml.encode(config))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "--config", str(path), "--port", str(port),
        "--workers", "2",
        env={**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        assert proc.returncode is None, "imagegate exited during start"
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{base}/readyz") as r:
                return r.status == 200
        except aiohttp.ClientConnectorError:
            return False

    try:
        await eventually(ready)
        statuses = [await _status(base, "k-team") for _ in range(10)]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await proc.wait()
    # Which worker took which connection is the kernel's choice; that two app instances
    # share one count is shown deterministically in test_key_limits.
    assert statuses == [200] * 6 + [429] * 4
    assert len(fake_openai.received) == 6
    assert code == 0
