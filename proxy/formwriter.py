"""multipart/form-data request bodies for providers, built without aiohttp's FormData.

A form is a list of segments: header and text bytes, and images, held in memory or in
a request's temp file. Its length is known before the first byte is sent, so the
upstream gets a Content-Length, not chunked encoding. A small form goes out as one
buffer (one write); one with temp files streams them in chunks from disk. aiohttp's
``FormData``/``MultipartWriter`` built a payload object, a header dict and several
writes per part: about a tenth of a small edit's CPU.

Names and filenames are escaped as browsers and the OpenAI SDKs do (WHATWG: ``"``,
CR and LF percent-encoded); values go out as UTF-8.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, NamedTuple

import aiofiles
import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import BytesPayload, Payload

from proxy.livebody import Pipe
from proxy.models import StoredImage

_READ = 256 * 1024
_YIELD_EVERY = 4 * _READ
# A temp file is read in blocks this large: each read is a trip to a worker thread.
_FILE_READ = 1024 * 1024
# Under aiohttp's 1 MiB mark for bytes bodies (it warns above, as a large write would
# hold the event loop); larger in-memory forms are written segment by segment.
_ONE_BUFFER = 512 * 1024
_ESCAPES = str.maketrans({'"': "%22", "\r": "%0D", "\n": "%0A"})


Segment = bytes | memoryview | StoredImage | Pipe

# Long enough for any real file name; the client's bytes go upstream, not its essays.
MAX_FILENAME = 128


def _quote(value: str) -> str:
    # translate() with a str-valued table walks the text character by character.
    if '"' in value or "\r" in value or "\n" in value:
        return value.translate(_ESCAPES)
    return value


def safe_filename(name: str) -> str:
    """The client's file name as it may go upstream: its last path segment, without
    control, format or quote characters, at most ``MAX_FILENAME`` characters with its
    extension kept; "" when nothing usable is left."""
    name = name.replace("\\", "/").rpartition("/")[2]
    if not name.isprintable() or '"' in name or "'" in name:
        # Character by character only when something is to go (rarely).
        name = "".join(c for c in name if c.isprintable() and c not in "\"'")
    name = name.strip()
    if name.strip(".") == "":
        return ""
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        keep = dot + ext if stem and len(ext) <= 16 else ""
        name = name[: MAX_FILENAME - len(keep)] + keep
    return name


class Form:
    """Fields and images in order; ``payload()`` gives the body to send."""

    def __init__(self) -> None:
        # os.urandom, as secrets.token_hex (three Python calls less).
        self.boundary = os.urandom(16).hex()
        self._segments: list[Segment] = []
        self._size = 0
        self._on_disk = False
        self._pipes: list[Pipe] = []
        self._sent = False  # a payload was made (a forwarded image went by)

    @property
    def resendable(self) -> bool:
        """Whether another ``payload()`` sends the same body: for an image forwarded
        as it arrives (``proxy.livebody``), once the intake's spooled copy is in."""
        return all(pipe.whole is not None for pipe in self._pipes)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def live(self) -> bool:
        return bool(self._pipes)

    async def replied(self, reply: aiohttp.ClientResponse) -> None:
        """``settled``, for a send whose ``reply`` came. One that came before the
        client's body ended ends the forward (the rest is only spooled; the provider
        never gets its last chunk): a provider that answered and stopped reading held
        the intake on a full pipe, past every timeout. The body cut off stopped the
        reply's read timeout (aiohttp's, started once a body is sent): started."""
        early = not all(pipe.ended for pipe in self._pipes)
        await self.settled(over=True)
        conn = reply.connection
        if early and conn is not None and conn.protocol is not None:
            conn.protocol.start_timeout()

    def forwarded(self) -> int:
        """The body's bytes with each forwarded image's as far as it went (a chunked
        body's size is known only once it was sent)."""
        end = len(f"--{self.boundary}--\r\n")
        return self._size + end + sum(pipe.taken for pipe in self._pipes)

    async def settled(self, *, over: bool = False) -> None:
        """Returns once every forwarded image's client body was read whole (a reply
        that came sooner waits for it); raises an abort's error. ``over``: the send
        is over, nothing takes from the pipes any more."""
        for pipe in self._pipes:
            if over:
                pipe.close()
            await pipe.settled()

    def aborted(self) -> BaseException | None:
        """Why a forwarded image's body was cut off (``Pipe.abort``), if it was."""
        for pipe in self._pipes:
            if pipe.error is not None:
                return pipe.error
        return None

    def _add(self, segment: Segment, size: int) -> None:
        self._segments.append(segment)
        self._size += size

    def add_field(self, name: str, value: str) -> None:
        text = (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"'
            f"\r\n\r\n{value}\r\n"
        ).encode()
        self._add(text, len(text))

    def add_file(self, name: str, image: StoredImage, filename: str) -> None:
        head = (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}";'
            f' filename="{_quote(filename)}"\r\nContent-Type: {image.content_type}'
            "\r\n\r\n"
        ).encode()
        self._add(head, len(head))
        if image.live is not None:
            self._add(image.live, 0)
            self._pipes.append(image.live)
        elif image.data is not None:
            self._add(image.data, len(image.data))
        else:
            self._add(image, image.size)
            self._on_disk = True
        self._add(b"\r\n", 2)

    def payload(self) -> Payload:
        """The body, ready for ``session.request(data=...)`` (a fresh one per call)."""
        end = f"--{self.boundary}--\r\n".encode()
        segments = [*self._segments, end]
        size = self._size + len(end)
        if self._pipes and not self._sent:
            # Its length is not known before its last byte: chunked encoding.
            self._sent = True
            return _Streamed(segments, None, self.content_type)
        if self._pipes:  # sent again: the spooled copies in the pipes' places
            segments = [_whole(s) for s in segments]
            size += sum(pipe.whole.size for pipe in self._pipes)
            return _Streamed(segments, size, self.content_type)
        if self._on_disk or size > _ONE_BUFFER:
            return _Streamed(segments, size, self.content_type)
        parts: list[bytes] = segments  # type: ignore[assignment]  # all bytes here
        return BytesPayload(b"".join(parts), content_type=self.content_type)


def _whole(segment: Segment) -> bytes | memoryview | StoredImage:
    if not isinstance(segment, Pipe):
        return segment
    whole = segment.whole
    assert isinstance(whole, StoredImage), "resent before the intake ended"
    return whole if whole.data is None else whole.data


def fresh_body(kwargs: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The arguments of one send (a ``Form`` becomes a payload) and the body's size."""
    data = kwargs.get("data")
    if isinstance(data, Form):
        payload = data.payload()
        return {**kwargs, "data": payload}, payload.size or 0
    if isinstance(data, bytes | bytearray):
        return {**kwargs, "data": InMemoryBody(bytes(data))}, len(data)
    if isinstance(data, Spliced):
        body = InMemoryBody(data)
        return {**kwargs, "data": body}, body.size or 0
    if isinstance(data, str):  # aiohttp sends text as UTF-8
        return kwargs, len(data.encode())
    return kwargs, 0


class Joined(Form):
    """A body of another type sent as its pieces in order, never joined: a JSON body
    with megabytes of data URLs (views of the client's body), whose join would be one
    long copy on the event loop. A ``Form`` to the upstream (a fresh payload per try)."""

    def __init__(self, pieces: list[bytes | memoryview], content_type: str) -> None:
        super().__init__()
        for piece in pieces:
            self._add(piece, len(piece))
        self._type = content_type

    @property
    def content_type(self) -> str:
        return self._type

    def payload(self) -> Payload:
        return _Streamed([*self._segments], self._size, self._type)


def joined(pieces: list[bytes | memoryview], content_type: str) -> bytes | Form:
    """``pieces`` as one buffer when small, else as a ``Joined`` body."""
    if sum(len(piece) for piece in pieces) > _ONE_BUFFER:
        return Joined(pieces, content_type)
    return b"".join(pieces)


class _Streamed(Payload):
    """Segments written in order; temp files read in chunks on aiofiles' threads."""

    _autoclose = True  # each file is opened and closed within ``write``

    def __init__(
        self, segments: list[Segment], size: int | None, content_type: str
    ) -> None:
        super().__init__(segments, content_type=content_type)
        self._segments = segments
        self._size = size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed form has no text form")

    async def write(self, writer: AbstractStreamWriter) -> None:
        for segment in self._segments:
            if isinstance(segment, Pipe):
                await _forward(segment, writer)
                continue
            if not isinstance(segment, StoredImage):
                await _write_sliced(writer, memoryview(segment))
                continue
            if segment.path is None:  # a data URL's base64, decoded to be sent
                await _write_sliced(writer, memoryview(await segment.read()))
                continue
            async with aiofiles.open(segment.path, "rb") as f:
                while chunk := await f.read(_FILE_READ):
                    await writer.write(chunk)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        # The length sent is this form's own size, so there is nothing to cut.
        await self.write(writer)


class Spliced(NamedTuple):
    """A JSON body in pieces (the JSON around each image's base64 text, and that text
    in slices), sent without joining them: joining or encoding a body of tens of MiB
    in one step held the event loop for as many tens of milliseconds."""

    pieces: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.pieces)

    def joined(self) -> bytes:
        return b"".join(self.pieces)


async def _forward(pipe: Pipe, writer: AbstractStreamWriter) -> None:
    """The pipe's chunks as they come; an abort raises out of here before the closing
    boundary, and aiohttp then sends no terminating chunk (its connection is closed)."""
    transport = getattr(writer, "transport", None)
    pipe.attach(transport)
    try:
        while (chunk := await pipe.take()) is not None:
            await writer.write(chunk)
    finally:
        pipe.close()


class InMemoryBody(BytesPayload):
    """A (JSON) body already in memory, written in slices of ``_READ`` bytes.

    One write of megabytes held the event loop (aiohttp joins its headers with the
    first write: a copy of the whole body; 60 MiB of data URLs took 50 ms): views of
    the body go out one by one, each waiting for the transport to drain. aiohttp's
    ``BytesPayload`` also warns past 1 MiB that raw bytes "might lock the event
    loop", and an image body is usually past 1 MiB.
    """

    def __init__(self, value: bytes | Spliced) -> None:
        Payload.__init__(self, value, content_type="application/octet-stream")
        self._pieces = value.pieces if isinstance(value, Spliced) else (value,)
        self._length = sum(len(p) for p in self._pieces)
        self._size = self._length

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        left = self._length if content_length is None else content_length
        for piece in self._pieces:
            view = memoryview(piece)[:left]
            left -= len(view)
            await _write_sliced(writer, view)


async def _write_sliced(writer: AbstractStreamWriter, view: memoryview) -> None:
    """``view`` in slices of ``_READ``, with a turn of the event loop every
    ``_YIELD_EVERY`` bytes: a write waits only when the transport's buffer is full,
    so to a fast reader 60 MiB went out in one step of the loop (290 ms)."""
    for start in range(0, len(view), _READ):
        await writer.write(view[start : start + _READ])
        if (start + _READ) % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
