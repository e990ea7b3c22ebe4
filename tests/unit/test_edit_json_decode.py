"""``decode_edit``: big data URLs taken out of an edit body decode to exactly what the
whole-body decode gives, and any body it cannot vouch for goes the whole-body way."""

from __future__ import annotations

import base64
import os
from typing import Any

import msgspec
import pytest

from proxy.errors import InvalidRequest
from proxy.json_body import EditBody, decode_edit, decode_json
from tests.images import png

BIG = png(4, 4) + os.urandom(48 * 1024)
PAYLOAD = base64.b64encode(BIG).decode()
URL = "data:image/png;base64," + PAYLOAD
SMALL = [{"image_url": "data:image/png;base64,QUJD"}]
PADDED_INSIDE = (
    "data:image/png;base64,"
    + base64.b64encode(png(4, 4) + os.urandom(786_431 - len(png(4, 4)))).decode()
    + PAYLOAD
)


def _doc(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model": "openai/gpt-image-2",
        "prompt": "a hat",
        "images": [{"image_url": URL}],
    }
    return doc | fields


async def _decoded(raw: bytes) -> EditBody:
    return await decode_edit(bytearray(raw))


async def test_big_data_urls_are_taken_out_as_views_of_the_body() -> None:
    other = "data:image/jpeg;base64," + base64.b64encode(os.urandom(30_000)).decode()
    raw = msgspec.json.encode(
        _doc(images=[{"image_url": URL}, {"image_url": other}], mask={"image_url": URL})
    )
    got = await _decoded(raw)
    assert len(got.urls) == 3
    keys = [ref["image_url"] for ref in got.obj["images"]]
    keys.append(got.obj["mask"]["image_url"])
    assert [got.urls[k].media for k in keys] == [
        "image/png;base64",
        "image/jpeg;base64",
        "image/png;base64",
    ]
    assert got.urls[keys[0]].size == len(BIG)
    assert got.urls[keys[0]].head == BIG[: 64 * 1024]
    assert isinstance(got.urls[keys[0]].payload, memoryview)
    assert bytes(got.urls[keys[0]].payload) == PAYLOAD.encode()
    assert got.canonical() == msgspec.json.decode(raw)


@pytest.mark.parametrize(
    "raw",
    [
        # Small data URLs are decoded with the body.
        msgspec.json.encode(_doc(images=SMALL)),
        # A big one where no image goes: forwarded as it is, so decoded as it is.
        msgspec.json.encode(_doc(images=SMALL, reference=URL)),
        msgspec.json.encode(_doc(images=SMALL, metadata={"a": [URL]})),
        msgspec.json.encode(_doc(images=[{"image_url": "x", "note": URL}])),
        # Duplicate keys: the last wins, a taken URL in the first is gone.
        msgspec.json.encode(_doc()).replace(
            b'"prompt"', b'"images":[{"image_url":"' + URL.encode() + b'"}],"prompt"'
        ),
        # Escapes: a JSON-escaped slash in the header, a big URL inside a string.
        msgspec.json.encode(_doc()).replace(b"image/png", b"image\\/png"),
        msgspec.json.encode(_doc(images=SMALL, prompt='say "' + URL + '"')),
        # Padding where a slice of the check ends (json_body._CHECK_SLICE), not at
        # the end: invalid as a whole.
        msgspec.json.encode(_doc(images=[{"image_url": PADDED_INSIDE}])),
        # Upper case, bad base64, base64 whitespace, a header without a comma.
        msgspec.json.encode(_doc(images=[{"image_url": URL.upper()}])),
        msgspec.json.encode(_doc(images=[{"image_url": URL[:-8] + "*" + URL[-7:]}])),
        msgspec.json.encode(
            _doc(images=[{"image_url": URL[:5000] + "\n" + URL[5000:]}])
        ),
        msgspec.json.encode(_doc(images=[{"image_url": "data:" + "a" * 20_000}])),
    ],
)
async def test_anything_else_decodes_like_the_whole_body(raw: bytes) -> None:
    got = await _decoded(raw)
    assert got.urls == {}
    assert got.obj == msgspec.json.decode(raw)


@pytest.mark.parametrize(
    "raw",
    [
        # Not JSON around a big URL; a string closed just before one; invalid UTF-8
        # in one; a raw control byte in a header; not an object; truncated.
        b'{"images":[{"image_url":"' + URL.encode() + b'"}]]}',
        b'{"prompt":"a\\\\"' + b'"' + URL.encode() + b'"}',
        b'{"images":[{"image_url":"' + URL.encode()[:-4] + b'\xff\xfe=="}]}',
        b'{"images":[{"image_url":"data:image/png\x01;base64,'
        + PAYLOAD.encode()
        + b'"}]}',
        b'["' + URL.encode() + b'"]',
        b'{"images":[{"image_url":"' + URL.encode() + b'"',
    ],
)
async def test_a_bad_body_has_the_whole_body_decode_error(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as whole:
        decode_json(bytearray(raw))
    with pytest.raises(InvalidRequest) as taken:
        await _decoded(raw)
    assert taken.value.message == whole.value.message


async def test_a_client_cannot_name_a_taken_url() -> None:
    # The keys carry a nonce per body: one written by the client is a plain string.
    first = await _decoded(msgspec.json.encode(_doc()))
    (key,) = first.urls
    raw = msgspec.json.encode(_doc(images=[{"image_url": URL}, {"image_url": key}]))
    second = await _decoded(raw)
    assert key not in second.urls
    assert second.obj["images"][1] == {"image_url": key}
