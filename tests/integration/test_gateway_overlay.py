"""The gateway overlay's own config, as ``kubectl kustomize deploy/k8s/gateway``
renders it, run by two ``python -m proxy`` replicas with the environment its
Deployment gives them (the Secrets filled with a real Redis and a real S3 store,
SeaweedFS), after ``imagegate prepare-bucket`` (the trial Job's command) made the
bucket: every documented endpoint answers correctly from either replica.

Changed from the rendering, and only this: the placeholder client key (a real hash),
the provider's base URL (the fake), the temp directory and the port."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.deploy.test_k8s import render
from tests.fakes.openai import IMAGE_B64, FakeOpenAI
from tests.gateway import KEY_A, RedisServer, redis_server
from tests.gateway import key_entry as entry
from tests.images import png
from tests.replicas import Replica, running
from tests.s3server import S3Server
from tests.seaweedfs import seaweedfs_server

SECRETS = {"imagegate-provider-keys", "imagegate-redis", "imagegate-object-store"}


@pytest.fixture(scope="module")
def weed() -> Iterator[S3Server]:
    with seaweedfs_server() as server:
        yield server


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def _overlay(fake: FakeOpenAI, temp: Path) -> tuple[dict[str, Any], Any]:
    objs = render("gateway")
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap"]
    (deploy,) = [o for o in objs if o["kind"] == "Deployment"]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    config = msgspec.yaml.decode(cm["data"]["imagegate.yaml"])
    config["keys"] = {"team-a": entry(KEY_A, budget_usd_day=5.0)}
    config["providers"]["openai"]["base_url"] = fake.url  # type: ignore[attr-defined]
    config["limits"]["temp_dir"] = str(temp)
    config["server"]["shutdown_timeout_s"] = 5
    return config, container


def _env(container: Any, redis: RedisServer, weed: S3Server) -> dict[str, str]:
    referenced = {s["secretRef"]["name"] for s in container["envFrom"]}
    assert referenced == SECRETS
    filled = {
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "REDIS_URL": redis.url,
        # An S3-compatible store that is not AWS S3, with keys (no IRSA).
        "AWS_ENDPOINT_URL_S3": weed.url,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": weed.access_key,
        "AWS_SECRET_ACCESS_KEY": weed.secret_key,
    }
    own = {e["name"]: e["value"] for e in container.get("env", [])}
    own.pop("TMPDIR", None)  # /tmp in the pod
    return {**os.environ, **own, **filled}


@pytest.fixture
async def replicas(
    fake_openai: FakeOpenAI,
    redis: RedisServer,
    weed: S3Server,
    tmp_path: Path,
    temp_root: Path,
) -> AsyncIterator[tuple[Replica, Replica]]:
    config, container = _overlay(fake_openai, temp_root)
    path = tmp_path / "imagegate.yaml"
    path.write_bytes(msgspec.yaml.encode(config))
    env = _env(container, redis, weed)
    prepare = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "prepare-bucket", str(path), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await prepare.communicate()
    assert prepare.returncode == 0, err.decode()
    async with running([*container["args"][:1], str(path)], env) as started:
        yield started[0], started[1]


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
        body = await r.read()
        if r.content_type == "application/json":
            return r.status, msgspec.json.decode(body)
        return r.status, body


async def test_every_documented_endpoint_answers_from_either_replica(
    replicas: tuple[Replica, Replica], fake_openai: FakeOpenAI
) -> None:
    a, b = replicas
    for replica in (a, b):
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            status, _ = await _call(replica, "GET", path)
            assert status == 200, path
        for path in (
            "/v3/images/models",
            "/v1/images/models",
            "/v3/models",
            "/v1/models",
        ):
            status, models = await _call(replica, "GET", path)
            assert status == 200, path
            assert models["data"], path
        # The page is served on loopback listeners only (ui.enabled: auto).
        status, _ = await _call(replica, "GET", "/ui")
        assert status == 404
    # An upload through A is listed, shown and used through B.
    image = png(6, 6, seed=3)
    form = aiohttp.FormData()
    form.add_field("file", image, filename="a.png", content_type="image/png")
    status, up = await _call(a, "POST", "/v3/upload", data=form)
    assert status == 200, up
    file_id = up["file_id"]
    status, listing = await _call(b, "GET", "/v3/upload")
    assert [f["file_id"] for f in listing["data"]] == [file_id]
    assert (await _call(b, "GET", f"/v3/upload/{file_id}")) == (200, up)
    body = {
        "model": "openai/gpt-image-2", "prompt": "a hat", "quality": "low",
        "images": [{"file_id": file_id}], "response_format": "url",
    }  # fmt: skip
    status, answer = await _call(b, "POST", "/v3/images/edits", json=body)
    assert status == 200, answer
    sent = fake_openai.last.json
    assert sent is not None
    assert base64.b64decode(sent["images"][0]["image_url"].partition(",")[2]) == image
    # The link, presigned by B, serves the image (SeaweedFS checks the signature).
    async with aiohttp.ClientSession() as s, s.get(answer["data"][0]["url"]) as r:
        assert (r.status, await r.read()) == (200, base64.b64decode(IMAGE_B64))
    # Multipart on /v1 through A, generations through B.
    form = aiohttp.FormData()
    form.add_field("model", "openai/gpt-image-2")
    form.add_field("prompt", "a hat")
    form.add_field("quality", "low")
    form.add_field("image", png(), filename="i.png", content_type="image/png")
    status, answer = await _call(a, "POST", "/v1/images/edits", data=form)
    assert status == 200, answer
    assert answer["data"][0]["b64_json"] == IMAGE_B64
    body = {"model": "openai/gpt-image-2", "prompt": "a hat", "quality": "low"}
    status, answer = await _call(b, "POST", "/v3/images/generations", json=body)
    assert status == 200, answer
    # One key's spend, counted once, read alike through both.
    status, usage_a = await _call(a, "GET", "/v3/usage")
    status_b, usage_b = await _call(b, "GET", "/v3/usage")
    assert (status, status_b) == (200, 200)
    assert usage_a["day"]["spent_usd"] == usage_b["day"]["spent_usd"] > 0
    # Deleted through A: gone through B.
    status, _ = await _call(a, "DELETE", f"/v3/upload/{file_id}")
    assert status == 200
    for replica in (a, b):
        status, _ = await _call(replica, "GET", f"/v3/upload/{file_id}")
        assert status == 404
