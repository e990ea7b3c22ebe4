"""Mask conversion: OpenAI's alpha mask to the black/white mask other providers expect.

OpenAI marks the edit area with fully transparent pixels (alpha 0) of a PNG the size of
the first image. Imagen, Stability and FLUX Fill take a greyscale mask instead: white =
edit, black = keep. Pixel work uses Pillow in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import io
from typing import IO

from PIL import Image, UnidentifiedImageError

from proxy.errors import InvalidRequest
from proxy.models import StoredImage

WHITE = 255
BLACK = 0


async def to_white_edit_mask(mask: StoredImage, first: StoredImage) -> bytes:
    """A greyscale PNG, white where the client's mask says edit, black elsewhere.

    A mask with an alpha channel follows OpenAI (alpha 0 = edit). A mask without one is
    taken as already black/white and thresholded at mid-grey. The mask must have the
    first image's dimensions (a 400 on ``mask`` otherwise).
    """
    return await asyncio.to_thread(_convert, _source(mask), _source(first))


def _source(image: StoredImage) -> str | IO[bytes]:
    if image.data is not None:
        return io.BytesIO(image.data)
    assert image.path is not None
    return image.path


def _open(src: str | IO[bytes], param: str) -> Image.Image:
    try:
        return Image.open(src)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise InvalidRequest(
            f"'{param}' could not be read as an image",
            param=param,
            code="invalid_image",
        ) from exc


def _convert(mask_src: str | IO[bytes], first_src: str | IO[bytes]) -> bytes:
    with _open(first_src, "images[0]") as first:
        want = first.size
    with _open(mask_src, "mask") as mask:
        if mask.size != want:
            raise InvalidRequest(
                f"'mask' is {mask.size[0]}x{mask.size[1]} but the first image is "
                f"{want[0]}x{want[1]}; they must match",
                param="mask",
                code="invalid_image",
            )
        try:
            out = _white_edit(mask)
        except OSError as exc:  # truncated or corrupt pixel data
            raise InvalidRequest(
                "'mask' could not be decoded", param="mask", code="invalid_image"
            ) from exc
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def _white_edit(mask: Image.Image) -> Image.Image:
    if mask.has_transparency_data:
        alpha = mask.convert("RGBA").getchannel("A")
        # Only fully transparent pixels are the edit area, as OpenAI documents.
        return alpha.point(lambda a: WHITE if a == 0 else BLACK)
    grey = mask.convert("L")
    return grey.point(lambda v: WHITE if v >= 128 else BLACK)
