"""JSON request bodies: read with a cap and decoded into a plain object, with a 400
that names the member when the text is not valid (a lone surrogate, say).

Conversion into the typed request is ``proxy.parsing``'s; this module only reads.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from aiohttp import web

from proxy.config import Limits
from proxy.errors import InvalidRequest
from proxy.formreader import request_body

_json_decoder = msgspec.json.Decoder()
# A surrogate pair, a lone surrogate escape, or any other escape (so that an escaped
# backslash is consumed whole and never read as the start of a \u escape).
_JSON_ESCAPE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    rb"|\\u[0-9a-fA-F]{4}|\\."
)
_BACKSLASH = ord("\\")
_MAX_ESCAPES = 65536  # backslashes before quotes looked at while counting members
_TOO_MANY_ESCAPES = -2
_MARKER = "\uffff"  # a noncharacter: stands in for a lone surrogate while searching
_MARKER_ESCAPE = b"\\uffff"
_MAX_JSON_SEARCH = 64


async def read_json(request: web.Request, limits: Limits) -> dict[str, Any]:
    """Read and decode a JSON object body, capped at ``max_json_bytes``."""
    body = bytearray()
    timeout, cap = limits.client_idle_timeout_s, limits.max_json_bytes
    async with request_body(request, timeout, cap) as stream:
        while chunk := await stream.read():
            body += chunk
    _count_members(body, limits.max_json_members)
    try:
        obj = _json_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise _lone_surrogate(body) or InvalidRequest(
            f"the body is not valid JSON: {exc}"
        ) from None
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not valid UTF-8 JSON") from None
    except RecursionError:
        raise InvalidRequest("the JSON body is nested too deeply") from None
    if not isinstance(obj, dict):
        raise InvalidRequest("the body must be a JSON object")
    return obj


def _count_members(body: bytearray, limit: int) -> None:
    """400 if ``body`` holds more than ``limit`` members and elements, before any
    Python object is built for them.

    Each member or element past a container's first follows a comma, and each
    container opens with a brace or bracket, so their count outside strings bounds
    them. Counting these bytes everywhere with ``find`` (memchr: base64 holds none of
    them), up to the limit, settles almost every body. Only past it (a prompt full of
    commas) are strings skipped, each with ``find``, stopping once the limit is
    passed: a valid document holds at most two strings per member, plus one.
    """
    if _structure(body, 0, len(body), limit + 1) <= limit:
        return
    count = strings = pos = 0
    escapes = [_MAX_ESCAPES]
    while count <= limit and strings <= 2 * limit + 1:
        start = body.find(b'"', pos)
        end = len(body) if start < 0 else start
        count += _structure(body, pos, end, limit + 1 - count)
        end = _closing_quote(body, start, escapes) if start >= 0 else -1
        if end == _TOO_MANY_ESCAPES:
            strings = 2 * limit + 2  # refused: not worth telling apart
        if end < 0:
            break  # the end, or an unterminated string (the decoder says so)
        strings += 1
        pos = end + 1
    if count > limit or strings > 2 * limit + 1:
        raise InvalidRequest(
            f"the JSON body holds more than the limit of {limit} members and "
            "elements (limits.max_json_members)",
            code="too_many_members",
        )


def _structure(body: bytearray, start: int, end: int, cap: int) -> int:
    """How many of ``,{[`` lie in ``body[start:end]``, counting at most ``cap``."""
    found = 0
    for byte in b",{[":
        at = body.find(byte, start, end)
        while at >= 0 and found < cap:
            found += 1
            at = body.find(byte, at + 1, end)
    return found


def _closing_quote(body: bytearray, start: int, escapes: list[int]) -> int:
    """Where the string opened at ``start`` ends (-1: nowhere), skipping escaped
    quotes; past ``_MAX_ESCAPES`` backslashes in all, ``_TOO_MANY_ESCAPES``."""
    end = body.find(b'"', start + 1)
    while end > 0 and body[end - 1] == _BACKSLASH:
        run = 1
        while body[end - 1 - run] == _BACKSLASH:
            run += 1
        escapes[0] -= run
        if escapes[0] < 0:
            return _TOO_MANY_ESCAPES
        if run % 2 == 0:
            break
        end = body.find(b'"', end + 1)
    return end


def _lone_surrogate(body: bytearray) -> InvalidRequest | None:
    """A 400 naming the member that holds a lone ``\\uD800``-``\\uDFFF`` escape.

    msgspec refuses such a document without saying where; on that error path only,
    each lone escape is swapped for a marker and the decoded document searched for it.
    """
    found = False

    def swap(match: re.Match[bytes]) -> bytes:
        nonlocal found
        escape = match.group()
        if len(escape) == 6 and escape[2] in b"dD" and escape[3] in b"89abcdefABCDEF":
            found = True
            return _MARKER_ESCAPE
        return escape

    try:
        obj = _json_decoder.decode(_JSON_ESCAPE.sub(swap, body))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    param = _find_marker(obj, "", 0) if found else None
    if param is None:
        return None
    where = param or "the body"
    return InvalidRequest(
        f"'{where}' is not valid Unicode text (it holds a lone surrogate)",
        param=param or None,
    )


def _find_marker(value: Any, path: str, depth: int) -> str | None:
    if isinstance(value, str):
        return path if _MARKER in value else None
    if depth > _MAX_JSON_SEARCH:
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if _MARKER in key:
                return path
            found = _find_marker(item, f"{path}.{key}" if path else key, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _find_marker(item, f"{path}[{i}]", depth + 1)
            if found is not None:
                return found
    return None
