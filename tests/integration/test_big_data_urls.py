"""Big data URLs in a JSON edit (taken out of the body before its decode,
``proxy.json_body.read_edit_json``): the same bytes upstream, the same checks and
the same 400s as the small ones decoded with the body."""

from __future__ import annotations

import base64
import os
import struct
import zlib
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.fakes.openai import FakeOpenAI
from tests.images import jpeg_like, png

# Past json_body._TAKE_BYTES: taken out of the body.
TAIL = 40 * 1024


def _big_png(width: int = 8, height: int = 8, *, alpha: int | None = None) -> bytes:
    """A PNG followed by random bytes (the proxy sniffs and reads headers only)."""
    return png(width, height, alpha=alpha) + os.urandom(TAIL)


def _url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def _huge_dimensions() -> bytes:
    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 2, 0, 0, 0)
    ihdr = b"IHDR" + header
    chunk = struct.pack(">I", len(header)) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + os.urandom(TAIL)


async def _post(proxy: TestServer, body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as client,
        client.post(proxy.make_url("/v3/images/edits"), json=body) as resp,
    ):
        return resp.status, await resp.json()


def _edit(images: list[str], mask: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "openai/gpt-image-2",
        "prompt": "a red car",
        "images": [{"image_url": url} for url in images],
        **extra,
    }
    if mask is not None:
        body["mask"] = {"image_url": mask}
    return body


async def test_big_data_urls_reach_openai_as_the_client_sent_them(
    proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    first, second, mask = _big_png(), jpeg_like(TAIL), _big_png(alpha=0)
    reference = _url(_big_png())
    status, answer = await _post(
        proxy,
        # The second is a JPEG labelled PNG: it goes under the type its bytes have.
        _edit([_url(first), _url(second)], _url(mask), reference=reference),
    )
    assert status == 200, answer
    sent = fake_openai.last.json
    assert sent is not None
    assert sent["images"] == [
        {"image_url": _url(first)},
        {"image_url": _url(second, "image/jpeg")},
    ]
    assert sent["mask"] == {"image_url": _url(mask)}
    # A field the gateway does not know is forwarded as it came, however big.
    assert sent["reference"] == reference


@pytest.mark.parametrize(
    ("images", "mask", "param", "says"),
    [
        (["BAD", "OK"], None, "images[0].image_url", "valid base64"),
        (["OK", "TEXT"], None, "images[1].image_url", "data:image/...;base64"),
        (["OK", "NOT_IMAGE"], None, "images[1].image_url", "not a PNG"),
        (["OK"], "JPEG", "mask.image_url", "must be a PNG"),
        (["OK", "HUGE"], None, "images[1]", "pixels"),
        (["OK"], "HUGE", "mask", "pixels"),
    ],
)
async def test_big_data_urls_are_checked_like_small_ones(
    proxy: TestServer,
    fake_openai: FakeOpenAI,
    images: list[str],
    mask: str | None,
    param: str,
    says: str,
) -> None:
    payload = base64.b64encode(_big_png()).decode()
    urls = {
        "OK": _url(_big_png()),
        "BAD": f"data:image/png;base64,{payload[:-9]}*{payload[-8:]}",
        "TEXT": f"data:text/plain;base64,{payload}",
        "NOT_IMAGE": _url(b"GIF89a" + os.urandom(TAIL)),
        "JPEG": _url(jpeg_like(TAIL)),
        "HUGE": _url(_huge_dimensions()),
    }
    body = _edit([urls[i] for i in images], None if mask is None else urls[mask])
    status, answer = await _post(proxy, body)
    assert status == 400, answer
    assert answer["error"]["param"] == param
    assert says in answer["error"]["message"]
    assert fake_openai.received == []


async def test_a_body_of_megabytes_goes_upstream_in_pieces_unchanged(
    proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    # Past formwriter._ONE_BUFFER the body is written piece by piece, not joined.
    images = [png(8, 8) + os.urandom(300 * 1024) for _ in range(2)]
    status, answer = await _post(proxy, _edit([_url(i) for i in images], n=2))
    assert status == 200, answer
    sent = fake_openai.last.json
    assert sent is not None
    assert sent["images"] == [{"image_url": _url(i)} for i in images]
    assert sent["n"] == 2
    assert fake_openai.last.headers["Content-Type"] == "application/json"
