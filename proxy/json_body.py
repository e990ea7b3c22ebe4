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
