"""The upload store shared by many client keys: each key's share, files uploaded
without keys, and paginated listings that never look at other keys' files."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from tests.conftest import UPSTREAM_KEY, AiohttpServer, StartProxy, build_config
from tests.fakes.openai import FakeOpenAI
from tests.gateway import KEY_A, KEY_B, key_entry
from tests.images import png

KEYS = {"team-a": key_entry(KEY_A), "team-b": key_entry(KEY_B)}


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def _call(
    proxy: TestServer, method: str, path: str, key: str | None = None, **kw: Any
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, proxy.make_url(path), headers=_auth(key), **kw) as r,
    ):
        return r.status, await r.json()


async def _upload(
    proxy: TestServer, key: str | None, data: bytes, purpose: str | None = None
) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="a.png", content_type="image/png")
    if purpose is not None:
        form.add_field("purpose", purpose)
    return await _call(proxy, "POST", "/v3/upload", key, data=form)


def _providers(fake: FakeOpenAI) -> dict[str, Any]:
    return {"openai": {"base_url": fake.url}}  # type: ignore[attr-defined]


async def test_one_key_cannot_fill_the_store(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    # By default a key may hold a quarter of the store: 1,000 of these 4,000 bytes.
    proxy = await start_proxy(
        _providers(fake_openai), keys=KEYS, files={"max_total_bytes": 4000}
    )
    image = png(2, 2) + b"\0" * 600
    status, _ = await _upload(proxy, KEY_A, image)
    assert status == 200
    for _ in range(5):
        status, err = await _upload(proxy, KEY_A, image)
        assert status == 507, err
        assert err["error"]["code"] == "upload_quota_exceeded"
        assert err["error"]["param"] == "file"
        assert "max_bytes_per_key" in err["error"]["message"]
    # The other key's uploads still fit.
    status, up = await _upload(proxy, KEY_B, image)
    assert status == 200, up
    status, listing = await _call(proxy, "GET", "/v3/upload", KEY_A)
    assert len(listing["data"]) == 1
    # Deleting frees the key's share.
    status, _ = await _call(
        proxy, "DELETE", f"/v3/upload/{listing['data'][0]['file_id']}", KEY_A
    )
    assert status == 200
    status, _ = await _upload(proxy, KEY_A, image)
    assert status == 200


async def test_a_key_may_hold_only_so_many_files(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        _providers(fake_openai), keys=KEYS, files={"max_files_per_key": 2}
    )
    for _ in range(2):
        status, _ = await _upload(proxy, KEY_A, png())
        assert status == 200
    status, err = await _upload(proxy, KEY_A, png())
    assert status == 507
    assert err["error"]["code"] == "upload_quota_exceeded"
    assert "max_files_per_key" in err["error"]["message"]
    status, _ = await _upload(proxy, KEY_B, png())
    assert status == 200


async def test_files_uploaded_without_keys_are_nobody_s_once_keys_exist(
    aiohttp_server: AiohttpServer,
    fake_openai: FakeOpenAI,
    temp_root: Path,
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"

    async def start(**sections: Any) -> TestServer:
        config = build_config(
            temp_root, _providers(fake_openai), files={"dir": str(store)}, **sections
        )
        environ = {"OPENAI_API_KEY": UPSTREAM_KEY}
        app = create_app(config, environ=environ, registry=CollectorRegistry())
        return await aiohttp_server(app)

    keyless = await start()
    status, up = await _upload(keyless, None, png(), purpose="vision")
    assert status == 200
    file_id = up["file_id"]
    await keyless.close()

    keyed = await start(keys=KEYS)
    for key in (KEY_A, KEY_B):
        status, listing = await _call(keyed, "GET", "/v3/upload", key)
        assert status == 200
        assert listing["data"] == []
        status, _ = await _call(keyed, "GET", f"/v3/upload/{file_id}", key)
        assert status == 404
        status, _ = await _call(keyed, "DELETE", f"/v3/upload/{file_id}", key)
        assert status == 404
        edit = {"model": "openai/gpt-image-2", "prompt": "hat",
                "images": [{"file_id": file_id}]}  # fmt: skip
        status, _ = await _call(keyed, "POST", "/v3/images/edits", key, json=edit)
        # Unknown to the key: OpenAI gets the id as one of its own, not our bytes.
        assert fake_openai.last.json is not None
        assert fake_openai.last.json["images"] == [{"file_id": file_id}]
    # Reachable by no one, the anonymous upload was removed at start-up.
    leftovers = [p.name for p in store.rglob("*") if p.is_file()]
    assert not [name for name in leftovers if name.startswith(file_id)]


async def test_keyed_files_are_not_everyone_s_once_keys_go(
    aiohttp_server: AiohttpServer,
    fake_openai: FakeOpenAI,
    temp_root: Path,
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"

    async def start(**sections: Any) -> TestServer:
        config = build_config(
            temp_root, _providers(fake_openai), files={"dir": str(store)}, **sections
        )
        environ = {"OPENAI_API_KEY": UPSTREAM_KEY}
        app = create_app(config, environ=environ, registry=CollectorRegistry())
        return await aiohttp_server(app)

    keyed = await start(keys=KEYS)
    status, up = await _upload(keyed, KEY_A, png())
    assert status == 200
    await keyed.close()
    keyless = await start()
    status, listing = await _call(keyless, "GET", "/v3/upload")
    assert listing["data"] == []
    status, _ = await _call(keyless, "GET", f"/v3/upload/{up['file_id']}")
    assert status == 404
    await keyless.close()
    # The key's file is kept for when its key comes back.
    again = await start(keys=KEYS)
    status, _ = await _call(again, "GET", f"/v3/upload/{up['file_id']}", KEY_A)
    assert status == 200


async def test_listing_is_paginated_per_key(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(_providers(fake_openai), keys=KEYS)
    mine = [(await _upload(proxy, KEY_A, png(seed=i)))[1]["file_id"] for i in range(5)]
    theirs = [(await _upload(proxy, KEY_B, png()))[1]["file_id"] for _ in range(2)]

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        status, page = await _call(proxy, "GET", "/v3/upload", KEY_A, params=params)
        assert status == 200, page
        assert page["object"] == "list"
        ids = [f["file_id"] for f in page["data"]]
        assert page["first_id"] == ids[0]
        assert page["last_id"] == ids[-1]
        seen += ids
        if not page["has_more"]:
            break
        assert len(ids) == 2
        params = {"limit": 2, "after": page["last_id"]}
    assert seen == mine
    status, page = await _call(proxy, "GET", "/v3/upload", KEY_B)
    assert [f["file_id"] for f in page["data"]] == theirs
    assert page["has_more"] is False
    # Another key's id is no cursor: it is unknown to this key.
    status, err = await _call(
        proxy, "GET", "/v3/upload", KEY_B, params={"after": mine[0]}
    )
    assert status == 400
    assert err["error"]["param"] == "after"
    status, page = await _call(
        proxy, "GET", "/v3/upload", KEY_A, params={"after": mine[-1]}
    )
    assert page == {
        "object": "list", "data": [], "has_more": False,
        "first_id": None, "last_id": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": "../x"}, "after"),
        ({"after": "x" * 65}, "after"),
        ({"purpose": "x" * 65}, "purpose"),
    ],
)
async def test_bad_listing_parameters_are_400s(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    query: dict[str, str],
    param: str,
) -> None:
    proxy = await start_proxy(_providers(fake_openai))
    status, err = await _call(proxy, "GET", "/v3/upload", params=query)
    assert status == 400
    assert err["error"]["param"] == param


async def test_a_listing_never_reads_other_keys_files(
    aiohttp_server: AiohttpServer,
    fake_openai: FakeOpenAI,
    temp_root: Path,
    tmp_path: Path,
) -> None:
    # Another key's record is a FIFO that nobody writes: reading it would block for
    # ever, so this listing answers only if it never opens it.
    store = tmp_path / "store"
    config = build_config(
        temp_root, _providers(fake_openai), files={"dir": str(store)}, keys=KEYS
    )
    app = create_app(config, environ={}, registry=CollectorRegistry())
    proxy = await aiohttp_server(app)
    status, up = await _upload(proxy, KEY_B, png())
    assert status == 200
    holder = next(p.parent for p in store.rglob(f"{up['file_id']}.json"))
    name = "00000000-0000-4000-8000-000000000000"
    (holder / f"{name}.bin").write_bytes(b"x")
    os.mkfifo(holder / f"{name}.json")
    try:
        status, page = await asyncio.wait_for(
            _call(proxy, "GET", "/v3/upload", KEY_A), 10
        )
    finally:
        _unblock_readers(holder)
    assert status == 200
    assert page["data"] == []


def _unblock_readers(directory: Path) -> None:
    # A reader stuck on the FIFO gets end-of-file once a writer comes and goes.
    for fifo in directory.glob("00000000-*.json"):
        with contextlib.suppress(OSError):  # no reader
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        fifo.unlink()
