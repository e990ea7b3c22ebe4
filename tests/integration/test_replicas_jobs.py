"""Jobs that survive the replica that accepted them: two imagegate processes sharing
one real Redis (the job records and the stream) and one real S3-compatible store (the
job's input bytes). A job accepted by A, A killed with SIGKILL while the provider holds
its call, is taken by B once A's lease expired, run again from the stored inputs, and
finished; polling through either replica shows each state; B's webhook verifies.
Stopped with SIGTERM instead, A lets the job it runs end before it exits."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from tests.conftest import BRIDGE_CATALOGUE, UPSTREAM_KEY, AiohttpServer
from tests.fakes.openai import FakeOpenAI, Reply, images_reply
from tests.gateway import (
    KEY_A,
    KEY_B,
    RedisServer,
    eventually,
    free_port,
    key_entry,
    redis_server,
)
from tests.images import png
from tests.integration.test_jobs import ASYNC, MODEL, call, form
from tests.s3server import S3Server, s3_server

SECRET = "whsec_" + base64.b64encode(b"replicas-share-this-secret-key!!").decode()
LEASE_S = 2.0


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


class Replicas:
    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path, self.env = path, env
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self) -> tuple[str, asyncio.subprocess.Process]:
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "--config", str(self.path),
            "--port", str(port), env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        self.processes.append(proc)
        base = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            assert proc.returncode is None, "imagegate exited during start"
            try:
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(f"{base}/readyz") as r,
                ):
                    return r.status == 200
            except aiohttp.ClientConnectorError:
                return False

        await eventually(ready, within_s=30)
        return base, proc


class Hook:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.failing = False  # answer 503 while set
        self.app = web.Application()
        self.app.router.add_post("/hook", self.hook)

    async def hook(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), dict(request.headers)))
        return web.Response(status=503 if self.failing else 204)


@pytest.fixture
async def replicas(
    fake_openai: FakeOpenAI,
    redis: RedisServer,
    s3: S3Server,
    tmp_path: Path,
    temp_root: Path,
    aiohttp_server: AiohttpServer,
) -> AsyncIterator[tuple[Replicas, Hook, str]]:
    bucket = s3.bucket(f"j-{uuid.uuid4().hex[:12]}")
    hook = Hook()
    hook_url = str((await aiohttp_server(hook.app)).make_url("/hook"))
    config = {
        "server": {"access_log": False, "shutdown_timeout_s": 5},
        "limits": {"temp_dir": str(temp_root)},
        "providers": {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        "keys": {"team-a": key_entry(KEY_A), "team-b": key_entry(KEY_B)},
        "redis_url": redis.url,
        "files": s3.files_config(bucket),
        "fetch": {"allow_http": True, "allow_hosts": ["127.0.0.1"]},
        "jobs": {
            "lease_s": LEASE_S,
            "poll_s": 0.1,
            "webhooks": {
                "keys": {"team-a": {"secret_env": "HOOK_SECRET"}},
                "backoff_base_s": 0.1,
                "backoff_max_s": 0.2,
            },
        },
        "catalogue": BRIDGE_CATALOGUE,
    }
    path = tmp_path / "imagegate.yaml"
    path.write_bytes(msgspec.yaml.encode(config))
    env = {
        **os.environ,
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "HOOK_SECRET": SECRET,
        **s3.credentials,
    }
    started = Replicas(path, env)
    try:
        yield started, hook, hook_url
    finally:
        for proc in started.processes:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()


async def state(base: str, job_id: str, key: str = KEY_A) -> Any:
    status, body, _ = await call(base, "GET", f"/v3/images/jobs/{job_id}", key=key)
    assert status == 200, body
    return body


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
async def test_a_job_whose_replica_dies_is_finished_by_another(
    replicas: tuple[Replicas, Hook, str], fake_openai: FakeOpenAI, stop: signal.Signals
) -> None:
    group, hook, hook_url = replicas
    a, proc_a = await group.start()
    hold, arrived = asyncio.Event(), asyncio.Event()
    fake_openai.script(
        Reply(body=images_reply(), hold=hold, arrived=arrived),
        Reply(body=images_reply()),
    )
    status, accepted, _ = await call(
        a,
        "POST",
        "/v3/images/edits",
        headers={**ASYNC, "Imagegate-Webhook-Url": hook_url},
        data=form(model=MODEL),
    )
    assert status == 202, accepted
    job_id = accepted["id"]
    await asyncio.wait_for(arrived.wait(), 30)
    shown = await state(a, job_id)
    assert (shown["status"], shown["attempts"]) == ("in_progress", 1)
    b, _ = await group.start()
    # Any replica shows any job; another key sees none.
    assert (await state(b, job_id))["status"] == "in_progress"
    status, _, _ = await call(b, "GET", f"/v3/images/jobs/{job_id}", key=KEY_B)
    assert status == 404
    proc_a.send_signal(stop)
    if stop == signal.SIGTERM:
        # A stops taking jobs but lets the one it runs end (within its shutdown
        # timeout): one upstream call, billed once.
        await asyncio.sleep(0.5)
        hold.set()
        await proc_a.wait()
        done = await state(b, job_id)
        assert (done["status"], done["attempts"]) == ("succeeded", 1)
        assert len(fake_openai.received) == 1
    else:
        # SIGKILL: the claim is left to expire and B takes the job over.
        await proc_a.wait()
        hold.set()

        async def finished() -> bool:
            return bool((await state(b, job_id))["status"] == "succeeded")

        await eventually(finished, within_s=30)
        done = await state(b, job_id)
        # Run twice upstream (at least once): the first call was abandoned with A.
        assert done["attempts"] == 2
        assert len(fake_openai.received) == 2
        # B ran it from the inputs A stored in the shared bucket.
        assert [r.files[0].data for r in fake_openai.received] == [png(), png()]
    assert done["result"]["data"][0]["b64_json"]
    assert done["result"]["provider"] == "openai"
    assert done["result"]["cost"] == done["cost"]

    async def delivered() -> bool:
        return bool(hook.received)

    await eventually(delivered, within_s=10)
    payload, sent = hook.received[0]
    assert Webhook(SECRET).verify(payload, sent) == done


async def test_a_delivery_whose_replica_dies_is_made_by_another(
    replicas: tuple[Replicas, Hook, str], fake_openai: FakeOpenAI
) -> None:
    """A finishes the job but its receiver fails; A dies while retrying; the
    delivery, not yet acknowledged in the stream, is B's once A's lease expired."""
    group, hook, hook_url = replicas
    a, proc_a = await group.start()
    hook.failing = True
    fake_openai.script(Reply(body=images_reply()))
    status, accepted, _ = await call(
        a,
        "POST",
        "/v3/images/generations",
        headers={**ASYNC, "Imagegate-Webhook-Url": hook_url},
        json={"model": MODEL, "prompt": "a cat"},
    )
    assert status == 202, accepted

    async def retried() -> bool:
        return len(hook.received) >= 2

    await eventually(retried, within_s=30)
    proc_a.kill()
    await proc_a.wait()
    tried = len(hook.received)
    hook.failing = False
    b, _ = await group.start()

    async def delivered() -> bool:
        return len(hook.received) > tried

    await eventually(delivered, within_s=30)
    done = await state(b, accepted["id"])
    assert done["status"] == "succeeded"
    payload, sent = hook.received[-1]
    assert Webhook(SECRET).verify(payload, sent) == done
    assert {h["webhook-id"] for _, h in hook.received} == {f"msg_{done['id']}"}
    assert len(fake_openai.received) == 1  # the job ran once; only its delivery moved
