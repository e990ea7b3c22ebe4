"""Counting a JSON body's members before decoding it (``limits.max_json_members``)."""

from __future__ import annotations

import msgspec
import pytest

from proxy.errors import InvalidRequest
from proxy.json_body import _count_members

LIMIT = 100


def _counts(body: object | bytes, limit: int = LIMIT) -> bool:
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    refusal = None
    try:
        _count_members(bytearray(raw), limit)
    except InvalidRequest as exc:
        refusal = exc
    if refusal is None:
        return True
    assert refusal.code == "too_many_members"
    assert f"limit of {limit}" in refusal.message
    return False


@pytest.mark.parametrize(
    ("body", "admitted"),
    [
        ({f"k{i}": 1 for i in range(99)}, True),
        ({f"k{i}": 1 for i in range(101)}, False),
        (list(range(99)), True),
        (list(range(101)), False),
        ({"a": {"b": [{f"k{i}": [] for i in range(60)}]}}, False),  # nested: all count
        ([[]] * 60, False),  # empty containers count too
    ],
)
def test_members_and_elements_count_wherever_they_are(
    body: object, admitted: bool
) -> None:
    assert _counts(body) is admitted


def test_commas_and_brackets_inside_strings_do_not_count() -> None:
    prompt = 'a, b: [c], {d}, "quoted, \\\\" ' * 500
    body = {"prompt": prompt, "metadata": {f"k{i}": "v, w" for i in range(16)}}
    assert _counts(body)
    assert not _counts({**body, **{f"x{i}": 1 for i in range(100)}})


def test_escaped_quotes_do_not_end_a_string() -> None:
    # Were the escaped quote read as its end, the commas after it would count.
    tricky = '\\", ' * 200 + "\\\\"  # ends in an escaped backslash
    raw = b'{"p": "' + tricky.encode() + b'", "q": 1}'
    msgspec.json.decode(raw)  # valid JSON
    assert _counts(raw)
    assert not _counts(b'{"p": "\\\\", ' + b'"k": 1, ' * 101 + b'"z": 1}')


def test_many_bare_strings_are_refused_without_a_count() -> None:
    # Not JSON; were it parsed string by string, ten million iterations.
    assert not _counts(b"[" + b'""' * 10_000_000 + b"," * 200 + b"]")


def test_too_many_escaped_quotes_past_the_limit_are_refused() -> None:
    # Skipping strings past 65,536 escapes would cost a loop per escape: refused.
    raw = b'["' + b'\\"' * 70_000 + b'"' + b", 1" * 200 + b"]"
    assert not _counts(raw)
