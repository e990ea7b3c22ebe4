"""JSON request bodies: read with a cap and decoded into a plain object, with a 400
that names the member when the text is not valid (a lone surrogate, say).

An edit's big data URLs are taken out of the body before it is decoded
(``read_edit_json``): each stays a view of the body's bytes, its base64
checked slice by slice and decoded only where bytes are sent, instead of becoming a
str of megabytes that is then decoded, copied and encoded again.

Conversion into the typed request is ``proxy.parsing``'s; this module only reads.
"""

from __future__ import annotations

import asyncio
import binascii
import itertools
import re
import secrets
from typing import Any, NamedTuple

import msgspec
import pybase64
from aiohttp import web

from proxy.bodystream import request_body
from proxy.config import Limits
from proxy.errors import InvalidRequest
from proxy.models import MAX_IMAGE_URL, THREAD_BASE64
from proxy.pixels import HEAD_BYTES

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
# The keys that stand for taken data URLs: unguessable, without a syscall per body.
_NONCE = secrets.token_hex(8)
_BODIES = itertools.count()
# Data URLs shorter than this are decoded with the body: taking them out saves little.
_TAKE_BYTES = 16 * 1024
_MAX_HEADER = 256  # "data:image/png;base64," and a few parameters, at most
# Quotes followed by "data: looked at: an edit holds 16 images and a mask.
_MAX_CANDIDATES = 64
# "data:" then printable ASCII but for the quote and backslash (which would need
# escapes): a header whose bytes are its text.
_HEADER = re.compile(rb"data:[\x20\x21\x23-\x5b\x5d-\x7e]*")
# Base64 is checked in slices of this many characters (a multiple of 4).
_CHECK_SLICE = 1024 * 1024
_PAD = ord("=")


async def read_json(request: web.Request, limits: Limits) -> dict[str, Any]:
    """Read and decode a JSON object body, capped at ``max_json_bytes``."""
    return decode_json(await _read(request, limits))


async def _read(request: web.Request, limits: Limits) -> bytearray:
    """The body, its members counted (``_count_members``) chunk by chunk as it comes:
    one pass over megabytes at its end held the event loop."""
    body = bytearray()
    timeout, cap = limits.client_idle_timeout_s, limits.max_json_bytes
    limit = limits.max_json_members
    counted = 0
    async with request_body(request, timeout, cap) as stream:
        while chunk := await stream.read():
            start = len(body)
            body += chunk
            if counted <= limit:
                counted += _structure(body, start, len(body), limit + 1 - counted)
    if counted > limit:
        _count_members(body, limit)
    return body


def decode_json(body: bytearray) -> dict[str, Any]:
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


class DataUrl(NamedTuple):
    """A data URL taken out of a body: ``media`` stands between ``data:`` and the
    comma, ``payload`` is a view of its (valid) base64 in the body, ``head`` the first
    ``HEAD_BYTES`` of it decoded and ``size`` the length of all of it decoded."""

    media: str
    payload: memoryview
    head: bytes
    size: int

    def text(self) -> str:
        """The URL as decoding the whole body would have given it."""
        return f"data:{self.media}," + str(self.payload, "ascii")


class EditBody(NamedTuple):
    """A decoded edit body; each data URL in ``urls`` stands in ``obj`` as its key."""

    obj: dict[str, Any]
    urls: dict[str, DataUrl]

    def canonical(self) -> dict[str, Any]:
        """``obj`` as decoding the whole body gives it (an idempotency fingerprint)."""
        if not self.urls:
            return self.obj
        obj = dict(self.obj)
        obj["images"] = [_restored(ref, self.urls) for ref in obj["images"]]
        if "mask" in obj:
            obj["mask"] = _restored(obj["mask"], self.urls)
        return obj


async def read_edit_json(request: web.Request, limits: Limits) -> EditBody:
    """``read_json`` for an edit, its big data URLs taken out before the decode.

    Only what decodes to the very same object is taken out: a string of at least
    ``_TAKE_BYTES`` opening with ``data:``, a header of printable ASCII and valid
    base64 (no escapes, so its bytes are its text), found as ``images[i].image_url``
    or ``mask.image_url``. Anything else, and any body that does not decode, goes the
    way of ``read_json``, with its errors.
    """
    return await decode_edit(await _read(request, limits))


async def decode_edit(body: bytearray) -> EditBody:
    """``read_edit_json``'s decode of a body read (and its members counted)."""
    spliced, urls = await _take_data_urls(body)
    if urls:
        try:
            obj = _json_decoder.decode(spliced)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            obj = None
        if isinstance(obj, dict) and _placed(obj, urls) == len(urls):
            return EditBody(obj, urls)
    return EditBody(decode_json(body), {})


async def _take_data_urls(body: bytearray) -> tuple[bytes, dict[str, DataUrl]]:
    """``body`` with its big data URLs swapped for keys (``\\uffff<nonce>:<n>``, which
    no client can guess), and what each key stands for."""
    urls: dict[str, DataUrl] = {}
    pieces: list[bytes | memoryview] = []
    view = memoryview(body)
    nonce = f"{_NONCE}:{next(_BODIES)}"
    pos = start = 0
    for _ in range(_MAX_CANDIDATES):
        at = body.find(b'"data:', pos)
        if at < 0:
            break
        pos = at + 1
        end = body.find(b'"', pos)
        # A backslash before the quote: an escaped quote inside a string (or not
        # JSON at all); the decode reads it.
        if (
            end < 0
            or not _TAKE_BYTES <= end - pos <= MAX_IMAGE_URL
            or (at and body[at - 1] == _BACKSLASH)
        ):
            continue
        comma = body.find(b",", pos, min(end, pos + _MAX_HEADER))
        if comma < 0 or not _HEADER.fullmatch(body, pos, comma):
            continue
        payload = view[comma + 1 : end]
        try:
            head = await _checked(payload)
        except (binascii.Error, ValueError):
            continue  # the decode and resolve_ref name the field
        key = f"{_MARKER}{nonce}:{len(urls)}"
        media = body[pos + 5 : comma].decode("ascii")
        urls[key] = DataUrl(media, payload, head, _decoded_size(payload))
        pieces += (view[start:at], f'"\\uffff{nonce}:{len(urls) - 1}"'.encode())
        start = pos = end + 1
    if not urls:
        return b"", urls
    pieces.append(view[start:])
    return b"".join(pieces), urls


async def _checked(payload: memoryview) -> bytes:
    """The first ``HEAD_BYTES`` of ``payload`` decoded, once all of it is found to be
    strict base64 (a worker thread's work from ``THREAD_BASE64``)."""
    if len(payload) < THREAD_BASE64:
        return _check_base64(payload)
    return await asyncio.to_thread(_check_base64, payload)


def _check_base64(payload: memoryview) -> bytes:
    # Decoded slice by slice and dropped: a JSON upstream takes the base64 as it is,
    # so the bytes are made only where they are sent (StoredImage.read). A slice but
    # the last may not end in padding, which only the whole may.
    if len(payload) % 4:
        raise ValueError("base64 of a length not a multiple of 4")
    head = b""
    for start in range(0, len(payload), _CHECK_SLICE):
        piece = payload[start : start + _CHECK_SLICE]
        decoded = pybase64.b64decode(piece, validate=True)
        if piece[-1] == _PAD and start + _CHECK_SLICE < len(payload):
            raise ValueError("padding inside base64")
        head = head or decoded[:HEAD_BYTES]
    return head


def _decoded_size(payload: memoryview) -> int:
    return len(payload) // 4 * 3 - (payload[-1] == _PAD) - (payload[-2] == _PAD)


def _placed(obj: dict[str, Any], urls: dict[str, DataUrl]) -> int:
    """How many keys of ``urls`` stand where an image's ``image_url`` goes."""
    images = obj.get("images")
    refs = [*images] if isinstance(images, list) else []
    refs.append(obj.get("mask"))
    return sum(
        1
        for ref in refs
        if isinstance(ref, dict)
        and isinstance(url := ref.get("image_url"), str)
        and url in urls
    )


def _restored(ref: Any, urls: dict[str, DataUrl]) -> Any:
    url = ref.get("image_url") if isinstance(ref, dict) else None
    taken = urls.get(url) if isinstance(url, str) else None
    return ref if taken is None else {**ref, "image_url": taken.text()}


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
