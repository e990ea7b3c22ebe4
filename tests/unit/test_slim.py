"""``providers._slim``: a large OpenAI images reply parsed from a copy whose long
strings are emptied gives what parsing the reply itself gives, or says it cannot."""

from __future__ import annotations

import base64
import os

import msgspec
import pytest

from proxy.errors import UpstreamProtocolError
from proxy.providers import _slim
from proxy.providers._openai_compat import parse_images

B64 = base64.b64encode(os.urandom(3 * _slim.LONG)).decode()
USAGE = {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}


def parsed(body: bytes) -> tuple[int, object, bytes]:
    got = parse_images("p", body)
    return got.images, got.usage, got.body


@pytest.mark.parametrize(
    "reply",
    [
        {"created": 1, "data": [{"b64_json": B64}, {"b64_json": B64}], "usage": USAGE},
        {"data": [B64], "note": "x" * 10, "usage": USAGE},
        {"data": [{"b64_json": B64, "revised_prompt": 'a "quoted" \\ prompt'}]},
        # A long string with an escape is kept whole, the other emptied.
        {"data": [{"b64_json": B64[:-8] + "\\/" + B64[-6:]}, B64], "usage": USAGE},
    ],
)
async def test_the_slim_copy_parses_as_the_reply(reply: dict[str, object]) -> None:
    body = msgspec.json.encode(reply)
    slim = await _slim.slimmed(body)
    assert slim is not None
    assert len(slim) < len(body)
    images, usage, _ = parsed(slim)
    assert (images, usage) == parsed(body)[:2]
    assert (b"\\/" in slim) == (b"\\/" in body)


async def test_nothing_long_or_an_unterminated_string_is_none() -> None:
    assert await _slim.slimmed(b'{"data":[{"b64_json":"aGk="}]}') is None
    assert await _slim.slimmed(b'{"data":["' + B64.encode()) is None


async def test_too_many_strings_are_left_to_the_whole_decode() -> None:
    body = msgspec.json.encode({"data": [B64], "x": ["a"] * (_slim.MAX_STOPS + 1)})
    assert await _slim.slimmed(body) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"data":["' + B64.encode() + b'"],}',  # a trailing comma
        b'{"data":"' + B64.encode() + b'"}',  # data not a list
        b'{"data":["' + B64.encode() + b'"],"usage":"' + B64.encode() + b'"}',
        b'{"data":["' + B64.encode() + b'"]} x',
        b'{"data":[x"' + B64.encode() + b'"]}',
    ],
)
async def test_what_the_reply_fails_the_slim_copy_fails(body: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_images("p", body)
    slim = await _slim.slimmed(body)
    assert slim is not None
    with pytest.raises(UpstreamProtocolError):
        parse_images("p", slim)
