"""Small valid images built in code, so tests need no binary fixtures."""

from __future__ import annotations

import struct
import zlib


def png(
    width: int = 4, height: int = 4, *, alpha: int | None = None, seed: int = 0
) -> bytes:
    """An RGB (or RGBA when ``alpha`` is given) PNG with varied pixels."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            px = [(x * 40 + seed) % 256, (y * 40 + seed) % 256, (x + y + seed) % 256]
            if alpha is not None:
                px.append(alpha)
            rows += bytes(px)
    color_type = 2 if alpha is None else 6

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )


def jpeg_like(size: int = 64) -> bytes:
    """Bytes that start like a JPEG: enough for the proxy, which only sniffs."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * (size // 256 + 1)


def webp_like(size: int = 64) -> bytes:
    return b"RIFF" + struct.pack("<I", size) + b"WEBPVP8 " + b"\x00" * size


def sized_png(size: int) -> bytes:
    """A PNG header followed by filler up to ``size`` bytes (the proxy only sniffs)."""
    head = png(2, 2)
    return head + b"\x00" * max(0, size - len(head))


def flat_png(
    width: int, height: int, *, color_type: int = 0, before_idat: bytes = b""
) -> bytes:
    """A PNG of one flat colour, built a row at a time: 13000x13000 greyscale takes
    about 170 KB compressed and no more than a row of memory to build. ``before_idat``
    is spliced in as whole chunks (see ``png_chunk``)."""
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[color_type]
    comp = zlib.compressobj(9)
    row = bytes(1 + width * channels)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + before_idat
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
