"""``ReplyScanner`` and ``RedactingStream``: a reply fed in any pieces gives the same
JSON (less the provider's own ``provider`` and ``cost``), its usage and image count;
a secret split at any byte between two pieces is redacted."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from proxy.credentials import StaticKey
from proxy.redact import Redactor
from proxy.reply_scan import MAX_HELD, ReplyScanner

DOCS: list[dict[str, Any]] = [
    {
        "created": 1,
        "data": [{"b64_json": "QUJD" * 500}, {"b64_json": "eA=="}],
        "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
    },
    {"data": [], "provider": "x", "cost": 1.5, 'q"uote': 'a\\b"c', "n": [1, {"a": []}]},
    {"cost": None, "data": [{"url": "https://x/y"}], "usage": None},
]


def scan(body: bytes, piece: int) -> tuple[bytes, ReplyScanner]:
    scanner = ReplyScanner()
    out = b"".join(
        scanner.feed(body[i : i + piece]) for i in range(0, len(body), piece)
    )
    scanner.close()
    return out + b"}", scanner


@pytest.mark.parametrize("doc", DOCS)
@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("piece", [1, 2, 3, 7, 100, 1 << 20])
def test_any_pieces_give_the_same_reply(
    doc: dict[str, Any], indent: int | None, piece: int
) -> None:
    body = msgspec.json.encode(doc)
    if indent is not None:
        body = msgspec.json.format(body, indent=indent)
    out, scanner = scan(body, piece)
    expected = {k: v for k, v in doc.items() if k not in ("provider", "cost")}
    assert msgspec.json.decode(out) == expected
    assert scanner.images == len(doc["data"])
    usage = doc.get("usage")
    assert (scanner.usage and scanner.usage.total_tokens) == (usage and 12)


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [',
        b"[1]",
        b'{"data": []} x',
        b"{}",
        b'{"usage": 5, "data": []}',
        b'{"data": [], "usage": {"input_tokens": "' + b"1" * MAX_HELD + b'"}}',
        b'{"' + b"k" * 300 + b'": 1, "data": []}',
    ],
)
def test_what_is_not_an_images_reply_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        scan(body, 5)


SECRET = "sk-test-0123456789abcdef"


@pytest.mark.parametrize("split", range(60))
def test_a_secret_split_anywhere_is_redacted(split: int) -> None:
    redactor = Redactor([StaticKey("Authorization", SECRET, prefix="Bearer ")])
    text = f'{{"a": "Bearer {SECRET}", "b": "%s", "c": "{SECRET}"}}'.encode()
    stream = redactor.stream()
    out = b"".join(
        (stream.feed(text[:split]), stream.feed(text[split:]), stream.flush())
    )
    assert out == redactor.data(text)
    assert SECRET.encode() not in out
    assert out.count(b"[redacted]") == 2


def test_without_secrets_pieces_pass_as_they_are() -> None:
    stream = Redactor().stream()
    assert bytes(stream.feed(b"abc")) == b"abc"
    assert stream.flush() == b""
