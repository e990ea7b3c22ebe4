"""/v3/upload and file_id: upload, list, show, delete, caps, expiry, and edits by id."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from proxy.environment import MULTIPROC_ENV
from proxy.upload_store import ORPHAN_GRACE_S
from tests.conftest import AiohttpServer, StartProxy, build_config
from tests.fakes.openai import FakeOpenAI
from tests.gateway import KEY_A, KEY_B, key_entry
from tests.images import jpeg_like, png

Start = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def start(start_proxy: StartProxy, fake_openai: FakeOpenAI) -> Start:
    async def go(**files: Any) -> TestServer:
        providers = {"openai": {"base_url": fake_openai.url}}  # type: ignore[attr-defined]
        return await start_proxy(providers, files=files)

    return go


async def _upload(
    proxy: TestServer,
    data: bytes,
    *,
    name: str = "cat.png",
    purpose: str | None = None,
    purpose_first: bool = False,
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData(quote_fields=False)
    if purpose is not None and purpose_first:
        form.add_field("purpose", purpose)
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    if purpose is not None and not purpose_first:
        form.add_field("purpose", purpose)
    async with aiohttp.ClientSession() as client:
        resp = await client.post(proxy.make_url("/v3/upload"), data=form)
        return resp.status, await resp.json()


def _files(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.is_file()]


async def _call(
    proxy: TestServer, method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client:
        resp = await client.request(method, proxy.make_url(path), **kw)
        return resp.status, await resp.json()


async def _edit(proxy: TestServer, **fields: Any) -> tuple[int, Any]:
    body = {"model": "openai/gpt-image-2", "prompt": "hat", **fields}
    return await _call(proxy, "POST", "/v3/images/edits", json=body)


async def test_upload_list_show_delete(start: Start) -> None:
    proxy = await start()
    image = png(5, 5)
    status, up = await _upload(proxy, image, name="../../cat.png", purpose="vision")
    assert status == 200, up
    assert uuid.UUID(up["file_id"]).version == 4
    assert up["file_name"] == "cat.png"
    assert up["file_size"] == len(image)
    assert up["file_mimetype"] == "image/png"
    assert up["purpose"] == "vision"
    created = datetime.fromisoformat(up["created_at"])
    expires = datetime.fromisoformat(up["expires_at"])
    assert (expires - created).days == 7
    _, second = await _upload(
        proxy, jpeg_like(), name="b.jpg", purpose="x", purpose_first=True
    )
    assert second["file_mimetype"] == "image/jpeg"
    assert second["purpose"] == "x"

    status, listing = await _call(proxy, "GET", "/v3/upload")
    assert status == 200
    assert [f["file_id"] for f in listing["data"]] == [up["file_id"], second["file_id"]]
    status, filtered = await _call(proxy, "GET", "/v3/upload", params={"purpose": "x"})
    assert [f["file_id"] for f in filtered["data"]] == [second["file_id"]]
    status, shown = await _call(proxy, "GET", f"/v3/upload/{up['file_id']}")
    assert status == 200
    assert shown == up

    status, deleted = await _call(proxy, "DELETE", f"/v3/upload/{up['file_id']}")
    assert status == 200
    assert deleted == {"file_id": up["file_id"], "deleted": True}
    for method in ("GET", "DELETE"):
        status, err = await _call(proxy, method, f"/v3/upload/{up['file_id']}")
        assert status == 404
        assert err["error"]["code"] == "file_not_found"


@pytest.mark.parametrize(
    ("path", "status"),
    [("/v3/upload/..%2F..%2Fetc%2Fpasswd", 404), ("/v3/upload/%2e%2e", 404)],
)
async def test_ids_are_never_paths(start: Start, path: str, status: int) -> None:
    proxy = await start()
    got, _ = await _call(proxy, "GET", path)
    assert got == status


async def test_upload_refusals(start: Start) -> None:
    proxy = await start(max_file_bytes=1000, max_total_bytes=1500)
    status, err = await _upload(proxy, b"%PDF-1.7 not an image")
    assert status == 415
    assert err["error"]["param"] == "file"
    status, err = await _upload(proxy, png(2, 2) + b"\0" * 2000)
    assert status == 413
    assert err["error"]["param"] == "file"
    status, err = await _call(proxy, "POST", "/v3/upload", json={"file": "x"})
    assert status == 415
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("purpose", "vision")
    status, err = await _call(proxy, "POST", "/v3/upload", data=form)
    assert status == 400
    assert err["error"]["param"] == "file"
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("other", "x")
    status, err = await _call(proxy, "POST", "/v3/upload", data=form)
    assert status == 400
    assert err["error"]["param"] == "other"
    status, err = await _upload(proxy, png(2, 2), purpose="x" * 65)
    assert status == 400
    assert err["error"]["param"] == "purpose"
    # The total cap counts stored files: the second 900-byte file does not fit.
    status, _ = await _upload(proxy, png(2, 2) + b"\0" * 800)
    assert status == 200
    status, err = await _upload(proxy, png(2, 2) + b"\0" * 800)
    assert status == 507
    assert err["error"]["code"] == "upload_store_full"
    status, listing = await _call(proxy, "GET", "/v3/upload")
    assert len(listing["data"]) == 1


async def test_edit_by_file_id_sends_the_stored_bytes(
    start: Start, fake_openai: FakeOpenAI
) -> None:
    proxy = await start()
    image, mask = png(6, 6, seed=3), png(6, 6, alpha=0)
    _, up = await _upload(proxy, image)
    _, up_mask = await _upload(proxy, mask, name="mask.png")
    status, answer = await _edit(
        proxy,
        images=[{"file_id": up["file_id"]}, {"file_id": "file-abc123"}],
        mask={"file_id": up_mask["file_id"]},
    )
    assert status == 200, answer
    sent = fake_openai.last.json
    assert sent is not None
    first = sent["images"][0]["image_url"]
    assert base64.b64decode(first.partition(",")[2]) == image
    # An id the store does not hold goes to OpenAI, which has file ids of its own.
    assert sent["images"][1] == {"file_id": "file-abc123"}
    assert base64.b64decode(sent["mask"]["image_url"].partition(",")[2]) == mask


async def test_mask_file_id_must_be_png(start: Start, fake_openai: FakeOpenAI) -> None:
    proxy = await start()
    _, up = await _upload(proxy, png())
    _, jpg = await _upload(proxy, jpeg_like(), name="m.jpg")
    status, err = await _edit(
        proxy, images=[{"file_id": up["file_id"]}], mask={"file_id": jpg["file_id"]}
    )
    assert status == 400
    assert err["error"]["param"] == "mask.file_id"
    assert fake_openai.received == []


async def test_files_expire_and_are_swept(start: Start, tmp_path: Path) -> None:
    store = tmp_path / "store"
    proxy = await start(dir=str(store), retention_s=0.3, sweep_interval_s=0.05)
    _, up = await _upload(proxy, png())
    assert sorted(p.suffix for p in _files(store)) == [".bin", ".json"]
    for _ in range(200):
        if not _files(store):
            break
        await asyncio.sleep(0.02)
    assert _files(store) == []
    status, _ = await _call(proxy, "GET", f"/v3/upload/{up['file_id']}")
    assert status == 404
    status, _ = await _edit(proxy, images=[{"file_id": up["file_id"]}])
    # Expired ids are unknown ids: OpenAI gets them as its own (and would 404).
    assert status == 200


async def test_store_survives_a_restart(
    aiohttp_server: AiohttpServer,
    fake_openai: FakeOpenAI,
    temp_root: Path,
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    config = build_config(
        temp_root,
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        files={"dir": str(store)},
    )

    async def start() -> TestServer:
        app = create_app(config, environ={}, registry=CollectorRegistry())
        return await aiohttp_server(app)

    first = await start()
    _, up = await _upload(first, png())
    await first.close()
    old = time.time() - ORPHAN_GRACE_S - 60
    for name, data in (("stray.part", b"left by a crash"), ("bad.json", b"not json")):
        (store / name).write_bytes(data)
        os.utime(store / name, (old, old))
    second = await start()
    status, shown = await _call(second, "GET", f"/v3/upload/{up['file_id']}")
    assert status == 200
    assert shown == up
    assert sorted(p.name for p in _files(store)) == [
        f"{up['file_id']}.bin",
        f"{up['file_id']}.json",
    ]


@pytest.mark.parametrize(
    "raw", [b"--b\r\nC", b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n"]
)
async def test_malformed_upload_is_a_400(start: Start, raw: bytes) -> None:
    proxy = await start()
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    status, err = await _call(proxy, "POST", "/v3/upload", data=raw, headers=headers)
    assert status == 400
    assert err["error"]["type"] == "invalid_request_error"


async def test_worker_processes_share_the_default_store(
    aiohttp_server: AiohttpServer,
    fake_openai: FakeOpenAI,
    temp_root: Path,
    tmp_path: Path,
) -> None:
    # Under the supervisor every worker gets its directory; uploads must be visible
    # to whichever worker the kernel hands the next connection.
    shared = tmp_path / "workers"
    shared.mkdir()
    config = build_config(
        temp_root,
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
    )
    environ = {"OPENAI_API_KEY": "sk-upstream-test", MULTIPROC_ENV: str(shared)}
    one, two = [
        await aiohttp_server(
            create_app(config, environ=environ, registry=CollectorRegistry())
        )
        for _ in range(2)
    ]
    _, up = await _upload(one, png())
    status, shown = await _call(two, "GET", f"/v3/upload/{up['file_id']}")
    assert status == 200
    assert shown == up
    status, answer = await _edit(two, images=[{"file_id": up["file_id"]}])
    assert status == 200, answer
    await one.close()
    # One worker stopping leaves the shared store to the others (and the supervisor).
    status, _ = await _call(two, "GET", f"/v3/upload/{up['file_id']}")
    assert status == 200


async def test_with_client_keys_each_key_has_its_own_files(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        keys={"team-a": key_entry(KEY_A), "team-b": key_entry(KEY_B)},
    )
    a = {"Authorization": f"Bearer {KEY_A}"}
    b = {"Authorization": f"Bearer {KEY_B}"}
    form = aiohttp.FormData()
    form.add_field("file", png(), filename="a.png")
    status, up = await _call(proxy, "POST", "/v3/upload", data=form, headers=a)
    assert status == 200, up
    file_id = up["file_id"]
    status, listing = await _call(proxy, "GET", "/v3/upload", headers=b)
    assert listing["data"] == []
    status, _ = await _call(proxy, "GET", f"/v3/upload/{file_id}", headers=b)
    assert status == 404
    edit = {"model": "openai/gpt-image-2", "prompt": "hat",
            "images": [{"file_id": file_id}]}  # fmt: skip
    # Another key's id is unknown to this key: passed to OpenAI as one of its own.
    status, _ = await _call(proxy, "POST", "/v3/images/edits", json=edit, headers=b)
    assert fake_openai.last.json is not None
    assert fake_openai.last.json["images"] == [{"file_id": file_id}]
    status, _ = await _call(proxy, "DELETE", f"/v3/upload/{file_id}", headers=b)
    assert status == 404
    status, answer = await _call(
        proxy, "POST", "/v3/images/edits", json=edit, headers=a
    )
    assert status == 200, answer
    assert fake_openai.last.json["images"][0]["image_url"].startswith("data:image/png")
    status, listing = await _call(proxy, "GET", "/v3/upload", headers=a)
    assert [f["file_id"] for f in listing["data"]] == [file_id]
    status, _ = await _call(proxy, "DELETE", f"/v3/upload/{file_id}", headers=a)
    assert status == 200
    status, _ = await _call(proxy, "GET", "/v3/upload", headers={})
    assert status == 401
