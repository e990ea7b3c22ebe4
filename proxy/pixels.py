"""Image dimensions read from headers, and the process's bound on pixel work.

Decoding costs width x height x bands bytes whatever the file size: a 330 KB PNG can
declare 13000x13000 pixels and take 1.4 GB to convert. So every image the gateway holds
is measured from its header, without a decode, against ``limits.max_image_pixels``
before any provider sees it, and every decode (mask conversion) runs in a worker thread
holding one of ``limits.max_image_decodes`` slots. This module decodes nothing; it
only sets Pillow's own guards from the config.
"""

from __future__ import annotations

import asyncio
import struct
import warnings
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

import aiofiles
from PIL import Image, PngImagePlugin

from proxy.errors import InvalidRequest
from proxy.models import EditJob, ImageInput, StoredImage

T = TypeVar("T")

DEFAULT_MAX_PIXELS = 25_000_000
DEFAULT_MAX_DECODES = 2
# Enough for a PNG's IHDR, a WebP's first chunk and a JPEG's usual APP segments.
HEAD_BYTES = 64 * 1024
# PNG text and ICC chunks are inflated when the file is opened: at most 1 MiB per
# chunk (Pillow's default) and 4 MiB per image (Pillow allows 64 MiB).
MAX_TEXT_CHUNK = 1024 * 1024
MAX_TEXT_MEMORY = 4 * 1024 * 1024

# JPEG start-of-frame markers; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


def dimensions(head: bytes) -> tuple[int, int] | None:
    """Width and height that a PNG, JPEG or WebP header declares, or None when the
    first bytes do not say (not an image, or a JPEG frame header past ``head``)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(head) >= 24 and head[12:16] == b"IHDR":
            w, h = struct.unpack(">II", head[16:24])
            return w, h
        return None
    if head.startswith(b"\xff\xd8"):
        return _jpeg(head)
    if len(head) >= 16 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(head)
    return None


def _jpeg(head: bytes) -> tuple[int, int] | None:
    # Like Pillow, the last frame header before the scan wins: a file cannot pass a
    # small one here and have a large one decoded.
    size = None
    pos = 2
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            break
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image
            break
        if marker in _SOF and pos + 9 <= len(head):
            h, w = struct.unpack(">HH", head[pos + 5 : pos + 9])
            size = (w, h)
        pos += 2 + int.from_bytes(head[pos + 2 : pos + 4], "big")
    return size


def _webp(head: bytes) -> tuple[int, int] | None:
    kind = head[12:16]
    if kind == b"VP8X" and len(head) >= 30:  # canvas size, also of animations
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if kind == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def too_large(
    param: str, size: tuple[int, int] | None, max_pixels: int
) -> InvalidRequest:
    what = f"is {size[0]}x{size[1]} pixels" if size is not None else "has"
    return InvalidRequest(
        f"'{param}' {what}, more than this gateway's limit of {max_pixels} pixels "
        "per image",
        param=param,
        code="image_too_large",
    )


def check_size(size: tuple[int, int], max_pixels: int, *, param: str) -> None:
    if size[0] * size[1] > max_pixels:
        raise too_large(param, size, max_pixels)


class PixelGate:
    """The pixel cap per image and the slots for decodes, one per process."""

    def __init__(
        self,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_decodes: int = DEFAULT_MAX_DECODES,
    ) -> None:
        self.max_pixels = max_pixels
        self._slots = asyncio.Semaphore(max_decodes)

    async def check_inputs(self, job: EditJob) -> None:
        """Refuse a job with an image the gateway holds whose header declares more
        pixels than the cap. The mask goes first: it is the image that is decoded."""
        named: list[tuple[ImageInput, str]] = []
        if job.mask is not None:
            named.append((job.mask, "mask"))
        for i, image in enumerate(job.images):
            # Multipart errors name the form field, JSON ones the array element.
            named.append(
                (image, "image" if job.source == "multipart" else f"images[{i}]")
            )
        for image, param in named:
            if isinstance(image, StoredImage):
                await self.check_stored(image, param=param)

    async def check_stored(self, image: StoredImage, *, param: str) -> None:
        """Refuse ``image`` if its header declares more pixels than the cap.

        A header this does not understand passes: the gateway does not decode such
        an image, and where it decodes one Pillow's parsed size is checked again."""
        if image.live is not None:  # forwarded as it arrives: its first bytes
            head: bytes | None = image.live.head[:HEAD_BYTES]
        else:
            head = image.head(HEAD_BYTES)
        if head is None:
            assert image.path is not None
            async with aiofiles.open(image.path, "rb") as f:
                head = await f.read(HEAD_BYTES)
        size = dimensions(head)
        if size is not None:
            check_size(size, self.max_pixels, param=param)

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` in a worker thread once a decode slot is free."""
        await self._slots.acquire()
        future = asyncio.get_running_loop().run_in_executor(None, work)
        # The slot is held until the thread ends, even when the request is cancelled
        # meanwhile: a running decode cannot be stopped, and its memory is still used.
        future.add_done_callback(lambda _: self._slots.release())
        return await asyncio.shield(future)


# Set per request by the pipeline (proxy.handlers), read by the mask conversions that
# adapters call: ProviderAdapter.edit() carries no gateway state.
GATE: ContextVar[PixelGate | None] = ContextVar("imagegate_pixels", default=None)


def current() -> PixelGate:
    gate = GATE.get()
    # Outside a request (unit tests) a fresh gate with the default limits.
    return gate if gate is not None else PixelGate()


def configure_pillow(max_pixels: int) -> None:
    """Set Pillow's process-wide guards from the config.

    Pillow warns past ``MAX_IMAGE_PIXELS`` and refuses past twice that; the warning is
    made an error so that a decode refuses at the cap instead of writing to stderr.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    PngImagePlugin.MAX_TEXT_CHUNK = MAX_TEXT_CHUNK
    PngImagePlugin.MAX_TEXT_MEMORY = MAX_TEXT_MEMORY
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
