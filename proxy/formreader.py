"""A streaming multipart/form-data reader.

``FormReader`` splits ``multipart/form-data`` (RFC 7578 over RFC 2046) with
``bytes.find`` on the delimiter, handing each part's body out in the chunks it arrived
in: the part is never held whole. It replaces aiohttp's ``MultipartReader``, whose
line-by-line reads and per-part header parsing were about a fifth of a small edit's
CPU. Lines end in CRLF as the RFC and every HTTP client have it; nested multipart and
bodies that end before the closing delimiter are refused. The body it reads is a
``proxy.bodystream.BodyStream``.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Protocol

from proxy.bodystream import BodyStream
from proxy.disposition import disposition_names
from proxy.errors import InvalidRequest

# RFC 2046 5.1.1: 1 to 70 characters, the last not a space.
_BOUNDARY_PARAM = re.compile(
    r';[ \t]*boundary[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^;\s"]+))', re.IGNORECASE
)
_BCHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_CHARSET_PARAM = re.compile(
    r';[ \t]*charset[ \t]*=[ \t]*"?([A-Za-z0-9._:-]{1,40})"?', re.IGNORECASE
)
_ESCAPED = re.compile(r"\\(.)")
_MAX_HEAD = 16 * 1024  # one part's header block
_MAX_PADDING = 256  # RFC 2046 transport padding after a delimiter


def malformed(reason: str) -> InvalidRequest:
    return InvalidRequest(f"malformed multipart body: {reason}")


def boundary_of(content_type: str) -> bytes:
    """The ``boundary`` parameter of a multipart Content-Type, checked."""
    match = _BOUNDARY_PARAM.search(content_type)
    if match is None:
        raise malformed("the Content-Type has no boundary parameter")
    quoted, bare = match.groups()
    value = bare if quoted is None else _ESCAPED.sub(r"\1", quoted)
    if not _BCHARS.fullmatch(value):
        raise malformed("the boundary must be 1 to 70 characters of RFC 2046's set")
    return value.encode("ascii")


class Chunks(Protocol):
    """A part's body, chunk by chunk (``FormReader``, or a digest of it)."""

    async def read(self) -> bytes | memoryview: ...

    def ready(self) -> bool:
        """Whether a read would not wait for the client."""
        ...


class Watch(Protocol):
    """Sees each part as its headers are read (``proxy.forward``); for a file part
    it may give the chunks the sink reads instead of ``reader``."""

    async def part(
        self, fields: dict[str, Any], part: Part, reader: Chunks, *, file: bool
    ) -> Chunks | None: ...


class Part:
    """One part's headers, as far as a form needs them."""

    __slots__ = ("charset", "filename", "name", "nested")

    def __init__(self, block: bytes) -> None:
        parse = _kept_headers if len(block) <= _CACHED_BLOCK else _part_headers
        self.name, self.filename, self.nested, self.charset = parse(block)


def _part_headers(block: bytes) -> tuple[str | None, str | None, bool, str | None]:
    """``(name, filename, nested, charset)`` of a part's header block."""
    disposition = ""
    content_type = ""
    for line in block.split(b"\r\n") if block else ():
        key, sep, value = line.partition(b":")
        if not sep or not key or key != key.strip():
            raise malformed(f"invalid part header line {line[:60]!r}")
        key = key.lower()
        if key == b"content-disposition" and not disposition:
            disposition = value.decode("utf-8", "replace").strip()
        elif key == b"content-type" and not content_type:
            content_type = value.decode("latin-1").strip()
    name, filename = disposition_names(disposition)
    match = _CHARSET_PARAM.search(content_type)
    charset = match.group(1) if match else None
    return name, filename, content_type[:10].lower() == "multipart/", charset


# SDKs send the same few header blocks in every request (only a file's name varies):
# those up to this long are remembered, at most _KEPT_BLOCKS (about 200 KiB whatever
# clients send). A block refused raises, and is never kept.
_CACHED_BLOCK = 256
_KEPT_BLOCKS = 512
_kept_headers = functools.lru_cache(maxsize=_KEPT_BLOCKS)(_part_headers)


class FormReader:
    """``next()`` gives each part's headers, ``read()`` its body chunk by chunk.

    Body chunks are views into the chunks the socket delivered, not copies: a large
    part is copied once, by whoever keeps it.
    """

    def __init__(self, body: BodyStream, boundary: bytes) -> None:
        self._body = body
        self._delim = b"\r\n--" + boundary
        # A CRLF in front so the first delimiter (at the very start) is found like the
        # others; anything before it is preamble and discarded.
        self._data = b"\r\n"
        self._pos = 0  # where the unparsed bytes of _data begin
        self._in_part = False
        self._done = False

    def give_turn(self) -> None:
        self._body.give_turn()

    def part_read(self) -> bool:
        """Whether the current part's last bytes have been handed out by ``read``."""
        return not self._in_part

    def ready(self) -> bool:
        """Whether ``read`` has bytes at hand, so it would not wait for the client."""
        return (
            not self._in_part
            or len(self._data) - self._pos >= len(self._delim)
            or self._body.buffered()
        )

    async def _next_chunk(self) -> bytes:
        chunk = await self._body.read()
        if not chunk:
            raise malformed("the body ends before the closing boundary")
        return chunk

    async def _more(self) -> None:
        """Join the next chunk to what is left (used where little is left)."""
        chunk = await self._next_chunk()
        self._data = self._data[self._pos :] + chunk
        self._pos = 0

    async def next(self) -> Part | None:
        """The next part's headers (the rest of the current part is skipped)."""
        while self._in_part:
            await self.read()
        if self._done:
            return None
        delim = self._delim
        while (at := self._data.find(delim, self._pos)) < 0:
            # Preamble (or a part skipped): keep only what may start a delimiter.
            left = self._data[max(self._pos, len(self._data) - len(delim) + 1) :]
            chunk = await self._next_chunk()
            self._pos = 0
            if len(chunk) < len(delim):
                self._data = left + chunk
                continue
            # A delimiter split between them is found in their joined ends; the chunk
            # itself is not joined to what was left (that copied it, often an image).
            self._data = chunk
            at = (left + chunk[: len(delim)]).find(delim)
            if 0 <= at < len(left):
                at -= len(left)  # it starts before the chunk
                break
        self._pos = at + len(delim)
        while len(self._data) - self._pos < 2:
            await self._more()
        if self._data.startswith(b"--", self._pos):
            self._done = True
            return None
        while (eol := self._data.find(b"\r\n", self._pos)) < 0:
            rest = len(self._data) - self._pos
            if rest > _MAX_PADDING or self._data.find(b"\n", self._pos) >= 0:
                raise malformed("a boundary line does not end in CRLF")
            await self._more()
        if self._data[self._pos : eol].strip(b" \t"):
            raise malformed("unexpected bytes after a boundary")
        # The header block runs from this CRLF to the blank line (it may be empty).
        self._pos = eol
        limit = eol + _MAX_HEAD
        while (end := self._data.find(b"\r\n\r\n", self._pos, limit)) < 0:
            if len(self._data) >= limit:
                raise malformed(f"a part's headers are over {_MAX_HEAD} bytes")
            await self._more()
            limit = _MAX_HEAD
        part = Part(self._data[self._pos + 2 : end])
        self._pos = end + 4
        self._in_part = True
        return part

    async def read(self) -> memoryview:
        """The next chunk of the current part's body; empty at its end."""
        if not self._in_part:
            return memoryview(b"")
        delim = self._delim
        size = len(delim)
        while True:
            data, pos = self._data, self._pos
            at = data.find(delim, pos)
            if at >= 0:
                self._in_part = False
                self._pos = at
                return memoryview(data)[pos:at]
            # Everything but a tail that may be the start of a split delimiter.
            safe = len(data) - size + 1
            if safe > pos:
                # Only that tail stays here: the chunk lives as long as the view
                # handed out, not while this body waits for its client.
                self._data, self._pos = data[safe:], 0
                return memoryview(data)[pos:safe]
            chunk = await self._next_chunk()
            tail = data[pos:]
            # Does a delimiter start in the tail and run on into the chunk?
            probe = tail + chunk[:size]
            if len(chunk) >= size and not 0 <= probe.find(delim) < len(tail):
                self._data, self._pos = chunk, 0
                if tail:
                    return memoryview(tail)
            else:
                self._data, self._pos = tail + chunk, 0
