"""``Idempotency-Key`` across two imagegate processes sharing one real Redis (and one
real S3-compatible store): a repeat on replica B replays, or waits for, A's answer; a
replica killed mid-request frees its keys after one lease; answers over
``max_answer_bytes`` are kept in the bucket and replayed from it by the other replica."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.conftest import BRIDGE_CATALOGUE, UPSTREAM_KEY
from tests.fakes.openai import FakeOpenAI
from tests.gateway import (
    KEY_A,
    Gate,
    RedisServer,
    key_entry,
    redis_server,
)
from tests.replicas import Replica, running
from tests.s3server import S3Server, s3_server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
async def gated(serve_fake: Any) -> AsyncIterator[tuple[FakeOpenAI, Gate]]:
    fake, gate = FakeOpenAI(UPSTREAM_KEY), Gate()
    gate.install(fake.app)
    await serve_fake("openai", fake)
    gate.open()
    yield fake, gate
    gate.open()


@contextlib.asynccontextmanager
async def replicas(
    tmp_path: Path, environ: dict[str, str], **config: Any
) -> AsyncIterator[tuple[Replica, Replica]]:
    path = tmp_path / "imagegate.yaml"
    path.write_bytes(msgspec.yaml.encode(config))
    env = {**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY, **environ}
    async with running(["--config", str(path)], env) as started:
        yield started[0], started[1]


def _config(
    fake: FakeOpenAI, redis: RedisServer, temp_root: Path, **sections: Any
) -> dict[str, Any]:
    return {
        "server": {"access_log": False, "shutdown_timeout_s": 5},
        "limits": {"temp_dir": str(temp_root)},
        "providers": {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        "keys": {"team-a": key_entry(KEY_A, budget_usd_day=5.0)},
        "redis_url": redis.url,
        "catalogue": BRIDGE_CATALOGUE,
        **sections,
    }


async def _generate(replica: Replica, idem: str) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Authorization": f"Bearer {KEY_A}", "Idempotency-Key": idem}
    body = {"model": "openai/gpt-image-2", "prompt": "a cat"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{replica.base}/v3/images/generations", json=body, headers=headers
        ) as r,
    ):
        return r.status, await r.read(), dict(r.headers)


async def test_a_repeat_on_b_replays_or_waits_for_a_s_answer(
    gated: tuple[FakeOpenAI, Gate], redis: RedisServer, tmp_path: Path, temp_root: Path
) -> None:
    fake, gate = gated
    async with replicas(tmp_path, {}, **_config(fake, redis, temp_root)) as (a, b):
        first = await _generate(a, "order-7")
        again = await _generate(b, "order-7")
        assert (first[0], again[0], again[1]) == (200, 200, first[1])
        assert again[2]["Idempotent-Replayed"] == "true"
        assert len(fake.received) == 1
        # While A runs, B's repeat waits for A's answer.
        gate.released.clear()
        running = asyncio.ensure_future(_generate(a, "order-8"))
        await gate.wait_for(2)
        waiting = asyncio.ensure_future(_generate(b, "order-8"))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        gate.open()
        ran, replayed = await running, await waiting
        assert (ran[0], replayed[0], replayed[1]) == (200, 200, ran[1])
        assert replayed[2]["Idempotent-Replayed"] == "true"
        assert len(fake.received) == 2


async def test_a_replica_killed_mid_request_frees_its_key_after_one_lease(
    gated: tuple[FakeOpenAI, Gate], redis: RedisServer, tmp_path: Path, temp_root: Path
) -> None:
    fake, gate = gated
    config = _config(fake, redis, temp_root, idempotency={"lease_s": 1.0})
    async with replicas(tmp_path, {}, **config) as (a, b):
        gate.released.clear()
        orphan = asyncio.ensure_future(_generate(a, "order-9"))
        await gate.wait_for(1)
        a.process.kill()
        await a.process.wait()
        with contextlib.suppress(aiohttp.ClientError):
            await orphan
        gate.open()
        started = time.monotonic()
        status, _, headers = await _generate(b, "order-9")
        # B waited out A's lease (not idempotency.wait_s), then ran the request.
        assert status == 200
        assert "Idempotent-Replayed" not in headers
        assert time.monotonic() - started < 10


async def test_large_answers_are_kept_in_the_bucket(
    fake_openai: FakeOpenAI,
    redis: RedisServer,
    s3: S3Server,
    tmp_path: Path,
    temp_root: Path,
) -> None:
    bucket = await asyncio.to_thread(s3.bucket, f"i-{uuid.uuid4().hex[:12]}")
    config = _config(
        fake_openai,
        redis,
        temp_root,
        files=s3.files_config(bucket),
        idempotency={"max_answer_bytes": 100},
    )
    async with replicas(tmp_path, s3.credentials, **config) as (a, b):
        first = await _generate(a, "big-1")
        again = await _generate(b, "big-1")
    assert (first[0], again[0], again[1]) == (200, 200, first[1])
    assert again[2]["Idempotent-Replayed"] == "true"
    assert len(fake_openai.received) == 1
    listed = await asyncio.to_thread(
        s3.client().list_objects_v2, Bucket=bucket, Prefix="imagegate/idempotency/"
    )
    assert listed["KeyCount"] == 1
