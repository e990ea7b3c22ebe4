"""``files.backend: s3`` against a real S3-compatible server (moto, signatures
checked): the /v3/upload API, per-key isolation, multipart uploads, edits by file id,
and what an unreachable store does (503 storage_unavailable; inline edits unaffected)."""

from __future__ import annotations

import base64
import datetime
import io
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from proxy.config_storage import UploadStoreConfig
from proxy.errors import InvalidRequest
from proxy.providers._aws import credential_chain
from proxy.s3 import S3Client
from proxy.upload_disk import ORPHAN_GRACE_S
from proxy.upload_objects import ObjectStore
from tests.conftest import UPSTREAM_KEY, StartGateway, StartProxy
from tests.fakes.openai import IMAGE_B64, FakeOpenAI
from tests.gateway import KEY_A, KEY_B, data_url, free_port, key_entry
from tests.images import png
from tests.s3server import S3Server, s3_server

KEYS = {"team-a": key_entry(KEY_A), "team-b": key_entry(KEY_B)}
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def _call(
    proxy: TestServer, method: str, path: str, key: str | None = None, **kw: Any
) -> tuple[int, Any, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, proxy.make_url(path), headers=_auth(key), **kw) as r,
    ):
        return r.status, await r.json(), dict(r.headers)


async def _upload(
    proxy: TestServer, key: str | None, data: bytes, purpose: str | None = None
) -> tuple[int, Any, dict[str, str]]:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename="a.png", content_type="image/png")
    if purpose is not None:
        form.add_field("purpose", purpose)
    return await _call(proxy, "POST", "/v3/upload", key, data=form)


async def _edit(
    proxy: TestServer, key: str | None, image: dict[str, str]
) -> tuple[int, Any, dict[str, str]]:
    body = {"model": "openai/gpt-image-2", "prompt": "a hat", "images": [image]}
    return await _call(proxy, "POST", "/v3/images/edits", key, json=body)


async def _start(
    start_proxy: StartProxy, fake: FakeOpenAI, s3: S3Server, files: dict[str, Any]
) -> TestServer:
    return await start_proxy(
        {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        environ={"OPENAI_API_KEY": UPSTREAM_KEY, **s3.credentials},
        keys=KEYS,
        files=files,
    )


async def test_upload_list_show_use_delete_through_the_bucket(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, s3: S3Server
) -> None:
    bucket = s3.bucket(f"t-{uuid.uuid4().hex[:12]}")
    proxy = await _start(start_proxy, fake_openai, s3, s3.files_config(bucket))
    image = png(8, 8, seed=5)
    status, up, _ = await _upload(proxy, KEY_A, image, purpose="edit")
    assert status == 200, up
    file_id = up["file_id"]
    # In the bucket: the bytes with their type and owner, and the record beside them.
    head = s3.client().head_object(
        Bucket=bucket, Key=f"imagegate/uploads/key-team-a/{file_id}.bin"
    )
    assert head["ContentType"] == "image/png"
    assert head["Metadata"]["owner"] == "team-a"
    status, listing, _ = await _call(proxy, "GET", "/v3/upload", KEY_A)
    assert [f["file_id"] for f in listing["data"]] == [file_id]
    assert listing["data"][0]["purpose"] == "edit"
    # Another key sees nothing of it, by listing, by id or in an edit.
    status, other, _ = await _call(proxy, "GET", "/v3/upload", KEY_B)
    assert other["data"] == []
    status, _, _ = await _call(proxy, "GET", f"/v3/upload/{file_id}", KEY_B)
    assert status == 404
    status, _, _ = await _edit(proxy, KEY_B, {"file_id": file_id})
    assert status == 200  # OpenAI has file ids of its own: the id goes through
    assert fake_openai.last.json is not None
    assert fake_openai.last.json["images"][0] == {"file_id": file_id}
    # Its owner's edit sends the stored bytes.
    status, answer, _ = await _edit(proxy, KEY_A, {"file_id": file_id})
    assert status == 200, answer
    sent = fake_openai.last.json
    assert sent is not None
    assert base64.b64decode(sent["images"][0]["image_url"].partition(",")[2]) == image
    status, deleted, _ = await _call(proxy, "DELETE", f"/v3/upload/{file_id}", KEY_A)
    assert (status, deleted) == (200, {"file_id": file_id, "deleted": True})
    status, _, _ = await _call(proxy, "GET", f"/v3/upload/{file_id}", KEY_A)
    assert status == 404
    listed = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    assert listed == []


async def test_a_large_upload_goes_in_parts_and_comes_back_whole(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, s3: S3Server
) -> None:
    bucket = s3.bucket(f"t-{uuid.uuid4().hex[:12]}")
    files = {**s3.files_config(bucket, part_bytes=5 * MiB), "max_file_bytes": 64 * MiB}
    proxy = await _start(start_proxy, fake_openai, s3, files)
    image = png(4, 4) + bytes(range(256)) * (12 * MiB // 256)  # trailing bytes
    status, up, _ = await _upload(proxy, KEY_A, image)
    assert status == 200, up
    assert up["file_size"] == len(image)
    key = f"imagegate/uploads/key-team-a/{up['file_id']}.bin"
    obj = s3.client().get_object(Bucket=bucket, Key=key)
    assert obj["Body"].read() == image
    # Three parts of at most 5 MiB: a multipart upload (its ETag says how many).
    assert obj["ETag"].strip('"').endswith("-3")


async def test_an_unreachable_store_is_a_retryable_503_and_inline_edits_still_work(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, s3: S3Server
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    files = s3.files_config("nobucket", endpoint_url=closed, connect_timeout_s=2)
    proxy = await _start(start_proxy, fake_openai, s3, files)
    status, err, headers = await _upload(proxy, KEY_A, png())
    assert status == 503, err
    assert err["error"]["code"] == "storage_unavailable"
    assert headers["Retry-After"] == "5"
    assert headers.get("x-should-retry") != "false"
    for method, path in (("GET", "/v3/upload"), ("GET", f"/v3/upload/{uuid.uuid4()}")):
        status, err, _ = await _call(proxy, method, path, KEY_A)
        assert (status, err["error"]["code"]) == (503, "storage_unavailable")
    status, err, _ = await _edit(proxy, KEY_A, {"file_id": str(uuid.uuid4())})
    assert (status, err["error"]["code"]) == (503, "storage_unavailable")
    assert fake_openai.received == []
    status, answer, _ = await _edit(proxy, KEY_A, {"image_url": data_url(png())})
    assert status == 200, answer
    assert len(fake_openai.received) == 1


async def test_a_store_refusing_the_gateway_s_credentials_is_a_503_naming_no_secret(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, s3: S3Server
) -> None:
    bucket = s3.bucket(f"t-{uuid.uuid4().hex[:12]}")
    wrong = {**s3.credentials, "AWS_SECRET_ACCESS_KEY": "not-the-secret-key"}
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        environ={"OPENAI_API_KEY": UPSTREAM_KEY, **wrong},
        keys=KEYS,
        files=s3.files_config(bucket),
    )
    status, err, _ = await _upload(proxy, KEY_A, png())
    assert (status, err["error"]["code"]) == (503, "storage_unavailable")
    assert "not-the-secret-key" not in str(err)
    assert "Contents" not in s3.client().list_objects_v2(Bucket=bucket)


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(s3: S3Server) -> AsyncIterator[tuple[ObjectStore, str, Clock]]:
    bucket = s3.bucket(f"t-{uuid.uuid4().hex[:12]}")
    files = msgspec.convert(
        {**s3.files_config(bucket), "retention_s": 3600}, UploadStoreConfig
    )
    assert files.s3 is not None
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        client = S3Client(files.s3, session, credential_chain(s3.credentials, None))
        yield ObjectStore(files, client, keyed=True, clock=clock), bucket, clock


async def _save(store: ObjectStore, owner: str, purpose: str | None = None) -> str:
    async def chunks() -> AsyncIterator[bytes]:
        yield png()

    draft = await store.write(
        chunks(), file_name="a.png", mimetype="image/png", owner=owner
    )
    return (await store.publish(draft, purpose)).file_id


async def test_listing_pages_and_expiry_on_read_and_by_the_sweeper(
    store: tuple[ObjectStore, str, Clock], s3: S3Server
) -> None:
    files, bucket, clock = store
    ids = []
    for i in range(3):
        clock.now += 1
        ids.append(await _save(files, "team-a", purpose="p" if i else None))
    page = await files.list(owner="team-a", limit=2)
    assert ([f.file_id for f in page.files], page.has_more) == (ids[:2], True)
    page = await files.list(owner="team-a", limit=2, after=ids[1])
    assert ([f.file_id for f in page.files], page.has_more) == (ids[2:], False)
    page = await files.list(owner="team-a", purpose="p")
    assert [f.file_id for f in page.files] == ids[1:]
    assert (await files.list(owner="team-b")).files == []
    with pytest.raises(InvalidRequest):
        await files.list(owner="team-b", after=ids[0])
    # Past the retention the files are gone for readers before the sweeper runs.
    clock.now += 3600
    assert await files.lookup(ids[0], owner="team-a") is None
    assert (await files.list(owner="team-a")).files == []
    assert await files.sweep() == 3
    assert "Contents" not in s3.client().list_objects_v2(Bucket=bucket)


async def test_the_sweeper_removes_bytes_left_without_a_record(
    store: tuple[ObjectStore, str, Clock], s3: S3Server
) -> None:
    files, bucket, clock = store
    kept = await _save(files, "team-a")
    orphan = f"imagegate/uploads/key-team-a/{uuid.uuid4()}.bin"
    s3.client().put_object(Bucket=bucket, Key=orphan, Body=b"x")
    clock.now = time.time()
    await files.sweep()  # younger than the grace period: it may be an upload's
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert orphan in keys
    clock.now = time.time() + ORPHAN_GRACE_S + 1
    await files.sweep()
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert orphan not in keys
    assert f"imagegate/uploads/key-team-a/{kept}.bin" in keys


async def _fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.read()


@pytest.fixture(scope="module")
def s3_open() -> Iterator[S3Server]:
    """Without signature checks: moto serves presigned URLs only so."""
    with s3_server(auth=False) as server:
        yield server


async def test_url_results_are_presigned_links_to_the_image_for_gpt_image_too(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, s3_open: S3Server
) -> None:
    s3 = s3_open
    bucket = s3.bucket(f"t-{uuid.uuid4().hex[:12]}")
    proxy = await _start(start_proxy, fake_openai, s3, s3.files_config(bucket))
    body = {
        "model": "openai/gpt-image-2", "prompt": "a hat", "n": 2,
        "response_format": "url", "images": [{"image_url": data_url(png())}],
    }  # fmt: skip
    status, answer, _ = await _call(proxy, "POST", "/v3/images/edits", KEY_A, json=body)
    assert status == 200, answer
    # gpt-image answers base64 only: it was asked for that, not for a URL.
    assert fake_openai.last.json is not None
    assert "response_format" not in fake_openai.last.json
    assert answer["provider"] == "openai"
    assert answer["cost"] > 0
    urls = [item["url"] for item in answer["data"]]
    assert all("b64_json" not in item for item in answer["data"])
    assert len(set(urls)) == 2
    for url in urls:
        assert url.startswith(f"{s3.url}/{bucket}/imagegate/results/")
        assert "X-Amz-Signature=" in url
        assert "X-Amz-Expires=3600" in url
        status, data = await _fetch(url)
        assert (status, data) == (200, base64.b64decode(IMAGE_B64))
    # b64_json is unchanged.
    status, answer, _ = await _call(
        proxy,
        "POST",
        "/v3/images/edits",
        KEY_A,
        json={**body, "response_format": "b64_json"},
    )
    assert status == 200, answer
    assert answer["data"][0]["b64_json"] == IMAGE_B64


async def test_result_links_are_signed_for_results_url_ttl_s(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, s3_open: S3Server
) -> None:
    # moto does not enforce a presigned URL's expiry: what is checked here is that the
    # link says so (X-Amz-Date now, X-Amz-Expires = results.url_ttl_s), for a model
    # that answers URLs itself (dall-e-3) too.
    s3 = s3_open
    bucket = s3.bucket(f"t-{uuid.uuid4().hex[:12]}")
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        environ={"OPENAI_API_KEY": UPSTREAM_KEY, **s3.credentials},
        keys=KEYS,
        files=s3.files_config(bucket),
        results={"url_ttl_s": 120},
    )
    body = {"model": "openai/dall-e-3", "prompt": "a hat", "response_format": "url"}
    status, answer, _ = await _call(
        proxy, "POST", "/v3/images/generations", KEY_A, json=body
    )
    assert status == 200, answer
    assert fake_openai.last.json is not None
    assert fake_openai.last.json["response_format"] == "b64_json"
    url = answer["data"][0]["url"]
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert query["X-Amz-Expires"] == "120"
    signed = datetime.datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    assert abs((now - signed).total_seconds()) < 60
    assert (await _fetch(url)) == (200, base64.b64decode(IMAGE_B64))


async def test_providers_that_fetch_urls_get_a_presigned_link_when_configured(
    start_gateway: StartGateway, s3_open: S3Server
) -> None:
    s3 = s3_open
    bucket = s3.bucket(f"t-{uuid.uuid4().hex[:12]}")
    gateway = await start_gateway(
        "xai",
        environ={"XAI_API_KEY": UPSTREAM_KEY, **s3.credentials},
        keys=KEYS,
        files=s3.files_config(bucket, presign_inputs_s=300),
    )
    image = png(5, 5, seed=2)
    status, up, _ = await _upload(gateway.proxy, KEY_A, image)
    assert status == 200, up
    body = {
        "model": "xai/grok-imagine-image", "prompt": "a hat",
        "images": [{"file_id": up["file_id"]}],
    }  # fmt: skip
    status, answer, _ = await _call(
        gateway.proxy, "POST", "/v3/images/edits", KEY_A, json=body
    )
    assert status == 200, answer
    sent = gateway.fake.last.json
    url = (sent.get("image") or sent["images"][0])["url"]
    assert url.startswith(f"{s3.url}/{bucket}/imagegate/uploads/key-team-a/")
    assert "X-Amz-Expires=300" in url
    assert await _fetch(url) == (200, image)


async def test_records_another_replica_deleted_leave_the_cache(
    store: tuple[ObjectStore, str, Clock],
) -> None:
    # Two stores on one bucket, as two replicas: the cache stays what the bucket holds.
    files, _, _ = store
    other = ObjectStore(files.config, files.client, keyed=True, clock=files._clock)
    file_id = await _save(files, "team-a")
    assert [f.file_id for f in (await other.list(owner="team-a")).files] == [file_id]
    assert await files.delete(file_id, owner="team-a")
    assert (await other.list(owner="team-a")).files == []
    assert not any(other._records.values())
    await _save(other, "team-b")
    assert await other.delete((await other.list(owner="team-b")).files[0].file_id,
                              owner="team-b")  # fmt: skip
    await files.list(owner="team-b")
    await files.sweep()
    assert files._records == {}


async def test_results_the_store_could_not_take_are_counted_and_still_answered(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    s3: S3Server,
    registry: CollectorRegistry,
) -> None:
    # Before, a result results.keep could not store was only logged: an operator
    # auditing results had no metric to alert on.
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        environ={"OPENAI_API_KEY": UPSTREAM_KEY, **s3.credentials},
        keys=KEYS,
        files=s3.files_config("nobucket", endpoint_url=closed, connect_timeout_s=2),
        results={"keep": True, "retention_days": 30},
    )

    def count(purpose: str, outcome: str) -> float:
        labels = {"purpose": purpose, "outcome": outcome}
        got = registry.get_sample_value("imagegate_result_images_total", labels)
        return got or 0.0

    image = {"image_url": data_url(png())}
    status, answer, _ = await _call(
        proxy, "POST", "/v3/images/edits", KEY_A,
        json={"model": "openai/gpt-image-2", "prompt": "a hat", "images": [image]},
    )  # fmt: skip
    assert status == 200, answer
    assert answer["data"][0]["b64_json"] == IMAGE_B64
    assert count("keep", "failed") == 1
    status, answer, _ = await _call(
        proxy, "POST", "/v3/images/edits", KEY_A,
        json={"model": "openai/gpt-image-2", "prompt": "a hat", "images": [image],
              "response_format": "url"},
    )  # fmt: skip
    assert status == 200, answer
    assert answer["data"][0]["url"].startswith("data:image/png;base64,")
    assert count("link", "failed") == 1
    assert count("keep", "stored") == count("link", "stored") == 0


async def test_stored_result_links_are_counted(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    s3: S3Server,
    registry: CollectorRegistry,
) -> None:
    bucket = s3.bucket(f"t-{uuid.uuid4().hex[:12]}")
    proxy = await _start(start_proxy, fake_openai, s3, s3.files_config(bucket))
    status, answer, _ = await _call(
        proxy, "POST", "/v3/images/edits", KEY_A,
        json={"model": "openai/gpt-image-2", "prompt": "a hat", "n": 2,
              "images": [{"image_url": data_url(png())}], "response_format": "url"},
    )  # fmt: skip
    assert status == 200, answer
    images = len(answer["data"])
    assert images >= 1
    got = registry.get_sample_value(
        "imagegate_result_images_total", {"purpose": "link", "outcome": "stored"}
    )
    assert got == images
