"""Mask conversion: OpenAI's alpha mask to the black/white mask other providers expect.

OpenAI marks the edit area with fully transparent pixels (alpha 0) of a PNG the size of
the first image. Imagen, Stability and FLUX Fill take a greyscale mask instead: white =
edit, black = keep. Pixel work uses Pillow in a worker thread, never on the event loop,
and holds one of the process's decode slots (``proxy.pixels``) while it runs.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Callable
from typing import IO

from PIL import Image

from proxy import pixels
from proxy.errors import InvalidRequest
from proxy.models import StoredImage

WHITE = 255
BLACK = 0
# What a hostile or broken file makes Pillow raise, from opening to saving; a
# DecompressionBombWarning is an error once ``pixels.configure_pillow`` has run.
_UNREADABLE = (
    OSError,  # UnidentifiedImageError, truncated data, decoder errors
    SyntaxError,  # malformed chunks
    ValueError,  # e.g. PNG text chunks past MAX_TEXT_CHUNK / MAX_TEXT_MEMORY
    EOFError,
    IndexError,
    TypeError,
    struct.error,
)
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)


async def to_white_edit_mask(mask: StoredImage, first: StoredImage) -> bytes:
    """A greyscale PNG, white where the client's mask says edit, black elsewhere.

    A mask with an alpha channel follows OpenAI (alpha 0 = edit). A mask without one is
    taken as already black/white and thresholded at mid-grey. The mask must have the
    first image's dimensions (a 400 on ``mask`` otherwise), and neither may have more
    than the gateway's ``max_image_pixels`` (a 400 before any decode).
    """
    gate = pixels.current()
    src = await _source(mask), await _source(first)
    return await gate.run(functools.partial(_convert, *src, gate.max_pixels))


async def to_black_edit_mask(mask: StoredImage, first: StoredImage) -> bytes:
    """The same mask inverted, black = edit (Amazon Nova's inpainting), in one pass."""
    gate = pixels.current()
    src = await _source(mask), await _source(first)
    work = functools.partial(_convert, *src, gate.max_pixels, invert=True)
    return await gate.run(work)


async def _source(image: StoredImage) -> str | IO[bytes]:
    if image.path is None:
        return io.BytesIO(await image.read())
    return image.path


def _unreadable(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"'{param}' could not be read as an image", param=param, code="invalid_image"
    )


def _open(
    src: str | IO[bytes], param: str, max_pixels: int, formats: tuple[str, ...]
) -> Image.Image:
    """Open (headers only: Pillow decodes lazily) and check the declared size."""
    try:
        image = Image.open(src, formats=formats)
    except _BOMB as exc:
        raise pixels.too_large(param, None, max_pixels) from exc
    except _UNREADABLE as exc:
        raise _unreadable(param) from exc
    try:
        pixels.check_size(image.size, max_pixels, param=param)
    except InvalidRequest:
        image.close()
        raise
    return image


def _first_size(src: str | IO[bytes], max_pixels: int) -> tuple[int, int]:
    # Only the first image's size is needed: its header, else Pillow's parse of a
    # JPEG whose frame header lies past the head (PNG and WebP headers come first,
    # so Pillow could not read one that ``dimensions`` cannot).
    if isinstance(src, str):
        with open(src, "rb") as f:
            head = f.read(pixels.HEAD_BYTES)
    else:
        head = src.read(pixels.HEAD_BYTES)
        src.seek(0)
    size = pixels.dimensions(head)
    if size is not None:
        pixels.check_size(size, max_pixels, param="images[0]")
        return size
    with _open(src, "images[0]", max_pixels, ("JPEG",)) as first:
        return first.size


def _convert(
    mask_src: str | IO[bytes],
    first_src: str | IO[bytes],
    max_pixels: int,
    *,
    invert: bool = False,
) -> bytes:
    want = _first_size(first_src, max_pixels)
    with _open(mask_src, "mask", max_pixels, ("PNG",)) as mask:
        if mask.size != want:
            raise InvalidRequest(
                f"'mask' is {mask.size[0]}x{mask.size[1]} but the first image is "
                f"{want[0]}x{want[1]}; they must match",
                param="mask",
                code="invalid_image",
            )
        try:
            out = _white_edit(mask, invert=invert)
        except _UNREADABLE as exc:  # truncated or corrupt pixel data
            raise InvalidRequest(
                "'mask' could not be decoded", param="mask", code="invalid_image"
            ) from exc
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


# Pillow keeps the GIL through getchannel, convert and point (not through decoding
# and encoding): on a 25 Mpx mask each held the event loop for 10-50 ms while it ran
# in a worker thread (bench/stall.py, mask25mp). A strip of rows at a time, each step
# is a few ms and the loop takes the GIL between strips; every step is per pixel, so
# the bytes are the same.
STRIP_PIXELS = 1 << 20
_Step = Callable[[Image.Image], Image.Image]


def _white_edit(mask: Image.Image, *, invert: bool = False) -> Image.Image:
    """An "L" image: white (black if ``invert``) where ``mask`` says edit."""
    step = _step(mask, invert)
    width, height = mask.size
    out = Image.new("L", mask.size)
    rows = max(1, STRIP_PIXELS // max(1, width))
    for top in range(0, height, rows):
        box = (0, top, width, min(height, top + rows))
        out.paste(step(mask.crop(box)), box)  # crop keeps the palette and tRNS
    return out


def _lut(edit: Callable[[int], bool], size: int, invert: bool) -> list[int]:
    on, off = (BLACK, WHITE) if invert else (WHITE, BLACK)
    return [on if edit(v) else off for v in range(size)]


def _step(mask: Image.Image, invert: bool) -> _Step:
    """What turns a strip of ``mask`` into its strip of the answer."""
    # Each strip keeps at most one copy besides its crop: the peak is the decoded
    # mask and the answer (5 bytes a pixel for RGBA) and a strip's few MiB.
    if "A" in mask.getbands() or mask.has_transparency_data:
        # Only fully transparent pixels are the edit area, as OpenAI documents.
        clear = _lut(lambda a: a == 0, 256, invert)
        if "A" in mask.getbands():
            return lambda strip: strip.getchannel("A").point(clear)
        # palette or tRNS colour key
        return lambda strip: strip.convert("RGBA").getchannel("A").point(clear)
    if mask.mode.startswith("I;16"):
        # 16-bit greyscale thresholds at the middle of its own range, not at 128.
        half = _half_16(invert)
        return lambda strip: strip.convert("I").point(half, "L")
    light = _lut(lambda v: v >= 128, 256, invert)
    return lambda strip: strip.convert("L").point(light)


@functools.cache
def _half_16(invert: bool) -> list[int]:
    return _lut(lambda v: v >= 32768, 65536, invert)
