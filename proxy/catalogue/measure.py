"""Output image sizes from an answer's body, read from each image's header.

Only the first bytes of each base64 image are decoded (enough for a PNG, JPEG or WebP
header, ``proxy.pixels.dimensions``), never the whole image. A provider URL (not a
``data:`` URL) cannot be measured here: the sizes are then unknown (None).
"""

from __future__ import annotations

import binascii
import re

from proxy.pixels import dimensions

# 64 KiB of base64 (48 KiB of image): a JPEG's frame header may follow EXIF data.
_HEAD_CHARS = 65536
_IMAGE = re.compile(
    rb'"b64_json"\s*:\s*"|"url"\s*:\s*"(?P<data>data:image/[a-z+.-]+;base64,)?'
)


def output_sizes(body: bytes) -> list[tuple[int, int]] | None:
    """(width, height) of every image in an ``ImagesResponse`` body, in order; None
    when one of them cannot be measured."""
    sizes: list[tuple[int, int]] = []
    for m in _IMAGE.finditer(body):
        if m.group(0).startswith(b'"url"') and m.group("data") is None:
            return None  # a provider URL: not measured here
        start = m.end()
        end = body.find(b'"', start, start + _HEAD_CHARS + 1)
        chunk = body[start : end if end != -1 else start + _HEAD_CHARS]
        chunk = chunk[: len(chunk) - len(chunk) % 4]
        try:
            head = binascii.a2b_base64(chunk)
        except binascii.Error:
            return None
        size = dimensions(head)
        if size is None:
            return None
        sizes.append(size)
    return sizes
