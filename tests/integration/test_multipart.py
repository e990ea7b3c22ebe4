"""Raw multipart bodies: part names, limits, sniffing, and temp-file hygiene."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import StartProxy, leftover_files
from tests.fakes.openai import FakeOpenAI, Reply
from tests.images import jpeg_like, png, sized_png
from tests.observability.scrape import scrape, value


def form(
    files: list[tuple[str, bytes]], fields: dict[str, str] | None = None, **kw: str
) -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)
    base = {"model": "openai/gpt-image-2", "prompt": "edit"}
    base.update(fields or {})
    base.update(kw)
    for k, v in base.items():
        data.add_field(k, v)
    for name, content in files:
        data.add_field(
            name, content, filename="f.bin", content_type="application/octet-stream"
        )
    return data


async def post(
    proxy: TestServer, data: Any, *, chunked: bool = False
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/edits"), data=data, chunked=chunked or None
        ) as r,
    ):
        return r.status, await r.json()


@pytest.mark.parametrize(
    "names",
    [["image"], ["image[]"], ["image[]", "image[]"], ["image", "image"],
     ["image[0]", "image[1]", "image[2]"]],
)  # fmt: skip
async def test_accepted_image_part_names(
    proxy: TestServer, fake_openai: FakeOpenAI, names: list[str], temp_root: Path
) -> None:
    blobs = [png(4, 4, seed=i) for i in range(len(names))]
    status, answer = await post(proxy, form(list(zip(names, blobs, strict=True))))
    assert status == 200, answer
    got = fake_openai.last
    assert [f.sha256 for f in got.files] == [
        hashlib.sha256(b).hexdigest() for b in blobs
    ]
    # One image keeps its part's name (the Node SDK's `image[]`); several go as `image[]`.
    expected = names[0] if names in (["image"], ["image[]"]) else "image[]"
    assert {f.name for f in got.files} == {expected}
    assert leftover_files(temp_root) == []


async def test_text_fields_are_typed(
    proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    status, _ = await post(
        proxy,
        form(
            [("image", png())],
            {"n": "3", "stream": "false", "partial_images": "2", "metadata[team]": "a",
             "extra_headers[X-Tenant]": "t", "tags[]": "x", "opts[a][b]": "c"},
        ),
    )  # fmt: skip
    assert status == 200
    got = fake_openai.last
    assert got.fields["n"] == ["3"]
    assert got.fields["partial_images"] == ["2"]
    assert got.fields["metadata[team]"] == ["a"]
    assert got.fields["tags[]"] == ["x"]
    assert got.fields["opts[a][b]"] == ["c"]
    assert got.headers["X-Tenant"] == "t"


BAD_FORMS: list[tuple[str, Any, int, str | None]] = [
    ("no image", form([]), 400, "image"),
    ("not an image", form([("image", b"hello world, not an image")]), 400, "image"),
    ("gif", form([("image", b"GIF89a" + b"\x00" * 40)]), 400, "image"),
    ("empty image", form([("image", b"")]), 400, "image"),
    ("mask jpeg", form([("image", png()), ("mask", jpeg_like())]), 400, "mask"),
    ("two masks", form([("image", png()), ("mask", png()), ("mask", png())]), 400, "mask"),
    ("n not a number", form([("image", png())], n="two"), 400, "n"),
    ("stream not bool", form([("image", png())], stream="maybe"), 400, "stream"),
    ("missing prompt", form([("image", png())], prompt=""), 400, "prompt"),
    ("unknown file part", form([("image", png()), ("photo", png())]), 400, "photo"),
    ("duplicate field", form([("image", png())], {"n": "1", "n[]": "2"}), 400, "n[]"),
    ("credential header", form([("image", png())], {"extra_headers[x-key]": "k"}), 400,
     "extra_headers.x-key"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "data", "status", "param"), BAD_FORMS, ids=[c[0] for c in BAD_FORMS]
)
async def test_bad_forms(
    proxy: TestServer,
    fake_openai: FakeOpenAI,
    temp_root: Path,
    case: str,
    data: Any,
    status: int,
    param: str | None,
) -> None:
    got, answer = await post(proxy, data)
    assert got == status, answer
    assert answer["error"]["param"] == param
    assert fake_openai.received == []
    assert leftover_files(temp_root) == []


async def test_duplicate_plain_field(proxy: TestServer) -> None:
    data = aiohttp.FormData()
    for k, v in [("model", "openai/a"), ("prompt", "p"), ("prompt", "q")]:
        data.add_field(k, v)
    data.add_field("image", png(), filename="a.png")
    status, answer = await post(proxy, data)
    assert status == 400
    assert answer["error"]["param"] == "prompt"


@pytest.fixture
async def small_proxy(start_proxy: StartProxy, fake_openai: FakeOpenAI) -> TestServer:
    return await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        limits={"max_file_bytes": 64 * 1024, "max_files": 3, "max_fields": 4,
                "max_field_bytes": 1024, "max_body_bytes": 200 * 1024},
    )  # fmt: skip


LIMITS: list[tuple[str, Any, int]] = [
    ("file over cap", form([("image", sized_png(64 * 1024 + 1))]), 413),
    ("too many files", form([("image[]", png())] * 4), 400),
    ("too many fields", form([("image", png())], {"a": "1", "b": "2", "c": "3"}), 400),
    ("field too big", form([("image", png())], prompt="x" * 2000), 413),
    ("body over cap", form([("image[]", sized_png(60 * 1024))] * 3 + [("mask", sized_png(60 * 1024))]), 413),
]  # fmt: skip


@pytest.mark.parametrize(("case", "data", "status"), LIMITS, ids=[c[0] for c in LIMITS])
async def test_limits(
    small_proxy: TestServer,
    fake_openai: FakeOpenAI,
    temp_root: Path,
    case: str,
    data: Any,
    status: int,
) -> None:
    got, answer = await post(small_proxy, data)
    assert got == status, answer
    assert answer["error"]["message"]
    assert fake_openai.received == []
    assert leftover_files(temp_root) == []


async def test_declared_length_over_cap_is_refused_before_reading(
    small_proxy: TestServer,
) -> None:
    reader, writer = await asyncio.open_connection(small_proxy.host, small_proxy.port)
    writer.write(
        b"POST /v3/images/edits HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 999999999\r\n\r\n"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert b" 413 " in status_line
    writer.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",
        b"garbage without boundaries",
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
        + png()
        + b"\r\n--b\r\nContent-Type: multipart/mixed; boundary=c\r\n"
        b'Content-Disposition: form-data; name="nested"\r\n\r\n--c--\r\n--b--\r\n',
    ],
)
async def test_malformed_multipart(
    proxy: TestServer, raw: bytes, temp_root: Path
) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/edits"),
            data=raw,
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        ) as r,
    ):
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"
    assert leftover_files(temp_root) == []


async def test_missing_boundary(proxy: TestServer) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/edits"),
            data=b"x",
            headers={"Content-Type": "multipart/form-data"},
        ) as r,
    ):
        assert r.status == 400


async def test_client_disconnect_mid_upload_leaves_no_temp_file(
    proxy: TestServer, fake_openai: FakeOpenAI, temp_root: Path
) -> None:
    head = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        # Past the default in-memory spool (4 MiB), so the part reaches the disk.
        b"Content-Type: image/png\r\n\r\n" + png() + b"\x00" * (5 * 1024 * 1024)
    )
    _reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(
        b"POST /v3/images/edits HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 9000000\r\n\r\n" + head
    )
    await writer.drain()
    # Wait until the proxy has started spooling the part, then vanish.
    for _ in range(200):
        if leftover_files(temp_root):
            break
        await asyncio.sleep(0.01)
    assert leftover_files(temp_root), "the upload never reached a temp file"
    writer.transport.abort()
    for _ in range(200):
        if not leftover_files(temp_root):
            break
        await asyncio.sleep(0.01)
    assert leftover_files(temp_root) == []
    assert fake_openai.received == []
    # The process keeps serving.
    status, _ = await post(proxy, form([("image", png())]))
    assert status == 200


async def test_small_parts_are_spooled_in_memory_large_ones_on_disk(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, temp_root: Path
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        limits={"spool_bytes": 100 * 1024},
    )
    # Sent chunked, so its length is not known up front. 60 KiB fits the budget; the
    # second 60 KiB overflows it mid-part and the 1 MiB part goes straight to disk:
    # the upstream must still get every byte.
    blobs = [sized_png(60 * 1024), sized_png(60 * 1024), sized_png(1024 * 1024)]
    seen = await _max_temp_files(
        temp_root, post(proxy, form([("image[]", b) for b in blobs]), chunked=True)
    )
    got = fake_openai.last
    assert [f.sha256 for f in got.files] == [
        hashlib.sha256(b).hexdigest() for b in blobs
    ]
    assert seen <= 2  # the first part never touched the disk
    assert leftover_files(temp_root) == []
    # With a declared length over the budget, every part goes to disk at once.
    seen = await _max_temp_files(
        temp_root, post(proxy, form([("image[]", b) for b in blobs]))
    )
    assert seen == 3
    assert value(await scrape(proxy), "imagegate_spooled_bytes") == 0


async def test_parts_within_the_spool_stay_in_memory_with_a_declared_length(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, temp_root: Path
) -> None:
    # Four parts of 64 KiB fill a 256 KiB spool exactly; the body, with its
    # boundaries and fields, is longer. Before, the declared length was compared
    # with the spool and every part went to disk.
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        limits={"spool_bytes": 256 * 1024},
    )
    blobs = [sized_png(64 * 1024) for _ in range(4)]
    seen = await _max_temp_files(
        temp_root, post(proxy, form([("image[]", b) for b in blobs]))
    )
    assert seen == 0
    assert [f.sha256 for f in fake_openai.last.files] == [
        hashlib.sha256(b).hexdigest() for b in blobs
    ]


async def _max_temp_files(temp_root: Path, call: Awaitable[tuple[int, Any]]) -> int:
    """The most temp files seen at once while ``call`` (an edit that must succeed) ran."""
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(len(leftover_files(temp_root)))
            await asyncio.sleep(0.001)

    watcher = asyncio.ensure_future(watch())
    try:
        status, answer = await call
    finally:
        watcher.cancel()
    assert status == 200, answer
    return max(seen, default=0)


def entries(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*")}


async def test_spooled_small_edit_creates_no_temp_file(
    proxy: TestServer, fake_openai: FakeOpenAI, temp_root: Path
) -> None:
    before = entries(temp_root)
    status, _ = await post(
        proxy, form([("image", png(8, 8)), ("mask", png(8, 8, alpha=0))])
    )
    assert status == 200
    assert entries(temp_root) == before
    assert [f.name for f in fake_openai.last.files] == ["image", "mask"]


async def test_the_process_wide_spool_budget_is_shared_and_given_back(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, temp_root: Path
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        limits={"spool_bytes": 1024 * 1024, "spool_total_bytes": 100 * 1024},
    )
    first, second = sized_png(60 * 1024), sized_png(61 * 1024)
    # The first edit holds 60 KiB of the 100 KiB budget while its upstream call waits;
    # the second, sent meanwhile, finds the budget spent and goes to disk.
    fake_openai.script(Reply(delay_s=0.5))
    held = asyncio.ensure_future(post(proxy, form([("image", first)])))
    for _ in range(200):
        if fake_openai.received:
            break
        await asyncio.sleep(0.005)
    assert value(await scrape(proxy), "imagegate_spooled_bytes") == len(first)
    assert leftover_files(temp_root) == []
    # Chunked, or its declared length alone would send it to disk.
    seen = await _max_temp_files(
        temp_root, post(proxy, form([("image", second)]), chunked=True)
    )
    assert seen == 1
    assert (await held)[0] == 200
    sums = sorted(f.sha256 for r in fake_openai.received for f in r.files)
    assert sums == sorted(hashlib.sha256(b).hexdigest() for b in (first, second))
    assert value(await scrape(proxy), "imagegate_spooled_bytes") == 0
    assert leftover_files(temp_root) == []


def _raw_form(parts: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart body with each part's Content-Disposition parameters as given."""
    boundary = "b0undary"
    body = b""
    for name, params, content in [
        ("model", "", b"openai/gpt-image-2"),
        ("prompt", "", b"put the lamp on the table"),
        *parts,
    ]:
        disposition = f'form-data; name="{name}"{params}'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def _send_raw(proxy: TestServer, parts: list[tuple[str, str, bytes]]) -> None:
    body, ctype = _raw_form(parts)
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/edits"),
            data=body,
            headers={"Content-Type": ctype},
        ) as r,
    ):
        assert r.status == 200, await r.text()


async def test_client_file_names_reach_the_provider(
    proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    # Before: room.png and lamp.png arrived as image.png and image1.png.
    await _send_raw(
        proxy,
        [
            ("image[]", '; filename="room.png"', png(8, 8, seed=1)),
            ("image[]", '; filename="lamp.png"', png(8, 8, seed=2)),
            ("mask", '; filename="hole.png"', png(8, 8, alpha=0)),
        ],
    )
    got = [(f.name, f.filename) for f in fake_openai.last.files]
    assert got == [
        ("image[]", "room.png"),
        ("image[]", "lamp.png"),
        ("mask", "hole.png"),
    ]


@pytest.mark.parametrize(
    ("params", "sent"),
    [
        ('; filename="../../etc/room.png"', "room.png"),
        ('; filename="C:\\\\Users\\\\me\\\\room.png"', "room.png"),
        # RFC 5987 lets a client smuggle quotes, CR/LF and a bidi override.
        ("; filename*=UTF-8''ro%22om%0D%0AX-Injected%3A%201%E2%80%AE.png", "roomX-Injected: 1.png"),
        ("; filename*=UTF-8''%2F..%2F..", "image.png"),
        ('; filename=""', "image.png"),
        ("", "image.png"),
        (f'; filename="{"a" * 300}.png"', "a" * 124 + ".png"),
    ],
)  # fmt: skip
async def test_client_file_names_are_sanitised(
    proxy: TestServer, fake_openai: FakeOpenAI, params: str, sent: str
) -> None:
    await _send_raw(proxy, [("image", params, png(8, 8))])
    (part,) = fake_openai.last.files
    assert (part.name, part.filename) == ("image", sent)
