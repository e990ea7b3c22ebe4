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

import secrets

import aiofiles
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import BytesPayload, Payload

from proxy.models import StoredImage

_READ = 256 * 1024
# Under aiohttp's 1 MiB mark for bytes bodies (it warns above, as a large write would
# hold the event loop); larger in-memory forms are written segment by segment.
_ONE_BUFFER = 512 * 1024
_ESCAPES = str.maketrans({'"': "%22", "\r": "%0D", "\n": "%0A"})


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
    name = "".join(c for c in name if c.isprintable() and c not in "\"'").strip()
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
        self.boundary = secrets.token_hex(16)
        self._segments: list[bytes | StoredImage] = []
        self._size = 0
        self._on_disk = False

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _add(self, segment: bytes | StoredImage, size: int) -> None:
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
        if image.data is not None:
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
        if self._on_disk or size > _ONE_BUFFER:
            return _Streamed(segments, size, self.content_type)
        parts: list[bytes] = segments  # type: ignore[assignment]  # all bytes here
        return BytesPayload(b"".join(parts), content_type=self.content_type)


class _Streamed(Payload):
    """Segments written in order; temp files read in chunks on aiofiles' threads."""

    _autoclose = True  # each file is opened and closed within ``write``

    def __init__(
        self, segments: list[bytes | StoredImage], size: int, content_type: str
    ) -> None:
        super().__init__(segments, content_type=content_type)
        self._segments = segments
        self._size = size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed form has no text form")

    async def write(self, writer: AbstractStreamWriter) -> None:
        for segment in self._segments:
            if isinstance(segment, bytes):
                await writer.write(segment)
                continue
            assert segment.path is not None
            async with aiofiles.open(segment.path, "rb") as f:
                while chunk := await f.read(_READ):
                    await writer.write(chunk)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        # The length sent is this form's own size, so there is nothing to cut.
        await self.write(writer)


class InMemoryBody(BytesPayload):
    """A (JSON) body already in memory, written in slices of ``_READ`` bytes.

    One write of megabytes held the event loop (aiohttp joins its headers with the
    first write: a copy of the whole body; 60 MiB of data URLs took 50 ms): views of
    the body go out one by one, each waiting for the transport to drain. aiohttp's
    ``BytesPayload`` also warns past 1 MiB that raw bytes "might lock the event
    loop", and an image body is usually past 1 MiB.
    """

    def __init__(self, value: bytes) -> None:
        Payload.__init__(self, value, content_type="application/octet-stream")
        self._size = len(value)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = memoryview(self._value)
        if content_length is not None:
            view = view[:content_length]
        for start in range(0, len(view), _READ):
            await writer.write(view[start : start + _READ])
