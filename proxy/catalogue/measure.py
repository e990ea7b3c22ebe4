"""What an answered request did, for its cost: output image sizes read from each
image's header in the answer's body, input image sizes from theirs, inputs, calls.

Only the first bytes of each base64 image are decoded (enough for a PNG, JPEG or WebP
header, ``proxy.pixels.dimensions``), never the whole image. A provider URL (not a
``data:`` URL), or an input the gateway does not hold in memory, cannot be measured
here: the sizes are then unknown (None).
"""

from __future__ import annotations

import binascii
import re
from decimal import Decimal
from typing import Any

from proxy.catalogue.cost import Facts, cost
from proxy.catalogue.schema import Entry
from proxy.models import EditJob, EditResult, StoredImage
from proxy.pixels import dimensions

# 64 KiB of base64 (48 KiB of image): a JPEG's frame header may follow EXIF data.
_HEAD_CHARS = 65536
# Enough of an image for its pixel size: a JPEG's frame header may follow EXIF data.
HEAD_BYTES = 65536
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


def input_sizes(job: EditJob) -> list[tuple[int, int]] | None:
    """(width, height) of each input image the gateway holds in memory, from its
    header; None when one is not (a file on disk, a URL, a stored file)."""
    sizes = []
    for image in job.images:
        head = image.head(HEAD_BYTES) if isinstance(image, StoredImage) else None
        size = None if head is None else dimensions(head)
        if size is None:
            return None
        sizes.append(size)
    return sizes


def facts(
    job: EditJob, result: EditResult, *, one_per_call: bool, measure: bool
) -> Facts:
    """What happened: output images (and, when ``measure``, their sizes and the
    inputs' from their headers), inputs, calls (a provider making one image per call
    was called once per image). Measuring scans the whole reply: only a per-megapixel
    price needs it."""
    resolution: Any = job.extra.get("resolution")
    return Facts(
        images=result.images,
        usage=result.usage,
        sizes=output_sizes(result.body) if measure else None,
        inputs=len(job.images),
        input_sizes=input_sizes(job) if measure else None,
        calls=max(1, result.images) if one_per_call else 1,
        size=job.size,
        quality=job.quality,
        resolution=resolution if isinstance(resolution, str) else None,
    )


def reply_cost(row: Entry, job: EditJob, result: EditResult) -> Decimal | None:
    """What ``result`` cost, from the catalogue ``row`` in the provider's shape."""
    price = row.price
    if price is None:
        return None
    caps = row.capabilities
    one_per_call = caps is not None and caps.n_max == 1
    measure = price.per_megapixel is not None or isinstance(
        price.per_input_megapixel, float
    )
    return cost(price, facts(job, result, one_per_call=one_per_call, measure=measure))
