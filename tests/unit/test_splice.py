"""``accounting.splice`` appends members to an encoded JSON object without decoding it."""

from __future__ import annotations

import msgspec
import pytest

from proxy.accounting import splice, splice_parts

MEMBERS = b'"provider":"openai","cost":0.04'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{}", {"provider": "openai", "cost": 0.04}),
        (b" {\n}\n", {"provider": "openai", "cost": 0.04}),
        (b'{"a":1}', {"a": 1, "provider": "openai", "cost": 0.04}),
        (b'{"a":{} }\r\n', {"a": {}, "provider": "openai", "cost": 0.04}),
        (b'{"data":[{"b64_json":"QUJD"}]}\t',
         {"data": [{"b64_json": "QUJD"}], "provider": "openai", "cost": 0.04}),
    ],
)  # fmt: skip
def test_splice(body: bytes, expected: dict[str, object]) -> None:
    out = splice(body, MEMBERS)
    assert isinstance(out, bytes)
    assert msgspec.json.decode(out) == expected


def test_splice_keeps_a_large_body_byte_for_byte() -> None:
    payload = b"A" * 1_500_000
    body = b'{"data":[{"b64_json":"' + payload + b'"}]}'
    out = splice(body, MEMBERS)
    assert out == body[:-1] + b"," + MEMBERS + b"}"


@pytest.mark.parametrize(
    "body", [b"{}", b" {\n}\n", b'{"a":1}', b'{"a":{} }\r\n', b'{"d":"QUJD"}\t']
)
def test_splice_parts_are_splice_without_copying_the_body(body: bytes) -> None:
    head, tail = splice_parts(body, MEMBERS)
    assert isinstance(head, memoryview)
    assert head.obj is body  # a view of the provider's bytes, not a copy
    assert b"".join((head, tail)) == splice(body, MEMBERS)
