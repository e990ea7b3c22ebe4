"""Results as links and kept results against SeaweedFS (tests/seaweedfs.py), an S3
server that enforces presigned URLs as AWS S3 does: a link serves the image until
``results.url_ttl_s`` has passed and is refused after; ``results.keep`` stores every
result with its owner; ``imagegate prepare-bucket`` creates the bucket and merges its
lifecycle rules, as the trial component's Job runs it."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestServer

from proxy.lifecycle import RESULTS_RULE, UPLOADS_RULE
from tests.conftest import UPSTREAM_KEY, StartProxy
from tests.fakes.openai import IMAGE_B64, FakeOpenAI
from tests.gateway import KEY_A, data_url, key_entry
from tests.images import png
from tests.s3server import S3Server
from tests.seaweedfs import seaweedfs_server

TTL_S = 6


@pytest.fixture(scope="module")
def weed() -> Iterator[S3Server]:
    with seaweedfs_server() as server:
        yield server


async def _start(
    start_proxy: StartProxy, fake: FakeOpenAI, s3: S3Server, **sections: Any
) -> tuple[TestServer, str]:
    bucket = s3.bucket(f"t-{uuid.uuid4().hex[:12]}")
    proxy = await start_proxy(
        {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        environ={"OPENAI_API_KEY": UPSTREAM_KEY, **s3.credentials},
        keys={"team-a": key_entry(KEY_A)},
        files=s3.files_config(bucket),
        **sections,
    )
    return proxy, bucket


async def _edit(proxy: TestServer, response_format: str) -> Any:
    body = {
        "model": "openai/gpt-image-2", "prompt": "a hat",
        "response_format": response_format, "images": [{"image_url": data_url(png())}],
    }  # fmt: skip
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/edits"),
            json=body,
            headers={"Authorization": f"Bearer {KEY_A}"},
        ) as r,
    ):
        answer = await r.json()
        assert r.status == 200, answer
        return answer


async def _fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.read()


async def test_a_result_link_serves_the_image_until_url_ttl_s_then_is_refused(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, weed: S3Server
) -> None:
    proxy, _ = await _start(
        start_proxy, fake_openai, weed, results={"url_ttl_s": TTL_S}
    )
    url = (await _edit(proxy, "url"))["data"][0]["url"]
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    signed = dt.datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    expires = signed.replace(tzinfo=dt.UTC) + dt.timedelta(seconds=TTL_S)
    assert (await _fetch(url)) == (200, base64.b64decode(IMAGE_B64))
    # The server checks the signature: a link altered in any way is refused.
    forged = url.replace(f"X-Amz-Expires={TTL_S}", "X-Amz-Expires=604800")
    status, body = await _fetch(forged)
    assert (status, b"SignatureDoesNotMatch" in body) == (403, True)
    # Past X-Amz-Date + url_ttl_s (whole seconds, so one more for rounding).
    wait = (expires - dt.datetime.now(dt.UTC)).total_seconds() + 1.5
    await asyncio.sleep(max(0.0, wait))
    status, body = await _fetch(url)
    assert status == 403
    assert b"Request has expired" in body


async def test_kept_results_are_stored_with_their_owner_and_answers_unchanged(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, weed: S3Server
) -> None:
    proxy, bucket = await _start(
        start_proxy,
        fake_openai,
        weed,
        results={"keep": True, "retention_days": 30},
    )
    answer = await _edit(proxy, "b64_json")
    assert answer["data"][0]["b64_json"] == IMAGE_B64
    linked = (await _edit(proxy, "url"))["data"][0]["url"]
    client = weed.client()
    day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    listed = client.list_objects_v2(Bucket=bucket, Prefix="imagegate/results/")
    keys = sorted(o["Key"] for o in listed.get("Contents", ()))
    assert len(keys) == 2, keys
    assert all(k.startswith(f"imagegate/results/{day}/") for k in keys)
    assert any(urllib.parse.urlsplit(linked).path.endswith(k) for k in keys)
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["Metadata"] == {
            "owner": "team-a", "provider": "openai", "model": "gpt-image-2",
        }  # fmt: skip
        assert head["ContentType"] == "image/png"
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body == base64.b64decode(IMAGE_B64)


async def test_without_keep_b64_results_are_not_stored(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, weed: S3Server
) -> None:
    proxy, bucket = await _start(start_proxy, fake_openai, weed)
    await _edit(proxy, "b64_json")
    listed = weed.client().list_objects_v2(Bucket=bucket, Prefix="imagegate/")
    assert listed.get("KeyCount", 0) == 0


async def _prepare(weed: S3Server, path: Path) -> tuple[int, str, str]:
    env = {
        **os.environ,
        **weed.credentials,
        "AWS_ENDPOINT_URL_S3": weed.url,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "prepare-bucket", str(path), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_prepare_bucket_creates_it_and_merges_the_lifecycle_rules(
    weed: S3Server, tmp_path: Path
) -> None:
    """The command the trial component's Job runs, with the gateway overlay's config
    shape (endpoint and region from the environment)."""
    bucket = f"p-{uuid.uuid4().hex[:12]}"
    path = tmp_path / "imagegate.yaml"

    def config(url_ttl_s: int) -> None:
        path.write_bytes(
            msgspec.yaml.encode(
                {
                    "providers": {"openai": {}},
                    "files": {"backend": "s3", "s3": {"bucket": bucket}},
                    "results": {"url_ttl_s": url_ttl_s},
                }
            )
        )

    config(3600)
    code, out, err = await _prepare(weed, path)
    assert code == 0, err
    assert f"created bucket {bucket}" in out
    client = weed.client()
    rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    by_id = {r["ID"]: r for r in rules}
    assert set(by_id) == {UPLOADS_RULE, RESULTS_RULE}
    assert by_id[RESULTS_RULE]["Expiration"] == {"Days": 1}
    assert by_id[RESULTS_RULE]["Filter"] == {"Prefix": "imagegate/results/"}
    # Another team's rule survives a second run; ours follow the config.
    theirs = {
        "ID": "someone-else", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
        "Expiration": {"Days": 400},
    }  # fmt: skip
    client.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [*rules, theirs]}
    )
    config(3 * 86400)
    code, out, err = await _prepare(weed, path)
    assert code == 0, err
    assert "created" not in out
    assert "1 other rule(s) kept" in out
    rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    by_id = {r["ID"]: r for r in rules}
    assert set(by_id) == {UPLOADS_RULE, RESULTS_RULE, "someone-else"}
    assert by_id[RESULTS_RULE]["Expiration"] == {"Days": 3}
    assert by_id["someone-else"]["Expiration"] == {"Days": 400}
