"""Two imagegate processes sharing one real S3-compatible store and one real Redis,
as the replicas of a Deployment do: a file uploaded through one is listed, shown, used
and deleted through the other; a key's daily budget is spent once across both; a
replica killed with SIGKILL in the middle of a 50 MiB upload leaves nothing listed.
Configured as the gateway overlay is: Redis and the store named by the environment."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.fakes.openai import FakeOpenAI
from tests.gateway import (
    KEY_A,
    RedisServer,
    eventually,
    key_entry,
    redis_server,
)
from tests.images import png
from tests.integration.test_budgets import COST, HIGH, WORST
from tests.replicas import Replica, running
from tests.s3server import S3Server, s3_server

MiB = 1024 * 1024
BUDGET = 0.9


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
async def replicas(
    fake_openai: FakeOpenAI,
    redis: RedisServer,
    s3: S3Server,
    tmp_path: Path,
    temp_root: Path,
) -> AsyncIterator[tuple[Replica, Replica, str]]:
    """Replicas A and B of one configuration, and the bucket they share."""
    bucket = s3.bucket(f"r-{uuid.uuid4().hex[:12]}")
    config = {
        "server": {"access_log": False, "shutdown_timeout_s": 5},
        "limits": {"temp_dir": str(temp_root)},
        "providers": {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        "keys": {"team-a": key_entry(KEY_A, budget_usd_day=BUDGET)},
        # As the gateway overlay does (deploy/k8s/gateway): the Redis URL and the
        # store's endpoint and region come from the environment (Secrets there).
        "redis_url_env": "REDIS_URL",
        # On a loaded machine (the full suite, other jobs) a Redis call can outlast the
        # default 0.5 s; a replica would then fail closed (503) for recheck_s, which
        # is not what this module tests.
        "redis": {"timeout_s": 5.0},
        "files": {"backend": "s3", "s3": {"bucket": bucket}},
    }
    path = tmp_path / "imagegate.yaml"
    path.write_bytes(msgspec.yaml.encode(config))
    env = {
        **os.environ,
        "OPENAI_API_KEY": UPSTREAM_KEY,
        **s3.credentials,
        "AWS_ENDPOINT_URL_S3": s3.url,
        "REDIS_URL": redis.url,
    }
    async with running(["--config", str(path)], env) as started:
        yield started[0], started[1], bucket


async def _call(replica: Replica, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(
            method,
            f"{replica.base}{path}",
            headers={"Authorization": f"Bearer {KEY_A}"},
            **kw,
        ) as r,
    ):
        return r.status, await r.json()


async def _upload(replica: Replica, data: bytes) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="a.png", content_type="image/png")
    return await _call(replica, "POST", "/v3/upload", data=form)


async def test_upload_through_a_then_list_show_use_delete_through_b(
    replicas: tuple[Replica, Replica, str], fake_openai: FakeOpenAI
) -> None:
    a, b, _ = replicas
    image = png(6, 6, seed=9)
    status, up = await _upload(a, image)
    assert status == 200, up
    file_id = up["file_id"]
    status, listing = await _call(b, "GET", "/v3/upload")
    assert [f["file_id"] for f in listing["data"]] == [file_id]
    status, shown = await _call(b, "GET", f"/v3/upload/{file_id}")
    assert (status, shown) == (200, up)
    body = {"model": "openai/gpt-image-2", "prompt": "a hat"}
    body["images"] = [{"file_id": file_id}]  # type: ignore[assignment]
    status, answer = await _call(b, "POST", "/v3/images/edits", json=body)
    assert status == 200, answer
    sent = fake_openai.last.json
    assert sent is not None
    assert base64.b64decode(sent["images"][0]["image_url"].partition(",")[2]) == image
    status, _ = await _call(b, "DELETE", f"/v3/upload/{file_id}")
    assert status == 200
    for replica in (a, b):
        status, _ = await _call(replica, "GET", f"/v3/upload/{file_id}")
        assert status == 404


async def _edit(replica: Replica) -> int:
    form = aiohttp.FormData()
    for name, value in {
        "model": "openai/gpt-image-2",
        "prompt": "a hat",
        **HIGH,
    }.items():
        form.add_field(name, str(value))
    form.add_field("image", png(), filename="a.png", content_type="image/png")
    status, _ = await _call(replica, "POST", "/v3/images/edits", data=form)
    return status


async def test_a_key_s_budget_is_spent_once_across_both_replicas(
    replicas: tuple[Replica, Replica, str], fake_openai: FakeOpenAI
) -> None:
    a, b, _ = replicas
    # Each edit is admitted while the worst case fits in what is left, and costs COST.
    admitted = next(i for i in range(100) if BUDGET - i * COST < WORST)
    statuses = [await _edit((a, b)[i % 2]) for i in range(admitted + 4)]
    assert statuses == [200] * admitted + [429] * 4
    assert len(fake_openai.received) == admitted
    assert admitted * COST <= BUDGET


async def test_a_replica_killed_mid_upload_leaves_nothing_listed(
    replicas: tuple[Replica, Replica, str], s3: S3Server
) -> None:
    a, b, bucket = replicas
    boundary = "imagegate-kill-test"
    sent = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode() + png()
        for _ in range(20):  # 20 of the 50 MiB, then the replica dies
            yield bytes(MiB)
        sent.set()
        await asyncio.Event().wait()

    async def post() -> None:
        headers = {
            "Authorization": f"Bearer {KEY_A}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(50 * MiB),
        }
        async with aiohttp.ClientSession() as s:
            await s.post(f"{a.base}/v3/upload", data=body(), headers=headers)

    client = s3.client()
    task = asyncio.ensure_future(post())
    try:
        await asyncio.wait_for(sent.wait(), 30)

        def stored_parts() -> bool:
            uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            if not uploads:
                return False
            upload = uploads[0]
            parts = client.list_parts(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            return len(parts.get("Parts", [])) >= 2

        async def parts_stored() -> bool:
            return await asyncio.to_thread(stored_parts)

        await eventually(parts_stored, within_s=30)
        a.process.kill()
        await a.process.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await task
    # B serves, lists nothing of the dead upload, and the bucket shows no object.
    status, listing = await _call(b, "GET", "/v3/upload")
    assert (status, listing["data"]) == (200, [])
    listed = await asyncio.to_thread(client.list_objects_v2, Bucket=bucket)
    assert "Contents" not in listed
    status, up = await _upload(b, png())
    assert status == 200, up
    status, listing = await _call(b, "GET", "/v3/upload")
    assert [f["file_id"] for f in listing["data"]] == [up["file_id"]]
